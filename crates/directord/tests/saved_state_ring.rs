//! Saved state in a ring of our directors (real binaries, real sockets): a director that
//! restarts from its file takes the running ring's state (its saved users name a host the
//! ring removed meanwhile, and the ring still lets it in), and a whole ring that restarts
//! keeps its hosts and users from the directors' files.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ring::{wait_same, wait_synced, Member, RingSpec};
use common::{Daemon, WAIT};
use director_proto::state_file;
use nix::sys::signal::Signal;

fn start_all(spec: &RingSpec) -> Vec<Member> {
    let ring: Vec<Member> = (0..spec.ips.len()).map(|i| spec.ours(i)).collect();
    wait_synced(&ring);
    ring
}

fn daemon(m: &mut Member) -> &mut Daemon {
    match m {
        Member::Ours(d) => d,
        Member::Dovecot(_) => unreachable!("a ring of ours"),
    }
}

/// Waits (bounded) until the saved state lists `users` users.
fn wait_saved_users(dir: &Path, users: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let saved = std::fs::read(dir.join("director-state"))
            .ok()
            .and_then(|b| state_file::decode(&b).ok());
        if saved.is_some_and(|s| s.users.len() == users) {
            return;
        }
        assert!(Instant::now() < deadline, "never saved {users} users");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Hosts and one user on a host added at runtime, agreed by the whole ring.
fn hosts_and_a_user(ring: &[Member]) -> (Vec<String>, Vec<String>) {
    assert_eq!(ring[0].admin("HOST-SET\t127.0.1.9\t50"), ["OK"]);
    assert_eq!(ring[1].admin("HOST-DOWN\t127.0.1.2"), ["OK"]);
    wait_same(ring, "host list", Member::hosts);
    assert_eq!(
        ring[1].admin("USER-MOVE\talice@example.com\t127.0.1.9"),
        ["OK"]
    );
    let users = wait_same(ring, "user list", Member::users);
    assert_eq!(users.len(), 1, "{users:?}");
    (wait_same(ring, "host list", Member::hosts), users)
}

#[test]
fn a_director_restarted_from_its_file_takes_the_running_rings_state() {
    let spec = RingSpec::new(3);
    let mut ring = start_all(&spec);
    hosts_and_a_user(&ring);
    let state_dir = daemon(&mut ring[2]).state_dir();
    wait_saved_users(&state_dir, 1);
    daemon(&mut ring[2]).signal(Signal::SIGKILL);
    daemon(&mut ring[2]).wait_exit();
    // Meanwhile the others remove the host of the saved user (and the user with it).
    wait_synced(&ring[..2]);
    assert_eq!(ring[0].admin("HOST-REMOVE\t127.0.1.9"), ["OK"]);
    assert!(wait_same(&ring[..2], "user list", Member::users).is_empty());

    daemon(&mut ring[2]).restart();
    daemon(&mut ring[2]).wait_log("restored the saved state");
    wait_synced(&ring);
    let hosts = wait_same(&ring, "host list", Member::hosts);
    assert!(
        !hosts.iter().any(|h| h.starts_with("127.0.1.9\t")),
        "{hosts:?}"
    );
    assert!(wait_same(&ring, "user list", Member::users).is_empty());
    for m in &mut ring {
        let log = daemon(m).log_text();
        assert!(!log.contains("unknown host"), "{log}");
    }
}

#[test]
fn a_whole_ring_restarted_keeps_its_hosts_and_users() {
    let spec = RingSpec::new(2);
    let mut ring = start_all(&spec);
    let (hosts, users) = hosts_and_a_user(&ring);
    for m in &mut ring {
        daemon(m).signal(Signal::SIGTERM);
        assert_eq!(daemon(m).wait_exit().code(), Some(0));
    }
    for m in &mut ring {
        daemon(m).restart();
    }
    wait_synced(&ring);
    assert_eq!(wait_same(&ring, "host list", Member::hosts), hosts);
    assert_eq!(wait_same(&ring, "user list", Member::users), users);
    for d in &ring {
        assert_eq!(d.current("alice@example.com"), "127.0.1.9");
    }
}
