//! A loaded ring: ring traffic per new-user login, memory per user on every director, and
//! the time a restarted director takes to rejoin a ring holding all those users.
//!
//! For each kind (ours, then Dovecot's), three directors on fresh 127.x addresses:
//! 1. **Traffic**: the sum of every director's ring `bytes out` (`DIRECTOR-LIST`) around
//!    `logins` new-user logins through director 0's login path, less the cost of the
//!    `HOST-SET` that marks the end (measured alone first); and the ring's messages in the
//!    same span, counted on the wire (`tcpdump` on the ring port, lines in the payloads). Ours: nginx `auth_http` requests
//!    (`inet_listener director-auth-http`); Dovecot's: auth-master `PASS` lookups on its
//!    `director-userdb` socket. Both create the assignment through the director's request
//!    path, as a proxy's login does.
//! 2. **Memory**: `users` more new-user logins the same way, a `HOST-SET` that comes back
//!    once every director has processed them (a ring is FIFO), 12 s to settle, then each
//!    director process's RSS growth divided by the users it lists.
//! 3. **Join**: director 2 is stopped and started again; the time from starting it until
//!    it reports `ring synced` (it has received every user from its neighbours by then).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use testkit::{AdminClient, DovecotDirector, LoopbackAllocator};

use super::capture::{Capture, Counted};
use super::{servers, start_one_dovecot, start_one_ours, wait_synced, Ours, WAIT};

/// Auth-master `PASS` lookups in flight.
const WINDOW: u32 = 100;
/// Time for the allocator to return what the loading freed (jemalloc's background purge).
const SETTLE: Duration = Duration::from_secs(12);
/// Between restarts of director 2: longer than the 40 s a ring link must live so that its
/// loss is not a network failure.
const LINK_SETTLE: Duration = Duration::from_secs(41);

/// What one ring measured.
struct Figures {
    bytes_per_login: f64,
    messages_per_login: f64,
    users_listed: [u64; 3],
    bytes_per_user: [f64; 3],
    /// Each rejoin, in order.
    joins: Vec<Duration>,
}

impl Figures {
    /// The median rejoin.
    fn join(&self) -> Duration {
        let mut j = self.joins.clone();
        j.sort();
        j.get(j.len() / 2).copied().unwrap_or_default()
    }
}

/// Which rings to measure: ours, ours built from other code (`--base-bin`), Dovecot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Base,
    Dovecot,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Base => "base",
            Kind::Dovecot => "dovecot",
        }
    }

    /// `ours`, `base` or `dovecot`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "ours" => Kind::Ours,
            "base" => Kind::Base,
            "dovecot" => Kind::Dovecot,
            other => bail!("unknown ring kind {other:?} (ours, base, dovecot)"),
        })
    }
}

/// What to run.
pub struct Plan<'a> {
    pub bin: &'a Path,
    pub base_bin: Option<&'a Path>,
    pub kinds: Vec<Kind>,
    pub users: u32,
    pub logins: u32,
    pub rejoins: usize,
}

enum Member {
    Ours(Ours),
    Dovecot(DovecotDirector),
}

impl Member {
    fn admin(&self) -> anyhow::Result<AdminClient> {
        Ok(match self {
            Member::Ours(d) => AdminClient::connect_unix(&d.socket)?,
            Member::Dovecot(d) => d.admin_client()?,
        })
    }

    fn admin_socket(&self) -> std::path::PathBuf {
        match self {
            Member::Ours(d) => d.socket.clone(),
            Member::Dovecot(d) => d.admin_socket_path(),
        }
    }

    /// The process that holds the director's state.
    fn pid(&self) -> anyhow::Result<i32> {
        match self {
            Member::Ours(d) => Ok(i32::try_from(d.child.id())?),
            Member::Dovecot(d) => {
                let master = d.master_pid().context("Dovecot is not running")?;
                dovecot_director_pid(master)
            }
        }
    }
}

/// The `director` child of a Dovecot master.
fn dovecot_director_pid(master: i32) -> anyhow::Result<i32> {
    for entry in std::fs::read_dir("/proc")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[..close];
        let ppid = stat[close + 2..].split_whitespace().nth(1);
        if comm.contains("director") && ppid == Some(master.to_string().as_str()) {
            return Ok(pid);
        }
    }
    bail!("no director process under Dovecot master {master}")
}

fn rss_kb(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_secs(pid: i32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at its closing paren.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ) in stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the paren.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The lines a capture counted; says so loudly when it lost some, since the messages per
/// login are then an undercount.
fn lossless(counted: Counted, kind: &str, what: &str) -> (u64, u64) {
    if counted.missing_bytes > 0 || counted.dropped_packets > 0 {
        eprintln!(
            "ring load: {kind}: WARNING: the {what} capture lost {} payload bytes and {} packets: \
             its message count is low",
            counted.missing_bytes, counted.dropped_packets
        );
    }
    (counted.lines, counted.bytes)
}

/// The sum of `bytes out` of every ring connection of every director.
fn ring_bytes_out(admins: &mut [AdminClient]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for a in admins.iter_mut() {
        for row in a.command("DIRECTOR-LIST")? {
            let f: Vec<&str> = row.split('\t').collect();
            if f.len() == 12 {
                sum += f[7].parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(sum)
}

/// `HOST-SET` on director 0; returns once it went round and the ring is synced again.
/// On a connection of its own with a long read timeout: a ring still settling after its
/// start, or busy with a million users, may take longer than [`AdminClient`]'s 10 s.
fn marker(ring: &[Member], admins: &mut [AdminClient], ip: &str) -> anyhow::Result<()> {
    let (mut w, mut r) = raw_admin(&ring[0].admin_socket())?;
    let deadline = Instant::now() + WAIT;
    let mut reply = String::new();
    loop {
        w.write_all(format!("HOST-SET\t{ip}\t1\n").as_bytes())?;
        reply.clear();
        r.read_line(&mut reply)?;
        match reply.trim_end() {
            "OK" => break,
            // Dovecot's answer after 30 s without a synced ring.
            "Ring sync timed out" if Instant::now() < deadline => continue,
            other => bail!("HOST-SET {ip} answered {other:?}"),
        }
    }
    wait_synced(admins)
}

/// A raw admin connection for pipelining, past [`AdminClient`]'s list-length bound.
fn raw_admin(path: &Path) -> anyhow::Result<(UnixStream, BufReader<UnixStream>)> {
    let s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
    s.set_read_timeout(Some(WAIT))?;
    let mut w = s.try_clone()?;
    w.write_all(b"VERSION\tdirector-doveadm\t1\t0\n")?;
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting)?;
    if !greeting.starts_with("VERSION\t") {
        bail!("admin greeting {greeting:?}");
    }
    Ok((w, r))
}

/// Lines of `USER-LIST`.
fn users_listed(admin: &Path) -> anyhow::Result<u64> {
    let (mut w, mut r) = raw_admin(admin)?;
    w.write_all(b"USER-LIST\n")?;
    let mut n = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            bail!("USER-LIST ended early");
        }
        if line == b"\n" {
            return Ok(n);
        }
        n += 1;
    }
}

/// Clients asking our `auth_http` endpoint at once, each from its own 127.0.9.x address
/// (a million short connections from one address would run out of ports).
const HTTP_CLIENTS: u32 = 4;

/// `n` new users (`{prefix}{i}@example.com`) through our `auth_http` endpoint.
fn logins_ours(addr: SocketAddr, prefix: &str, n: u32) -> anyhow::Result<()> {
    let threads: Vec<_> = (0..HTTP_CLIENTS)
        .map(|t| {
            let prefix = prefix.to_string();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 9, t as u8 + 1)), 0);
                let mut answer = String::new();
                for i in (t..n).step_by(HTTP_CLIENTS as usize) {
                    let socket =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                    socket.bind(&from.into())?;
                    socket.connect(&addr.into())?;
                    let mut s: TcpStream = socket.into();
                    s.set_read_timeout(Some(WAIT))?;
                    write!(
                        s,
                        "GET /auth HTTP/1.0\r\nAuth-User: {prefix}{i}@example.com\r\n\
                         Auth-Protocol: imap\r\nClient-IP: 127.0.0.1\r\n\r\n"
                    )?;
                    answer.clear();
                    s.read_to_string(&mut answer)?;
                    if !answer.contains("Auth-Status: OK") {
                        bail!("auth_http answered {answer:?}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("an auth_http client panicked"))??;
    }
    Ok(())
}

/// `n` new users through Dovecot's `director-userdb` socket (auth-master `PASS`).
fn logins_dovecot(socket: &Path, prefix: &str, n: u32) -> anyhow::Result<()> {
    let s = UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
    s.set_read_timeout(Some(WAIT))?;
    let mut w = s.try_clone()?;
    w.write_all(b"VERSION\t1\t0\n")?;
    let mut r = BufReader::new(s);
    let (mut sent, mut got, mut line) = (0u32, 0u32, String::new());
    while got < n {
        let mut batch = String::new();
        while sent < n && sent - got < WINDOW {
            sent += 1;
            batch.push_str(&format!(
                "PASS\t{sent}\t{prefix}{sent}@example.com\tservice=lmtp\n"
            ));
        }
        w.write_all(batch.as_bytes())?;
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("director-userdb closed");
        }
        if line.starts_with("PASS\t") {
            got += 1;
        } else if line.starts_with("NOTFOUND") || line.starts_with("FAIL") {
            bail!("director-userdb answered {line:?}");
        }
    }
    Ok(())
}

fn measure(kind: Kind, plan: &Plan) -> anyhow::Result<Figures> {
    let (users, logins) = (plan.users, plan.logins);
    let bin = match kind {
        Kind::Base => plan
            .base_bin
            .context("--base-bin PATH names the base directord")?,
        _ => plan.bin,
    };
    let ours = kind != Kind::Dovecot;
    let kind = kind.name();
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..3).map(|_| alloc.next_ip()).collect();
    let [port, http_port] = testkit::free_ports(IpAddr::V4(ips[0]), [None, None])?;
    let servers = servers(&ips, port);
    let auth_http = SocketAddr::new(IpAddr::V4(ips[0]), http_port);
    let start = |i: usize| -> anyhow::Result<Member> {
        Ok(if ours {
            let extra = if i == 0 {
                format!(
                    "  inet_listener director-auth-http {{\n    address = {}\n    port = {}\n  }}\n",
                    auth_http.ip(),
                    auth_http.port()
                )
            } else {
                String::new()
            };
            Member::Ours(start_one_ours(bin, ips[i], port, &servers, &extra)?)
        } else {
            Member::Dovecot(start_one_dovecot(ips[i], port, &servers)?)
        })
    };
    let mut ring = (0..3).map(start).collect::<anyhow::Result<Vec<_>>>()?;
    let mut admins = ring
        .iter()
        .map(Member::admin)
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_synced(&mut admins)?;

    let t0 = Instant::now();
    let step = |what: &str| {
        eprintln!(
            "ring load: {kind}: {what} at {:.1} s",
            t0.elapsed().as_secs_f64()
        )
    };
    step("synced");
    // Traffic.
    // `RING_BENCH_CAPTURES=DIR` keeps the captures there (`<kind>-marker.pcap`,
    // `<kind>-logins.pcap`), to see which messages a login costs.
    let captures = tempfile::tempdir()?;
    let capture_dir = std::env::var_os("RING_BENCH_CAPTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| captures.path().to_path_buf());
    let b0 = ring_bytes_out(&mut admins)?;
    let capture = Capture::start(port, &ips, &capture_dir, &format!("{kind}-marker"))?;
    marker(&ring, &mut admins, "127.0.3.1")?;
    let (marker_messages, marker_wire_bytes) = lossless(capture.count()?, kind, "marker");
    let marker_cost = ring_bytes_out(&mut admins)? - b0;
    let b1 = ring_bytes_out(&mut admins)?;
    let login = |prefix: &str, n: u32| match &ring[0] {
        Member::Ours(_) => logins_ours(auth_http, prefix, n),
        Member::Dovecot(d) => logins_dovecot(&d.userdb_socket_path(), prefix, n),
    };
    let capture = Capture::start(port, &ips, &capture_dir, &format!("{kind}-logins"))?;
    login("ringlogin", logins)?;
    marker(&ring, &mut admins, "127.0.3.2")?;
    let (messages, wire_bytes) = lossless(capture.count()?, kind, "logins");
    let b2 = ring_bytes_out(&mut admins)?;
    let bytes_per_login = (b2 - b1).saturating_sub(marker_cost) as f64 / f64::from(logins);
    let messages_per_login = messages.saturating_sub(marker_messages) as f64 / f64::from(logins);
    eprintln!(
        "ring load: {kind}: on the wire per login: {messages_per_login:.2} messages, {:.1} bytes",
        wire_bytes.saturating_sub(marker_wire_bytes) as f64 / f64::from(logins)
    );

    step("logins done");
    // Memory.
    let pids = ring
        .iter()
        .map(Member::pid)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let before = pids
        .iter()
        .map(|p| rss_kb(*p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    login("ringload", users)?;
    step("users loaded on director 0");
    // Fresh admin connections: the others sat idle through the loading.
    let mut admins = ring
        .iter()
        .map(Member::admin)
        .collect::<anyhow::Result<Vec<_>>>()?;
    marker(&ring, &mut admins, "127.0.3.3")?;
    step("every director has them");
    std::thread::sleep(SETTLE);
    let mut users_listed_by = [0u64; 3];
    let mut bytes_per_user = [0f64; 3];
    for i in 0..3 {
        let after = rss_kb(pids[i])?;
        users_listed_by[i] = users_listed(&ring[i].admin_socket())?;
        bytes_per_user[i] =
            after.saturating_sub(before[i]) as f64 * 1024.0 / users_listed_by[i].max(1) as f64;
    }

    step("memory measured");
    // Join.
    drop(admins);
    let mut joins = Vec::new();
    for n in 0..plan.rejoins.max(1) {
        if n > 0 {
            // Both kinds count a ring link that dies younger than 40 s as a network
            // failure and don't redial it for 60 s: the next restart waits until the
            // links are older.
            std::thread::sleep(LINK_SETTLE);
        }
        drop(ring.pop());
        let sender_cpu = cpu_secs(ring[1].pid()?)?;
        let started = Instant::now();
        ring.push(start(2)?);
        let perf = profile_join(kind, &ring, joins.len())?;
        let mut admins = ring
            .iter()
            .map(Member::admin)
            .collect::<anyhow::Result<Vec<_>>>()?;
        wait_synced(&mut admins[2..])?;
        joins.push(started.elapsed());
        let cpu = (
            cpu_secs(ring[2].pid()?)?,
            cpu_secs(ring[1].pid()?)? - sender_cpu,
        );
        if let Some(mut perf) = perf {
            // perf writes its file on SIGINT; it was started here, so its PID is ours.
            let _ = super::interrupt(&mut perf);
        }
        step(&format!(
            "rejoined in {:.2} s (CPU s: joiner {:.2}, director 1 {:.2})",
            started.elapsed().as_secs_f64(),
            cpu.0,
            cpu.1
        ));
        if std::env::var_os("RING_BENCH_LOG").is_some() {
            for (who, m) in [("d0", &ring[0]), ("d1", &ring[1]), ("joiner", &ring[2])] {
                if let Member::Ours(d) = m {
                    let log = std::fs::read_to_string(d._dir.path().join("directord.log"))?;
                    let lines: Vec<&str> = log.lines().collect();
                    for l in &lines[lines.len().saturating_sub(25)..] {
                        eprintln!("  {who}: {l}");
                    }
                }
            }
        }
        let rejoined = users_listed(&ring[2].admin_socket())?;
        if rejoined != users_listed_by[0] {
            bail!(
                "{kind}: the rejoined director lists {rejoined} users, director 0 {}",
                users_listed_by[0]
            );
        }
        // The next restart begins on a ring that is whole again.
        wait_synced(&mut admins)?;
    }
    eprintln!(
        "ring load: {kind}: rejoins (s): {}",
        joins
            .iter()
            .map(|j| format!("{:.2}", j.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(Figures {
        bytes_per_login,
        messages_per_login,
        users_listed: users_listed_by,
        bytes_per_user,
        joins,
    })
}

/// With `RING_BENCH_PERF=DIR`, records a profile (`perf record -g`) of the restarted
/// director and of the one that sends it the users (director 1) while it rejoins, to
/// `DIR/<kind>-<n>.data`. The profiler slows the join: such a run's times don't count.
fn profile_join(kind: &str, ring: &[Member], n: usize) -> anyhow::Result<Option<Child>> {
    let Some(dir) = std::env::var_os("RING_BENCH_PERF") else {
        return Ok(None);
    };
    let pids = format!("{},{}", ring[1].pid()?, ring[2].pid()?);
    let out = Path::new(&dir).join(format!("{kind}-{n}.data"));
    let child = Command::new("perf")
        .args(["record", "-q", "-F", "999", "-g", "-o"])
        .arg(&out)
        .args(["-p", &pids])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("perf record (apt-get install -y linux-perf)")?;
    Ok(Some(child))
}

/// Runs both rings and prints the table.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    let (users, logins) = (plan.users, plan.logins);
    println!(
        "\n## A loaded ring of 3: {logins} new-user logins, then {users} assignments, then a restart\n"
    );
    println!(
        "| ring | ring bytes per new-user login | ring messages per new-user login | users listed (each director) | bytes per user (d0 / d1 / d2) | rejoin with all users, s |"
    );
    println!("|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for &kind in &plan.kinds {
        let f = measure(kind, plan)?;
        let kind = kind.name();
        println!(
            "| {kind} | {:.1} | {:.2} | {} / {} / {} | {:.1} / {:.1} / {:.1} | {:.2} |",
            f.bytes_per_login,
            f.messages_per_login,
            f.users_listed[0],
            f.users_listed[1],
            f.users_listed[2],
            f.bytes_per_user[0],
            f.bytes_per_user[1],
            f.bytes_per_user[2],
            f.join().as_secs_f64()
        );
        all.push(f);
    }
    let (Some(o), Some(d)) = (all.first(), all.last()) else {
        return Ok(());
    };
    if all.len() < 2 {
        return Ok(());
    }
    let vs = format!(
        "{} / {}",
        plan.kinds[0].name(),
        plan.kinds[plan.kinds.len() - 1].name()
    );
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    println!(
        "| {vs} | {:.2} | {:.2} | | {:.2} / {:.2} / {:.2} | {:.2} |",
        ratio(o.bytes_per_login, d.bytes_per_login),
        ratio(o.messages_per_login, d.messages_per_login),
        ratio(o.bytes_per_user[0], d.bytes_per_user[0]),
        ratio(o.bytes_per_user[1], d.bytes_per_user[1]),
        ratio(o.bytes_per_user[2], d.bytes_per_user[2]),
        ratio(o.join().as_secs_f64(), d.join().as_secs_f64()),
    );
    Ok(())
}
