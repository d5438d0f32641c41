//! Rings of our own directors, on private 127.x addresses: they form a ring, report it
//! synced, and keep hosts and user assignments the same on every director; a director that
//! is killed and restarted relearns everything from the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Daemon, WAIT};
use nix::sys::signal::Signal;
use testkit::LoopbackAllocator;

/// The ring's addresses and port.
struct RingSpec {
    ips: Vec<Ipv4Addr>,
    port: u16,
}

impl RingSpec {
    fn new(n: usize) -> RingSpec {
        let mut alloc = LoopbackAllocator::new();
        let ips: Vec<Ipv4Addr> = (0..n).map(|_| alloc.next_ip()).collect();
        let port = testkit::free_port(IpAddr::V4(ips[0])).expect("a free port");
        RingSpec { ips, port }
    }

    /// The config of director `i`.
    fn config(&self, i: usize) -> String {
        let servers: Vec<String> = self
            .ips
            .iter()
            .map(|ip| format!("{ip}:{}", self.port))
            .collect();
        format!(
            "director_servers = {}\n\
             director_mail_servers = 127.0.1.1 127.0.1.2 127.0.1.3\n\
             service director {{\n  unix_listener director-admin {{\n    mode = 0600\n  }}\n\
             \x20 inet_listener director {{\n    address = {}\n    port = {}\n  }}\n}}\n",
            servers.join(" "),
            self.ips[i],
            self.port
        )
    }

    fn start(&self, i: usize) -> Daemon {
        Daemon::start(&self.config(i))
    }

    fn start_all(&self) -> Vec<Daemon> {
        (0..self.ips.len()).map(|i| self.start(i)).collect()
    }
}

/// One admin request, the reply text.
fn admin(d: &Daemon, line: &str) -> String {
    d.client().request(line)
}

/// Waits (bounded) until `check` holds.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Our own `DIRECTOR-LIST` row says the ring is synced.
fn synced(d: &Daemon) -> bool {
    admin(d, "DIRECTOR-LIST")
        .lines()
        .any(|l| l.contains("\tself\t") && l.contains("ring synced"))
}

fn wait_synced(ring: &[&Daemon]) {
    wait_until("every director reports the ring synced", || {
        ring.iter().all(|d| synced(d))
    });
}

/// `HOST-LIST` without the time of the last up/down change (which each director stamps when
/// it learns the change).
fn hosts(d: &Daemon) -> String {
    admin(d, "HOST-LIST")
        .lines()
        .map(|l| l.rsplit_once('\t').map_or(l, |(a, _)| a).to_string() + "\n")
        .collect()
}

fn users(d: &Daemon) -> String {
    admin(d, "USER-LIST")
}

/// Waits until every director answers `what` the same as the first, and returns it.
fn wait_same(ring: &[&Daemon], what: &str, view: impl Fn(&Daemon) -> String) -> String {
    let mut last = String::new();
    wait_until(&format!("every director shows the same {what}"), || {
        last = view(ring[0]);
        ring[1..].iter().all(|d| view(d) == last)
    });
    last
}

/// Host changes made on any director reach every other; an assignment made on one is
/// listed identically by all.
fn hosts_and_users_agree_in_a_ring_of(n: usize) {
    let spec = RingSpec::new(n);
    let daemons = spec.start_all();
    let ring: Vec<&Daemon> = daemons.iter().collect();
    wait_synced(&ring);

    assert_eq!(admin(ring[0], "HOST-SET\t127.0.1.9\t50"), "OK\n");
    let list = wait_same(&ring, "host list", hosts);
    assert!(list.contains("127.0.1.9\t50\t0\t\tU"), "{list}");

    let last = ring[n - 1];
    assert_eq!(admin(last, "HOST-DOWN\t127.0.1.2"), "OK\n");
    let list = wait_same(&ring, "host list", hosts);
    assert!(list.contains("127.0.1.2\t100\t0\t\tD"), "{list}");

    assert_eq!(
        admin(ring[1], "USER-MOVE\talice@example.com\t127.0.1.9"),
        "OK\n"
    );
    let assigned = wait_same(&ring, "user list", users);
    assert_eq!(
        assigned.lines().filter(|l| !l.is_empty()).count(),
        1,
        "{assigned}"
    );
    assert!(assigned.contains("\t127.0.1.9"), "{assigned}");
    for d in &ring {
        let status = admin(d, "USER-LOOKUP\talice@example.com");
        assert!(status.starts_with("127.0.1.9\t"), "{status}");
    }

    assert_eq!(admin(ring[n / 2], "HOST-REMOVE\t127.0.1.3"), "OK\n");
    let list = wait_same(&ring, "host list", hosts);
    assert!(!list.contains("127.0.1.3"), "{list}");
}

#[test]
fn three_directors_agree_on_hosts_and_users() {
    hosts_and_users_agree_in_a_ring_of(3);
}

#[test]
fn five_directors_agree_on_hosts_and_users() {
    hosts_and_users_agree_in_a_ring_of(5);
}

/// A host change is answered only once it went round the ring: by then every director
/// has it (§8.2).
#[test]
fn a_host_change_is_acknowledged_after_it_went_round() {
    let spec = RingSpec::new(3);
    let daemons = spec.start_all();
    let ring: Vec<&Daemon> = daemons.iter().collect();
    wait_synced(&ring);
    assert_eq!(admin(ring[0], "HOST-SET\t127.0.1.7\t20"), "OK\n");
    for d in &ring {
        assert!(hosts(d).contains("127.0.1.7\t20"), "not yet on a director");
    }
}

/// `kill -9` of any director: the others go on serving, and once it is back it relearns
/// every host and assignment from the ring.
#[test]
fn a_killed_director_relearns_everything_after_restart() {
    let spec = RingSpec::new(3);
    let mut daemons = spec.start_all();
    {
        let ring: Vec<&Daemon> = daemons.iter().collect();
        wait_synced(&ring);
        assert_eq!(admin(ring[0], "HOST-SET\t127.0.1.8\t30"), "OK\n");
        assert_eq!(
            admin(ring[0], "USER-MOVE\tbob@example.com\t127.0.1.8"),
            "OK\n"
        );
        assert_eq!(
            admin(ring[2], "USER-MOVE\tcarol@example.com\t127.0.1.1"),
            "OK\n"
        );
        wait_same(&ring, "user list", users);
    }
    for victim in 0..3 {
        daemons[victim].signal(Signal::SIGKILL);
        daemons[victim].wait_exit();
        // The others still answer.
        let other = &daemons[(victim + 1) % 3];
        assert!(admin(other, "USER-LOOKUP\tbob@example.com").starts_with("127.0.1.8\t"));
        daemons[victim] = spec.start(victim);
        let ring: Vec<&Daemon> = daemons.iter().collect();
        wait_synced(&ring);
        let list = wait_same(&ring, "host list", hosts);
        assert!(list.contains("127.0.1.8\t30"), "{list}");
        let assigned = wait_same(&ring, "user list", users);
        assert_eq!(
            assigned.lines().filter(|l| !l.is_empty()).count(),
            2,
            "{assigned}"
        );
    }
}

/// A director not listed in `director_servers` is not let into the ring.
#[test]
fn a_director_not_in_the_list_is_refused() {
    let spec = RingSpec::new(2);
    let daemons = spec.start_all();
    let ring: Vec<&Daemon> = daemons.iter().collect();
    wait_synced(&ring);
    // A third director that lists itself and the ring, but the ring does not list it.
    let mut alloc = LoopbackAllocator::new();
    let stranger_ip = alloc.next_ip();
    let outsider = RingSpec {
        ips: vec![spec.ips[0], spec.ips[1], stranger_ip],
        port: spec.port,
    };
    let stranger = outsider.start(2);
    ring[0].wait_log("Connection from unknown director IP, dropping");
    // The ring is unchanged and still synced.
    assert!(synced(ring[0]) && synced(ring[1]));
    assert!(!admin(ring[0], "DIRECTOR-LIST").contains(&stranger_ip.to_string()));
    drop(stranger);
}
