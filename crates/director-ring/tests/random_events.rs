//! Random failures and changes on a running ring of four directors (kills, restarts,
//! hangs, host changes, logins, time passing): once everyone is back and time passes,
//! the ring is whole, synced, and every director has the same hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use proptest::prelude::*;
use sim::*;

const N: usize = 4;

#[derive(Debug, Clone)]
enum Ev {
    Kill(usize),
    Restart(usize),
    Freeze(usize),
    Thaw(usize),
    Advance(u64),
    HostSet(usize, u8, u32),
    Login(usize, u8),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        (0..N).prop_map(Ev::Kill),
        (0..N).prop_map(Ev::Restart),
        (0..N).prop_map(Ev::Freeze),
        (0..N).prop_map(Ev::Thaw),
        prop::sample::select(vec![0u64, 1, 2, 5, 15, 31, 61]).prop_map(Ev::Advance),
        (0..N, 1u8..6, 1u32..200).prop_map(|(i, b, v)| Ev::HostSet(i, b, v)),
        (0..N, 0u8..20).prop_map(|(i, u)| Ev::Login(i, u)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0000_71e5),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn the_ring_heals_after_random_failures(events in prop::collection::vec(ev(), 1..25)) {
        let mut net = Net::new(N);
        net.start_all();
        net.advance(5);
        for e in &events {
            match *e {
                Ev::Kill(i) => if net.nodes[i].alive { net.kill(i) },
                Ev::Restart(i) => {
                    net.frozen.retain(|f| *f != i);
                    net.restart(i);
                }
                Ev::Freeze(i) => if !net.frozen.contains(&i) { net.frozen.push(i) },
                Ev::Thaw(i) => {
                    net.frozen.retain(|f| *f != i);
                    net.pump();
                }
                Ev::Advance(s) => net.advance(s),
                Ev::HostSet(i, b, v) => {
                    if net.nodes[i].alive && !net.frozen.contains(&i) {
                        let now = net.now;
                        let node = &mut net.nodes[i];
                        // Refused while an earlier change of it is still going round.
                        if node.dir.host_set(backend(b), None, Some(v), now).is_ok() {
                            node.ring.host_changed(backend(b), now, &mut node.dir);
                        }
                        net.pump();
                    }
                }
                Ev::Login(i, u) => {
                    if net.nodes[i].alive && !net.frozen.contains(&i) {
                        let _ = net.login(i, &format!("user{u}"));
                    }
                }
            }
        }
        // Everyone back: hung directors are restarted (their peers dropped them), dead
        // ones start again.
        for i in 0..N {
            if net.frozen.contains(&i) || !net.nodes[i].alive {
                net.frozen.retain(|f| *f != i);
                net.restart(i);
            }
        }
        net.advance(200);
        for i in 0..N {
            let o = net.nodes[i].ring.overview();
            prop_assert!(o.synced && o.handshaked, "director {i}: {o:?}");
            prop_assert_eq!(o.right, Some(daddr((i + 1) % N + 1)), "right of {}", i);
            prop_assert_eq!(o.left, Some(daddr((i + N - 1) % N + 1)), "left of {}", i);
            prop_assert_eq!(net.hosts(i), net.hosts(0), "hosts of {}", i);
        }
    }
}
