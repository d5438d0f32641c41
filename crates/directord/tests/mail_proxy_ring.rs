//! The ring behind the logins: three of our directors in a ring, each the mail proxy for
//! the same real Dovecot backends. A user's first login may arrive at any director and all
//! agree on its backend; a move started on one director closes the user's sessions on every
//! director before the next login goes to the new host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};

use common::imap::Imap;
use common::ring::{wait_synced, wait_until, Member, RingSpec};
use common::Daemon;
use testkit::{free_ports, require_dovecot, DovecotBackend, LoopbackAllocator};

struct RingLab {
    backends: Vec<DovecotBackend>,
    directors: Vec<Member>,
    imap: Vec<SocketAddr>,
}

fn start() -> RingLab {
    require_dovecot();
    let spec = RingSpec::new(3);
    let mut alloc = LoopbackAllocator::new();
    let backend_ips: Vec<_> = (0..3).map(|_| alloc.next_ip()).collect();
    let backends =
        DovecotBackend::start_group(&backend_ips, [None; 3], |_| {}).expect("backends start");
    let bi = backends[0].imap_addr().port();
    let mail: Vec<String> = backend_ips.iter().map(|i| i.to_string()).collect();
    let mut directors = Vec::new();
    let mut imap = Vec::new();
    for (i, ip) in spec.ips.iter().enumerate() {
        let pip = IpAddr::V4(*ip);
        let [pi] = free_ports(pip, [None]).expect("a free proxy port");
        // The later director_mail_servers replaces the ring config's default one.
        let extra = format!(
            "director_mail_servers = {}
             director_backend_port_imap = {bi}
             disable_plaintext_auth = no
             ssl = no
             service imap-login {{\n inet_listener imap {{\n address = {ip}\n port = {pi}\n }}\n}}\n",
            mail.join(" "),
        );
        directors.push(Member::Ours(Daemon::start(&spec.config(i, &extra))));
        imap.push(SocketAddr::new(pip, pi));
    }
    wait_synced(&directors);
    RingLab {
        backends,
        directors,
        imap,
    }
}

#[test]
fn logins_through_any_director_agree_and_moves_close_sessions_everywhere() {
    let lab = start();
    // First logins arrive at different directors; every director then knows the
    // assignment, and a second login through another director lands on the same backend.
    for i in 0..12 {
        let user = format!("ringuser{i}@example.com");
        let first = i % 3;
        let (c, ip) = Imap::login(lab.imap[first], &user);
        wait_until(&format!("every director knows {user}"), || {
            lab.directors
                .iter()
                .all(|d| d.current(&user) == ip.to_string())
        });
        let (c2, ip2) = Imap::login(lab.imap[(first + 1) % 3], &user);
        assert_eq!(ip, ip2, "{user}: second login through another director");
        c.logout();
        c2.logout();
    }

    // Two directors see a new user's first login at the same moment: one backend.
    let user = "simultaneous@example.com";
    let logins: Vec<_> = (0..3)
        .map(|d| {
            let addr = lab.imap[d];
            std::thread::spawn(move || Imap::login(addr, user))
        })
        .collect();
    let results: Vec<(Imap, IpAddr)> = logins.into_iter().map(|h| h.join().unwrap()).collect();
    let hosts: Vec<IpAddr> = results.iter().map(|(_, ip)| *ip).collect();
    assert!(hosts.iter().all(|h| *h == hosts[0]), "{hosts:?}");
    for (c, _) in results {
        c.logout();
    }

    // A move started on one director closes the user's sessions on all of them; the next
    // login, through any director, goes to the new host.
    let user = "moving@example.com";
    let mut sessions: Vec<(Imap, IpAddr)> = lab
        .imap
        .iter()
        .map(|addr| Imap::login(*addr, user))
        .collect();
    let old = sessions[0].1;
    assert!(sessions.iter().all(|(_, ip)| *ip == old));
    let new = lab
        .backends
        .iter()
        .map(|b| IpAddr::V4(b.ip()))
        .find(|ip| *ip != old)
        .expect("another backend");
    let reply = lab.directors[1].admin(&format!("USER-MOVE\t{user}\t{new}"));
    assert_eq!(reply, ["OK"]);
    for (c, _) in &mut sessions {
        assert!(
            c.closed(),
            "a session on the old host stays open after the move"
        );
    }
    wait_until("every director has the move", || {
        lab.directors
            .iter()
            .all(|d| d.current(user) == new.to_string())
    });
    for addr in &lab.imap {
        let (c, ip) = Imap::login(*addr, user);
        assert_eq!(ip, new, "login after the move");
        c.logout();
    }
}
