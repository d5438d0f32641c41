//! The README's runbook, step by step: a ring of three real Dovecot 2.3 directors, each
//! replaced by `directord` on the same address in turn. At every step the ring syncs again,
//! and the hosts and user assignments the ring held before the migration are still on every
//! director.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ring::{wait_same, wait_synced, Member, RingSpec};
use testkit::require_dovecot;

#[test]
fn dovecot_directors_are_replaced_one_at_a_time() {
    require_dovecot();
    let spec = RingSpec::new(3);
    let mut ring: Vec<Member> = (0..3).map(|i| spec.dovecot(i)).collect();
    wait_synced(&ring);

    // What the ring holds before the migration: a host added at run time, a host down, and
    // users assigned (one moved away from its hashed host).
    assert_eq!(ring[0].admin("HOST-SET\t127.0.1.50\t25"), ["OK"]);
    assert_eq!(ring[1].admin("HOST-DOWN\t127.0.1.2"), ["OK"]);
    assert_eq!(
        ring[2].admin("USER-MOVE\tpinned@example.com\t127.0.1.50"),
        ["OK"]
    );
    for i in 0..5 {
        let moved = ring[i % 3].admin(&format!("USER-MOVE\tuser{i}@example.com\t127.0.1.1"));
        assert_eq!(moved, ["OK"]);
    }
    let state = |m: &Member| (m.hosts(), m.users());
    let before = wait_same(&ring, "state", state);
    assert_eq!(before.1.len(), 6, "{:?}", before.1);

    for i in 0..3 {
        // Step 2: stop this Dovecot director and start ours on its addresses.
        if let Member::Dovecot(d) = &mut ring[i] {
            d.stop().expect("the Dovecot director stops");
        }
        ring[i] = spec.ours(i);
        wait_synced(&ring);
        // Step 3: the new director holds what the ring held.
        assert_eq!(
            wait_same(&ring, "state", state),
            before,
            "after replacing {i}"
        );
    }
    assert!(ring.iter().all(|m| matches!(m, Member::Ours(_))));
    let (hosts, users) = state(&ring[0]);
    assert!(
        hosts.iter().any(|h| h.starts_with("127.0.1.50\t25\t")),
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
