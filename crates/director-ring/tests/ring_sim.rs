//! The ring state machine in an in-memory network of real `Ring` + `Director` pairs
//! (see `sim/mod.rs`): every line goes through the real codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

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
