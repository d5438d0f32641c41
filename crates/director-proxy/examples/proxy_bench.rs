//! Benchmark (not a test): IMAP LOGIN+LOGOUT rate and latency, and FETCH throughput of one
//! 32 MiB message, over three paths to the same three real Dovecot 2.3 backends, in one run:
//!
//! 1. **direct**: the client connects straight to the user's backend;
//! 2. **directord**: the real `directord` binary, a separate process, started with a
//!    Dovecot-syntax config (`director_mail_servers`, `service imap-login { inet_listener
//!    imap {…} }`, `director_backend_port_imap`);
//! 3. **dovecot-director**: the real Dovecot 2.3 director proxy (`director` service plus
//!    `imap-login` in director mode, [`testkit::DovecotDirectorProxy`]).
//!
//! Run, from the workspace root (one command; it first runs `cargo build --release -p
//! directord` into the same target dir, a no-op when up to date):
//!
//! ```text
//! cargo run --release -p director-proxy --example proxy_bench -- [--secs 5] [--rounds 3] [--users 2000] [--conc 1,4,16,64] [--no-dovecot] [--split-cpus]
//! ```
//!
//! (`DIRECTORD_EXTRA_CONFIG='director_proxy_workers = 1'` appends settings to `directord`'s
//! config; `DIRECTORD_BIN=/path/to/directord` uses that binary instead and skips the build; a bare
//! number as first argument is taken as `--secs`.) Needs Dovecot: `apt-get install -y
//! dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd`.
//!
//! Method. The client is this process (tokio, raw IMAP, `--users` users over the backends).
//! At each concurrency (1, 4, 16, 64) it runs `--rounds` rounds; a round measures every path
//! for `--secs` seconds, and the order of the paths rotates from round to round so that they
//! share the machine's state. At concurrency 1 the paths are interleaved login by login
//! instead, so their latencies are taken at the same moments (and no CPU is charged). Reported:
//! medians over rounds, each round's ratios to direct, plus every round's values.
//! Before the points, every user logs in once direct (mailboxes exist) and each proxy gets a
//! short warm-up. Where each user lives comes from `directord`'s admin `USER-LOOKUP` (hashed
//! host); the Dovecot director's `USER-LOOKUP` is compared against it, so all three paths hit
//! the same backend per user. CPU seconds are utime+stime from `/proc/PID/stat`, taken around
//! each point and charged to the path measured: the `directord` process; the Dovecot director
//! instance's processes by name (`director`, `imap-login`, `auth`, the rest, and children that
//! exited, from the master's cutime+cstime); the three backend instances; and this client.
//! The FETCH message is delivered once by LMTP straight to its backend; each path fetches it
//! `FETCH_RUNS` times, alternating, median MB/s. Only 127.x.y.z addresses are used and every
//! process started here is stopped by its PID (testkit types in `Drop`, `directord` by SIGTERM).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader as StdBufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::{
    free_port, require_dovecot, AdminClient, DirectorProxyOptions, DovecotBackend,
    DovecotDirectorProxy, LoopbackAllocator, BACKEND_PASSWORD,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Seconds per measured point unless `--secs` says otherwise.
const DEFAULT_SECS: u64 = 5;
/// Rounds per concurrency unless `--rounds` says otherwise.
const DEFAULT_ROUNDS: usize = 3;
/// Distinct users the logins cycle through unless `--users` says otherwise.
const DEFAULT_USERS: usize = 2000;
/// Concurrencies measured.
const CONCURRENCIES: [usize; 4] = [1, 4, 16, 64];
/// Bound on one IMAP exchange (connect, greeting, LOGIN, LOGOUT, or the whole FETCH).
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most lines read while waiting for one tagged reply.
const MAX_LINES_PER_REPLY: usize = 1000;
/// Size of the FETCHed message.
const FETCH_BYTES: usize = 32 << 20;
/// FETCHes per path (median reported).
const FETCH_RUNS: usize = 3;
/// Concurrency of the pass that logs every user in once before measuring.
const PREPARE_CONCURRENCY: usize = 16;
/// Warm-up of each proxy before the points (starts login processes, fills caches).
const WARMUP: Duration = Duration::from_secs(1);
/// How long `directord` may take to accept and proxy a first login.
const DIRECTORD_READY: Duration = Duration::from_secs(20);
/// How long `directord` gets to exit after SIGTERM before SIGKILL.
const DIRECTORD_STOP: Duration = Duration::from_secs(5);
/// `directord`'s drain time on SIGTERM (no sessions are open by then).
const DIRECTORD_DRAIN: &str = "1s";

// ---------------------------------------------------------------------------------------------
// CPU split

/// `--split-cpus`: the lower half of the CPUs for the client and the proxies, the upper
/// half for the backends, like a proxy tier on machines of its own.
struct CpuSplit {
    front: CpuSet,
    back: CpuSet,
    desc: String,
}

impl CpuSplit {
    fn new() -> anyhow::Result<CpuSplit> {
        let n = std::thread::available_parallelism()?.get();
        if n < 2 {
            bail!("--split-cpus needs at least 2 CPUs, this machine has {n}");
        }
        let (mut front, mut back) = (CpuSet::new(), CpuSet::new());
        for c in 0..n / 2 {
            front.set(c)?;
        }
        for c in n / 2..n {
            back.set(c)?;
        }
        Ok(CpuSplit {
            front,
            back,
            desc: format!(
                "backends on CPUs {}-{}, client and proxies on CPUs 0-{}",
                n / 2,
                n - 1,
                n / 2 - 1
            ),
        })
    }
}

/// Sets the CPU mask of every thread of `pid`.
fn pin_threads(pid: i32, cpus: &CpuSet) -> anyhow::Result<()> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            // A thread that exited meanwhile is fine.
            let _ = sched_setaffinity(Pid::from_raw(tid), cpus);
        }
    }
    Ok(())
}

/// Sets the CPU mask of `root` and its live children (Dovecot's services are children of
/// its master).
fn pin_tree(root: i32, cpus: &CpuSet) -> anyhow::Result<()> {
    pin_threads(root, cpus)?;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if proc_stat(pid).is_some_and(|(_, ppid, _, _)| ppid == root) {
            pin_threads(pid, cpus)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Paths

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PathKind {
    Direct,
    Directord,
    Dovecot,
}

impl PathKind {
    fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Directord => "directord",
            PathKind::Dovecot => "dovecot-director",
        }
    }
}

/// Where a path sends user `i`.
#[derive(Clone)]
enum Target {
    Direct(Arc<Vec<SocketAddr>>),
    Proxy(SocketAddr),
}

impl Target {
    fn addr(&self, user: usize) -> SocketAddr {
        match self {
            Target::Direct(homes) => homes[user % homes.len()],
            Target::Proxy(a) => *a,
        }
    }
}

fn user_name(i: usize) -> String {
    format!("bench{i}@example.com")
}

// ---------------------------------------------------------------------------------------------
// IMAP client

/// Reads lines until one starts with `tag ` and returns it (error on EOF or too many lines).
async fn tagged(r: &mut BufReader<TcpStream>, tag: &str) -> anyhow::Result<String> {
    let mut l = String::new();
    for _ in 0..MAX_LINES_PER_REPLY {
        l.clear();
        if r.read_line(&mut l).await? == 0 {
            bail!("EOF waiting for {tag}");
        }
        if l.starts_with(tag) && l.as_bytes().get(tag.len()) == Some(&b' ') {
            return Ok(l.trim_end().to_string());
        }
    }
    bail!("no tagged reply {tag}")
}

async fn greeting(r: &mut BufReader<TcpStream>) -> anyhow::Result<()> {
    let mut l = String::new();
    r.read_line(&mut l).await?;
    if !l.starts_with("* OK") {
        bail!("greeting {:?}", l.trim_end());
    }
    Ok(())
}

async fn expect_ok(r: &mut BufReader<TcpStream>, tag: &str) -> anyhow::Result<()> {
    let l = tagged(r, tag).await?;
    if !l[tag.len()..].trim_start().starts_with("OK") {
        bail!("{l}");
    }
    Ok(())
}

async fn login_logout(addr: SocketAddr, user: &str) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s);
    greeting(&mut r).await?;
    r.get_mut()
        .write_all(format!("a LOGIN {user} {BACKEND_PASSWORD}\r\n").as_bytes())
        .await?;
    expect_ok(&mut r, "a").await?;
    r.get_mut().write_all(b"b LOGOUT\r\n").await?;
    expect_ok(&mut r, "b").await?;
    Ok(())
}

async fn fetch_throughput(addr: SocketAddr, user: &str) -> anyhow::Result<f64> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(256 * 1024, s);
    greeting(&mut r).await?;
    r.get_mut()
        .write_all(format!("a LOGIN {user} {BACKEND_PASSWORD}\r\nb SELECT INBOX\r\n").as_bytes())
        .await?;
    expect_ok(&mut r, "a").await?;
    expect_ok(&mut r, "b").await?;
    let t = Instant::now();
    r.get_mut().write_all(b"c FETCH 1 BODY.PEEK[]\r\n").await?;
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let size: usize = line
        .rsplit('{')
        .next()
        .and_then(|s| s.trim_end().trim_end_matches('}').parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no literal in {line:?}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len());
        let n = r.read(&mut buf[..want]).await?;
        if n == 0 {
            bail!("EOF in literal");
        }
        left -= n;
    }
    expect_ok(&mut r, "c").await?;
    let secs = t.elapsed().as_secs_f64();
    r.get_mut().write_all(b"d LOGOUT\r\n").await?;
    let _ = tagged(&mut r, "d").await;
    Ok(size as f64 / secs)
}

async fn lmtp_deliver(addr: SocketAddr, rcpt: &str, body: &[u8]) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l).await?;
    if !l.starts_with("220") {
        bail!("LMTP greeting {l:?}");
    }
    r.get_mut()
        .write_all(
            format!("LHLO bench\r\nMAIL FROM:<b@example.com>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
                .as_bytes(),
        )
        .await?;
    for _ in 0..MAX_LINES_PER_REPLY {
        l.clear();
        if r.read_line(&mut l).await? == 0 {
            bail!("LMTP EOF before DATA");
        }
        if l.starts_with("354") {
            break;
        }
        if l.starts_with('4') || l.starts_with('5') {
            bail!("LMTP refused: {l:?}");
        }
    }
    r.get_mut().write_all(body).await?;
    r.get_mut().write_all(b".\r\n").await?;
    l.clear();
    r.read_line(&mut l).await?;
    if !l.starts_with("250") {
        bail!("LMTP DATA: {l:?}");
    }
    let _ = r.get_mut().write_all(b"QUIT\r\n").await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Load points

#[derive(Clone, Debug, Default)]
struct Point {
    /// Every login's latency, ms (for percentiles pooled over rounds).
    lat: Vec<f64>,
    logins: usize,
    rate: f64,
    p50: f64,
    p99: f64,
    errors: usize,
    first_error: Option<String>,
}

impl Point {
    /// One timed login of user `u` through `target`: its latency, or an error.
    async fn login(&mut self, target: &Target, u: usize) {
        let user = user_name(u);
        let t = Instant::now();
        match tokio::time::timeout(OP_TIMEOUT, login_logout(target.addr(u), &user)).await {
            Ok(Ok(())) => self.lat.push(t.elapsed().as_secs_f64() * 1000.0),
            Ok(Err(e)) => self.error(format!("{user}: {e:#}")),
            Err(_) => self.error(format!("{user}: timed out")),
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    /// Adds another worker's logins and errors.
    fn merge(&mut self, other: Point) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Sorts the latencies and sets the count, percentiles and `rate`.
    fn finish(mut self, rate: impl FnOnce(&[f64]) -> f64) -> Point {
        self.lat.sort_by(f64::total_cmp);
        self.logins = self.lat.len();
        self.rate = rate(&self.lat);
        self.p50 = percentile(&self.lat, 0.5);
        self.p99 = percentile(&self.lat, 0.99);
        self
    }
}

/// The `q` quantile of sorted values (NaN when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// `conc` workers log users in and out against `target` for `dur`; worker `w` takes users
/// `w, w+conc, …` so every path sees the same user sequence.
async fn run_point(conc: usize, dur: Duration, users: usize, target: Target) -> Point {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for w in 0..conc {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut p = Point::default();
            let mut i = w;
            while Instant::now() < deadline {
                p.login(&target, i % users).await;
                i += conc;
            }
            p
        }));
    }
    let mut point = Point::default();
    for t in tasks {
        point.merge(t.await.expect("worker panicked"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    point.finish(|lat| lat.len() as f64 / elapsed)
}

/// Concurrency 1, all paths interleaved login by login (the first path of each turn
/// rotates), for `dur`: every path sees the same moment of a machine whose speed drifts, so
/// latencies compare directly. The rate is 1 / mean latency.
async fn run_interleaved(dur: Duration, users: usize, targets: &[Target]) -> Vec<Point> {
    let deadline = Instant::now() + dur;
    let n = targets.len();
    let mut points = vec![Point::default(); n];
    let mut turn = 0usize;
    while Instant::now() < deadline {
        for k in 0..n {
            let i = (k + turn) % n;
            points[i].login(&targets[i], turn % users).await;
        }
        turn += 1;
    }
    points
        .into_iter()
        .map(|p| p.finish(|lat| 1000.0 * lat.len() as f64 / lat.iter().sum::<f64>()))
        .collect()
}

/// Logs every user in once (creates the mailboxes), bounded.
async fn prepare_users(users: usize, target: Target) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PREPARE_CONCURRENCY {
        let (next, target) = (Arc::clone(&next), target.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let u = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if u >= users {
                    return Ok::<(), anyhow::Error>(());
                }
                let user = user_name(u);
                tokio::time::timeout(OP_TIMEOUT, login_logout(target.addr(u), &user))
                    .await
                    .map_err(|_| anyhow::anyhow!("{user}: timed out"))?
                    .with_context(|| format!("first login of {user}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (comm, ppid, utime+stime, cutime+cstime) of one process, in clock ticks.
fn proc_stat(pid: i32) -> Option<(String, i32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = f.get(1)?.parse().ok()?;
    Some((comm, ppid, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// CPU ticks of one Dovecot instance, by process name: its master's children (live ones by
/// PID, exited ones through the master's cutime+cstime) and the master itself.
#[derive(Clone, Debug, Default)]
struct InstanceCpu {
    by_pid: HashMap<i32, (String, u64)>,
    master_self: u64,
    master_children: u64,
}

fn instance_cpu(master: i32) -> InstanceCpu {
    let mut cpu = InstanceCpu::default();
    if let Some((_, _, own, reaped)) = proc_stat(master) {
        cpu.master_self = own;
        cpu.master_children = reaped;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((comm, ppid, ticks, _)) = proc_stat(pid) {
                if ppid == master {
                    cpu.by_pid.insert(pid, (comm, ticks));
                }
            }
        }
    }
    cpu
}

/// Ticks used between two snapshots, by group name (`exited` = reaped children, `master`).
fn cpu_delta(before: &InstanceCpu, after: &InstanceCpu) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for (pid, (comm, t)) in &after.by_pid {
        let was = before
            .by_pid
            .get(pid)
            .filter(|(c, _)| c == comm)
            .map_or(0, |(_, t)| *t);
        *out.entry(comm.clone()).or_default() += t.saturating_sub(was);
    }
    *out.entry("master".into()).or_default() +=
        after.master_self.saturating_sub(before.master_self);
    *out.entry("exited".into()).or_default() +=
        after.master_children.saturating_sub(before.master_children);
    out
}

/// Everything whose CPU is charged to a point.
struct CpuSnapshot {
    directord: u64,
    dovecot: Option<InstanceCpu>,
    backends: Vec<InstanceCpu>,
    client: u64,
}

struct Pids {
    directord: i32,
    dovecot: Option<i32>,
    backends: Vec<i32>,
}

fn snapshot(p: &Pids) -> CpuSnapshot {
    CpuSnapshot {
        directord: proc_stat(p.directord).map_or(0, |s| s.2),
        dovecot: p.dovecot.map(instance_cpu),
        backends: p.backends.iter().map(|m| instance_cpu(*m)).collect(),
        client: proc_stat(std::process::id() as i32).map_or(0, |s| s.2),
    }
}

/// CPU ticks charged to one path over all its points.
#[derive(Clone, Default)]
struct PathCpu {
    logins: usize,
    directord: u64,
    dovecot: HashMap<String, u64>,
    backends: u64,
    client: u64,
}

impl PathCpu {
    fn add(&mut self, logins: usize, a: &CpuSnapshot, b: &CpuSnapshot) {
        self.logins += logins;
        self.directord += b.directord.saturating_sub(a.directord);
        if let (Some(x), Some(y)) = (&a.dovecot, &b.dovecot) {
            for (k, v) in cpu_delta(x, y) {
                *self.dovecot.entry(k).or_default() += v;
            }
        }
        for (x, y) in a.backends.iter().zip(&b.backends) {
            self.backends += cpu_delta(x, y).values().sum::<u64>();
        }
        self.client += b.client.saturating_sub(a.client);
    }
}

// ---------------------------------------------------------------------------------------------
// directord as a separate process

struct Directord {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    imap: SocketAddr,
    admin_socket: PathBuf,
    log: PathBuf,
}

impl Directord {
    fn start(bin: &Path, config_body: &str, imap: SocketAddr) -> anyhow::Result<Directord> {
        let dir = tempfile::Builder::new()
            .prefix("proxy-bench-directord-")
            .tempdir()?;
        let log = dir.path().join("directord.log");
        let config = dir.path().join("directord.conf");
        std::fs::write(
            &config,
            format!(
                "base_dir = {run}\nlog_path = {log}\ninfo_log_path =\ndebug_log_path =\n{config_body}",
                run = dir.path().join("run").display(),
                log = log.display(),
            ),
        )?;
        let mut child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("directord stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = StdBufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let mut d = Directord {
            child: Some(child),
            _dir: dir,
            imap,
            admin_socket: PathBuf::new(),
            log,
        };
        let first = rx
            .recv_timeout(DIRECTORD_READY)
            .map_err(|_| anyhow::anyhow!("directord printed nothing; log:\n{}", d.log_text()))?;
        d.admin_socket = PathBuf::from(
            first
                .strip_prefix("directord: admin socket ")
                .with_context(|| format!("unexpected first line {first:?}"))?,
        );
        Ok(d)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + DIRECTORD_STOP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Directord {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `directord` binary: `DIRECTORD_BIN`, else `release/directord` next to this example,
/// built first with the `cargo` that runs us (same target dir).
fn directord_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DIRECTORD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // <target>/release/examples/proxy_bench
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target dir")?;
    let target_dir = profile_dir
        .parent()
        .context("cannot locate the target dir")?;
    let bin = profile_dir.join("directord");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        eprintln!("proxy_bench: cargo build --release -p directord");
        let st = Command::new(cargo)
            .args(["build", "--release", "-p", "directord", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .context("running cargo build -p directord")?;
        if !st.success() {
            bail!("cargo build --release -p directord failed ({st})");
        }
    }
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p directord` first or set DIRECTORD_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The hashed host of each user, from an admin `USER-LOOKUP` (`current expire hashed initial`).
fn lookup_homes(admin: &mut AdminClient, users: &[String]) -> anyhow::Result<Vec<IpAddr>> {
    users
        .iter()
        .map(|u| {
            let lines = admin.command(&format!("USER-LOOKUP\t{u}\t"))?;
            let line = lines.first().cloned().unwrap_or_default();
            let f: Vec<&str> = line.split('\t').collect();
            let current = f.first().and_then(|s| s.parse::<IpAddr>().ok());
            let hashed = f.get(2).and_then(|s| s.parse::<IpAddr>().ok());
            current
                .or(hashed)
                .with_context(|| format!("USER-LOOKUP {u} answered {line:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Report helpers

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn pct(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.1} %", 100.0 * a / b)
    } else {
        "–".into()
    }
}

fn num(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "–".into()
    }
}

struct Args {
    secs: u64,
    rounds: usize,
    users: usize,
    /// Concurrencies to measure (`--conc 64` or `--conc 1,64`); default all four.
    conc: Vec<usize>,
    /// `--no-dovecot`: leave out the Dovecot director path (quicker experiments).
    no_dovecot: bool,
    /// `--split-cpus`: backends on the upper half of the CPUs, everything else (client,
    /// `directord`, the Dovecot director) on the lower half.
    split_cpus: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        secs: DEFAULT_SECS,
        rounds: DEFAULT_ROUNDS,
        users: DEFAULT_USERS,
        conc: CONCURRENCIES.to_vec(),
        no_dovecot: false,
        split_cpus: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| -> anyhow::Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--secs" => a.secs = val("--secs")?,
            "--rounds" => a.rounds = val("--rounds")? as usize,
            "--no-dovecot" => a.no_dovecot = true,
            "--split-cpus" => a.split_cpus = true,
            "--users" => a.users = val("--users")? as usize,
            "--conc" => {
                a.conc = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|c| c.trim().parse::<usize>().ok().filter(|c| *c > 0))
                    .collect::<Option<Vec<_>>>()
                    .context("--conc needs positive numbers, e.g. 64 or 1,64")?;
            }
            other => match other.parse() {
                Ok(n) => a.secs = n,
                Err(_) => bail!(
                    "usage: proxy_bench [--secs N] [--rounds N] [--users N] [--conc N[,N...]] [--no-dovecot] [--split-cpus]"
                ),
            },
        }
    }
    if a.secs == 0 || a.rounds == 0 || a.users == 0 {
        bail!("--secs, --rounds and --users must be positive");
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    require_dovecot();
    let directord_bin = directord_binary()?;
    let dur = Duration::from_secs(args.secs);
    let split = if args.split_cpus {
        Some(CpuSplit::new()?)
    } else {
        None
    };
    if let Some(s) = &split {
        // Inherited by every process started below; backends are moved afterwards.
        pin_threads(std::process::id() as i32, &s.front)?;
    }

    let mut alloc = LoopbackAllocator::new();
    let dip = alloc.next_ip(); // directord
    let vip = alloc.next_ip(); // Dovecot director proxy
    let ips: Vec<Ipv4Addr> = (0..3).map(|_| alloc.next_ip()).collect();
    let backends = DovecotBackend::start_group(&ips, [None; 3], |o| {
        o.extra_config.push("auth_cache_size = 1M".into());
        o.extra_config
            .push("service imap-login {\n service_count = 0\n process_min_avail = 2\n}".into());
    })?;
    let (bimap, blmtp) = (
        backends[0].imap_addr().port(),
        backends[0].lmtp_addr().port(),
    );
    if let Some(s) = &split {
        for b in &backends {
            // The master and what it runs now; later children inherit the master's mask.
            pin_tree(b.master_pid().context("backend master PID")?, &s.back)?;
        }
    }
    let mail_servers = ips
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ");

    // directord: separate process, Dovecot-syntax config.
    let dport = free_port(IpAddr::V4(dip))?;
    let dconf = format!(
        "director_mail_servers = {mail_servers}\n\
         director_backend_port_imap = {bimap}\n\
         disable_plaintext_auth = no\n\
         ssl = no\n\
         director_proxy_max_connections_per_ip = 10000\n\
         director_proxy_drain_time = {DIRECTORD_DRAIN}\n\
         service imap-login {{\n inet_listener imap {{\n address = {dip}\n port = {dport}\n }}\n}}\n\
         {extra}\n",
        extra = std::env::var("DIRECTORD_EXTRA_CONFIG").unwrap_or_default(),
    );
    let mut directord = Directord::start(
        &directord_bin,
        &dconf,
        SocketAddr::new(IpAddr::V4(dip), dport),
    )?;
    let directord_addr = directord.imap;
    let ready = Instant::now() + DIRECTORD_READY;
    loop {
        match login_logout(directord_addr, "probe@example.com").await {
            Ok(()) => break,
            Err(e) if Instant::now() > ready => {
                bail!(
                    "directord never proxied a login: {e:#}; log:\n{}",
                    directord.log_text()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    // The real Dovecot director proxy, or why not.
    let dovecot = if args.no_dovecot {
        Err("skipped (--no-dovecot)".to_string())
    } else {
        DovecotDirectorProxy::start(
            DirectorProxyOptions::new(mail_servers.clone(), bimap).with_ip(vip),
        )
        .map_err(|e| format!("{e}"))
    };

    // Where each user lives: directord's USER-LOOKUP; the Dovecot director must agree.
    let users: Vec<String> = (0..args.users).map(user_name).collect();
    let mut dadmin = AdminClient::connect_unix(&directord.admin_socket)?;
    let home_ips = lookup_homes(&mut dadmin, &users)?;
    let mut notes = Vec::new();
    if let Ok(d) = &dovecot {
        let theirs = lookup_homes(&mut d.admin_client()?, &users)?;
        let differ = home_ips.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        notes.push(format!(
            "Routing check: the Dovecot director's USER-LOOKUP agrees with directord's for {} of {} users.",
            users.len() - differ,
            users.len()
        ));
    }
    let homes: Arc<Vec<SocketAddr>> = Arc::new(
        home_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, bimap))
            .collect(),
    );

    let mut paths: Vec<(PathKind, Target)> = vec![
        (PathKind::Direct, Target::Direct(Arc::clone(&homes))),
        (PathKind::Directord, Target::Proxy(directord_addr)),
    ];
    if let Ok(d) = &dovecot {
        paths.push((PathKind::Dovecot, Target::Proxy(d.imap_addr())));
    }
    let pids = Pids {
        directord: directord.pid(),
        dovecot: dovecot.as_ref().ok().and_then(|d| d.master_pid()),
        backends: backends
            .iter()
            .filter_map(DovecotBackend::master_pid)
            .collect(),
    };

    eprintln!("proxy_bench: first login of {} users (direct)", args.users);
    prepare_users(args.users, Target::Direct(Arc::clone(&homes))).await?;
    for (kind, target) in &paths {
        if *kind != PathKind::Direct {
            let w = run_point(4, WARMUP, args.users, target.clone()).await;
            if w.errors > 0 {
                notes.push(format!(
                    "Warm-up of {}: {} errors (first: {})",
                    kind.name(),
                    w.errors,
                    w.first_error.unwrap_or_default()
                ));
            }
        }
    }

    // Login points: at each concurrency, `rounds` rounds, path order rotating.
    let ticks = clock_ticks();
    let mut results: HashMap<(usize, PathKind), Vec<Point>> = HashMap::new();
    let mut per_round: Vec<(usize, usize, PathKind, Point)> = Vec::new();
    let mut cpu: HashMap<PathKind, PathCpu> = HashMap::new();
    for &conc in &args.conc {
        for round in 0..args.rounds {
            if conc == 1 {
                eprintln!("proxy_bench: c=1 round {} (paths interleaved)", round + 1);
                let targets: Vec<Target> = paths.iter().map(|(_, t)| t.clone()).collect();
                let points = run_interleaved(dur, args.users, &targets).await;
                for ((kind, _), p) in paths.iter().zip(points) {
                    results.entry((conc, *kind)).or_default().push(p.clone());
                    per_round.push((conc, round + 1, *kind, p));
                }
                continue;
            }
            for k in 0..paths.len() {
                let (kind, target) = &paths[(k + round) % paths.len()];
                eprintln!("proxy_bench: c={conc} round {} {}", round + 1, kind.name());
                let a = snapshot(&pids);
                let p = run_point(conc, dur, args.users, target.clone()).await;
                let b = snapshot(&pids);
                cpu.entry(*kind).or_default().add(p.logins, &a, &b);
                results.entry((conc, *kind)).or_default().push(p.clone());
                per_round.push((conc, round + 1, *kind, p));
            }
        }
    }

    // FETCH: one 32 MiB message delivered by LMTP straight to its backend.
    let big_user = "bigmail@example.com";
    let big_home = lookup_homes(&mut dadmin, &[big_user.to_string()])?[0];
    let mut body = Vec::with_capacity(FETCH_BYTES + 128);
    body.extend_from_slice(b"Subject: big\r\n\r\n");
    while body.len() < FETCH_BYTES {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n",
        );
    }
    lmtp_deliver(SocketAddr::new(big_home, blmtp), big_user, &body).await?;
    let mut fetch: HashMap<PathKind, Vec<f64>> = HashMap::new();
    for run in 0..FETCH_RUNS {
        for k in 0..paths.len() {
            let (kind, target) = &paths[(k + run) % paths.len()];
            let addr = match target {
                Target::Direct(_) => SocketAddr::new(big_home, bimap),
                Target::Proxy(a) => *a,
            };
            let r = tokio::time::timeout(OP_TIMEOUT, fetch_throughput(addr, big_user))
                .await
                .map_err(|_| anyhow::anyhow!("FETCH via {} timed out", kind.name()))?
                .with_context(|| format!("FETCH via {}", kind.name()))?;
            fetch.entry(*kind).or_default().push(r / 1e6);
        }
    }

    // ---- report ----
    let med = |conc: usize, kind: PathKind, f: fn(&Point) -> f64| -> f64 {
        results
            .get(&(conc, kind))
            .map_or(f64::NAN, |v| median(&v.iter().map(f).collect::<Vec<_>>()))
    };
    println!(
        "# Proxy benchmark: direct vs directord vs Dovecot 2.3 director proxy\n\n\
         IMAP LOGIN+LOGOUT, {} s per point, {} round(s) per concurrency (path order rotating), \
         {} users over 3 real Dovecot backends ({}); directord = `{}` (separate process); \
         client = this process (tokio). Medians over rounds; added p50 = median p50 − median \
         direct p50.\n",
        args.secs,
        args.rounds,
        args.users,
        mail_servers,
        directord_bin.display()
    );
    match &dovecot {
        Ok(_) => println!(
            "dovecot-director = real Dovecot {} director + `imap-login director` \
             (service_count=0, process_min_avail=2), static passdb proxy=y nopassword=y.\n",
            dovecot_version()
        ),
        Err(e) => println!("**dovecot-director: NOT MEASURED**, it did not start here: {e}\n"),
    }
    match &split {
        Some(s) => println!("CPUs split (`--split-cpus`): {}.\n", s.desc),
        None => println!("CPUs shared: backends, proxies and client all run on every CPU.\n"),
    }
    let dv = PathKind::Dovecot;
    let has_dv = dovecot.is_ok();
    println!("## Login rate and latency (medians)\n");
    println!(
        "| c | direct/s | directord/s | dovecot-director/s | directord/direct | dovecot/direct \
         | direct p50 ms | directord p50 | dovecot p50 | added p50 directord | added p50 dovecot \
         | direct p99 ms | directord p99 | dovecot p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &conc in &args.conc {
        let r = |k| med(conc, k, |p| p.rate);
        let p50 = |k| med(conc, k, |p| p.p50);
        let p99 = |k| med(conc, k, |p| p.p99);
        let (d, o) = (PathKind::Direct, PathKind::Directord);
        let ifdv = |x: f64| if has_dv { x } else { f64::NAN };
        println!(
            "| {conc} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(r(d), 0),
            num(r(o), 0),
            num(ifdv(r(dv)), 0),
            pct(r(o), r(d)),
            pct(ifdv(r(dv)), r(d)),
            num(p50(d), 2),
            num(p50(o), 2),
            num(ifdv(p50(dv)), 2),
            num(p50(o) - p50(d), 2),
            num(ifdv(p50(dv)) - p50(d), 2),
            num(p99(d), 2),
            num(p99(o), 2),
            num(ifdv(p99(dv)), 2),
        );
    }
    // The machine's speed drifts (a shared VM); paths measured in the same round ran back to
    // back, so per-round ratios cancel most of the drift that ratios of medians keep.
    println!(
        "\n## Per-round ratios (the paths of one round ran back to back)\n\n\
         Median over rounds of each round's ratio to direct (min–max), and the pooled ratio \
         (all logins of all rounds).\n"
    );
    println!(
        "| c | directord/direct rate | pooled | directord/direct p99 | dovecot/direct rate | pooled | dovecot/direct p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut pooled_lat = String::new();
    for &conc in &args.conc {
        let ratios = |kind: PathKind, f: fn(&Point) -> f64| -> Vec<f64> {
            let of = |k: PathKind| -> Vec<f64> {
                let mut v: Vec<(usize, f64)> = per_round
                    .iter()
                    .filter(|(c, _, pk, _)| *c == conc && *pk == k)
                    .map(|(_, r, _, p)| (*r, f(p)))
                    .collect();
                v.sort_by_key(|(r, _)| *r);
                v.into_iter().map(|(_, x)| x).collect()
            };
            of(kind)
                .iter()
                .zip(of(PathKind::Direct))
                .map(|(x, d)| x / d)
                .collect()
        };
        let pooled = |kind: PathKind| -> f64 {
            let total = |k: PathKind| -> f64 {
                per_round
                    .iter()
                    .filter(|(c, _, pk, _)| *c == conc && *pk == k)
                    .map(|(_, _, _, p)| p.logins as f64)
                    .sum()
            };
            // NaN for a path that was not measured.
            match total(kind) {
                0.0 => f64::NAN,
                t => t / total(PathKind::Direct),
            }
        };
        let cell = |v: Vec<f64>| -> String {
            if v.is_empty() {
                return "–".into();
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{:.1} % ({:.1}–{:.1})",
                median(&v) * 100.0,
                lo * 100.0,
                hi * 100.0
            )
        };
        let (o, dv) = (PathKind::Directord, PathKind::Dovecot);
        let pooled_pct = |kind: PathKind, q: f64| -> f64 {
            let mut all: Vec<f64> = per_round
                .iter()
                .filter(|(c, _, pk, _)| *c == conc && *pk == kind)
                .flat_map(|(_, _, _, p)| p.lat.iter().copied())
                .collect();
            all.sort_by(f64::total_cmp);
            percentile(&all, q)
        };
        let d = PathKind::Direct;
        pooled_lat.push_str(&format!(
            "| {conc} | {} / {} / {} | {} | {} | {} / {} / {} |\n",
            num(pooled_pct(d, 0.5), 2),
            num(pooled_pct(o, 0.5), 2),
            num(pooled_pct(dv, 0.5), 2),
            num(pooled_pct(o, 0.5) - pooled_pct(d, 0.5), 2),
            num(pooled_pct(dv, 0.5) - pooled_pct(d, 0.5), 2),
            num(pooled_pct(d, 0.99), 2),
            num(pooled_pct(o, 0.99), 2),
            num(pooled_pct(dv, 0.99), 2),
        ));
        println!(
            "| {conc} | {} | {} | {} | {} | {} | {} |",
            cell(ratios(o, |p| p.rate)),
            pct(pooled(o), 1.0),
            cell(ratios(o, |p| p.p99)),
            cell(ratios(dv, |p| p.rate)),
            pct(pooled(dv), 1.0),
            cell(ratios(dv, |p| p.p99)),
        );
    }
    println!(
        "\nLatency percentiles pooled over all rounds (ms):\n\n\
         | c | p50 direct / directord / dovecot | added p50 directord | added p50 dovecot \
         | p99 direct / directord / dovecot |\n|---|---|---|---|---|\n{pooled_lat}"
    );
    println!("\n### Every round\n");
    println!("| c | round | path | logins | logins/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for (conc, round, kind, p) in &per_round {
        println!(
            "| {conc} | {round} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            p.logins,
            num(p.rate, 0),
            num(p.p50, 2),
            num(p.p99, 2),
            p.errors
        );
    }
    let errs: Vec<String> = per_round
        .iter()
        .filter_map(|(c, r, k, p)| {
            p.first_error.as_ref().map(|e| {
                format!(
                    "c={c} round {r} {}: {} errors, first: {e}",
                    k.name(),
                    p.errors
                )
            })
        })
        .collect();
    if !errs.is_empty() {
        println!("\nErrors:\n");
        for e in errs {
            println!("- {e}");
        }
    }

    println!("\n## CPU seconds per 1000 logins (utime+stime, all points of that path)\n");
    let per_k = |ticks_used: u64, logins: usize| -> String {
        if logins == 0 {
            "–".into()
        } else {
            format!("{:.3}", ticks_used as f64 / ticks / logins as f64 * 1000.0)
        }
    };
    println!(
        "| path | logins | directord | dovecot director | dovecot imap-login | dovecot auth \
         | dovecot other+exited | dovecot total | 3 backends | client |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (kind, _) in &paths {
        let c = cpu.get(kind).cloned().unwrap_or_default();
        let g = |name: &str| c.dovecot.get(name).copied().unwrap_or(0);
        let total: u64 = c.dovecot.values().sum();
        let other = total - g("director") - g("imap-login") - g("auth");
        let show_dv = has_dv;
        let dvcol = |t: u64| {
            if show_dv {
                per_k(t, c.logins)
            } else {
                "–".into()
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            c.logins,
            per_k(c.directord, c.logins),
            dvcol(g("director")),
            dvcol(g("imap-login")),
            dvcol(g("auth")),
            dvcol(other),
            dvcol(total),
            per_k(c.backends, c.logins),
            per_k(c.client, c.logins),
        );
    }
    println!(
        "\nEach row is charged only with the CPU used while that path was measured, so the \
         directord column of the directord row and the dovecot columns of the dovecot-director \
         row are the proxies' cost; the other cells show their idle cost."
    );

    println!(
        "\n## FETCH of one {} MiB message (median of {FETCH_RUNS}, MB/s)\n",
        FETCH_BYTES >> 20
    );
    println!("| path | MB/s (median) | runs | vs direct |");
    println!("|---|---|---|---|");
    let fmed = |k: PathKind| fetch.get(&k).map_or(f64::NAN, |v| median(v));
    for (kind, _) in &paths {
        let runs = fetch
            .get(kind)
            .map(|v| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        println!(
            "| {} | {} | {runs} | {} |",
            kind.name(),
            num(fmed(*kind), 1),
            pct(fmed(*kind), fmed(PathKind::Direct))
        );
    }
    if let Ok(d) = &dovecot {
        // The Dovecot proxy really replayed the logins to the backends (its own log says so).
        let log = d.log();
        let started = log.matches("Started proxying").count();
        let mut hosts: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Started proxying"))
            .filter_map(|l| l.split("proxy(").nth(1))
            .filter_map(|l| l.split(',').nth(1))
            .filter_map(|hp| hp.split(':').next())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        notes.push(format!(
            "dovecot-director log: {started} \"Started proxying\" lines, to backends {hosts:?}."
        ));
    }
    if !notes.is_empty() {
        println!();
        for n in &notes {
            println!("{n}");
        }
    }
    std::io::stdout().flush()?;

    directord.stop();
    drop(dovecot);
    drop(backends);
    Ok(())
}

fn dovecot_version() -> String {
    Command::new("dovecot")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".into())
}
