//! Property tests: the ring against a naive model, the user directory against a map model
//! under random operations and a simulated clock, the director under random admin/login
//! sequences, and the template parser on arbitrary input.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use director_core::hash::{user_hash, HashFormat, UserKey};
use director_core::host::{HostId, HostList, TagId};
use director_core::user_directory::{UserDirectory, WEAK_GRACE_SECS};
use director_core::var_expand::Template;
use director_core::vhost_ring::{vhash, HashingMode, RingSet, VhashCache};
use director_core::{ConfigHost, CoreSettings, Director, Effect, RequestOutcome, RingStatus};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct HostSpec {
    ip: IpAddr,
    vhosts: u32,
    down: bool,
    tag: &'static str,
}

fn host_spec() -> impl Strategy<Value = HostSpec> {
    (
        prop_oneof![
            any::<u8>().prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, 0, 0, b))),
            any::<u16>().prop_map(|w| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, w))),
            any::<u32>().prop_map(|x| IpAddr::V6(Ipv6Addr::from(u128::from(x)))),
        ],
        0u32..40,
        prop::bool::weighted(0.2),
        prop::sample::select(vec!["", "", "a", "b"]),
    )
        .prop_map(|(ip, vhosts, down, tag)| HostSpec {
            ip,
            vhosts,
            down,
            tag,
        })
}

fn naive_lookup(hosts: &[HostSpec], tag: &str, hash: u32) -> Option<IpAddr> {
    let mut pts: Vec<(u32, IpAddr)> = Vec::new();
    let mut seen = Vec::new();
    for h in hosts {
        if seen.contains(&h.ip) {
            continue; // the host list keeps the first definition of an address
        }
        seen.push(h.ip);
        if h.down || h.tag != tag {
            continue;
        }
        let text = director_core::host::inet_ntop(&h.ip);
        for i in 0..h.vhosts {
            pts.push((vhash(&text, i), h.ip));
        }
    }
    pts.sort();
    pts.iter()
        .find(|p| p.0 >= hash)
        .or(pts.first())
        .map(|p| p.1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ring_equals_naive_model(
        hosts in prop::collection::vec(host_spec(), 0..12),
        hashes in prop::collection::vec(any::<u32>(), 1..40),
        pick in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut list = HostList::new();
        for h in &hosts {
            if let Ok(id) = list.add(h.ip, h.tag, h.vhosts, None) {
                if list.get(id).map(|x| x.vhost_count) == Some(h.vhosts) {
                    if let Some(m) = list.get_mut(id) { m.down = h.down; }
                }
            }
        }
        // Re-apply "first definition wins" to the down flags too.
        let mut seen = Vec::new();
        for h in &hosts {
            if seen.contains(&h.ip) { continue; }
            seen.push(h.ip);
            let id = list.lookup(&h.ip).expect("added");
            if let Some(m) = list.get_mut(id) { m.down = h.down; }
        }
        list.touch();
        let rings = RingSet::build(&list, HashingMode::Consistent, &mut VhashCache::default());
        let mut all = hashes.clone();
        // Also probe exact point values.
        if let Some(r) = list.tag_id("").and_then(|t| rings.ring(t)) {
            let pts: Vec<u32> = r.points().map(|p| p.0).collect();
            for i in &pick {
                if !pts.is_empty() { all.push(pts[i.index(pts.len())]); }
            }
        }
        for tag in ["", "a", "b", "zz"] {
            for &h in &all {
                let got = list.tag_id(tag)
                    .and_then(|t| rings.lookup(t, h))
                    .and_then(|id| list.get(id))
                    .map(|x| x.ip);
                prop_assert_eq!(got, naive_lookup(&hosts, tag, h), "tag {:?} hash {}", tag, h);
            }
        }
    }

    #[test]
    fn template_parser_never_panics(t in ".{0,64}", user in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(tpl) = Template::parse(&t) {
            let _ = tpl.expand(&user);
        }
        if let Ok(f) = HashFormat::parse_lenient(&t) {
            let _ = user_hash(&user, &f);
        }
    }

    #[test]
    fn template_parser_never_panics_on_percent_soup(
        t in prop::collection::vec(prop::sample::select(vec![
            "%", "-", "0", "1", "9", ".", "L", "U", "E", "X", "R", "H", "N", "M", "D", "T",
            "u", "n", "d", "{", "}", "user", "x", "@",
        ]), 0..24),
        user in "[a-zA-Z0-9@. ]{0,16}",
    ) {
        let t: String = t.concat();
        let tpl = Template::parse(&t).expect("short template");
        let _ = tpl.expand(user.as_bytes());
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Insert {
        tag: u16,
        hash: u32,
        host: u16,
        back: u64,
    },
    Refresh {
        tag: u16,
        hash: u32,
        back: u64,
    },
    SetHost {
        tag: u16,
        hash: u32,
        host: u16,
    },
    Weak {
        tag: u16,
        hash: u32,
        on: bool,
    },
    Killing {
        tag: u16,
        hash: u32,
        on: bool,
    },
    Remove {
        tag: u16,
        hash: u32,
    },
    RemoveHost {
        host: u16,
    },
    Get {
        tag: u16,
        hash: u32,
    },
    Expire,
    Advance(u64),
}

fn dir_op() -> impl Strategy<Value = DirOp> {
    let tag = 0u16..3;
    let hash = 0u32..40;
    let host = 0u16..4;
    prop_oneof![
        4 => (tag.clone(), hash.clone(), host.clone(), 0u64..200)
            .prop_map(|(tag, hash, host, back)| DirOp::Insert { tag, hash, host, back }),
        2 => (tag.clone(), hash.clone(), 0u64..200).prop_map(|(tag, hash, back)| DirOp::Refresh { tag, hash, back }),
        1 => (tag.clone(), hash.clone(), host.clone()).prop_map(|(tag, hash, host)| DirOp::SetHost { tag, hash, host }),
        1 => (tag.clone(), hash.clone(), any::<bool>()).prop_map(|(tag, hash, on)| DirOp::Weak { tag, hash, on }),
        1 => (tag.clone(), hash.clone(), any::<bool>()).prop_map(|(tag, hash, on)| DirOp::Killing { tag, hash, on }),
        1 => (tag.clone(), hash.clone()).prop_map(|(tag, hash)| DirOp::Remove { tag, hash }),
        1 => host.prop_map(|host| DirOp::RemoveHost { host }),
        2 => (tag, hash).prop_map(|(tag, hash)| DirOp::Get { tag, hash }),
        1 => Just(DirOp::Expire),
        2 => (0u64..120).prop_map(DirOp::Advance),
    ]
}

#[derive(Debug, Clone, Copy)]
struct ModelUser {
    host: u16,
    ts: u64,
    weak: bool,
    killing: bool,
}

const E: u64 = 100;

fn model_droppable(u: &ModelUser, now: u64) -> bool {
    if u.ts + E > now || u.killing {
        return false;
    }
    if u.weak {
        return u.ts + E + WEAK_GRACE_SECS <= now;
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn user_directory_matches_model(ops in prop::collection::vec(dir_op(), 1..200)) {
        let mut d = UserDirectory::new(E as u32);
        let mut m: HashMap<(u16, u32), ModelUser> = HashMap::new();
        let mut now = 1_000u64;
        for op in ops {
            match op {
                DirOp::Insert { tag, hash, host, back } => {
                    let r = d.insert(TagId(tag), hash, HostId(host), now - back.min(now), now);
                    prop_assert_eq!(r.is_some(), !m.contains_key(&(tag, hash)));
                    m.entry((tag, hash)).or_insert(ModelUser { host, ts: now - back.min(now), weak: false, killing: false });
                }
                DirOp::Refresh { tag, hash, back } => {
                    let r = d.refresh(TagId(tag), hash, now + 50 - back.min(now), now);
                    if let Some(u) = m.get_mut(&(tag, hash)) {
                        u.ts = u.ts.max((now + 50 - back.min(now)).min(now));
                        prop_assert_eq!(r.map(|x| u64::from(x.timestamp)), Some(u.ts));
                    } else {
                        prop_assert!(r.is_none());
                    }
                }
                DirOp::SetHost { tag, hash, host } => {
                    let r = d.set_host(TagId(tag), hash, HostId(host));
                    if let Some(u) = m.get_mut(&(tag, hash)) { u.host = host; }
                    prop_assert_eq!(r.is_some(), m.contains_key(&(tag, hash)));
                }
                DirOp::Weak { tag, hash, on } => {
                    let r = d.set_weak(TagId(tag), hash, on);
                    if let Some(u) = m.get_mut(&(tag, hash)) { u.weak = on; }
                    prop_assert_eq!(r, m.contains_key(&(tag, hash)));
                }
                DirOp::Killing { tag, hash, on } => {
                    let r = d.set_killing(TagId(tag), hash, on);
                    if let Some(u) = m.get_mut(&(tag, hash)) { u.killing = on; }
                    prop_assert_eq!(r, m.contains_key(&(tag, hash)));
                }
                DirOp::Remove { tag, hash } => {
                    let r = d.remove(TagId(tag), hash);
                    prop_assert_eq!(r.is_some(), m.remove(&(tag, hash)).is_some());
                }
                DirOp::RemoveHost { host } => {
                    let r = d.remove_host(HostId(host));
                    let before = m.len();
                    m.retain(|_, u| u.host != host);
                    prop_assert_eq!(r.len(), before - m.len());
                }
                DirOp::Get { tag, hash } => {
                    let r = d.get(TagId(tag), hash, now);
                    let expect = match m.get(&(tag, hash)) {
                        Some(u) if model_droppable(u, now) => { m.remove(&(tag, hash)); None }
                        Some(u) => Some(u.host),
                        None => None,
                    };
                    prop_assert_eq!(r.map(|u| u.host.0), expect);
                }
                DirOp::Expire => {
                    let next = d.next_expiry();
                    d.expire(now);
                    m.retain(|_, u| !model_droppable(u, now));
                    // Nothing is due before the reported next expiry.
                    if let Some(n) = next {
                        if n > now {
                            prop_assert_eq!(d.len(), m.len());
                        }
                    }
                }
                DirOp::Advance(s) => now += s,
            }
            d.check_invariants().map_err(TestCaseError::fail)?;
            prop_assert_eq!(d.len(), m.len());
            for host in 0u16..4 {
                let c = m.values().filter(|u| u.host == host).count() as u32;
                prop_assert_eq!(d.user_count(HostId(host)), c);
            }
        }
        // next_expiry is exact: nothing droppable before it, something at it.
        if let Some(n) = d.next_expiry() {
            let mut probe = d.clone();
            prop_assert_eq!(probe.expire(n.saturating_sub(1)).expired + probe.expire(n.saturating_sub(1)).weak_stuck.len(), 0);
            let r = probe.expire(n);
            prop_assert!(r.expired + r.weak_stuck.len() > 0);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Login(u8),
    Move(u8, u8),
    Down(u8),
    Up(u8),
    Vhosts(u8, u16),
    Remove(u8),
    Add(u8),
    Flush(Option<u8>),
    Reset(Option<u8>, u8),
    Kick(u8, bool),
    Advance(u8),
    Complete,
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0u8..5;
    prop_oneof![
        6 => any::<u8>().prop_map(Op::Login),
        2 => (any::<u8>(), h.clone()).prop_map(|(u, h)| Op::Move(u, h)),
        1 => h.clone().prop_map(Op::Down),
        1 => h.clone().prop_map(Op::Up),
        1 => (h.clone(), 0u16..150).prop_map(|(h, v)| Op::Vhosts(h, v)),
        1 => h.clone().prop_map(Op::Remove),
        1 => h.clone().prop_map(Op::Add),
        1 => prop::option::of(h.clone()).prop_map(Op::Flush),
        1 => (prop::option::of(h), 1u8..4).prop_map(|(h, m)| Op::Reset(h, m)),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(u, n)| Op::Kick(u, n)),
        3 => (0u8..40).prop_map(Op::Advance),
        3 => Just(Op::Complete),
    ]
}

fn host_ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1))
}

fn settle(d: &mut Director, now: &mut u64, flush_ok: bool) {
    for _ in 0..100 {
        let mut any = false;
        while let Some(e) = d.poll_effect() {
            any = true;
            match e {
                Effect::KickDirectorHash { ticket, .. }
                | Effect::Kick { ticket, .. }
                | Effect::KickAlt { ticket, .. } => d.kick_finished(ticket, *now),
                Effect::RunFlushScript { ticket, .. } => {
                    d.flush_script_finished(ticket, flush_ok, *now)
                }
                _ => {}
            }
        }
        if let Some(t) = d.next_timeout() {
            if t <= *now + 40 {
                *now = (*now).max(t);
                d.handle_timeout(*now);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn director_random_ops_keep_counters_consistent(
        ops in prop::collection::vec(op(), 1..80),
        flush_socket in any::<bool>(),
        flush_ok in any::<bool>(),
    ) {
        let mut d = Director::new(CoreSettings {
            user_expire_secs: 60,
            config_hosts: (0..3).map(|i| ConfigHost::new(host_ip(i))).collect(),
            flush_socket: flush_socket.then(|| "unix:/x-%i".to_string()),
            max_parallel_kicks: 2,
            ..CoreSettings::default()
        }).expect("director");
        d.set_ring_status(RingStatus::STANDALONE, 0);
        let mut now = 1_000u64;
        for op in ops {
            match op {
                Op::Login(u) => {
                    if let RequestOutcome::Ready(r) = d.request(format!("u{u}").as_bytes(), "", now) {
                        prop_assert!(d.hosts().lookup(&r.ip).is_some());
                    }
                }
                Op::Move(u, h) => { let _ = d.user_move(&UserKey::Hash(u32::from(u)), host_ip(h), now); }
                Op::Down(h) => { let _ = d.host_down(host_ip(h), now); }
                Op::Up(h) => { let _ = d.host_up(host_ip(h), now); }
                Op::Vhosts(h, v) => { let _ = d.host_update(host_ip(h), None, u32::from(v), now); }
                Op::Remove(h) => { let _ = d.host_remove(host_ip(h), now); }
                Op::Add(h) => { let _ = d.host_set(host_ip(h), None, None, now); }
                Op::Flush(h) => { let _ = d.host_flush(h.map(host_ip), now); }
                Op::Reset(h, m) => { let _ = d.reset_users(h.map(host_ip), Some(u32::from(m)), now); }
                Op::Kick(u, nowait) => { let _ = d.user_kick(&[u], nowait, now); }
                Op::Advance(s) => { now += u64::from(s); d.handle_timeout(now); }
                Op::Complete => settle(&mut d, &mut now, flush_ok),
            }
            let users: u32 = d.host_list().iter().map(|h| h.user_count).sum();
            prop_assert_eq!(users as usize, d.counters().users);
            d.users().check_invariants().map_err(TestCaseError::fail)?;
        }
        // Report every completion and let every timer run: nothing may stay in flight.
        now += 100;
        d.handle_timeout(now);
        settle(&mut d, &mut now, flush_ok);
        now += 100;
        d.handle_timeout(now);
        settle(&mut d, &mut now, flush_ok);
        let c = d.counters();
        prop_assert_eq!(c.moves_in_progress, 0);
        prop_assert_eq!(c.kicks_in_progress, 0);
        prop_assert_eq!(c.pending_kicks, 0);
        prop_assert_eq!(c.reset_jobs, 0);
        prop_assert_eq!(c.pending_requests, 0);
    }
}

/// Regression (found by the property above): `HOST-FLUSH` of all hosts while a
/// `HOST-RESET-USERS` job waits for a move slot must let the job finish.
#[test]
fn reset_job_finishes_when_a_flush_drops_its_moves() {
    let mut d = Director::new(CoreSettings {
        user_expire_secs: 60,
        config_hosts: (0..3).map(|i| ConfigHost::new(host_ip(i))).collect(),
        ..CoreSettings::default()
    })
    .expect("director");
    d.set_ring_status(RingStatus::STANDALONE, 0);
    let mut now = 1_000u64;
    let _ = d.request(b"u178", "", now);
    let _ = d.user_move(&UserKey::Hash(1), host_ip(0), now);
    let _ = d.request(b"u0", "", now);
    let _ = d.reset_users(None, Some(1), now);
    d.host_flush(None, now).expect("flush");
    now += 100;
    d.handle_timeout(now);
    settle(&mut d, &mut now, true);
    assert_eq!(d.counters().reset_jobs, 0);
    assert_eq!(d.counters().moves_in_progress, 0);
}

/// Regression (found by the property above): `HOST-REMOVE` frees the move slots of the host's
/// users, and a waiting `HOST-RESET-USERS` job then resumes; it must not move a user onto the
/// host being removed (that user would point at a host that no longer exists).
#[test]
fn reset_job_never_moves_users_onto_a_removed_host() {
    let mut d = Director::new(CoreSettings {
        user_expire_secs: 60,
        config_hosts: (0..3).map(|i| ConfigHost::new(host_ip(i))).collect(),
        max_parallel_kicks: 2,
        ..CoreSettings::default()
    })
    .expect("director");
    d.set_ring_status(RingStatus::STANDALONE, 0);
    let now = 1_000u64;
    d.host_set(host_ip(4), None, None, now).expect("add");
    let _ = d.request(b"u158", "", now);
    let _ = d.request(b"u231", "", now);
    let _ = d.user_move(&UserKey::Hash(1), host_ip(0), now);
    d.host_down(host_ip(4), now).expect("down");
    let _ = d.reset_users(None, Some(2), now);
    d.host_remove(host_ip(2), now).expect("remove");
    let on_hosts: u32 = d.host_list().iter().map(|h| h.user_count).sum();
    assert_eq!(on_hosts as usize, d.counters().users);
    assert!(d.user_list(None, now).iter().all(|u| u.ip != host_ip(2)));
}
