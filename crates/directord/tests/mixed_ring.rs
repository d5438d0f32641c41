//! Mixed rings: our directors in one ring with real Dovecot 2.3 directors, the way an
//! operator migrates one director at a time. The ring forms and reports synced on both
//! kinds; host changes made through either kind reach every director; user assignments
//! agree everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Daemon, WAIT};
use testkit::{require_dovecot, DirectorOptions, DovecotDirector, LoopbackAllocator};

const MAIL_SERVERS: &str = "127.0.1.1 127.0.1.2 127.0.1.3";

/// One director of the ring: ours or Dovecot's.
enum Member {
    Ours(Daemon),
    Dovecot(DovecotDirector),
}

impl Member {
    fn admin(&self, line: &str) -> String {
        match self {
            Member::Ours(d) => d.client().request(line),
            Member::Dovecot(d) => {
                let mut c = d.admin_client().expect("admin connection");
                let lines = c.command(line).expect("admin command");
                lines.iter().map(|l| format!("{l}\n")).collect()
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Member::Ours(_) => "ours",
            Member::Dovecot(_) => "dovecot",
        }
    }

    /// Dovecot's own `doveadm director …` against this director.
    fn doveadm(&self, args: &[&str]) -> String {
        let socket = match self {
            Member::Ours(d) => d.socket.clone(),
            Member::Dovecot(d) => d.admin_socket_path(),
        };
        // `ring status` is a two-word subcommand; `-a` follows the whole of it.
        let words = if args.first() == Some(&"ring") { 2 } else { 1 };
        let mut all = vec!["director"];
        all.extend_from_slice(&args[..words]);
        all.push("-a");
        let s = socket.display().to_string();
        all.push(&s);
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
}

/// Starts a ring where `ours[i]` says whether director `i` is ours.
fn start_ring(ours: &[bool]) -> Vec<Member> {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = ours.iter().map(|_| alloc.next_ip()).collect();
    let port = testkit::free_port(IpAddr::V4(ips[0])).expect("a free port");
    let servers: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let servers = servers.join(" ");
    let members: Vec<Member> = ours
        .iter()
        .zip(&ips)
        .map(|(&mine, ip)| {
            if mine {
                Member::Ours(Daemon::start(&format!(
                    "director_servers = {servers}\n\
                     director_mail_servers = {MAIL_SERVERS}\n\
                     service director {{\n  unix_listener director-admin {{\n    mode = 0600\n  }}\n\
                     \x20 inet_listener director {{\n    address = {ip}\n    port = {port}\n  }}\n}}\n"
                )))
            } else {
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
            }
        })
        .collect();
    wait_until("every director reports the ring synced", || {
        members.iter().all(synced)
    });
    members
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    // Dovecot's directors reconnect after a refused first attempt only every few seconds.
    let deadline = Instant::now() + WAIT * 3;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn synced(m: &Member) -> bool {
    m.admin("DIRECTOR-LIST")
        .lines()
        .any(|l| l.contains("\tself\t") && l.contains("ring synced"))
}

/// `HOST-LIST` without the time of the last up/down change.
fn hosts(m: &Member) -> String {
    m.admin("HOST-LIST")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.rsplit_once('\t').map_or(l, |(a, _)| a).to_string() + "\n")
        .collect()
}

fn wait_same(ring: &[Member], what: &str, view: impl Fn(&Member) -> String) -> String {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let views: Vec<String> = ring.iter().map(&view).collect();
        if views.iter().all(|v| *v == views[0]) {
            return views[0].clone();
        }
        if Instant::now() > deadline {
            let shown: Vec<String> = ring
                .iter()
                .zip(&views)
                .map(|(m, v)| format!("{}:\n{v}", m.name()))
                .collect();
            panic!(
                "the directors never agreed on the {what}:\n{}",
                shown.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Host add, update, up/down and remove through either kind's `doveadm` show on every
/// director; a move made on either side is seen the same by all.
fn hosts_and_users_agree(ours: &[bool]) {
    let ring = start_ring(ours);
    for (i, m) in ring.iter().enumerate() {
        let ip = format!("127.0.1.{}", 20 + i);
        m.doveadm(&["add", &ip, "40"]);
        let list = wait_same(&ring, "host list", hosts);
        assert!(
            list.contains(&format!("{ip}\t40\t")),
            "{}: {list}",
            m.name()
        );
        m.doveadm(&["update", &ip, "60"]);
        m.doveadm(&["down", &ip]);
        let list = wait_same(&ring, "host list", hosts);
        assert!(
            list.contains(&format!("{ip}\t60\t0\t\tD")),
            "{}: {list}",
            m.name()
        );
        m.doveadm(&["up", &ip]);
        let list = wait_same(&ring, "host list", hosts);
        assert!(
            list.contains(&format!("{ip}\t60\t0\t\tU")),
            "{}: {list}",
            m.name()
        );
        let user = format!("user{i}@example.com");
        m.doveadm(&["move", &user, &ip]);
        wait_until("every director has the move", || {
            ring.iter().all(|o| {
                o.admin(&format!("USER-LOOKUP\t{user}"))
                    .starts_with(&format!("{ip}\t"))
            })
        });
    }
    let users = wait_same(&ring, "user list", |m| {
        let mut lines: Vec<String> = m
            .admin("USER-LIST")
            .lines()
            .filter(|l| !l.is_empty())
            // hash and host; the expiry is each director's own clock.
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                format!("{}\t{}", f[0], f[2])
            })
            .collect();
        lines.sort();
        lines.join("\n")
    });
    assert_eq!(users.lines().count(), ring.len(), "{users}");
    for (i, m) in ring.iter().enumerate() {
        m.doveadm(&["remove", &format!("127.0.1.{}", 20 + i)]);
    }
    let list = wait_same(&ring, "host list", hosts);
    assert_eq!(
        list.lines().count(),
        3,
        "only the configured hosts are left: {list}"
    );
    for m in &ring {
        let status = m.doveadm(&["ring", "status"]);
        assert_eq!(
            status.lines().filter(|l| l.contains("ring synced")).count(),
            1,
            "{}: {status}",
            m.name()
        );
    }
}

#[test]
fn one_of_ours_with_two_dovecot_directors() {
    hosts_and_users_agree(&[false, true, false]);
}

#[test]
fn two_of_ours_with_one_dovecot_director() {
    hosts_and_users_agree(&[true, false, true]);
}
