//! Benchmark (not a test): how fast a host change reaches every director of a ring, for a
//! ring of our `directord` and a ring of real Dovecot 2.3 directors, in the same run.
//!
//! ```text
//! cargo build --release -p directord -p director-bench
//! target/release/ring [--directors 3,5] [--rounds 20] [--users 1000000] [--logins 10000]
//! ```
//!
//! The second part (`load.rs`, skipped with `--no-load`) loads a ring of three with users
//! and measures ring traffic per new-user login, memory per user and the time to rejoin.
//!
//! `--kinds ours,base,dovecot` picks the rings of the second part (default `ours,dovecot`;
//! `base` is our `directord` built from other code, named by `--base-bin PATH`, to compare
//! a change in the same run), `--rejoins N` restarts director 2 N times (the median counts).
//!
//! `--moves N` (`moves.rs`) also pipelines N `USER-MOVE`s on director 0 of a ring of three
//! and measures how long until the ring has settled.
//!
//! Each rejoin reports on stderr the CPU seconds the joiner and director 1 (which sends it
//! the users) used, less noisy than the wall time on a shared machine. Diagnostics:
//! `RING_BENCH_PERF=DIR` records `perf` profiles of both during each rejoin (those times
//! don't count), `RING_BENCH_LOG=1` prints the end of our directors' logs after each.
//!
//! `DIRECTORD_BIN` names the `directord` to run (default: next to this program). Needs
//! Dovecot (`apt-get install -y dovecot-core`). Each ring runs on its own 127.x addresses;
//! every process started here is stopped by its PID.
//!
//! Method: with the ring synced, `HOST-SET` of a new host is sent to the first director,
//! and every director's `HOST-LIST` is polled over its own admin connection until all of
//! them list the host; the time from sending to the last director listing it is the
//! convergence time. Reported: median and 90th percentile over the rounds, and ours against
//! Dovecot's.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

mod capture;
mod load;
mod moves;
use testkit::{AdminClient, DirectorOptions, DovecotDirector, LoopbackAllocator};

const MAIL_SERVERS: &str = "127.0.1.1 127.0.1.2 127.0.1.3";
/// Longest a ring may take to sync, or a change to converge.
const WAIT: Duration = Duration::from_secs(60);

/// One of our directors, stopped by PID on drop.
struct Ours {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Ours {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Ring {
    Ours(Vec<Ours>),
    Dovecot(Vec<DovecotDirector>),
}

impl Ring {
    fn admins(&self) -> anyhow::Result<Vec<AdminClient>> {
        Ok(match self {
            Ring::Ours(v) => v
                .iter()
                .map(|d| AdminClient::connect_unix(&d.socket))
                .collect::<Result<_, _>>()?,
            Ring::Dovecot(v) => v
                .iter()
                .map(DovecotDirector::admin_client)
                .collect::<Result<_, _>>()?,
        })
    }
}

fn directord_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DIRECTORD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("cannot locate the target dir")?
        .join("directord");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p directord` first or set DIRECTORD_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Stops a tool started here with SIGINT (`tcpdump` and `perf` write their files out on
/// it) and waits for it; its PID is ours.
fn interrupt(child: &mut Child) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    child.wait()?;
    Ok(())
}

fn servers(ips: &[Ipv4Addr], port: u16) -> String {
    let servers: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    servers.join(" ")
}

/// One of our directors on `ip`, in the ring `servers`, with `extra` config lines.
fn start_one_ours(
    bin: &Path,
    ip: Ipv4Addr,
    port: u16,
    servers: &str,
    extra: &str,
) -> anyhow::Result<Ours> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let conf = dir.path().join("directord.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {run}\nstate_dir = {run}\nlog_path = {log}\n\
             director_servers = {servers}\ndirector_mail_servers = {MAIL_SERVERS}\n\
             service director {{\n  unix_listener director-admin {{\n    mode = 0600\n  }}\n\
             \x20 inet_listener director {{\n    address = {ip}\n    port = {port}\n  }}\n{extra}}}\n",
            run = run.display(),
            log = dir.path().join("directord.log").display(),
        ),
    )?;
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    let socket = first
        .trim_end()
        .strip_prefix("directord: admin socket ")
        .with_context(|| format!("unexpected first line {first:?}"))?
        .into();
    Ok(Ours {
        child,
        socket,
        _dir: dir,
    })
}

fn start_ours(bin: &Path, ips: &[Ipv4Addr], port: u16) -> anyhow::Result<Vec<Ours>> {
    let servers = servers(ips, port);
    ips.iter()
        .map(|ip| start_one_ours(bin, *ip, port, &servers, ""))
        .collect()
}

/// One Dovecot director on `ip`, in the ring `servers`.
fn start_one_dovecot(ip: Ipv4Addr, port: u16, servers: &str) -> anyhow::Result<DovecotDirector> {
    DovecotDirector::start(
        DirectorOptions::new(MAIL_SERVERS)
            .with_ip(ip)
            .with_ring_port(port)
            .with_director_servers(servers)
            // A million users outgrow the default 256 MB address space of a service.
            .with_extra("default_vsz_limit = 0")
            .without_sync_wait(),
    )
    .map_err(anyhow::Error::from)
}

fn start_dovecot(ips: &[Ipv4Addr], port: u16) -> anyhow::Result<Vec<DovecotDirector>> {
    let servers = servers(ips, port);
    ips.iter()
        .map(|ip| start_one_dovecot(*ip, port, &servers))
        .collect()
}

/// A ring of `n` directors of `kind` (`ours` or `dovecot`) on fresh loopback addresses,
/// synced, with an admin connection to each.
fn start_synced(bin: &Path, kind: &str, n: usize) -> anyhow::Result<(Ring, Vec<AdminClient>)> {
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..n).map(|_| alloc.next_ip()).collect();
    let port = testkit::free_port(IpAddr::V4(ips[0]))?;
    let ring = if kind == "ours" {
        Ring::Ours(start_ours(bin, &ips, port)?)
    } else {
        Ring::Dovecot(start_dovecot(&ips, port)?)
    };
    let mut admins = ring.admins()?;
    wait_synced(&mut admins)?;
    Ok((ring, admins))
}

fn wait_synced(admins: &mut [AdminClient]) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut all = true;
        for a in admins.iter_mut() {
            let rows = a.command("DIRECTOR-LIST")?;
            all &= rows
                .iter()
                .any(|l| l.contains("\tself\t") && l.contains("ring synced"));
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the ring did not sync within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `HOST-SET ip` to the first director and returns when every director lists it.
fn converge(admins: &mut [AdminClient], ip: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    admins[0].send_raw(format!("HOST-SET\t{ip}\t10\n").as_bytes())?;
    // The reply: OK once the change went round the ring (ours, Dovecot 2.3's [S] gating).
    let reply = admins[0].read_line()?;
    if reply != "OK" {
        bail!("HOST-SET answered {reply:?}");
    }
    let mut pending: Vec<usize> = (0..admins.len()).collect();
    while !pending.is_empty() {
        if started.elapsed() > WAIT {
            bail!("{ip} did not reach every director within {WAIT:?}");
        }
        let mut left = Vec::new();
        for i in pending {
            let listed = admins[i]
                .command("HOST-LIST")?
                .iter()
                .any(|l| l.starts_with(&format!("{ip}\t")));
            if !listed {
                left.push(i);
            }
        }
        pending = left;
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut directors = vec![3usize, 5];
    let mut rounds = 20usize;
    let mut users = 1_000_000u32;
    let mut logins = 10_000u32;
    let (mut convergence, mut loaded) = (true, true);
    let mut kinds = vec![load::Kind::Ours, load::Kind::Dovecot];
    let mut base_bin: Option<PathBuf> = None;
    let mut rejoins = 1usize;
    let mut moves = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--directors" => {
                directors = args
                    .next()
                    .context("--directors N,M")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--users" => users = args.next().context("--users N")?.parse()?,
            "--logins" => logins = args.next().context("--logins N")?.parse()?,
            "--no-convergence" => convergence = false,
            "--no-load" => loaded = false,
            "--kinds" => {
                kinds = args
                    .next()
                    .context("--kinds ours,base,dovecot")?
                    .split(',')
                    .map(load::Kind::parse)
                    .collect::<Result<_, _>>()?
            }
            "--base-bin" => base_bin = Some(args.next().context("--base-bin PATH")?.into()),
            "--rejoins" => rejoins = args.next().context("--rejoins N")?.parse()?,
            "--moves" => moves = args.next().context("--moves N")?.parse()?,
            other => bail!(
                "unknown argument {other:?}; usage: ring [--directors 3,5] [--rounds 20] \
                 [--users 1000000] [--logins 10000] [--no-convergence] [--no-load] \
                 [--kinds ours,base,dovecot] [--base-bin PATH] [--rejoins N] [--moves N]"
            ),
        }
    }
    testkit::require_dovecot();
    let bin = directord_binary()?;
    if convergence {
        convergence_table(&bin, &directors, rounds)?;
    }
    if moves > 0 {
        let names: Vec<&str> = kinds
            .iter()
            .map(|k| k.name())
            .filter(|n| *n != "base")
            .collect();
        moves::run(&bin, &names, moves)?;
    }
    if loaded {
        load::run(&load::Plan {
            bin: &bin,
            base_bin: base_bin.as_deref(),
            kinds,
            users,
            logins: logins.max(1),
            rejoins,
        })?;
    }
    Ok(())
}

fn convergence_table(bin: &Path, directors: &[usize], rounds: usize) -> anyhow::Result<()> {
    println!("## Convergence after a host change (HOST-SET on one director until all list it)\n");
    println!("| directors | ring | median ms | p90 ms | max ms | ours / dovecot (median) |");
    println!("|---|---|---|---|---|---|");
    for &n in directors {
        let mut medians = Vec::new();
        for kind in ["ours", "dovecot"] {
            let (ring, mut admins) = start_synced(bin, kind, n)?;
            let mut times = Vec::with_capacity(rounds);
            for r in 0..rounds {
                times.push(converge(&mut admins, &format!("127.0.2.{}", r + 1))?);
                // The next change starts on a synced ring.
                wait_synced(&mut admins)?;
            }
            times.sort();
            let median = percentile(&times, 0.5);
            medians.push(median);
            let ratio = if medians.len() == 2 {
                format!("{:.2}", ms(medians[0]) / ms(medians[1]).max(0.001))
            } else {
                String::new()
            };
            println!(
                "| {n} | {kind} | {:.2} | {:.2} | {:.2} | {ratio} |",
                ms(median),
                ms(percentile(&times, 0.9)),
                ms(*times.last().unwrap_or(&Duration::ZERO)),
            );
            drop(admins);
            drop(ring);
        }
    }
    Ok(())
}
