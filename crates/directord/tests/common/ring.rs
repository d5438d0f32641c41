//! Rings of directors for the tests: our `directord` and real Dovecot 2.3 directors alike,
//! seen through their admin sockets.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use testkit::{DirectorOptions, DovecotDirector, LoopbackAllocator};

use super::{Daemon, WAIT};

/// The mail servers every test ring starts with.
pub const MAIL_SERVERS: &str = "127.0.1.1 127.0.1.2 127.0.1.3";

/// The addresses and the port of a ring.
pub struct RingSpec {
    pub ips: Vec<Ipv4Addr>,
    pub port: u16,
}

impl RingSpec {
    /// `n` directors on fresh 127.x addresses, one port for all.
    pub fn new(n: usize) -> RingSpec {
        let mut alloc = LoopbackAllocator::new();
        let ips: Vec<Ipv4Addr> = (0..n).map(|_| alloc.next_ip()).collect();
        let port = testkit::free_port(IpAddr::V4(ips[0])).expect("a free port");
        RingSpec { ips, port }
    }

    /// `director_servers`.
    pub fn servers(&self) -> String {
        let servers: Vec<String> = self
            .ips
            .iter()
            .map(|ip| format!("{ip}:{}", self.port))
            .collect();
        servers.join(" ")
    }

    /// Our config for director `i`: the ring, the default mail servers, then `extra`.
    pub fn config(&self, i: usize, extra: &str) -> String {
        format!(
            "director_servers = {}\n\
             director_mail_servers = {MAIL_SERVERS}\n\
             service director {{\n  unix_listener director-admin {{\n    mode = 0600\n  }}\n\
             \x20 inet_listener director {{\n    address = {}\n    port = {}\n  }}\n}}\n{extra}",
            self.servers(),
            self.ips[i],
            self.port
        )
    }

    /// Our director `i`.
    pub fn ours(&self, i: usize) -> Member {
        Member::Ours(Daemon::start(&self.config(i, "")))
    }

    /// Dovecot's director `i`.
    pub fn dovecot(&self, i: usize) -> Member {
        Member::Dovecot(
            DovecotDirector::start(
                DirectorOptions::new(MAIL_SERVERS)
                    .with_ip(self.ips[i])
                    .with_ring_port(self.port)
                    .with_director_servers(self.servers())
                    .without_sync_wait(),
            )
            .expect("a Dovecot director starts"),
        )
    }
}

/// One director of a ring: ours or Dovecot's.
pub enum Member {
    Ours(Daemon),
    Dovecot(DovecotDirector),
}

impl Member {
    /// One admin request; the reply lines, without a list's empty terminator.
    pub fn admin(&self, line: &str) -> Vec<String> {
        match self {
            Member::Ours(d) => d
                .client()
                .request(line)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            Member::Dovecot(d) => {
                let mut c = d.admin_client().expect("admin connection");
                c.command(line).expect("admin command")
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Member::Ours(_) => "ours",
            Member::Dovecot(_) => "dovecot",
        }
    }

    /// Dovecot's own `doveadm director …` against this director; its output.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let socket = match self {
            Member::Ours(d) => d.socket.clone(),
            Member::Dovecot(d) => d.admin_socket_path(),
        };
        // `ring status` is a two-word subcommand; `-a` follows the whole of it.
        let words = if args.first() == Some(&"ring") { 2 } else { 1 };
        let socket = socket.display().to_string();
        let mut all = vec!["director"];
        all.extend_from_slice(&args[..words]);
        all.extend(["-a", socket.as_str()]);
        all.extend_from_slice(&args[words..]);
        let out = std::process::Command::new("doveadm")
            .args(&all)
            .output()
            .expect("run doveadm");
        assert!(
            out.status.success(),
            "doveadm {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Our own `DIRECTOR-LIST` row says the ring is synced.
    pub fn synced(&self) -> bool {
        self.admin("DIRECTOR-LIST")
            .iter()
            .any(|l| l.contains("\tself\t") && l.contains("ring synced"))
    }

    /// `HOST-LIST` without the time of the last up/down change (each director stamps it
    /// when it learns the change).
    pub fn hosts(&self) -> Vec<String> {
        self.admin("HOST-LIST")
            .iter()
            .map(|l| {
                l.rsplit_once('\t')
                    .map_or(l.as_str(), |(a, _)| a)
                    .to_string()
            })
            .collect()
    }

    /// `USER-LIST` as hash and host, sorted (the expiry is each director's own clock).
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .admin("USER-LIST")
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                format!("{}\t{}", f[0], f.get(2).unwrap_or(&""))
            })
            .collect();
        users.sort();
        users
    }

    /// `USER-LOOKUP user`'s current host (empty when none).
    pub fn current(&self, user: &str) -> String {
        let reply = self.admin(&format!("USER-LOOKUP\t{user}"));
        let first = reply.first().map_or("", String::as_str);
        first.split('\t').next().unwrap_or("").to_string()
    }
}

/// Waits (bounded by three times [`WAIT`]: Dovecot's directors retry a refused connection
/// only every few seconds) until `check` holds.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 3;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every director reports the ring synced.
pub fn wait_synced<'a>(ring: impl IntoIterator<Item = &'a Member> + Clone) {
    wait_until("every director reports the ring synced", || {
        ring.clone().into_iter().all(Member::synced)
    });
}

/// Waits until every director shows the same `view`, and returns it; on timeout the panic
/// shows every director's view.
pub fn wait_same<T: PartialEq + std::fmt::Debug>(
    ring: &[Member],
    what: &str,
    view: impl Fn(&Member) -> T,
) -> T {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let mut views: Vec<T> = ring.iter().map(&view).collect();
        if views.iter().all(|v| *v == views[0]) {
            return views.swap_remove(0);
        }
        if Instant::now() > deadline {
            let shown: Vec<String> = ring
                .iter()
                .zip(&views)
                .map(|(m, v)| format!("{}: {v:?}", m.name()))
                .collect();
            panic!(
                "the directors never agreed on the {what}:\n{}",
                shown.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
