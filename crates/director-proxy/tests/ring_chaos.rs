//! Ring chaos: three directors in a ring, each with its built-in proxy, real Dovecot
//! backends behind them, and a relay on every ring link that delays, bunches, splits and
//! cuts the ring's traffic. While a storm of simulated users logs in through the proxies of
//! all directors, the chaos changes hosts and moves, flushes and kicks users through the
//! admin interface, and kills directors and restarts them with an empty state.
//!
//! The oracle:
//! * **No user is ever served by two backends at the same time.** Every session that
//!   logged in is tracked with the backend that answered its `ID` (testkit backends name
//!   themselves there) until the client ends it. When a login of user `u` has been served
//!   by backend `B` (its `ID` answered) and is still open, every other tracked session of
//!   `u` on another backend must already be closed by its proxy: its client socket has
//!   the end of stream (or a reset) waiting. This is sound because of the order the
//!   director keeps: a proxy kills a session by closing both of its connections, and a
//!   user's kick (a move's, or an admin's) is reported done to the core, and from there
//!   round the ring, only once the kicked sessions closed them; the move lets the user's
//!   logins through only after every director reported its kick. A flushed or removed
//!   host's sessions are told to stop before the change leaves their director, and a login
//!   elsewhere needs that change to go round the ring and a backend login first. On
//!   loopback the kernel delivers a close to the other socket as the closing call runs, so
//!   a session the check finds open is one a director let live while its user was routed
//!   elsewhere. Two directors that both went on assigning new users while cut off from
//!   each other would fail it too: the ring keeps a director that lost a neighbour unsynced
//!   until it is in a ring again (or has been alone for 20 s, far longer than the cuts here).
//! * **The ring converges once the chaos stops**: with every director back up and the
//!   relays calm, every director reports the ring synced, `HOST-LIST` is the same
//!   everywhere (but for each director's own time of the last up/down change) and so is
//!   `USER-LIST` (hash and host), within a bounded wait.
//!
//! Logins may fail with the temporary failure while a director is down or the ring is
//! not synced; they are counted, and the test fails only when more than a fifth fail,
//! which would mean that routing is broken rather than delayed.
//!
//! `cargo test -p director-proxy --test ring_chaos` runs a fixed seed. A longer run on a
//! random seed (printed in hex at the start and in the summary; pass it back as
//! `DIRECTOR_CHAOS_SEED=<hex>` to replay the same choices):
//!
//! ```text
//! DIRECTOR_CHAOS_SEED=random DIRECTOR_CHAOS_USERS=50000 DIRECTOR_CHAOS_KILLS=10 \
//!     cargo test -p director-proxy --test ring_chaos -- --nocapture
//! ```
//!
//! `DIRECTOR_CHAOS_KILLS` bounds the directors killed (default 3). The timing of real
//! sockets is not seeded, so a seed replays the chaos's choices, not every interleaving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ring::{RingLab, Rng};
use director_proto::admin::{AdminRequest, UserRef};
use testkit::BACKEND_PASSWORD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// The seed CI runs.
const CI_SEED: u64 = 0x00C0_FFEE_D1EC_7012;
/// Users in the storm unless `DIRECTOR_CHAOS_USERS` says otherwise.
const DEFAULT_USERS: u64 = 10_000;
/// Directors killed (and restarted) at most, unless `DIRECTOR_CHAOS_KILLS` says otherwise.
const DEFAULT_KILLS: u64 = 3;
/// Directors in the ring.
const DIRECTORS: usize = 3;
/// Backends in `director_mail_servers`; one more is added and removed by the chaos.
const CONFIG_BACKENDS: usize = 3;
/// Most client sessions open (or logging in) at once.
const CONCURRENCY: usize = 96;
/// Most admin requests in flight at once (a host change waits for the ring).
const ADMIN_IN_FLIGHT: usize = 3;
/// A fifth of the logins failing means routing is broken, not delayed.
const MAX_FAILED_PERCENT: u64 = 20;
/// Hang guard for one client read: longer than a login queued for the core's 30 s
/// request timeout plus the proxy's backend login timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(70);
/// How long the ring has to converge once the chaos stopped.
const CONVERGE_WITHIN: Duration = Duration::from_secs(90);
/// How often convergence is polled.
const POLL: Duration = Duration::from_millis(200);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn seed() -> u64 {
    match std::env::var("DIRECTOR_CHAOS_SEED") {
        Err(_) => CI_SEED,
        Ok(v) if v == "random" => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos(),
            );
            h.finish()
        }
        Ok(v) => {
            let v = v.trim_start_matches("0x");
            u64::from_str_radix(v, 16)
                .unwrap_or_else(|_| panic!("DIRECTOR_CHAOS_SEED={v:?}: hex or `random`"))
        }
    }
}

/// Counts of what happened.
#[derive(Default)]
struct Stats {
    logins: AtomicU64,
    served: AtomicU64,
    /// The proxy answered with a temporary failure (or closed before the login ended).
    failed: AtomicU64,
    /// A director was down: the client went to the next one.
    refused: AtomicU64,
    /// Logged in, then killed before its `ID` was answered.
    killed_early: AtomicU64,
    /// Open sessions found closed by their proxy when another login of the user arrived.
    found_closed: AtomicU64,
    kills: AtomicU64,
    cuts: AtomicU64,
    blocks: AtomicU64,
    admin_ok: AtomicU64,
    admin_other: AtomicU64,
    failure_kinds: Mutex<HashMap<String, u64>>,
}

impl Stats {
    fn fail(&self, kind: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .failure_kinds
            .lock()
            .unwrap()
            .entry(kind.to_string())
            .or_default() += 1;
    }
}

/// A session being served, as the oracle sees it.
struct OpenSession {
    id: u64,
    backend: IpAddr,
    director: usize,
    since: Instant,
    /// A second descriptor of the client socket: peeking at it does not disturb the
    /// session's own reads.
    socket: std::net::TcpStream,
}

/// What a client socket has waiting.
#[derive(Debug, PartialEq, Eq)]
enum Peek {
    /// Nothing: the connection is open.
    Open,
    /// End of stream or a reset: the proxy closed it.
    Closed,
    /// Bytes nobody asked for.
    Data(Vec<u8>),
}

fn peek(socket: &std::net::TcpStream) -> Peek {
    let mut buf = [0u8; 256];
    match socket.peek(&mut buf) {
        Ok(0) => Peek::Closed,
        Ok(n) => Peek::Data(buf[..n].to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Peek::Open,
        Err(_) => Peek::Closed,
    }
}

/// The open sessions per user, and what the oracle found.
#[derive(Default)]
struct Oracle {
    open: Mutex<HashMap<String, Vec<OpenSession>>>,
    next_id: AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl Oracle {
    /// Session `socket` of `user` was served by `backend` through `director`: checks it
    /// against the user's other open sessions and tracks it. Returns its id, or `None` when
    /// it was already closed by its proxy (then it no longer serves anyone).
    fn served(
        &self,
        user: &str,
        backend: IpAddr,
        director: usize,
        socket: std::net::TcpStream,
        stats: &Stats,
        started: Instant,
    ) -> Option<u64> {
        let mut open = self.open.lock().unwrap();
        if peek(&socket) != Peek::Open {
            stats.killed_early.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let sessions = open.entry(user.to_string()).or_default();
        let mut kept = Vec::with_capacity(sessions.len() + 1);
        for other in sessions.drain(..) {
            match peek(&other.socket) {
                Peek::Closed => {
                    stats.found_closed.fetch_add(1, Ordering::Relaxed);
                }
                state if other.backend != backend => {
                    let v = format!(
                        "{:>8.3}s user {user} (hash {}) served by {backend} (director {director}) while its session #{} on {} (director {}, open {} ms) is {state:?}",
                        started.elapsed().as_secs_f64(),
                        director_core::user_hash(user.as_bytes(), &Default::default()).unwrap_or(0),
                        other.id,
                        other.backend,
                        other.director,
                        other.since.elapsed().as_millis(),
                    );
                    eprintln!("VIOLATION {v}");
                    self.violations.lock().unwrap().push(v);
                    // For the report: how long the other session still lived.
                    if let Ok(socket) = other.socket.try_clone() {
                        let user = user.to_string();
                        tokio::spawn(async move {
                            let seen = Instant::now();
                            let deadline = seen + Duration::from_secs(10);
                            while peek(&socket) == Peek::Open && Instant::now() < deadline {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            eprintln!(
                                "VIOLATION user {user}: the other session was {:?} after {} ms",
                                peek(&socket),
                                seen.elapsed().as_millis()
                            );
                        });
                    }
                    kept.push(other);
                }
                _ => kept.push(other),
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        kept.push(OpenSession {
            id,
            backend,
            director,
            since: Instant::now(),
            socket,
        });
        *sessions = kept;
        Some(id)
    }

    /// The client is about to end session `id`: it no longer counts.
    fn ending(&self, user: &str, id: u64) {
        let mut open = self.open.lock().unwrap();
        if let Some(sessions) = open.get_mut(user) {
            sessions.retain(|s| s.id != id);
            if sessions.is_empty() {
                open.remove(user);
            }
        }
    }
}

/// Everything the client tasks and the chaos share.
struct Run {
    lab: RingLab,
    stats: Stats,
    oracle: Oracle,
    started: Instant,
    /// Users whose logins have started (the chaos moves and kicks among them).
    users_started: AtomicUsize,
    storm_over: AtomicBool,
    /// Chaos actions, for the report of a failure.
    log: Mutex<Vec<String>>,
}

impl Run {
    fn note(&self, what: String) {
        let line = format!("{:>8.3}s {what}", self.started.elapsed().as_secs_f64());
        tracing::info!("{line}");
        self.log.lock().unwrap().push(line);
    }
}

fn user_name(i: usize) -> String {
    format!("chaos{i}")
}

/// One line, CRLF stripped; `None` at the end of stream or on an error.
async fn read_line(r: &mut BufReader<TcpStream>) -> Result<Option<String>, &'static str> {
    let mut l = String::new();
    match tokio::time::timeout(READ_TIMEOUT, r.read_line(&mut l)).await {
        Err(_) => Err("hung"),
        Ok(Ok(0) | Err(_)) => Ok(None),
        Ok(Ok(_)) => Ok(Some(l.trim_end_matches(['\r', '\n']).to_string())),
    }
}

/// Lines up to the one tagged `tag`; `None` when the connection ended first.
async fn until_tagged(
    r: &mut BufReader<TcpStream>,
    tag: &str,
) -> Result<Option<Vec<String>>, &'static str> {
    let mut lines = Vec::new();
    loop {
        let Some(l) = read_line(r).await? else {
            return Ok(None);
        };
        let done = l.starts_with(tag) && l.as_bytes().get(tag.len()) == Some(&b' ');
        lines.push(l);
        if done {
            return Ok(Some(lines));
        }
    }
}

/// Connects to director `first`'s proxy, or the next running one (a client's load
/// balancer does the same).
async fn connect(run: &Run, first: usize, from: IpAddr) -> Option<(usize, TcpStream)> {
    let n = run.lab.n();
    for k in 0..n {
        let d = (first + k) % n;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind a client address");
        match socket.connect(run.lab.specs[d].imap).await {
            Ok(s) => return Some((d, s)),
            Err(_) => {
                run.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    None
}

/// One login of `user` through director `first`, held for `hold`.
async fn session(run: &Run, user: &str, first: usize, from: IpAddr, hold: Duration) {
    run.stats.logins.fetch_add(1, Ordering::Relaxed);
    let Some((director, stream)) = connect(run, first, from).await else {
        run.stats.fail("no director running");
        return;
    };
    let mut r = BufReader::new(stream);
    match read_line(&mut r).await {
        Ok(Some(l)) if l.starts_with("* OK") => {}
        Ok(other) => return run.stats.fail(&format!("greeting {other:?}")),
        Err(e) => return run.stats.fail(e),
    }
    if r.get_mut()
        .write_all(format!("a LOGIN {user} {BACKEND_PASSWORD}\r\n").as_bytes())
        .await
        .is_err()
    {
        return run.stats.fail("closed before LOGIN");
    }
    let reply = match until_tagged(&mut r, "a").await {
        Ok(Some(lines)) => lines,
        Ok(None) => return run.stats.fail("closed during LOGIN"),
        Err(e) => return run.stats.fail(e),
    };
    let last = reply.last().cloned().unwrap_or_default();
    if !last.starts_with("a OK") {
        let kind = if last.contains("[UNAVAILABLE]") {
            "temporary failure".to_string()
        } else {
            format!("LOGIN {last}")
        };
        return run.stats.fail(&kind);
    }
    if r.get_mut().write_all(b"b ID NIL\r\n").await.is_err() {
        run.stats.killed_early.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let id = match until_tagged(&mut r, "b").await {
        Ok(Some(lines)) => lines,
        Ok(None) => {
            run.stats.killed_early.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(e) => return run.stats.fail(e),
    };
    let backend = id
        .iter()
        .find(|l| l.starts_with("* ID"))
        .and_then(|l| l.split('"').find_map(|w| w.parse::<IpAddr>().ok()))
        .unwrap_or_else(|| panic!("no backend-ip in {id:?}"));
    let socket = r
        .get_ref()
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .expect("dup the client socket");
    run.stats.served.fetch_add(1, Ordering::Relaxed);
    let Some(tracked) = run
        .oracle
        .served(user, backend, director, socket, &run.stats, run.started)
    else {
        return;
    };
    // The user's session, as long as the client wants it (a workload, not a wait).
    tokio::time::sleep(hold).await;
    run.oracle.ending(user, tracked);
    if hold.as_millis().is_multiple_of(2) {
        let _ = r.get_mut().write_all(b"z LOGOUT\r\n").await;
    }
}

/// The storm: every user logs in once, some several times through different directors
/// with overlapping sessions.
async fn storm(run: Arc<Run>, users: usize, mut rng: Rng) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..users {
        let user = user_name(i);
        let logins = match rng.below(100) {
            0..=74 => 1,
            75..=94 => 2,
            _ => 3,
        };
        for k in 0..logins {
            let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
            run.users_started.store(i + 1, Ordering::Relaxed);
            let run = Arc::clone(&run);
            let user = user.clone();
            let director = rng.below(DIRECTORS as u64) as usize;
            let from = IpAddr::V4(run.lab.client_ips[rng.below(4) as usize]);
            let hold = rng.millis(0, 400);
            // A later login of the same user starts while the first may still be open.
            let after = if k == 0 {
                Duration::ZERO
            } else {
                rng.millis(0, 300)
            };
            tasks.spawn(async move {
                tokio::time::sleep(after).await;
                session(&run, &user, director, from, hold).await;
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// What the chaos believes about the hosts it changes.
#[derive(Default)]
struct HostModel {
    /// The one real backend marked down, if any (at least two stay up for logins).
    down: Option<IpAddr>,
    /// Whether the extra backend is a host now.
    extra_added: bool,
}

/// One random admin change on a running director, in a task of its own (host changes are
/// answered only once they went round the ring).
fn admin_change(run: &Arc<Run>, rng: &mut Rng, model: &Mutex<HostModel>, slots: &Arc<Semaphore>) {
    let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
        return;
    };
    let alive = run.lab.alive();
    if alive.is_empty() {
        return;
    }
    let on = alive[rng.below(alive.len() as u64) as usize];
    let real = &run.lab.config_backends;
    let pick_real = |rng: &mut Rng| real[rng.below(real.len() as u64) as usize];
    let request = {
        let mut m = model.lock().unwrap();
        match rng.below(16) {
            0..=2 => AdminRequest::HostUpdate {
                ip: pick_real(rng),
                tag: String::new(),
                vhost_count: 20 + rng.below(130) as u32,
            },
            3..=4 => match m.down.take() {
                Some(ip) => AdminRequest::HostUp { ip },
                None => {
                    let ip = pick_real(rng);
                    m.down = Some(ip);
                    AdminRequest::HostDown { ip }
                }
            },
            5..=7 => {
                let ip = run.lab.extra_backends[0];
                if !m.extra_added {
                    m.extra_added = true;
                    AdminRequest::HostSet {
                        ip,
                        tag: String::new(),
                        vhost_count: Some(10 + rng.below(90) as u32),
                    }
                } else {
                    match rng.below(4) {
                        0 => AdminRequest::HostUpdate {
                            ip,
                            tag: String::new(),
                            vhost_count: rng.below(100) as u32,
                        },
                        1 => AdminRequest::HostDown { ip },
                        2 => AdminRequest::HostUp { ip },
                        _ => {
                            m.extra_added = false;
                            AdminRequest::HostRemove { ip }
                        }
                    }
                }
            }
            8..=11 => {
                let started = run.users_started.load(Ordering::Relaxed).max(1);
                let user = user_name(rng.below(started as u64) as usize);
                let to = loop {
                    let ip = pick_real(rng);
                    if m.down != Some(ip) {
                        break ip;
                    }
                };
                AdminRequest::UserMove {
                    user: UserRef::Name(user.into_bytes()),
                    ip: to,
                }
            }
            12 => AdminRequest::HostFlush {
                ip: Some(pick_real(rng)),
            },
            _ => {
                let started = run.users_started.load(Ordering::Relaxed).max(1);
                AdminRequest::UserKick {
                    user: user_name(rng.below(started as u64) as usize).into_bytes(),
                    nowait: false,
                }
            }
        }
    };
    let run = Arc::clone(run);
    run.note(format!("director {on}: {request:?} sent"));
    tokio::spawn(async move {
        let what = format!("{request:?}");
        let reply = run.lab.admin(on, request).await;
        match reply.as_deref().map(str::trim_end) {
            Some("OK") => run.stats.admin_ok.fetch_add(1, Ordering::Relaxed),
            _ => run.stats.admin_other.fetch_add(1, Ordering::Relaxed),
        };
        run.note(format!("director {on}: {what} -> {reply:?}"));
        drop(permit);
    });
}

/// The chaos: until the storm is over, every few tens of milliseconds something happens
/// to a link, a director or the hosts.
async fn chaos(run: Arc<Run>, mut rng: Rng, max_kills: u64) {
    let model = Mutex::new(HostModel::default());
    let admin_slots = Arc::new(Semaphore::new(ADMIN_IN_FLIGHT));
    let mut restarts = tokio::task::JoinSet::new();
    let n = run.lab.n();
    let links: Vec<_> = run.lab.links().map(|r| Arc::clone(&r.ctl)).collect();
    let link_names: Vec<String> = run
        .lab
        .links()
        .map(|r| format!("{}->{}", r.from, r.to))
        .collect();
    while !run.storm_over.load(Ordering::Relaxed) {
        tokio::time::sleep(rng.millis(20, 200)).await;
        match rng.below(100) {
            0..=19 => {
                let l = rng.below(links.len() as u64) as usize;
                links[l].cut();
                run.stats.cuts.fetch_add(1, Ordering::Relaxed);
                run.note(format!("cut {}", link_names[l]));
            }
            20..=24 => {
                // The link refuses connections for a while, and its open one is cut.
                let l = rng.below(links.len() as u64) as usize;
                let ctl = Arc::clone(&links[l]);
                let pause = rng.millis(300, 3000);
                ctl.set_blocked(true);
                ctl.cut();
                run.stats.blocks.fetch_add(1, Ordering::Relaxed);
                run.note(format!("block {} for {pause:?}", link_names[l]));
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    ctl.set_blocked(false);
                });
            }
            25..=34 => {
                let l = rng.below(links.len() as u64) as usize;
                let ms = [0, 2, 10, 50, 200][rng.below(5) as usize];
                links[l].set_max_delay(ms);
                run.note(format!("delay {} up to {ms} ms", link_names[l]));
            }
            35..=36 => {
                let alive = run.lab.alive();
                if run.stats.kills.load(Ordering::Relaxed) < max_kills && alive.len() == n {
                    let victim = rng.below(n as u64) as usize;
                    run.lab.kill_member(victim);
                    run.stats.kills.fetch_add(1, Ordering::Relaxed);
                    let down_for = rng.millis(300, 4000);
                    run.note(format!("kill director {victim}, restart in {down_for:?}"));
                    let run = Arc::clone(&run);
                    restarts.spawn(async move {
                        tokio::time::sleep(down_for).await;
                        run.lab.start_member(victim).await;
                        run.note(format!("restarted director {victim}"));
                    });
                }
            }
            _ => admin_change(&run, &mut rng, &model, &admin_slots),
        }
    }
    while restarts.join_next().await.is_some() {}
    // The admin changes still in flight finish before the chaos counts as stopped.
    let _ = admin_slots.acquire_many(ADMIN_IN_FLIGHT as u32).await;
}

/// Waits (bounded) until every director is synced and they all agree on the hosts and the
/// users; panics with what differs.
async fn converge(run: &Run) {
    let n = run.lab.n();
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let synced: Vec<bool> = (0..n).map(|i| run.lab.synced(i)).collect();
        let mut hosts = Vec::new();
        let mut users = Vec::new();
        for i in 0..n {
            hosts.push(run.lab.hosts(i).await);
            users.push(run.lab.users(i).await);
        }
        let same_hosts = hosts.iter().all(|h| h.is_some() && *h == hosts[0]);
        let same_users = users.iter().all(|u| u.is_some() && *u == users[0]);
        if synced.iter().all(|s| *s) && same_hosts && same_users {
            return;
        }
        if Instant::now() > deadline {
            let mut report = format!(
                "the ring did not converge within {CONVERGE_WITHIN:?}: synced {synced:?}\n"
            );
            for (i, h) in hosts.iter().enumerate() {
                report.push_str(&format!("director {i} hosts: {h:?}\n"));
            }
            for (i, u) in users.iter().enumerate() {
                let u = u.as_deref().unwrap_or_default();
                let first = users[0].as_deref().unwrap_or_default();
                let extra: Vec<_> = u.iter().filter(|x| !first.contains(x)).take(10).collect();
                let missing: Vec<_> = first.iter().filter(|x| !u.contains(x)).take(10).collect();
                report.push_str(&format!(
                    "director {i}: {} users; not on director 0: {extra:?}; only on director 0: {missing:?}\n",
                    u.len()
                ));
            }
            panic!("{report}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Logs with the thread names: a member's ring runs on its thread `director-<i>`.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_thread_names(true)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_is_served_by_two_backends_and_the_ring_converges() {
    init_tracing();
    let seed = seed();
    let users = env_u64("DIRECTOR_CHAOS_USERS", DEFAULT_USERS) as usize;
    let max_kills = env_u64("DIRECTOR_CHAOS_KILLS", DEFAULT_KILLS);
    eprintln!("ring chaos: seed {seed:016x}, {users} users, at most {max_kills} kills");
    let mut rng = Rng::new(seed);
    let lab = RingLab::start(DIRECTORS, CONFIG_BACKENDS, 1, rng.next_u64()).await;
    let run = Arc::new(Run {
        lab,
        stats: Stats::default(),
        oracle: Oracle::default(),
        started: Instant::now(),
        users_started: AtomicUsize::new(0),
        storm_over: AtomicBool::new(false),
        log: Mutex::new(Vec::new()),
    });
    // The ring forms before the storm: the first logins would only wait for it.
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while !(0..DIRECTORS).all(|i| run.lab.synced(i)) {
        assert!(Instant::now() < deadline, "the ring never formed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let chaos_task = tokio::spawn(chaos(Arc::clone(&run), rng.fork(), max_kills));
    storm(Arc::clone(&run), users, rng.fork()).await;
    run.storm_over.store(true, Ordering::Relaxed);
    let storm_took = run.started.elapsed();
    chaos_task.await.expect("the chaos task");
    run.lab.calm();
    for i in 0..DIRECTORS {
        run.lab.start_member(i).await;
    }
    let calm_at = Instant::now();
    converge(&run).await;
    let converged_in = calm_at.elapsed();

    let s = &run.stats;
    let logins = s.logins.load(Ordering::Relaxed);
    let failed = s.failed.load(Ordering::Relaxed);
    eprintln!(
        "ring chaos summary: seed {seed:016x}, {users} users, {logins} logins in {storm_took:?}: \
         {} served, {failed} failed {:?}, {} killed before their ID, {} refused by a dead director, \
         {} sessions found closed by a later login; chaos: {} kills, {} cuts, {} blocks, \
         {} admin OK, {} admin other; converged {converged_in:?} after the chaos",
        s.served.load(Ordering::Relaxed),
        s.failure_kinds.lock().unwrap(),
        s.killed_early.load(Ordering::Relaxed),
        s.refused.load(Ordering::Relaxed),
        s.found_closed.load(Ordering::Relaxed),
        s.kills.load(Ordering::Relaxed),
        s.cuts.load(Ordering::Relaxed),
        s.blocks.load(Ordering::Relaxed),
        s.admin_ok.load(Ordering::Relaxed),
        s.admin_other.load(Ordering::Relaxed),
    );
    let violations = run.oracle.violations.lock().unwrap().clone();
    if !violations.is_empty() {
        let log = run.log.lock().unwrap();
        panic!(
            "seed {seed:016x}: {} times a user was served by two backends at once:\n{}\n\
             the chaos actions:\n{}",
            violations.len(),
            violations.join("\n"),
            log.join("\n")
        );
    }
    assert!(
        failed * 100 <= logins * MAX_FAILED_PERCENT,
        "seed {seed:016x}: {failed} of {logins} logins failed: routing is broken"
    );
}
