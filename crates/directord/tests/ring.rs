//! Rings of our own directors, on private 127.x addresses: they form a ring, report it
//! synced, and keep hosts and user assignments the same on every director; a director that
//! is killed and restarted relearns everything from the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use common::ring::{wait_same, wait_synced, wait_until, Member, RingSpec};
use common::{connect_from, read_to_close, Daemon};
use director_core::refusal_log::{REFUSAL_LOG_BURST, REFUSAL_LOG_WINDOW};
use nix::sys::signal::Signal;
use testkit::LoopbackAllocator;

fn start_all(spec: &RingSpec) -> Vec<Member> {
    let ring: Vec<Member> = (0..spec.ips.len()).map(|i| spec.ours(i)).collect();
    wait_synced(&ring);
    ring
}

fn daemon(m: &Member) -> &Daemon {
    match m {
        Member::Ours(d) => d,
        Member::Dovecot(_) => unreachable!("a ring of ours"),
    }
}

/// Host changes made on any director reach every other; an assignment made on one is
/// listed identically by all.
fn hosts_and_users_agree_in_a_ring_of(n: usize) {
    let ring = start_all(&RingSpec::new(n));
    assert_eq!(ring[0].admin("HOST-SET\t127.0.1.9\t50"), ["OK"]);
    let list = wait_same(&ring, "host list", Member::hosts);
    assert!(
        list.contains(&"127.0.1.9\t50\t0\t\tU".to_string()),
        "{list:?}"
    );

    assert_eq!(ring[n - 1].admin("HOST-DOWN\t127.0.1.2"), ["OK"]);
    let list = wait_same(&ring, "host list", Member::hosts);
    assert!(
        list.contains(&"127.0.1.2\t100\t0\t\tD".to_string()),
        "{list:?}"
    );

    assert_eq!(
        ring[1].admin("USER-MOVE\talice@example.com\t127.0.1.9"),
        ["OK"]
    );
    let users = wait_same(&ring, "user list", Member::users);
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(users[0].ends_with("\t127.0.1.9"), "{users:?}");
    for d in &ring {
        assert_eq!(d.current("alice@example.com"), "127.0.1.9");
    }

    assert_eq!(ring[n / 2].admin("HOST-REMOVE\t127.0.1.3"), ["OK"]);
    let list = wait_same(&ring, "host list", Member::hosts);
    assert!(
        !list.iter().any(|h| h.starts_with("127.0.1.3\t")),
        "{list:?}"
    );
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
    let ring = start_all(&RingSpec::new(3));
    assert_eq!(ring[0].admin("HOST-SET\t127.0.1.7\t20"), ["OK"]);
    for d in &ring {
        assert!(
            d.hosts().iter().any(|h| h.starts_with("127.0.1.7\t20\t")),
            "not yet on a director"
        );
    }
}

/// `kill -9` of any director: the others go on serving, and once it is back it relearns
/// every host and assignment from the ring.
#[test]
fn a_killed_director_relearns_everything_after_restart() {
    let spec = RingSpec::new(3);
    let mut ring = start_all(&spec);
    assert_eq!(ring[0].admin("HOST-SET\t127.0.1.8\t30"), ["OK"]);
    assert_eq!(
        ring[0].admin("USER-MOVE\tbob@example.com\t127.0.1.8"),
        ["OK"]
    );
    assert_eq!(
        ring[2].admin("USER-MOVE\tcarol@example.com\t127.0.1.1"),
        ["OK"]
    );
    wait_same(&ring, "user list", Member::users);
    for victim in 0..3 {
        if let Member::Ours(d) = &mut ring[victim] {
            d.signal(Signal::SIGKILL);
            d.wait_exit();
        }
        // The others still answer.
        assert_eq!(
            ring[(victim + 1) % 3].current("bob@example.com"),
            "127.0.1.8"
        );
        ring[victim] = spec.ours(victim);
        wait_synced(&ring);
        let list = wait_same(&ring, "host list", Member::hosts);
        assert!(
            list.iter().any(|h| h.starts_with("127.0.1.8\t30\t")),
            "{list:?}"
        );
        let users = wait_same(&ring, "user list", Member::users);
        assert_eq!(users.len(), 2, "{users:?}");
    }
}

/// A director not listed in `director_servers` is not let into the ring.
#[test]
fn a_director_not_in_the_list_is_refused() {
    let spec = RingSpec::new(2);
    let ring = start_all(&spec);
    // A third director that lists itself and the ring, but the ring does not list it.
    let stranger_ip = LoopbackAllocator::new().next_ip();
    let outsider = RingSpec {
        ips: vec![spec.ips[0], spec.ips[1], stranger_ip],
        port: spec.port,
    };
    let stranger = outsider.ours(2);
    daemon(&ring[0]).wait_log("Connection from unknown director IP, dropping");
    // The ring is unchanged and still synced.
    assert!(ring[0].synced() && ring[1].synced());
    let list = ring[0].admin("DIRECTOR-LIST");
    assert!(
        !list.iter().any(|l| l.contains(&stranger_ip.to_string())),
        "{list:?}"
    );
    drop(stranger);
}

/// A stranger that connects to the ring port in a loop is dropped every time, before a byte
/// is sent, and cannot flood the log: at most a burst of warnings per window.
#[test]
fn a_stranger_connecting_in_a_loop_is_dropped_and_logged_in_bursts() {
    const ATTEMPTS: usize = 200;
    let spec = RingSpec::new(2);
    let ring = start_all(&spec);
    let stranger = LoopbackAllocator::new().next_ip();
    let target = SocketAddr::new(IpAddr::V4(spec.ips[0]), spec.port);
    let started = Instant::now();
    for _ in 0..ATTEMPTS {
        let mut s = connect_from(stranger, target);
        assert_eq!(read_to_close(&mut s), b"", "a stranger gets not a byte");
    }
    let log = daemon(&ring[0]).log_text();
    let warned = log
        .matches("Connection from unknown director IP, dropping")
        .count();
    // The loop may straddle one window boundary; it took far less than two windows.
    assert!(started.elapsed() < 2 * REFUSAL_LOG_WINDOW);
    assert!(
        (1..=2 * REFUSAL_LOG_BURST as usize).contains(&warned),
        "{warned} warnings for {ATTEMPTS} connections"
    );
    assert!(log.contains(&stranger.to_string()), "the stranger is named");
    assert!(ring[0].synced() && ring[1].synced());
}

/// Changes pipelined on one admin connection are all applied and all answered, in order,
/// each after it went round the ring (Dovecot 2.3.19 in a ring answered two of three and
/// never applied the update).
#[test]
fn pipelined_host_changes_are_all_applied_and_answered() {
    let ring = start_all(&RingSpec::new(3));
    let mut c = daemon(&ring[1]).client();
    c.send(b"HOST-SET\t127.0.1.60\t10\nHOST-UPDATE\t127.0.1.60\t70\nHOST-DOWN\t127.0.1.60\n");
    for _ in 0..3 {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
    let list = wait_same(&ring, "host list", Member::hosts);
    if !list.contains(&"127.0.1.60\t70\t0\t\tD".to_string()) {
        for (i, d) in ring.iter().enumerate() {
            eprintln!("=== director {i}:\n{}", daemon(d).log_text());
        }
    }
    assert!(
        list.contains(&"127.0.1.60\t70\t0\t\tD".to_string()),
        "{list:?}"
    );
}

/// `DIRECTOR-LIST` (and so `doveadm director ring status`) counts each ring connection's
/// traffic: what a director wrote to its right neighbour is what that neighbour read from
/// its left, once the ring is quiet.
#[test]
fn director_list_counts_the_bytes_of_each_ring_connection() {
    let spec = RingSpec::new(3);
    let ring = start_all(&spec);
    assert_eq!(ring[0].admin("HOST-SET\t127.0.1.8\t10"), ["OK"]);
    // (peer ip, kind) → (bytes in, bytes out, buffered, peak) of one director's rows.
    let rows = |m: &Member| -> Vec<(String, String, [u64; 4])> {
        m.admin("DIRECTOR-LIST")
            .iter()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .filter(|f| f.len() == 12 && (f[2] == "left" || f[2] == "right"))
            .map(|f| {
                let n = |i: usize| f[i].parse::<u64>().expect("a counter");
                (f[0].to_string(), f[2].to_string(), [n(6), n(7), n(8), n(9)])
            })
            .collect()
    };
    let ips: Vec<String> = spec.ips.iter().map(ToString::to_string).collect();
    let mut last = Vec::new();
    wait_until(
        "every right link's bytes out equal its peer's bytes in",
        || {
            last = ring.iter().map(rows).collect::<Vec<_>>();
            (0..ring.len()).all(|i| {
                let Some((right_ip, _, mine)) = last[i].iter().find(|r| r.1 == "right") else {
                    return false;
                };
                let Some(j) = ips.iter().position(|ip| ip == right_ip) else {
                    return false;
                };
                last[j]
                    .iter()
                    .find(|r| r.1 == "left" && r.0 == ips[i])
                    .is_some_and(|(_, _, theirs)| mine[1] > 0 && mine[1] == theirs[0])
            })
        },
    );
    for (i, d) in last.iter().enumerate() {
        for (ip, kind, [bytes_in, bytes_out, buffered, peak]) in d {
            assert!(
                *bytes_in > 0 && *bytes_out > 0,
                "director {i} {kind} {ip}: {d:?}"
            );
            assert!(*peak > 0 && *buffered <= *peak, "director {i}: {d:?}");
        }
    }
}
