//! Behaviour tests of the director facade, driven like the daemon drives it.

use super::*;
use crate::hash::parse_user_key;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

fn settings(hosts: &[&str]) -> CoreSettings {
    CoreSettings {
        config_hosts: hosts.iter().map(|h| ConfigHost::new(ip(h))).collect(),
        ..CoreSettings::default()
    }
}

fn director(hosts: &[&str]) -> Director {
    Director::new(settings(hosts)).expect("director")
}

fn drain(d: &mut Director) -> Vec<Effect> {
    std::iter::from_fn(|| d.poll_effect()).collect()
}

fn ready_ip(o: RequestOutcome) -> IpAddr {
    match o {
        RequestOutcome::Ready(r) => r.ip,
        other => panic!("expected Ready, got {other:?}"),
    }
}

fn kick_tickets(effects: &[Effect]) -> Vec<Ticket> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::KickDirectorHash { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .collect()
}

const T0: u64 = 1_700_000_000;

#[test]
fn login_assigns_hashed_host_and_sticks() {
    let mut d = director(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    // §2.4: bob → 10.0.0.2
    assert_eq!(ready_ip(d.request(b"bob", "", T0)), ip("10.0.0.2"));
    assert_eq!(d.counters().users, 1);
    // Even with the host down, the existing assignment stays.
    d.host_down(ip("10.0.0.2"), T0).expect("down");
    assert_eq!(ready_ip(d.request(b"BOB", "", T0 + 10)), ip("10.0.0.2"));
    let l = d
        .user_lookup(&parse_user_key(b"bob"), "", T0 + 10)
        .expect("lookup");
    assert_eq!(l.current, Some((ip("10.0.0.2"), T0 + 10 + 900)));
    assert_eq!(l.hashed, Some(ip("10.0.0.3")));
    assert_eq!(l.initial, Some(ip("10.0.0.2")));
    // Standalone: no ring effects at all.
    assert!(drain(&mut d).is_empty());
    // After expiry a new login goes to the hashed host.
    assert_eq!(ready_ip(d.request(b"bob", "", T0 + 2000)), ip("10.0.0.3"));
}

#[test]
fn request_waits_for_hosts_and_times_out() {
    let mut d = director(&[]);
    let RequestOutcome::Queued(id, WaitReason::NoHosts) = d.request(b"bob", "", T0) else {
        panic!("expected queued");
    };
    assert_eq!(d.next_timeout(), Some(T0 + 30));
    d.host_set(ip("10.0.0.9"), None, None, T0 + 1).expect("set");
    assert_eq!(
        drain(&mut d),
        [Effect::RequestDone {
            id,
            result: Ok(Route {
                ip: ip("10.0.0.9"),
                hostname: None,
                new_user: true,
            })
        }]
    );
    let RequestOutcome::Queued(id2, _) = d.request(b"x", "missing-tag", T0 + 2) else {
        panic!("expected queued");
    };
    d.handle_timeout(T0 + 31);
    assert!(drain(&mut d).is_empty(), "not yet");
    d.handle_timeout(T0 + 32);
    assert_eq!(
        drain(&mut d),
        [Effect::RequestDone {
            id: id2,
            result: Err(RequestError::Timeout(WaitReason::NoHosts))
        }]
    );
    assert_eq!(d.counters().pending_requests, 0);
}

#[test]
fn hash_failure_fails_login_and_tryagain_admin() {
    let mut s = settings(&["10.0.0.1"]);
    s.username_hash = HashFormat::parse_lenient("%{bogus}").expect("lenient");
    let mut d = Director::new(s).expect("director");
    assert!(matches!(
        d.request(b"bob", "", T0),
        RequestOutcome::Failed(RequestError::HashFailed(_))
    ));
    assert!(d.user_lookup(&parse_user_key(b"bob"), "", T0).is_err());
    assert!(d.user_lookup(&parse_user_key(b"42"), "", T0).is_ok());
    assert_eq!(
        d.user_move(&parse_user_key(b"bob"), ip("10.0.0.1"), T0),
        Err(UserMoveError::TryAgain)
    );
}

#[test]
fn user_move_standalone_full_cycle() {
    let mut d = director(&["10.0.0.1", "10.0.0.2"]);
    let home = ready_ip(d.request(b"bob", "", T0));
    let other = if home == ip("10.0.0.1") {
        ip("10.0.0.2")
    } else {
        ip("10.0.0.1")
    };
    let key = parse_user_key(b"bob");
    d.user_move(&key, other, T0 + 5).expect("move");
    let eff = drain(&mut d);
    let tickets = kick_tickets(&eff);
    assert_eq!(tickets.len(), 1, "{eff:?}");
    assert_eq!(d.counters().moves_in_progress, 1);
    assert_eq!(d.counters().kicks_in_progress, 1);
    // A second move while the first runs: TRYAGAIN; logins wait.
    assert_eq!(
        d.user_move(&key, home, T0 + 6),
        Err(UserMoveError::TryAgain)
    );
    let RequestOutcome::Queued(rid, WaitReason::KillWaiting) = d.request(b"bob", "", T0 + 6) else {
        panic!("login must wait while the user is killed");
    };
    // The record doesn't expire while killing.
    d.handle_timeout(T0 + 7);
    assert_eq!(d.counters().users, 1);
    // Kick done → alone → no flush socket → delay 2 s.
    d.kick_finished(tickets[0], T0 + 7);
    assert_eq!(d.counters().kicks_in_progress, 0);
    assert_eq!(d.next_timeout(), Some(T0 + 9));
    d.handle_timeout(T0 + 9);
    assert_eq!(d.counters().moves_in_progress, 0);
    assert_eq!(
        drain(&mut d),
        [Effect::RequestDone {
            id: rid,
            result: Ok(Route {
                ip: other,
                hostname: None,
                new_user: false,
            })
        }]
    );
    // Moving to the host it already has: refresh only.
    d.user_move(&key, other, T0 + 20).expect("same host");
    assert!(drain(&mut d).is_empty());
    assert_eq!(
        d.user_list(None, T0 + 20),
        [UserListEntry {
            hash: 2677887420,
            expire: T0 + 20 + 900,
            ip: other
        }]
    );
}

#[test]
fn user_move_edge_cases() {
    let mut d = director(&["10.0.0.1"]);
    assert_eq!(
        d.user_move(&UserKey::Hash(0), ip("10.0.0.1"), T0),
        Err(UserMoveError::TryAgain),
        "hash 0 is refused, not a crash"
    );
    assert_eq!(
        d.user_move(&UserKey::Hash(5), ip("10.9.9.9"), T0),
        Err(UserMoveError::NotFound)
    );
    // Moving an unknown user creates it; nothing to kick (no old host).
    d.user_move(&UserKey::Hash(5), ip("10.0.0.1"), T0)
        .expect("move");
    assert!(kick_tickets(&drain(&mut d)).is_empty());
    assert_eq!(d.counters().moves_in_progress, 1);
    d.handle_timeout(T0 + 2);
    assert_eq!(d.counters().moves_in_progress, 0);
    assert_eq!(d.host_list()[0].user_count, 1);
}

#[test]
fn move_timeout_frees_the_user() {
    let mut d = director(&["10.0.0.1", "10.0.0.2"]);
    d.user_move(&UserKey::Hash(7), ip("10.0.0.1"), T0)
        .expect("create");
    d.handle_timeout(T0 + 2);
    d.user_move(&UserKey::Hash(7), ip("10.0.0.2"), T0 + 3)
        .expect("move");
    let t = kick_tickets(&drain(&mut d));
    assert_eq!(t.len(), 1);
    assert_eq!(d.next_timeout(), Some(T0 + 33));
    d.handle_timeout(T0 + 33);
    assert_eq!(d.counters().moves_in_progress, 0);
    // The late kick completion only frees the kick slot.
    assert_eq!(d.counters().kicks_in_progress, 1);
    d.kick_finished(t[0], T0 + 40);
    assert_eq!(d.counters().kicks_in_progress, 0);
    assert!(d
        .user_move(&UserKey::Hash(7), ip("10.0.0.1"), T0 + 41)
        .is_ok());
}

#[test]
fn flush_script_runs_on_self_initiated_moves() {
    let mut s = settings(&["10.0.0.1", "10.0.0.2"]);
    s.flush_socket = Some("unix:/run/flush-%i".into());
    let mut d = Director::new(s).expect("director");
    d.user_move(&UserKey::Hash(9), ip("10.0.0.1"), T0)
        .expect("create");
    d.handle_timeout(T0 + 2);
    d.host_down(ip("10.0.0.1"), T0 + 2).expect("down");
    d.user_move(&UserKey::Hash(9), ip("10.0.0.2"), T0 + 3)
        .expect("move");
    let t = kick_tickets(&drain(&mut d));
    d.kick_finished(t[0], T0 + 4);
    let eff = drain(&mut d);
    let [Effect::RunFlushScript {
        ticket,
        socket,
        args,
    }] = eff.as_slice()
    else {
        panic!("expected a flush script run, got {eff:?}");
    };
    assert_eq!(socket, "unix:/run/flush-10.0.0.2");
    assert_eq!(
        args.to_args(),
        ["FLUSH", "9", "10.0.0.1", "10.0.0.2", "down", "100"]
    );
    d.flush_script_finished(*ticket, true, T0 + 5);
    assert_eq!(d.counters().moves_in_progress, 0);
}

#[test]
fn failed_flush_script_waits_kick_delay() {
    let mut s = settings(&["10.0.0.1", "10.0.0.2"]);
    s.flush_socket = Some("exec:/bin/false".into());
    s.kick_delay_secs = 5;
    let mut d = Director::new(s).expect("director");
    d.user_move(&UserKey::Hash(9), ip("10.0.0.1"), T0)
        .expect("create");
    d.handle_timeout(T0 + 5);
    d.user_move(&UserKey::Hash(9), ip("10.0.0.2"), T0 + 6)
        .expect("move");
    let t = kick_tickets(&drain(&mut d));
    d.kick_finished(t[0], T0 + 6);
    let Some(Effect::RunFlushScript { ticket, .. }) = d.poll_effect() else {
        panic!("flush expected");
    };
    d.flush_script_finished(ticket, false, T0 + 7);
    assert_eq!(d.counters().moves_in_progress, 1);
    d.handle_timeout(T0 + 12);
    assert_eq!(d.counters().moves_in_progress, 0);
}

/// Users on `a` whose hashed host is now `b`.
fn director_with_users_to_move(n: u32) -> (Director, IpAddr, IpAddr) {
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let mut d = director(&["10.0.0.1", "10.0.0.2"]);
    d.host_update(b, None, 0, T0).expect("b takes nothing");
    for i in 0..n {
        assert_eq!(ready_ip(d.request(format!("u{i}").as_bytes(), "", T0)), a);
    }
    d.host_update(a, None, 0, T0).expect("a takes nothing");
    d.host_update(b, None, 100, T0).expect("b takes all");
    (d, a, b)
}

#[test]
fn reset_users_respects_max_parallel() {
    let (mut d, a, b) = director_with_users_to_move(5);
    let ticket = d.reset_users(Some(a), Some(2), T0 + 1).expect("reset");
    let mut now = T0 + 1;
    let mut moved = 0;
    let mut done = false;
    for _ in 0..20 {
        let eff = drain(&mut d);
        if eff.contains(&Effect::AdminDone {
            ticket,
            status: AdminStatus::Ok,
        }) {
            done = true;
        }
        let kicks = kick_tickets(&eff);
        assert!(d.counters().moves_in_progress <= 2);
        moved += kicks.len();
        for k in kicks {
            d.kick_finished(k, now);
        }
        now += 2;
        d.handle_timeout(now);
        if done && d.counters().moves_in_progress == 0 {
            break;
        }
    }
    assert!(done, "OK reply sent");
    assert_eq!(moved, 5);
    let list = d.host_list();
    assert_eq!(
        list.iter().find(|h| h.ip == b).map(|h| h.user_count),
        Some(5)
    );
    assert_eq!(
        d.reset_users(Some(ip("10.9.9.9")), None, now),
        Err(HostError::NotFound)
    );
}

#[test]
fn reset_users_without_any_host_kicks_and_drops() {
    let mut d = director(&["10.0.0.1"]);
    for i in 0..3 {
        d.request(format!("u{i}").as_bytes(), "", T0);
    }
    d.host_down(ip("10.0.0.1"), T0).expect("down");
    let ticket = d.reset_users(None, None, T0).expect("reset");
    let eff = drain(&mut d);
    assert!(eff.contains(&Effect::AdminDone {
        ticket,
        status: AdminStatus::Ok
    }));
    let kicks = kick_tickets(&eff);
    assert_eq!(kicks.len(), 3);
    for k in kicks {
        d.kick_finished(k, T0 + 1);
    }
    d.handle_timeout(T0 + 3);
    assert_eq!(d.counters().users, 0);
    assert_eq!(d.counters().moves_in_progress, 0);
}

#[test]
fn admin_kicks_wait_for_slots() {
    let mut s = settings(&["10.0.0.1"]);
    s.max_parallel_kicks = 1;
    let mut d = Director::new(s).expect("director");
    assert_eq!(
        d.user_kick(b"a", false, T0),
        AdminOutcome::Done(AdminStatus::Ok)
    );
    let Some(Effect::Kick {
        ticket: k1,
        username,
    }) = d.poll_effect()
    else {
        panic!("kick expected");
    };
    assert_eq!(username, b"a");
    assert_eq!(
        d.user_kick_alt("f", "v", true, T0),
        AdminOutcome::Done(AdminStatus::TryAgain)
    );
    let AdminOutcome::Pending(t) = d.user_kick_alt("f", "v", false, T0) else {
        panic!("pending expected");
    };
    assert!(drain(&mut d).is_empty());
    d.kick_finished(k1, T0 + 1);
    let eff = drain(&mut d);
    assert!(
        matches!(&eff[0], Effect::KickAlt { field, value, .. } if field == "f" && value == "v")
    );
    assert_eq!(
        eff[1],
        Effect::AdminDone {
            ticket: t,
            status: AdminStatus::Ok
        }
    );
}

#[test]
fn host_admin_errors() {
    let mut d = director(&["10.0.0.1"]);
    let h = ip("10.0.0.1");
    assert_eq!(
        d.host_set(h, None, Some(1001), T0),
        Err(HostError::VhostCountTooLarge)
    );
    assert_eq!(
        d.host_set(h, Some("x"), None, T0),
        Err(HostError::TagCantBeChanged)
    );
    assert_eq!(d.host_set(h, Some(""), Some(1000), T0), Ok(()));
    assert_eq!(
        d.host_update(ip("10.0.0.2"), None, 5, T0),
        Err(HostError::NotFound)
    );
    assert_eq!(d.host_up(ip("10.0.0.2"), T0), Err(HostError::NotFound));
    assert_eq!(d.host_remove(ip("10.0.0.2"), T0), Err(HostError::NotFound));
    assert_eq!(
        d.host_flush(Some(ip("10.0.0.2")), T0),
        Err(HostError::NotFound)
    );
    assert_eq!(
        HostError::AlreadyBeingUpdated.reply(),
        "host is already being updated - try again later"
    );
    // Up when already up: OK without a new stamp.
    d.host_up(h, T0 + 5).expect("up");
    assert_eq!(d.host_list()[0].last_updown_change, 0);
    d.host_down(h, T0 + 6).expect("down");
    d.host_up(h, T0 + 7).expect("up");
    assert_eq!(d.host_list()[0].last_updown_change, T0 + 7);
    // New host via HOST-SET gets the tag given.
    d.host_set(ip("::1"), Some("t"), None, T0).expect("add");
    let l = d.host_list();
    assert_eq!((l[1].tag.as_str(), l[1].vhost_count), ("t", 100));
}

#[test]
fn desynced_hosts_refuse_changes_until_synced() {
    let mut d = director(&["10.0.0.1"]);
    let h = ip("10.0.0.1");
    let ring = RingStatus {
        handshaked: true,
        synced: false,
        has_right: true,
        has_peers: true,
    };
    d.set_ring_status(ring, T0);
    d.host_down(h, T0).expect("down");
    assert_eq!(d.host_up(h, T0), Err(HostError::AlreadyBeingUpdated));
    assert_eq!(
        d.host_set(h, None, Some(5), T0),
        Err(HostError::AlreadyBeingUpdated)
    );
    d.set_ring_status(
        RingStatus {
            synced: true,
            ..ring
        },
        T0 + 1,
    );
    d.host_up(h, T0 + 1).expect("up after sync");
}

#[test]
fn remove_and_flush_drop_users_and_removed_list() {
    let mut d = director(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    for i in 0..30 {
        d.request(format!("user{i}").as_bytes(), "", T0);
    }
    let before: u32 = d.host_list().iter().map(|h| h.user_count).sum();
    assert_eq!(before, 30);
    let on2 = d.user_list(Some(ip("10.0.0.2")), T0).len();
    d.host_remove(ip("10.0.0.2"), T0).expect("remove");
    assert_eq!(d.counters().users, 30 - on2);
    assert_eq!(d.host_list_removed(), [ip("10.0.0.2")]);
    assert!(d.user_list(Some(ip("10.0.0.2")), T0).is_empty());
    d.host_flush(Some(ip("10.0.0.1")), T0).expect("flush");
    assert!(d.user_list(Some(ip("10.0.0.1")), T0).is_empty());
    d.host_flush(None, T0).expect("flush all");
    assert_eq!(d.counters().users, 0);
}

/// Users dropped without a move leave their proxied sessions to be closed by the daemon.
#[test]
fn remove_and_flush_ask_to_close_the_hosts_sessions() {
    let mut d = director(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let kicked = |d: &mut Director| -> Vec<IpAddr> {
        drain(d)
            .into_iter()
            .filter_map(|e| match e {
                Effect::KickBackend { ip } => Some(ip),
                _ => None,
            })
            .collect()
    };
    d.host_remove(ip("10.0.0.2"), T0).expect("remove");
    assert_eq!(kicked(&mut d), [ip("10.0.0.2")]);
    d.host_flush(Some(ip("10.0.0.1")), T0).expect("flush");
    assert_eq!(kicked(&mut d), [ip("10.0.0.1")]);
    d.host_flush(None, T0).expect("flush all");
    assert_eq!(kicked(&mut d), [ip("10.0.0.1"), ip("10.0.0.3")]);
}

#[test]
fn proxy_notify_refreshes() {
    let mut d = director(&["10.0.0.1"]);
    d.request(b"bob", "", T0);
    d.refresh_user(b"BOB", T0 + 100);
    let l = d
        .user_lookup(&parse_user_key(b"bob"), "", T0 + 100)
        .expect("lookup");
    assert_eq!(l.current.map(|c| c.1), Some(T0 + 100 + 900));
    d.refresh_user(b"nobody", T0 + 100);
    assert_eq!(d.counters().users, 1);
}

#[test]
fn reload_merges_config_hosts() {
    let mut d = director(&["10.0.0.1", "10.0.0.2"]);
    d.host_update(ip("10.0.0.1"), None, 5, T0).expect("update");
    let mut new = vec![
        ConfigHost::new(ip("10.0.0.1")),
        ConfigHost::new(ip("10.0.0.3")),
    ];
    new.push(ConfigHost {
        ip: ip("10.0.0.4"),
        tag: "t".into(),
        hostname: Some("mail4".into()),
    });
    let r = d.reload_config_hosts(new, T0).expect("reload");
    assert_eq!(r.added, [ip("10.0.0.3"), ip("10.0.0.4")]);
    assert_eq!(r.not_in_config, [ip("10.0.0.2")]);
    assert!(r.tag_conflicts.is_empty());
    assert_eq!(d.host_list()[0].vhost_count, 5, "runtime change kept");
    assert_eq!(d.host_list_removed(), Vec::<IpAddr>::new());
    let route = d.request(b"x", "t", T0);
    assert_eq!(
        route,
        RequestOutcome::Ready(Route {
            ip: ip("10.0.0.4"),
            hostname: Some("mail4".into()),
            new_user: true,
        })
    );
}

#[test]
fn ring_kill_token_goes_round() {
    let mut d = director(&["10.0.0.1", "10.0.0.2"]);
    let ring = RingStatus {
        handshaked: true,
        synced: true,
        has_right: true,
        has_peers: true,
    };
    d.set_ring_status(ring, T0);
    d.user_move(&UserKey::Hash(11), ip("10.0.0.1"), T0)
        .expect("create");
    let eff = drain(&mut d);
    assert!(eff.contains(&Effect::RingUserMove {
        hash: 11,
        ip: ip("10.0.0.1")
    }));
    // No kick needed (new user) → self-initiated → USER-KILLED to the right.
    assert!(eff.contains(&Effect::RingUserKilled { hash: 11 }));
    // Token came back: everywhere step.
    d.ring_user_killed(11, T0 + 1);
    assert_eq!(
        drain(&mut d),
        [Effect::RingUserKilledEverywhere { hash: 11 }]
    );
    d.handle_timeout(T0 + 3);
    assert_eq!(d.counters().moves_in_progress, 0);

    // A move started by another director: wait for the notify, then pass the token on.
    assert!(d.ring_user_move(11, ip("10.0.0.2"), T0 + 10));
    let t = kick_tickets(&drain(&mut d));
    d.ring_user_killed(11, T0 + 10); // arrives before our kick finished
    assert!(drain(&mut d).is_empty());
    d.kick_finished(t[0], T0 + 11);
    assert_eq!(drain(&mut d), [Effect::RingUserKilled { hash: 11 }]);
    assert!(d.ring_user_killed_everywhere(11, T0 + 12));
    d.handle_timeout(T0 + 14);
    assert_eq!(d.counters().moves_in_progress, 0);
    assert!(!d.ring_user_move(11, ip("10.9.9.9"), T0 + 20));
}

#[test]
fn ring_near_expiry_marks_weak() {
    let mut d = director(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let ring = RingStatus {
        handshaked: true,
        synced: true,
        has_right: true,
        has_peers: true,
    };
    d.set_ring_status(ring, T0);
    // bob hashes to .2; put him on .1.
    d.user_move(&parse_user_key(b"bob"), ip("10.0.0.1"), T0)
        .expect("move");
    d.ring_user_killed(2677887420, T0);
    d.handle_timeout(T0 + 2);
    drain(&mut d);
    // Near expiry (E=900, near=30): at T0+871 the user is near expiring.
    let RequestOutcome::Queued(id, WaitReason::WeakUser) = d.request(b"bob", "", T0 + 880) else {
        panic!("should wait as weak");
    };
    assert_eq!(
        drain(&mut d),
        [Effect::RingUserWeak {
            hash: 2677887420,
            ip: ip("10.0.0.1")
        }]
    );
    d.ring_user_weak_returned(2677887420, T0 + 881);
    let eff = drain(&mut d);
    assert!(eff
        .iter()
        .any(|e| matches!(e, Effect::RequestDone { id: i, result: Ok(_) } if *i == id)));
}

#[test]
fn ring_not_handshaked_waits() {
    let mut d = director(&["10.0.0.1"]);
    d.set_ring_status(
        RingStatus {
            handshaked: false,
            synced: false,
            has_right: true,
            has_peers: true,
        },
        T0,
    );
    assert!(matches!(
        d.request(b"a", "", T0),
        RequestOutcome::Queued(_, WaitReason::RingNotHandshaked)
    ));
    d.set_ring_status(RingStatus::STANDALONE, T0 + 1);
    let eff = drain(&mut d);
    assert!(matches!(
        eff.as_slice(),
        [Effect::RequestDone { result: Ok(_), .. }, ..]
    ));
}

#[test]
fn modulo_mode_selects_by_remainder() {
    let mut s = settings(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    s.hashing_mode = HashingMode::Modulo;
    let mut d = Director::new(s).expect("director");
    assert_eq!(ready_ip(d.request(b"bob", "", T0)), ip("10.0.0.2"));
}

/// A login that created an assignment and then failed at the backend leaves nothing
/// behind; an existing user's assignment is never dropped that way.
#[test]
fn a_refused_first_login_leaves_no_assignment() {
    let mut d = director(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let RequestOutcome::Ready(first) = d.request(b"made-up", "", T0) else {
        panic!("routed at once")
    };
    assert!(first.new_user);
    assert_eq!(d.counters().users, 1);
    assert!(d.discard_new_user(b"made-up", "", first.ip, T0));
    assert_eq!(d.counters().users, 0);
    assert!(d.user_list(None, T0).is_empty());

    // A user that already had an assignment: not new, and a failure elsewhere (a host it
    // no longer uses) drops nothing.
    let RequestOutcome::Ready(r) = d.request(b"real", "", T0) else {
        panic!("routed at once")
    };
    let RequestOutcome::Ready(again) = d.request(b"real", "", T0 + 1) else {
        panic!("routed at once")
    };
    assert!(r.new_user && !again.new_user);
    let other = [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
        .into_iter()
        .find(|i| *i != r.ip)
        .expect("another host");
    assert!(!d.discard_new_user(b"real", "", other, T0 + 1));
    assert_eq!(d.counters().users, 1);
}

/// A ring loaded with moves keeps one kill context per moved user for the kick delay, and
/// the driver asks for the next deadline after every event: the work per move must not
/// grow with the moves in flight (scanning every context made a ring of 100,000 moves
/// spend minutes of CPU and miss its sync).
#[test]
fn many_moves_in_flight_cost_constant_work_each() {
    const N: u32 = 5_000;
    let ring = RingStatus {
        handshaked: true,
        synced: true,
        has_right: true,
        has_peers: true,
    };
    let hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
    // `origin` moves users on admin request; `middle` learns them from the ring.
    let mut origin = director(&hosts);
    let mut middle = director(&hosts);
    origin.set_ring_status(ring, T0);
    middle.set_ring_status(ring, T0);
    let visited = |d: &Director| d.kills.visited.get();
    let (o0, m0) = (visited(&origin), visited(&middle));
    for hash in 1..=N {
        let to = ip(hosts[(hash % 3) as usize]);
        origin
            .user_move(&UserKey::Hash(hash), to, T0)
            .expect("move");
        origin.next_timeout();
        assert!(middle.ring_user_move(hash, to, T0));
        middle.next_timeout();
        // The token goes round: left of `middle` killed the user, then back to `origin`.
        middle.ring_user_killed(hash, T0);
        middle.next_timeout();
        origin.ring_user_killed(hash, T0 + 1);
        origin.next_timeout();
        assert!(middle.ring_user_killed_everywhere(hash, T0 + 1));
        middle.next_timeout();
    }
    assert_eq!(origin.counters().moves_in_progress, N);
    assert_eq!(middle.counters().moves_in_progress, N);
    let delay = u64::from(DEFAULT_KICK_DELAY_SECS);
    assert_eq!(origin.next_timeout(), Some(T0 + 1 + delay));
    origin.handle_timeout(T0 + 1 + delay);
    middle.handle_timeout(T0 + 1 + delay);
    assert_eq!(origin.counters().moves_in_progress, 0);
    assert_eq!(middle.counters().moves_in_progress, 0);
    // Each sent the token on once per user; only the origin announces the end.
    for (d, announced) in [(&mut origin, N as usize), (&mut middle, 0)] {
        let effects = drain(d);
        let killed = |e: &Effect| matches!(e, Effect::RingUserKilled { .. });
        let everywhere = |e: &Effect| matches!(e, Effect::RingUserKilledEverywhere { .. });
        assert_eq!(effects.iter().filter(|e| killed(e)).count(), N as usize);
        assert_eq!(effects.iter().filter(|e| everywhere(e)).count(), announced);
    }
    // A few context look-ups per event; a scan of all of them would be N per event.
    let per_move_origin = (visited(&origin) - o0) / u64::from(N);
    let per_move_middle = (visited(&middle) - m0) / u64::from(N);
    assert!(per_move_origin <= 20, "{per_move_origin} contexts per move");
    assert!(per_move_middle <= 20, "{per_move_middle} contexts per move");
}
