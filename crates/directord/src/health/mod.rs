//! Backend health checks (what poolmon did for Dovecot's director): every
//! `director_health_check_interval`, each host is probed on each checked protocol, and hosts
//! that keep failing are marked down through the core, exactly as `doveadm director down`
//! does (so `doveadm director status` shows it and, in a ring, every director sees it);
//! hosts the checker marked down come back up when they recover. The rules live in
//! [`decide`], the probe in [`probe`]; this module runs rounds on the driver's thread.
//!
//! In a ring one director decides: the lowest-addressed director of the synced ring, which
//! is the one whose left neighbour is above it (the ring wraps there) or which has none
//! (`DirectorHandle::health_check_leader`). When it dies, the ring closes around it and the
//! next lowest takes over at its next round. A new leader starts with empty counts and
//! treats every host that is down as an operator's, so it never brings up a host its
//! predecessor marked down: an operator does (`doveadm director up`).

pub mod decide;
pub mod probe;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use director_config::{ConfigError, Values};
use director_driver::DirectorHandle;
use director_proto::admin::{AdminReply, AdminRequest, ReplyReader, StatusReply};
use director_proxy::Protocol;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use decide::{Change, Decider, HostState, Policy};

/// Probes in flight at once, so that a large host list does not open thousands of sockets
/// at the same moment.
const MAX_PARALLEL_PROBES: usize = 256;

/// The `director_health_check_*` settings, when checks are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Time between rounds.
    pub interval: Duration,
    /// Bound on one probe (connect and greeting).
    pub timeout: Duration,
    /// Failures, successes, hold-down.
    pub policy: Policy,
    /// The protocols probed and the backends' port for each.
    pub probes: Vec<(Protocol, u16)>,
    /// Flush a host's users when it is marked down.
    pub flush: bool,
    /// The test user the IMAP and POP3 probes log in as, and its password.
    pub login: Option<probe::TestLogin>,
}

impl HealthSettings {
    /// Reads the settings; `None` when `director_health_check_interval` is 0. `served` are
    /// the protocols the proxy has listeners for; `port` gives a protocol's backend port.
    pub fn from_values(
        v: &Values<'_>,
        served: &[Protocol],
        port: impl Fn(Protocol) -> u16,
    ) -> Result<Option<Self>, ConfigError> {
        let interval = v.duration_msecs("director_health_check_interval")?;
        if interval.is_zero() {
            return Ok(None);
        }
        let key = "director_health_check_protocols";
        let protocols: Vec<Protocol> = match v.non_empty(key) {
            Some(list) => list
                .split_whitespace()
                .map(|name| {
                    Protocol::ALL
                        .into_iter()
                        .find(|p| p.name() == name)
                        .ok_or_else(|| v.error(key, format!("unknown protocol {name:?}")))
                })
                .collect::<Result<_, _>>()?,
            None if served.is_empty() => vec![Protocol::Imap],
            None => served.to_vec(),
        };
        let mut probes: Vec<(Protocol, u16)> = Vec::new();
        for p in protocols {
            if !probes.iter().any(|(q, _)| *q == p) {
                probes.push((p, port(p)));
            }
        }
        Ok(Some(HealthSettings {
            interval,
            timeout: v.duration_msecs("director_health_check_timeout")?,
            policy: Policy {
                fails: v.number("director_health_check_fails")?,
                successes: v.number("director_health_check_successes")?,
                hold_down: v.duration_msecs("director_health_check_hold_down")?,
            },
            probes,
            flush: v.boolean("director_health_check_flush")?,
            login: v
                .non_empty("director_health_check_user")
                .map(|user| probe::TestLogin {
                    user: user.trim().to_owned(),
                    password: v.text("director_health_check_password").to_owned(),
                }),
        }))
    }
}

/// What the checker did, for the metrics.
#[derive(Debug, Default)]
pub struct HealthCounters {
    /// Probes run (one per host and protocol per round).
    pub probes: AtomicU64,
    /// Probes that failed.
    pub probe_failures: AtomicU64,
    /// Hosts the checker marked down.
    pub marked_down: AtomicU64,
    /// Hosts the checker marked up again.
    pub marked_up: AtomicU64,
}

/// Runs rounds until shutdown.
pub async fn run(
    director: DirectorHandle,
    settings: HealthSettings,
    counters: Arc<HealthCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let mut decider = Decider::new(settings.policy);
    let mut leading = false;
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !director.health_check_leader() {
            if leading {
                tracing::info!("health checks paused: another director of the ring decides");
                leading = false;
            }
            continue;
        }
        if !leading {
            // Counts and marks are only ours while we lead; start over.
            decider = Decider::new(settings.policy);
            leading = true;
        }
        if let Err(e) = round(&director, &settings, &mut decider, &counters, start).await {
            tracing::warn!(error = format!("{e:#}"), "health check round failed");
        }
    }
}

async fn round(
    director: &DirectorHandle,
    settings: &HealthSettings,
    decider: &mut Decider,
    counters: &HealthCounters,
    start: Instant,
) -> anyhow::Result<()> {
    let hosts = host_list(director).await?;
    let slots = Arc::new(Semaphore::new(MAX_PARALLEL_PROBES));
    let mut probes = JoinSet::new();
    for host in &hosts {
        for &(protocol, port) in &settings.probes {
            let (ip, timeout, slots) = (host.ip, settings.timeout, slots.clone());
            let login = settings.login.clone();
            probes.spawn(async move {
                // The semaphore is never closed, so a permit always comes.
                let _slot = slots.acquire_owned().await;
                let addr = SocketAddr::new(ip, port);
                let result = probe::probe(protocol, addr, timeout, login.as_ref()).await;
                (ip, protocol, result)
            });
        }
    }
    let mut passed: HashMap<IpAddr, bool> = HashMap::new();
    while let Some(done) = probes.join_next().await {
        let (ip, protocol, result) = done.context("health probe task")?;
        counters.probes.fetch_add(1, Ordering::Relaxed);
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                counters.probe_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(host = %ip, protocol = protocol.name(), error = format!("{e:#}"), "health probe failed");
                false
            }
        };
        *passed.entry(ip).or_insert(true) &= ok;
    }
    let round = decider.round(start.elapsed(), &hosts, &passed);
    for tag in &round.all_failing_tags {
        tracing::error!(
            tag = tag.as_str(),
            "every up host of the tag fails its health checks; keeping them up"
        );
    }
    for change in round.changes {
        let (request, what) = match change {
            Change::Down(ip) => (AdminRequest::HostDown { ip }, "down"),
            Change::Up(ip) => (AdminRequest::HostUp { ip }, "up"),
        };
        let ip = match change {
            Change::Down(ip) | Change::Up(ip) => ip,
        };
        match status(director, request).await? {
            StatusReply::Ok => {
                decider.applied(change, start.elapsed());
                let counter = match change {
                    Change::Down(_) => &counters.marked_down,
                    Change::Up(_) => &counters.marked_up,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::info!(host = %ip, state = what, "health checks marked the host {what}");
            }
            other => {
                tracing::warn!(host = %ip, state = what, reply = ?other, "the core refused the health check's change");
                continue;
            }
        }
        if settings.flush && matches!(change, Change::Down(_)) {
            let reply = status(director, AdminRequest::HostFlush { ip: Some(ip) }).await?;
            if reply != StatusReply::Ok {
                tracing::warn!(host = %ip, reply = ?reply, "flushing a host marked down failed");
            }
        }
    }
    Ok(())
}

/// Runs `request` and reads its reply.
async fn reply(director: &DirectorHandle, request: AdminRequest) -> anyhow::Result<AdminReply> {
    let mut reader = ReplyReader::new(&request);
    let bytes = director
        .admin(request)
        .await
        .ok_or_else(|| anyhow!("the driver has stopped"))?;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if let Some(reply) = reader.push_line(line).map_err(|e| anyhow!("{e:?}"))? {
            return Ok(reply);
        }
    }
    Err(anyhow!("incomplete admin reply"))
}

async fn status(director: &DirectorHandle, request: AdminRequest) -> anyhow::Result<StatusReply> {
    match reply(director, request).await.context("admin request")? {
        AdminReply::Status(s) => Ok(s),
        other => Err(anyhow!("unexpected reply {other:?}")),
    }
}

async fn host_list(director: &DirectorHandle) -> anyhow::Result<Vec<HostState>> {
    match reply(director, AdminRequest::HostList)
        .await
        .context("HOST-LIST")?
    {
        AdminReply::HostList(entries) => Ok(entries
            .into_iter()
            .map(|e| HostState {
                ip: e.ip,
                tag: e.tag,
                down: e.down,
            })
            .collect()),
        other => Err(anyhow!("unexpected HOST-LIST reply {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use director_config::Config;

    fn read(text: &str, served: &[Protocol]) -> Result<Option<HealthSettings>, ConfigError> {
        let config = Config::parse_str(text, "t.conf").expect("parses");
        HealthSettings::from_values(&Values::new(config.root()), served, |p| match p {
            Protocol::Imap => 1143,
            Protocol::Lmtp => 1024,
            _ => 1,
        })
    }

    #[test]
    fn checks_are_off_unless_an_interval_is_set() {
        assert_eq!(read("", &[Protocol::Imap]).expect("valid"), None);
        assert_eq!(
            read("director_health_check_interval = 0\n", &[]).expect("valid"),
            None
        );
    }

    #[test]
    fn the_protocols_default_to_the_served_ones_else_imap_with_their_backend_ports() {
        let s = read("director_health_check_interval = 200 ms\n", &[])
            .expect("valid")
            .expect("on");
        assert_eq!(s.interval, Duration::from_millis(200));
        assert_eq!(s.probes, vec![(Protocol::Imap, 1143)]);
        let s = read(
            "director_health_check_interval = 1s\n",
            &[Protocol::Lmtp, Protocol::Imap],
        )
        .expect("valid")
        .expect("on");
        assert_eq!(
            s.probes,
            vec![(Protocol::Lmtp, 1024), (Protocol::Imap, 1143)]
        );
        let s = read(
            "director_health_check_interval = 1s\ndirector_health_check_protocols = lmtp lmtp\n",
            &[Protocol::Imap],
        )
        .expect("valid")
        .expect("on");
        assert_eq!(s.probes, vec![(Protocol::Lmtp, 1024)]);
    }

    #[test]
    fn an_unknown_protocol_is_an_error_naming_the_setting() {
        let e = read(
            "director_health_check_interval = 1s\ndirector_health_check_protocols = imap smtp\n",
            &[],
        )
        .expect_err("smtp is not a protocol we probe");
        let text = e.to_string();
        assert!(text.contains("director_health_check_protocols"), "{text}");
        assert!(text.contains("smtp"), "{text}");
    }
}
