//! Backend health checks (what poolmon did for Dovecot's director): every
//! `director_health_check_interval`, each host is probed on each checked protocol, and hosts
//! that keep failing are marked down through the core, exactly as `doveadm director down`
//! does (so `doveadm director status` shows it and, in a ring, every director sees it);
//! hosts the checker marked down come back up when they recover. The rules live in
//! [`decide`], the probe in [`probe`]; this module runs rounds on the driver's thread.
//!
//! Probes speak TLS as the proxy's backend connections do (`director_health_check_ssl`,
//! by default `director_backend_ssl`), with the proxy's own connector when it has one, so a
//! CA file replaced by SIGHUP is used by both from the next connection on.
//!
//! In a ring one director decides: the lowest-addressed director of the synced ring, which
//! is the one whose left neighbour is above it (the ring wraps there) or which has none
//! (`DirectorHandle::health_check_leader`). When it dies, the ring closes around it and the
//! next lowest takes over at its next round. Every director probes all the same, and the
//! others keep their counts and watch the downs (`Decider::observe`): a down they saw
//! happen while their own probes failed is the checker's, so a successor brings up the
//! hosts its predecessor marked down once they recover, and leaves an operator's downs
//! alone.

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
use director_proxy::{BackendTlsMode, Protocol};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;

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
    /// The test user the IMAP, POP3, Submission and ManageSieve probes log in as, and its
    /// password.
    pub login: Option<probe::TestLogin>,
    /// TLS of the probes (`director_health_check_ssl`, else `director_backend_ssl`).
    pub tls: BackendTlsMode,
    /// `ssl_client_ca_file`, for a connector of our own when the proxy has none.
    pub ca_pem: Option<String>,
    /// `director_proxy_protocol`: the backends' ports take a PROXY v2 header first.
    pub proxy_header: bool,
}

/// The TLS connector probes use, asked for at each round: the proxy's current one (SIGHUP
/// replaces it), else one built at start from the same `ssl_client_ca_file`.
pub type ConnectorSource = Arc<dyn Fn() -> Option<TlsConnector> + Send + Sync>;

impl HealthSettings {
    /// Reads the settings; `None` when `director_health_check_interval` is 0. `served` are
    /// the protocols the proxy has listeners for; `port` gives a protocol's backend port;
    /// `backend_tls` and `ca_pem` are the proxy's `director_backend_ssl` and
    /// `ssl_client_ca_file`; `proxy_header` its `director_proxy_protocol`.
    pub fn from_values(
        v: &Values<'_>,
        served: &[Protocol],
        port: impl Fn(Protocol) -> u16,
        backend_tls: BackendTlsMode,
        ca_pem: Option<&str>,
        proxy_header: bool,
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
        let key = "director_health_check_ssl";
        let tls = match v.text(key).trim() {
            "" => backend_tls,
            other => BackendTlsMode::parse(other).ok_or_else(|| {
                v.error(
                    key,
                    format!(
                    "must be no, yes or starttls (or empty: as director_backend_ssl), not {other}"
                ),
                )
            })?,
        };
        if tls != BackendTlsMode::None && ca_pem.is_none() {
            return Err(v.error(
                key,
                "TLS probes verify the backends' certificates: they need \
                 ssl_client_ca_file = </path/to/ca.pem"
                    .to_owned(),
            ));
        }
        Ok(Some(HealthSettings {
            proxy_header,
            tls,
            ca_pem: ca_pem.map(str::to_owned),
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

/// Runs rounds until shutdown; `tls` gives the connector when probes use TLS.
pub async fn run(
    director: DirectorHandle,
    settings: HealthSettings,
    tls: ConnectorSource,
    counters: Arc<HealthCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let start = Instant::now();
    // Kept across changes of leader: what it saw while another director decided is what
    // lets it tell the checker's downs from an operator's once it decides.
    let mut decider = Decider::new(settings.policy);
    let mut leading = false;
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        let leader = director.health_check_leader();
        if leader != leading {
            if leader {
                tracing::info!("health checks: this director decides");
            } else {
                tracing::info!("health checks: another director of the ring decides; this one probes and watches");
            }
            leading = leader;
        }
        let outcome = round(
            &director,
            &settings,
            &tls,
            &mut decider,
            &counters,
            start,
            leader,
        )
        .await;
        if let Err(e) = outcome {
            tracing::warn!(error = format!("{e:#}"), "health check round failed");
        }
    }
}

async fn round(
    director: &DirectorHandle,
    settings: &HealthSettings,
    tls: &ConnectorSource,
    decider: &mut Decider,
    counters: &HealthCounters,
    start: Instant,
    leader: bool,
) -> anyhow::Result<()> {
    let hosts = host_list(director).await?;
    let names = director.host_names();
    let connector = || tls().ok_or_else(|| anyhow!("no TLS connector for the probes"));
    let probe_tls = match settings.tls {
        BackendTlsMode::None => probe::ProbeTls::Off,
        BackendTlsMode::Implicit => probe::ProbeTls::Implicit(connector()?),
        BackendTlsMode::StartTls => probe::ProbeTls::StartTls(connector()?),
    };
    let slots = Arc::new(Semaphore::new(MAX_PARALLEL_PROBES));
    let mut probes = JoinSet::new();
    for host in &hosts {
        for &(protocol, port) in &settings.probes {
            let (ip, timeout, slots) = (host.ip, settings.timeout, slots.clone());
            let login = settings.login.clone();
            let probe_tls = probe_tls.clone();
            // The name the proxy verifies too: the host's configured name, else its address.
            let target = probe::Target {
                addr: SocketAddr::new(ip, port),
                name: director_proxy::tls::backend_server_name(
                    names.get(&ip).map(String::as_str),
                    ip,
                ),
                proxy_header: settings.proxy_header,
            };
            probes.spawn(async move {
                // The semaphore is never closed, so a permit always comes.
                let _slot = slots.acquire_owned().await;
                let result =
                    probe::probe(protocol, &target, timeout, login.as_ref(), &probe_tls).await;
                (ip, protocol, result)
            });
        }
    }
    let mut passed: HashMap<IpAddr, bool> = HashMap::new();
    // Why each failing host failed (one of its probes), for the line that marks it down.
    let mut reasons: HashMap<IpAddr, String> = HashMap::new();
    while let Some(done) = probes.join_next().await {
        let (ip, protocol, result) = done.context("health probe task")?;
        counters.probes.fetch_add(1, Ordering::Relaxed);
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                counters.probe_failures.fetch_add(1, Ordering::Relaxed);
                let reason = format!("{}: {e:#}", protocol.name());
                tracing::debug!(host = %ip, protocol = protocol.name(), error = format!("{e:#}"), "health probe failed");
                reasons.entry(ip).or_insert(reason);
                false
            }
        };
        *passed.entry(ip).or_insert(true) &= ok;
    }
    if !leader {
        decider.observe(start.elapsed(), &hosts, &passed);
        return Ok(());
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
                match reasons.get(&ip) {
                    Some(reason) => {
                        tracing::warn!(host = %ip, state = what, reason = reason.as_str(), "health checks marked the host {what}")
                    }
                    None => {
                        tracing::info!(host = %ip, state = what, "health checks marked the host {what}")
                    }
                }
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
        read_with_ca(text, served, Some("CA"))
    }

    /// [`read`] with the proxy's `director_backend_ssl = starttls` and this CA file.
    fn read_with_ca(
        text: &str,
        served: &[Protocol],
        ca: Option<&str>,
    ) -> Result<Option<HealthSettings>, ConfigError> {
        let config = Config::parse_str(text, "t.conf").expect("parses");
        HealthSettings::from_values(
            &Values::new(config.root()),
            served,
            |p| match p {
                Protocol::Imap => 1143,
                Protocol::Lmtp => 1024,
                _ => 1,
            },
            BackendTlsMode::StartTls,
            ca,
            false,
        )
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
    fn probes_use_tls_as_the_proxy_does_unless_told_otherwise_and_need_the_ca_file() {
        let on = "director_health_check_interval = 1s\n";
        let tls = |text: &str| read(text, &[]).expect("valid").expect("on").tls;
        assert_eq!(tls(on), BackendTlsMode::StartTls);
        for (value, mode) in [
            ("no", BackendTlsMode::None),
            ("yes", BackendTlsMode::Implicit),
            ("starttls", BackendTlsMode::StartTls),
        ] {
            assert_eq!(
                tls(&format!("{on}director_health_check_ssl = {value}\n")),
                mode
            );
        }
        let e =
            read(&format!("{on}director_health_check_ssl = maybe\n"), &[]).expect_err("not a mode");
        assert!(e.to_string().contains("director_health_check_ssl"), "{e}");
        let e = read_with_ca(on, &[], None).expect_err("TLS without a CA file");
        assert!(e.to_string().contains("ssl_client_ca_file"), "{e}");
        assert!(read_with_ca(&format!("{on}director_health_check_ssl = no\n"), &[], None).is_ok());
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
