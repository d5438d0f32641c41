//! The ring state machine in an in-memory network of real `Ring` + `Director` pairs
//! (see `sim/mod.rs`): every line goes through the real codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use director_ring::ConnCounters;
use sim::*;

fn overview(net: &Net, i: usize) -> director_ring::RingOverview {
    net.nodes[i].ring.overview()
}

fn assert_ring_formed(net: &Net) {
    let n = net.nodes.len();
    for i in 0..n {
        let o = overview(net, i);
        assert!(o.synced && o.handshaked, "director {i} not synced: {o:?}");
        assert_eq!(o.right, Some(daddr((i + 1) % n + 1)), "right of {i}: {o:?}");
        assert_eq!(
            o.left,
            Some(daddr((i + n - 1) % n + 1)),
            "left of {i}: {o:?}"
        );
    }
}

#[test]
fn three_directors_form_a_synced_ring() {
    let mut net = Net::new(3);
    net.start_all();
    assert_ring_formed(&net);
}

#[test]
fn five_directors_form_a_synced_ring() {
    let mut net = Net::new(5);
    net.start_all();
    assert_ring_formed(&net);
}

fn assert_hosts_agree(net: &Net) {
    let first = net.hosts(0);
    let hash = net.nodes[0].dir.hosts_hash();
    for i in 1..net.nodes.len() {
        if net.nodes[i].alive {
            assert_eq!(net.hosts(i), first, "hosts of director {i}");
            assert_eq!(net.nodes[i].dir.hosts_hash(), hash, "hosts_hash of {i}");
        }
    }
}

#[test]
fn a_host_added_on_any_director_appears_on_all() {
    let mut net = Net::new(5);
    net.start_all();
    for (i, b) in [(0usize, 4u8), (3, 5), (4, 6)] {
        net.admin_host_set(i, backend(b), 50);
        assert!(
            net.all_alive_synced(),
            "ring synced again after adding on {i}"
        );
        for j in 0..5 {
            assert!(
                net.hosts(j).contains(&(backend(b), 50, false)),
                "director {j} knows {}",
                backend(b)
            );
        }
        assert_hosts_agree(&net);
    }
    // Update, down, up and remove go round the same way.
    net.admin_host_set(2, backend(4), 200);
    net.advance(1);
    net.admin_host_down(1, backend(4), true);
    assert!(net.hosts(3).contains(&(backend(4), 200, true)));
    net.advance(1);
    net.admin_host_down(4, backend(4), false);
    net.admin_host_remove(0, backend(5));
    assert_hosts_agree(&net);
    assert!(!net.hosts(2).iter().any(|h| h.0 == backend(5)));
    assert!(net.all_alive_synced());
    // The HOST lines are seq-tracked with the origin's address.
    let host_lines = net.lines_starting("HOST\t127.0.0.11\t9090\t");
    assert!(!host_lines.is_empty());
    assert!(
        host_lines[0].line.ends_with("\t127.0.1.4\t50\t\tU0\t"),
        "{}",
        host_lines[0].line
    );
}

#[test]
fn a_user_assigned_on_one_director_is_known_everywhere_with_the_same_host() {
    let mut net = Net::new(3);
    net.start_all();
    let users: Vec<String> = (1..=20).map(|n| format!("user{n}")).collect();
    let mut routes = Vec::new();
    for (k, u) in users.iter().enumerate() {
        let r = net
            .login(k % 3, u)
            .expect("routed at once on a synced ring");
        routes.push(r.ip);
    }
    for (u, ip) in users.iter().zip(&routes) {
        for i in 0..3 {
            assert_eq!(net.user_host(i, u), Some(*ip), "{u} on director {i}");
        }
    }
    // Lab: user1's USER line carries the hash 617210206.
    let user1 = net.lines_starting("USER\t617210206\t");
    assert!(!user1.is_empty());
    // Forwarded only while it is news: 3 directors, one login → 4 copies (lab §3).
    let mut net = Net::new(3);
    net.start_all();
    let before = net.wire.len();
    net.login(0, "user1").expect("routed");
    let copies = net.wire[before..]
        .iter()
        .filter(|w| w.line.starts_with("USER\t617210206\t"))
        .count();
    assert_eq!(copies, 4);
}

#[test]
fn a_restarted_director_relearns_users_and_its_sequence_restarts() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    for n in 1..=10 {
        net.login(0, &format!("u{n}")).expect("routed");
    }
    // Director 1 originates a dozen HOST updates: the others' last seq for it is high.
    for v in 10..22 {
        net.admin_host_set(1, backend(4), v);
        net.advance(1);
    }
    let seq_before: u32 = net
        .lines_starting("HOST\t127.0.0.12\t9090\t")
        .iter()
        .map(|w| w.line.split('\t').nth(3).unwrap().parse::<u32>().unwrap())
        .max()
        .unwrap();
    assert!(seq_before >= 12, "{seq_before}");
    net.restart(1);
    net.advance(5);
    assert_ring_formed(&net);
    // Users and hosts come back from the ring (U lines in the handshake).
    for n in 1..=10 {
        let u = format!("u{n}");
        assert_eq!(net.user_host(1, &u), net.user_host(0, &u), "{u}");
    }
    assert_hosts_agree(&net);
    assert!(net.lines_starting("U\t").len() >= 10);
    // Its seq starts from 1 again, and the others accept it (their state was reset).
    let now = net.now;
    net.advance(1);
    net.admin_host_set(1, backend(5), 20);
    let fresh: Vec<_> = net
        .lines_starting("HOST\t127.0.0.12\t9090\t")
        .into_iter()
        .map(|w| w.line.clone())
        .filter(|l| l.contains("127.0.1.5"))
        .collect();
    assert!(fresh
        .iter()
        .all(|l| l.starts_with("HOST\t127.0.0.12\t9090\t")));
    assert!(
        fresh
            .iter()
            .all(|l| l.split('\t').nth(3).unwrap().parse::<u32>().unwrap() < seq_before),
        "seq restarted: {fresh:?} (restart at {now})"
    );
    for i in 0..3 {
        assert!(
            net.hosts(i).contains(&(backend(5), 20, false)),
            "director {i}"
        );
    }
}

/// A ring holding more users than one handshake round: a restarted director gets them a
/// round at a time (the sender waits until each round is written, so the output buffer
/// limit holds however many users there are), and a change the sender makes in the middle
/// reaches it after the sender's `DONE`, not inside the handshake.
#[test]
fn a_joining_director_gets_many_users_in_rounds_and_changes_meanwhile_after_done() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    let n = director_ring::HANDSHAKE_USERS_PER_ROUND * 2 + 500;
    for k in 0..n {
        net.login(0, &format!("bulk{k}")).expect("routed");
    }
    net.hold_written = true;
    net.restart(1);
    let (sender, conn) = net.open_held().expect("a handshake waits for its round");
    // Only the first round went out on that connection so far.
    let sent = |net: &Net| {
        net.wire
            .iter()
            .filter(|w| w.from == daddr(sender + 1) && w.conn == conn && w.line.starts_with("U\t"))
            .count()
    };
    assert_eq!(sent(&net), director_ring::HANDSHAKE_USERS_PER_ROUND);
    net.admin_host_set(sender, backend(7), 33);
    let new_host = backend(7).to_string();
    let to_joiner = |net: &Net, prefix: &str| {
        net.wire.iter().position(|w| {
            w.from == daddr(sender + 1)
                && w.conn == conn
                && w.line.starts_with(prefix)
                && (prefix != "HOST\t" || w.line.contains(&new_host))
        })
    };
    assert_eq!(to_joiner(&net, "HOST\t"), None, "held back until DONE");
    net.release_written();
    net.advance(5);
    assert_ring_formed(&net);
    assert_eq!(sent(&net), n);
    let done = to_joiner(&net, "DONE").expect("DONE");
    let host = to_joiner(&net, "HOST\t").expect("the change, after DONE");
    assert!(host > done);
    assert!(net.hosts(1).contains(&(backend(7), 33, false)));
    for k in (0..n).step_by(997) {
        let u = format!("bulk{k}");
        assert_eq!(net.user_host(1, &u), net.user_host(0, &u), "{u}");
    }
}

#[test]
fn a_restarted_director_gets_the_users_once_from_its_left() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    let round = director_ring::HANDSHAKE_USERS_PER_ROUND;
    let n = round * 2 + 500;
    for k in 0..n {
        net.login(0, &format!("bulk{k}")).expect("routed");
    }
    // Director 3 dies: director 2 (its left) connects to director 1 instead and starts
    // sending it every user, a round at a time.
    let u_lines_from_2 = |net: &Net| {
        net.wire
            .iter()
            .filter(|w| w.from == daddr(2) && w.line.starts_with("U\t"))
            .count()
    };
    let before = u_lines_from_2(&net);
    net.hold_written = true;
    net.kill(2);
    assert_eq!(
        net.held_written.len(),
        1,
        "director 2's handshake to 1 waits"
    );
    // Director 3 is back before that handshake is done: once it is director 1's left,
    // director 1 sends director 2 to it at once, and director 2 drops the handshake it no
    // longer needs.
    net.restart(2);
    assert!(
        net.lines_starting("CONNECT\t127.0.0.13")
            .iter()
            .any(|w| w.from == daddr(1) && w.to == daddr(2)),
        "director 1 sends director 2 to director 3"
    );
    assert!(net
        .disconnects
        .iter()
        .any(|(i, r)| *i == 1 && r == "CONNECT requested"));
    net.release_written();
    net.advance(5);
    assert_ring_formed(&net);
    assert_eq!(
        u_lines_from_2(&net) - before,
        round + n,
        "one round to director 1, then all of them to director 3"
    );
    for k in (0..n).step_by(997) {
        let u = format!("bulk{k}");
        assert_eq!(net.user_host(2, &u), net.user_host(0, &u), "{u}");
    }
}

/// A user whose every `USER` line was lost (its director cut off from both neighbours just
/// after assigning it) reaches that director's right neighbour in the reconnect's handshake,
/// and from there the rest of the ring. Dovecot merges handshake users without forwarding
/// them, so its left neighbour never learnt the user.
#[test]
fn a_user_whose_lines_were_all_lost_reaches_the_whole_ring_after_the_reconnect() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    let now = net.now;
    let director_core::RequestOutcome::Ready(route) = net.nodes[2].dir.request(b"lost", "", now)
    else {
        panic!("routed at once on a synced ring");
    };
    // Cut off before its USER lines leave: they are lost with the links.
    net.isolate(2);
    assert_eq!(net.user_host(0, "lost"), None);
    assert_eq!(net.user_host(1, "lost"), None);
    net.unreachable.clear();
    net.advance(70);
    assert_ring_formed(&net);
    for i in 0..3 {
        assert_eq!(net.user_host(i, "lost"), Some(route.ip), "director {i}");
    }
    // A joining director that learns every user in its handshake forwards none of them.
    let users_before = net.lines_starting("USER\t").len();
    net.restart(1);
    net.advance(70);
    assert_ring_formed(&net);
    assert_eq!(net.user_host(1, "lost"), Some(route.ip));
    assert_eq!(net.lines_starting("USER\t").len(), users_before);
}

#[test]
fn two_directors_assigning_one_new_user_at_once_converge_on_the_lower_ip() {
    let mut net = Net::new(3);
    net.start_all();
    // Find a user whose hashed host differs when one host is down on director 0 only.
    let now = net.now;
    let mut pick = None;
    for n in 0..200 {
        let user = format!("race{n}");
        let key = director_core::UserKey::Name(user.clone().into_bytes());
        let hashed = net.nodes[2]
            .dir
            .user_lookup(&key, "", now)
            .unwrap()
            .hashed
            .unwrap();
        if hashed != backend(1) {
            pick = Some((user, hashed));
            break;
        }
    }
    let (user, hashed_elsewhere) = pick.expect("a user not on 127.0.1.1");
    // Director 0 sees that host down (locally, not yet announced), so it picks another.
    net.nodes[0].dir.host_down(hashed_elsewhere, now).unwrap();
    let r0 = net.nodes[0].dir.request(user.as_bytes(), "", now);
    let r2 = net.nodes[2].dir.request(user.as_bytes(), "", now);
    let (director_core::RequestOutcome::Ready(a), director_core::RequestOutcome::Ready(b)) =
        (r0, r2)
    else {
        panic!("both routed at once");
    };
    assert_ne!(
        a.ip, b.ip,
        "the two directors disagree before the ring settles"
    );
    net.pump();
    let winner = a.ip.min(b.ip);
    for i in 0..3 {
        assert_eq!(net.user_host(i, &user), Some(winner), "director {i}");
    }
    // Connections elsewhere than the winner are kicked round the ring.
    assert!(!net.lines_starting("USER-KICK-HASH\t").is_empty());
}

#[test]
fn malformed_and_out_of_place_lines_drop_the_link_without_panicking() {
    for bad in [
        &b"BOGUS\tx\n"[..],
        b"HOST-HAND-START\t1\n",
        b"U\t1\t127.0.1.1\t1795896443\n",
        b"USER\tnot-a-number\t127.0.1.1\n",
        b"VERSION\tdirector\t1\t9\n",
        b"DONE\n",
        b"SYNC\t127.0.0.12\n",
        b"\n",
    ] {
        let mut net = Net::new(3);
        net.start_all();
        net.advance(60);
        assert!(net.linked(0, 1));
        let before = net.disconnects.len();
        net.inject(1, 0, bad);
        let text = String::from_utf8_lossy(bad);
        assert!(
            !net.linked(0, 1) || !net.linked(1, 0) || net.disconnects.len() > before,
            "{text:?} dropped a link"
        );
        let (who, reason) = net.disconnects[before].clone();
        assert_eq!(who, 0, "{text:?}: director 0 closes");
        assert!(!reason.is_empty());
        // Director 0 sent its reason as QUIT first.
        assert!(
            net.wire
                .iter()
                .any(|w| w.from == daddr(1) && w.to == daddr(2) && w.line.starts_with("QUIT\t")),
            "{text:?}: QUIT sent"
        );
        // The ring heals around it (protocol failure: no contact for 60 s), then re-forms.
        net.advance(3);
        assert!(
            net.all_alive_synced(),
            "{text:?}: synced again without director 1's link"
        );
        net.advance(70);
        assert_ring_formed(&net);
    }
}

#[test]
fn a_too_long_line_drops_the_link() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    let before = net.disconnects.len();
    let mut long = vec![b'x'; 2000];
    long.push(b'\n');
    net.inject(2, 0, &long);
    assert_eq!(
        net.disconnects[before],
        (0, "Too long input line".to_string())
    );
    net.advance(5);
    assert_ring_formed(&net);
}

#[test]
fn connections_from_unknown_ips_are_refused() {
    let mut net = Net::new(3);
    net.start_all();
    let now = net.now;
    let node = &mut net.nodes[0];
    node.ring.connected(
        director_ring::ConnId(999),
        "127.0.0.99".parse().unwrap(),
        director_ring::Direction::Incoming,
        now,
        &mut node.dir,
    );
    assert_eq!(
        node.ring.poll_output(),
        Some(director_ring::Output::Disconnect {
            conn: director_ring::ConnId(999),
            reason: "Server not listed in director_servers, dropping".into()
        })
    );
}

#[test]
fn a_director_alone_retries_every_second_and_declares_itself_alone_after_20_s() {
    let mut net = Net::new(3);
    net.start(0);
    assert!(!net.nodes[0].ring.overview().handshaked);
    // A login of a new user waits: the ring isn't handshaked.
    assert!(net.login(0, "alice").is_none());
    net.advance(19);
    assert!(!net.nodes[0].ring.overview().handshaked);
    // Both peers are tried, every second.
    let to2 = net.connects.iter().filter(|c| c.1 == daddr(2)).count();
    let to3 = net.connects.iter().filter(|c| c.1 == daddr(3)).count();
    assert!(to2 >= 18 && to3 >= 18, "{to2} {to3}");
    net.advance(2);
    let o = net.nodes[0].ring.overview();
    assert!(o.handshaked && o.synced, "{o:?}");
    assert!(net.login(0, "bob").is_some());
    // A peer that comes up joins and gets the state.
    net.start(1);
    net.advance(3);
    assert!(net.all_alive_synced());
    assert_eq!(net.user_host(1, "bob"), net.user_host(0, "bob"));
}

#[test]
fn a_director_cut_off_from_the_ring_assigns_no_new_users_until_alone_for_20_s() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    net.isolate(0);
    // Cut off, it can no longer tell what the others assign: new users wait there, while
    // the other two, still a ring, serve them.
    assert!(!net.nodes[0].ring.overview().synced);
    assert!(net.login(0, "newcomer").is_none());
    assert!(net.login(1, "newcomer").is_some());
    net.advance(19);
    assert!(!net.nodes[0].ring.overview().synced);
    // After trying to reach the others for 20 s it is the only director left.
    net.advance(2);
    assert!(net.nodes[0].ring.overview().synced);
    assert!(net.login(0, "latecomer").is_some());
    // The network comes back: the ring forms again around it.
    net.unreachable.clear();
    net.advance(35);
    assert_ring_formed(&net);
}

#[test]
fn a_hung_director_is_dropped_by_ping_timeout_and_the_ring_closes_around_it() {
    let mut net = Net::new(4);
    net.start_all();
    net.advance(60);
    net.frozen.push(2);
    // Idle pings after 15 s, no answer: the link is closed 30 s later.
    net.advance(15 + 31);
    let reasons: Vec<&String> = net.disconnects.iter().map(|d| &d.1).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("Ping timed out")),
        "{reasons:?}"
    );
    // A reconnect to it gets no ME either; then it is skipped as failing.
    net.advance(15);
    assert_eq!(net.nodes[1].ring.overview().right, Some(daddr(4)));
    assert_eq!(net.nodes[3].ring.overview().left, Some(daddr(2)));
    for i in [0, 1, 3] {
        assert!(net.nodes[i].ring.overview().synced, "director {i}");
    }
}

#[test]
fn a_killed_director_is_routed_around_at_once() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    net.login(1, "user1").unwrap();
    net.kill(1);
    assert_eq!(net.nodes[0].ring.overview().right, Some(daddr(3)));
    assert_eq!(net.nodes[2].ring.overview().left, Some(daddr(1)));
    assert!(net.nodes[0].ring.overview().synced);
    // New users are routed at once by the survivors.
    assert!(net.login(2, "newcomer").is_some());
    // It comes back: CONNECT relinks director 0 to it, and it relearns the users.
    net.restart(1);
    net.advance(2);
    assert_ring_formed(&net);
    assert_eq!(net.user_host(1, "user1"), net.user_host(0, "user1"));
    assert_eq!(net.user_host(1, "newcomer"), net.user_host(2, "newcomer"));
}

#[test]
fn a_hosts_hash_mismatch_keeps_the_origin_unsynced_and_makes_peers_resend_hosts() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    // Director 0 changes a host without telling the ring, then syncs.
    let now = net.now;
    let node = &mut net.nodes[0];
    node.dir.host_set(backend(9), None, Some(7), now).unwrap();
    node.ring.host_flushed(&[], now, &mut node.dir);
    net.pump();
    assert!(!net.nodes[0].ring.overview().synced);
    // Its SYNC was dropped (first time silently); the resend after 5 s makes the peer
    // resend its hosts as its own HOST lines.
    net.advance(6);
    assert!(!net.lines_starting("HOST\t127.0.0.12\t9090\t").is_empty());
    assert!(!net.nodes[0].ring.overview().synced);
    // Once the host goes round the ring properly, everyone agrees again.
    let node = &mut net.nodes[0];
    let now = net.now;
    node.ring.host_changed(backend(9), now, &mut node.dir);
    net.pump();
    net.advance(6);
    assert_hosts_agree(&net);
    assert!(net.all_alive_synced());
}

#[test]
fn director_list_rows() {
    let mut net = Net::new(3);
    net.start_all();
    let now = net.now;
    let rows: Vec<Vec<String>> = net.nodes[0]
        .ring
        .status(now, |_| ConnCounters::default())
        .into_iter()
        .map(|r| r.fields)
        .collect();
    let cols = |r: &Vec<String>| [r[0].clone(), r[1].clone(), r[2].clone(), r[4].clone()];
    assert_eq!(
        cols(&rows[0]),
        ["127.0.0.11", "9090", "self", "ring synced"]
    );
    assert_eq!(cols(&rows[1]), ["127.0.0.12", "9090", "right", "synced"]);
    assert_eq!(cols(&rows[2]), ["127.0.0.13", "9090", "left", "synced"]);
    // last_failed: Unix time of the last failure or 0; director 0 started first, so a
    // connect of it failed at T0.
    assert!(
        rows.iter().all(|r| r[3] == "0" || r[3] == T0.to_string()),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r[3] == T0.to_string()), "{rows:?}");
    assert_eq!(rows[1].len(), 12);
}

#[test]
fn a_near_expiring_user_off_its_hashed_host_is_confirmed_with_user_weak() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    let host = net.login(0, "weakling").expect("routed").ip;
    // Its host goes down everywhere: the hashed host is now another one.
    net.admin_host_down(1, host, true);
    // Close to expiry (900 s, "near" = the last 30 s), a login must confirm the
    // assignment round the ring before using it.
    net.advance(875);
    let mark = net.wire.len();
    let now = net.now;
    let out = net.nodes[0].dir.request(b"weakling", "", now);
    let director_core::RequestOutcome::Queued(id, reason) = out else {
        panic!("weak user must wait: {out:?}");
    };
    assert_eq!(reason, director_core::WaitReason::WeakUser);
    net.pump();
    let weak: Vec<&Wire> = net.wire[mark..]
        .iter()
        .filter(|w| w.line.starts_with("USER-WEAK\t127.0.0.11\t9090\t"))
        .collect();
    assert!(weak.len() >= 2, "USER-WEAK sent both ways");
    // It came back to us: the login goes on to the user's (still current) host, and the
    // others learn the refreshed, non-weak record.
    assert!(
        net.requests_done.contains(&(0, id, Some(host))),
        "{:?}",
        net.requests_done
    );
    for i in 0..3 {
        assert_eq!(net.user_host(i, "weakling"), Some(host), "director {i}");
    }
}

#[test]
fn a_director_removed_by_admin_is_dropped_from_the_ring_everywhere() {
    let mut net = Net::new(4);
    net.start_all();
    net.advance(60);
    let now = net.now;
    let node = &mut net.nodes[0];
    assert!(node
        .ring
        .director_remove(daddr(3).ip, None, now, &mut node.dir));
    assert!(!node
        .ring
        .director_remove("127.0.0.99".parse().unwrap(), None, now, &mut node.dir));
    net.pump();
    net.advance(3);
    assert!(!net
        .lines_starting("DIRECTOR-REMOVE\t127.0.0.13\t9090")
        .is_empty());
    for i in [0, 1, 3] {
        // Listed as removed until the next ring sync purges it.
        let rows = net.nodes[i]
            .ring
            .status(net.now, |_| ConnCounters::default());
        let row = rows.iter().find(|r| r.fields[0] == "127.0.0.13");
        assert!(
            row.is_none_or(|r| r.fields[2] == "removed"),
            "director {i}: {row:?}"
        );
        assert!(net.nodes[i].ring.overview().synced, "director {i}");
    }
    assert_eq!(net.nodes[1].ring.overview().right, Some(daddr(4)));
    assert!(!net.linked(1, 2) && !net.linked(3, 2));
    // Its reconnects are refused: it is no longer a director of the ring.
    net.advance(5);
    assert!(!net.linked(1, 2) && !net.linked(3, 2) && !net.linked(0, 2));
    assert!(net
        .disconnects
        .iter()
        .any(|d| d.1 == "Server not listed in director_servers, dropping"));
}

#[test]
fn a_peer_too_old_for_consistent_hashing_is_refused() {
    let mut net = Net::new(2);
    net.start(0);
    let now = net.now;
    let node = &mut net.nodes[0];
    let conn = director_ring::ConnId(500);
    node.ring.connected(
        conn,
        daddr(2).ip,
        director_ring::Direction::Incoming,
        now,
        &mut node.dir,
    );
    while node.ring.poll_output().is_some() {}
    let old = director_proto::ring::parse(b"VERSION\tdirector\t1\t4").unwrap();
    node.ring.line(conn, old, now, &mut node.dir);
    let outs: Vec<_> = std::iter::from_fn(|| node.ring.poll_output()).collect();
    assert!(
        matches!(outs.last(), Some(director_ring::Output::Disconnect { conn: c, reason })
            if *c == conn && reason.contains("1.4")),
        "{outs:?}"
    );
}

#[test]
fn a_standalone_director_lists_added_directors_without_connecting() {
    // Observed on a real standalone Dovecot 2.3.19 director (see
    // director-driver/src/ring_view.rs): it lists itself as 127.0.0.1:0, lists an
    // added director with empty type and status, and never connects to it.
    let me = director_ring::STANDALONE_SELF;
    let mut ring = director_ring::Ring::new(director_ring::RingConfig::new(me, Vec::new()));
    let mut dir = director_core::Director::new(director_core::CoreSettings::default()).unwrap();
    ring.start(T0, &mut dir);
    let rows = |ring: &director_ring::Ring| -> Vec<String> {
        ring.status(T0, |_| ConnCounters::default())
            .into_iter()
            .map(|r| r.fields.join("\t"))
            .collect()
    };
    assert_eq!(rows(&ring), ["127.0.0.1\t0\tself\t0\tring synced\t0"]);
    ring.director_add("127.0.78.12".parse().unwrap(), Some(9090), T0, &mut dir);
    assert_eq!(ring.poll_output(), None);
    assert_eq!(
        rows(&ring),
        [
            "127.0.0.1\t0\tself\t0\tring synced\t0",
            "127.0.78.12\t9090\t\t0\t"
        ]
    );
    assert!(ring.is_synced());
    assert_eq!(ring.next_timeout(), None);
}

#[test]
fn a_restarted_director_relearns_twenty_thousand_users_in_its_handshake() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    let now = net.now;
    for n in 0..20_000 {
        let node = &mut net.nodes[0];
        let out = node.dir.request(format!("bulk{n}").as_bytes(), "", now);
        assert!(matches!(out, director_core::RequestOutcome::Ready(_)));
    }
    net.pump();
    assert_eq!(net.nodes[2].dir.users().len(), 20_000);
    net.restart(1);
    net.advance(3);
    assert!(net.all_alive_synced());
    assert_eq!(net.nodes[1].dir.users().len(), 20_000);
    // The hosts agree, so the relearned assignments route the same way.
    for n in (0..20_000).step_by(997) {
        let u = format!("bulk{n}");
        assert_eq!(net.user_host(1, &u), net.user_host(0, &u), "{u}");
    }
    let sent = net
        .wire
        .iter()
        .filter(|w| w.line.starts_with("U\t") && w.to == daddr(2))
        .count();
    assert_eq!(
        sent, 20_000,
        "one U line per user, to the restarted director"
    );
}

#[test]
fn a_director_restarted_from_its_saved_state_takes_the_rings_state() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    for n in 1..=30 {
        net.login(0, &format!("s{n}")).expect("routed");
    }
    let saved = net.nodes[1].dir.snapshot(net.now);
    assert_eq!(saved.users.len(), 30);
    // While director 1 is down, the ring loses a host (and its users) and gains one.
    net.kill(1);
    net.advance(30);
    net.admin_host_remove(0, backend(3));
    net.admin_host_set(0, backend(7), 20);
    net.advance(5);
    let failures_before = net.disconnects.len();
    net.restart_from(1, &saved);
    net.advance(5);
    assert_ring_formed(&net);
    // Its saved users named the removed host: they were not offered, so no peer dropped
    // the handshake, and the ring's hosts and users replaced the saved ones.
    let protocol_errors: Vec<_> = net.disconnects[failures_before..]
        .iter()
        .filter(|(_, reason)| reason.contains("unknown host"))
        .collect();
    assert!(protocol_errors.is_empty(), "{protocol_errors:?}");
    assert_hosts_agree(&net);
    assert!(net.hosts(1).iter().all(|h| h.0 != backend(3)));
    assert!(net.hosts(1).iter().any(|h| h.0 == backend(7)));
    for n in 1..=30 {
        let u = format!("s{n}");
        assert_eq!(net.user_host(1, &u), net.user_host(0, &u), "{u}");
    }
    assert_eq!(
        net.nodes[1].dir.users().len(),
        net.nodes[0].dir.users().len()
    );
}

#[test]
fn a_whole_ring_restarted_from_saved_states_keeps_its_hosts_and_users() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    net.admin_host_set(2, backend(4), 50);
    net.admin_host_down(0, backend(1), true);
    net.advance(2);
    let mut routed = Vec::new();
    for n in 1..=40 {
        let u = format!("w{n}");
        let host = net.login(n % 3, &u).expect("routed").ip;
        routed.push((u, host));
    }
    net.advance(2);
    let saved: Vec<_> = (0..3).map(|i| net.nodes[i].dir.snapshot(net.now)).collect();
    for i in 0..3 {
        net.kill(i);
    }
    net.advance(10);
    for (i, s) in saved.iter().enumerate() {
        net.restart_from(i, s);
    }
    net.advance(5);
    assert_ring_formed(&net);
    assert_hosts_agree(&net);
    let hosts = net.hosts(0);
    assert!(hosts.contains(&(backend(4), 50, false)), "{hosts:?}");
    assert!(hosts.contains(&(backend(1), 100, true)), "{hosts:?}");
    for (u, host) in &routed {
        for i in 0..3 {
            assert_eq!(net.user_host(i, u), Some(*host), "{u} on {i}");
        }
        assert_eq!(net.login(1, u).map(|r| r.ip), Some(*host), "{u}");
    }
}

/// A handshake round is a quarter of `director_output_buffer_size` at most, so a small
/// buffer never overflows on one round; the default buffer takes the largest round.
#[test]
fn handshake_rounds_fit_the_output_buffer() {
    let mut config = director_ring::RingConfig::new(daddr(1), vec![daddr(1), daddr(2)]);
    config.fit_output_buffer(64 * 1024);
    assert!(config.handshake_users_per_round * 72 <= 16 * 1024);
    assert!(config.handshake_users_per_round > 100);
    config.fit_output_buffer(10 * 1024 * 1024);
    assert_eq!(
        config.handshake_users_per_round,
        director_ring::HANDSHAKE_USERS_PER_ROUND
    );
    config.fit_output_buffer(0);
    assert_eq!(config.handshake_users_per_round, 1);
}

/// A login that created a user's assignment and then failed at the backend: in a ring the
/// `USER` has already gone round, and no ring message takes an assignment back. The
/// director whose login failed must keep the assignment like the others (it expires
/// everywhere as usual); dropping it there alone left that director without a user the
/// rest of the ring kept, for good, and a later login there could pick another backend.
#[test]
fn a_failed_first_login_in_a_ring_keeps_the_assignment_everywhere() {
    let mut net = Net::new(3);
    net.start_all();
    let route = net
        .login(2, "ghost")
        .expect("routed at once on a synced ring");
    assert!(route.new_user);
    for i in 0..3 {
        assert_eq!(net.user_host(i, "ghost"), Some(route.ip), "director {i}");
    }
    let now = net.now;
    assert!(
        !net.nodes[2]
            .dir
            .discard_new_user(b"ghost", "", route.ip, now),
        "the ring knows the user: not dropped on one director alone"
    );
    net.advance(5);
    for i in 0..3 {
        assert_eq!(net.user_host(i, "ghost"), Some(route.ip), "director {i}");
    }
    let lists: Vec<_> = (0..3)
        .map(|i| net.nodes[i].dir.user_list(None, net.now))
        .collect();
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[0], lists[2]);

    // Once a director has had a ring peer, it keeps that rule while cut off: the peers it
    // had may know the user.
    net.isolate(2);
    net.advance(30);
    let lonely = net
        .login(2, "lonely")
        .expect("alone for long enough: routed");
    assert!(lonely.new_user);
    let now = net.now;
    assert!(!net.nodes[2]
        .dir
        .discard_new_user(b"lonely", "", lonely.ip, now));
}

/// A handshake `U` naming a host the receiver no longer has (it removed the host while
/// the sender had not heard of that yet) is not a broken peer: as in Dovecot, the
/// receiver drops the link without marking the sender failed, the ring re-forms, and a
/// new handshake brings every user the cut one had not delivered yet.
#[test]
fn a_handshake_user_on_an_unknown_host_drops_the_link_without_a_failure_mark() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(60);
    let n = director_ring::HANDSHAKE_USERS_PER_ROUND * 2 + 500;
    let users: Vec<String> = (0..n).map(|k| format!("bulk{k}")).collect();
    for u in &users {
        net.login(0, u).expect("routed");
    }
    net.hold_written = true;
    net.restart(1);
    let (sender, conn) = net.open_held().expect("a handshake waits for its round");
    assert_eq!(sender, 0, "director 0 has the users to send");
    let to = net
        .wire
        .iter()
        .find(|w| w.from == daddr(1) && w.conn == conn)
        .expect("the handshake's first lines")
        .to;
    let receiver = (0..3).find(|&i| daddr(i + 1) == to).expect("a director");
    let before = net.disconnects.len();
    let line = format!("U\t4242\t{}\t{}\n", backend(9), net.now);
    net.inject_on(sender, conn, line.as_bytes());
    let dropped: Vec<_> = net.disconnects[before..]
        .iter()
        .filter(|(who, reason)| *who == receiver && reason.contains("unknown host"))
        .collect();
    assert_eq!(
        dropped.len(),
        1,
        "the receiver drops the link: {:?}",
        net.disconnects
    );
    let rows: Vec<Vec<String>> = net.nodes[receiver]
        .ring
        .status(net.now, |_| ConnCounters::default())
        .into_iter()
        .map(|r| r.fields)
        .collect();
    let row = rows
        .iter()
        .find(|r| r[0] == "127.0.0.11")
        .expect("director 0's row");
    assert_eq!(row[3], "0", "no failure marked on director 0: {row:?}");

    net.release_written();
    net.advance(5);
    assert_ring_formed(&net);
    for u in &users {
        let on0 = net.user_host(0, u);
        assert!(on0.is_some());
        assert_eq!(
            net.user_host(receiver, u),
            on0,
            "{u} on director {receiver}"
        );
    }
}

/// Exactly one director of a synced ring is its lowest live one (the one that decides alone
/// for the ring, e.g. the health checks); when it dies, the next lowest is.
#[test]
fn exactly_one_director_is_the_lowest_live_and_the_next_takes_over() {
    let mut net = Net::new(3);
    net.start_all();
    net.advance(5);
    assert_ring_formed(&net);
    let lowest: Vec<usize> = (0..3)
        .filter(|&i| net.nodes[i].ring.is_lowest_live())
        .collect();
    assert_eq!(lowest, [0]);
    net.kill(0);
    net.advance(5);
    let lowest: Vec<usize> = (1..3)
        .filter(|&i| net.nodes[i].ring.is_lowest_live())
        .collect();
    assert_eq!(lowest, [1]);
}
