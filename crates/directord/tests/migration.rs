//! The README's runbook, step by step: a ring of three real Dovecot 2.3 directors, each
//! replaced by `directord` on the same address in turn. At every step the ring syncs again,
//! and the hosts and user assignments the ring held before the migration are still on every
//! director.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Daemon, WAIT};
use testkit::{require_dovecot, DirectorOptions, DovecotDirector, LoopbackAllocator};

const MAIL_SERVERS: &str = "127.0.1.1 127.0.1.2 127.0.1.3";

enum Member {
    Dovecot(DovecotDirector),
    Ours(Daemon),
}

impl Member {
    fn admin(&self, line: &str) -> Vec<String> {
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
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 3;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn synced(m: &Member) -> bool {
    m.admin("DIRECTOR-LIST")
        .iter()
        .any(|l| l.contains("\tself\t") && l.contains("ring synced"))
}

/// Hosts without the up/down time, and users without the expiry (each director's clock).
fn state(m: &Member) -> (Vec<String>, Vec<String>) {
    let hosts = m
        .admin("HOST-LIST")
        .iter()
        .map(|l| {
            l.rsplit_once('\t')
                .map_or(l.as_str(), |(a, _)| a)
                .to_string()
        })
        .collect();
    let mut users: Vec<String> = m
        .admin("USER-LIST")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{}\t{}", f[0], f.get(2).unwrap_or(&""))
        })
        .collect();
    users.sort();
    (hosts, users)
}

#[test]
fn dovecot_directors_are_replaced_one_at_a_time() {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..3).map(|_| alloc.next_ip()).collect();
    let port = testkit::free_port(IpAddr::V4(ips[0])).expect("a free port");
    let servers: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let servers = servers.join(" ");
    let mut ring: Vec<Member> = ips
        .iter()
        .map(|ip| {
            Member::Dovecot(
                DovecotDirector::start(
                    DirectorOptions::new(MAIL_SERVERS)
                        .with_ip(*ip)
                        .with_ring_port(port)
                        .with_director_servers(servers.clone())
                        .without_sync_wait(),
                )
                .expect("a Dovecot director starts"),
            )
        })
        .collect();
    wait_until("the Dovecot ring is synced", || ring.iter().all(synced));

    // What the ring holds before the migration: a host added at run time, a host down, and
    // users assigned (one moved away from its hashed host).
    assert_eq!(ring[0].admin("HOST-SET\t127.0.1.50\t25"), ["OK"]);
    assert_eq!(ring[1].admin("HOST-DOWN\t127.0.1.2"), ["OK"]);
    assert_eq!(
        ring[2].admin("USER-MOVE\tpinned@example.com\t127.0.1.50"),
        ["OK"]
    );
    for i in 0..5 {
        assert_eq!(
            ring[i % 3].admin(&format!("USER-MOVE\tuser{i}@example.com\t127.0.1.1")),
            ["OK"]
        );
    }
    let mut before = state(&ring[0]);
    wait_until("every Dovecot director holds the same state", || {
        before = state(&ring[0]);
        ring.iter().all(|m| state(m) == before)
    });
    assert_eq!(before.1.len(), 6, "{:?}", before.1);

    for i in 0..3 {
        // Step 2: stop this Dovecot director and start ours on its addresses.
        if let Member::Dovecot(d) = &mut ring[i] {
            d.stop().expect("the Dovecot director stops");
        }
        let ip = ips[i];
        ring[i] = Member::Ours(Daemon::start(&format!(
            "director_servers = {servers}\n\
             director_mail_servers = {MAIL_SERVERS}\n\
             service director {{\n  unix_listener director-admin {{\n    mode = 0600\n  }}\n\
             \x20 inet_listener director {{\n    address = {ip}\n    port = {port}\n  }}\n}}\n"
        )));
        wait_until(
            &format!("the ring is synced after replacing director {i}"),
            || ring.iter().all(synced),
        );
        // Step 3: the new director holds what the ring held.
        wait_until(&format!("director {i} relearnt the ring's state"), || {
            ring.iter().all(|m| state(m) == before)
        });
        before = state(&ring[0]);
    }
    assert!(ring.iter().all(|m| matches!(m, Member::Ours(_))));
    let (hosts, users) = state(&ring[0]);
    assert!(
        hosts.iter().any(|h| h.starts_with("127.0.1.50\t25")),
        "{hosts:?}"
    );
    assert!(
        hosts
            .iter()
            .any(|h| h.starts_with("127.0.1.2\t") && h.ends_with("\tD")),
        "{hosts:?}"
    );
    assert_eq!(users.len(), 6, "{users:?}");
}
