//! One director's ring fed hand-written peer lines, with its clock under the test's
//! control (to the millisecond): what it does after sending or receiving `CONNECT`, when it
//! declares itself alone with a left still connected, and the round trip of its SYNC
//! (Dovecot 2.3's `director-connection.c` and `director.c`: `DIRECTOR_WAIT_DISCONNECT_SECS`
//! 10, `DIRECTOR_RECONNECT_AFTER_WRONG_CONNECT_MSECS` 1000). The slow-handshake and
//! slow-ping warnings are in `ring_warnings.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod one;

use std::net::{IpAddr, Ipv4Addr};

use director_proto::ring::RingMessage;
use director_ring::{ConnCounters, Direction};
use one::*;

#[test]
fn a_wrong_newcomer_is_sent_connect_then_ignored_and_closed_after_10_s() {
    let mut one = One::in_a_ring();
    // Director 3 connects to us as well, though our left (1) is the correct one: we check
    // our left with a PING first.
    let now = one.now();
    one.ring
        .connected(OTHER, daddr(3).ip, Direction::Incoming, now, &mut one.dir);
    let newcomer = one.incoming_handshake(3);
    one.feed(OTHER, &newcomer);
    assert!(
        one.sent_on(LEFT)
            .iter()
            .any(|m| matches!(m, RingMessage::Ping(_))),
        "our left is pinged"
    );
    assert!(!one
        .sent_on(OTHER)
        .iter()
        .any(|m| matches!(m, RingMessage::Connect(_))));
    one.advance_ms(200);
    one.feed(LEFT, &[format!("PONG\t{}\t0", one.secs())]);
    assert_eq!(
        one.sent_on(OTHER).last(),
        Some(&&RingMessage::Connect(daddr(1))),
        "the newcomer is told to connect to our left"
    );
    // From now on its input is ignored: a line that would otherwise be a protocol
    // failure closes nothing, and a director it announces is not learnt.
    one.feed(
        OTHER,
        &[
            "BOGUS".to_string(),
            "DIRECTOR\t127.0.0.14\t9090".to_string(),
        ],
    );
    assert!(one.disconnects.is_empty(), "{:?}", one.disconnects);
    let listed = one.ring.status(one.secs(), |_| ConnCounters::default());
    assert!(!listed.iter().any(|r| r.fields[0] == "127.0.0.14"));
    // It does not hang up: 10 s later we close it.
    for _ in 0..9 {
        one.advance_ms(1000);
        one.feed(LEFT, &[format!("PONG\t{}\t0", one.secs())]);
        one.feed(RIGHT, &[format!("PONG\t{}\t0", one.secs())]);
    }
    assert!(!one.disconnects.iter().any(|(c, _)| *c == OTHER));
    one.advance_ms(1000);
    assert_eq!(
        one.disconnects,
        [(
            OTHER,
            "Timeout waiting for disconnect after CONNECT".to_string()
        )]
    );
    assert_eq!(one.ring.overview().left, Some(daddr(1)));
}

#[test]
fn an_ignored_connect_closes_the_requesting_link_after_1_s() {
    for target in [1u8, 3] {
        let mut one = One::in_a_ring();
        let connects = one.connects.len();
        // Our right (3) is closer than director 1, and is 3 itself: either way the CONNECT
        // is wrong.
        one.feed(LEFT, &[format!("CONNECT\t127.0.0.{}\t9090", 10 + target)]);
        assert_eq!(one.connects.len(), connects, "no connect is made");
        assert!(one.disconnects.is_empty());
        one.feed(LEFT, &["BOGUS".to_string()]);
        assert!(one.disconnects.is_empty(), "its input is ignored meanwhile");
        one.advance_ms(999);
        assert!(one.disconnects.is_empty());
        one.advance_ms(1);
        assert_eq!(
            one.disconnects,
            [(LEFT, "Wrong CONNECT requested".to_string())],
            "CONNECT to {target}"
        );
        assert_eq!(one.ring.overview().right, Some(daddr(3)));
    }
}

#[test]
fn a_connect_to_a_removed_director_is_ignored_and_its_link_closed_after_1_s() {
    let mut one = One::in_a_ring();
    let now = one.now();
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 14));
    one.ring.director_add(ip, Some(9090), now, &mut one.dir);
    assert!(one.ring.director_remove(ip, Some(9090), now, &mut one.dir));
    one.drain();
    let connects = one.connects.len();
    one.feed(RIGHT, &["CONNECT\t127.0.0.14\t9090".to_string()]);
    assert_eq!(one.connects.len(), connects);
    one.advance_ms(1000);
    assert!(one
        .disconnects
        .contains(&(RIGHT, "Wrong CONNECT requested".to_string())));
    // Without a right now, we connect to the next one at once.
    assert_eq!(one.connects.last(), Some(&daddr(3)));
}

#[test]
fn declaring_ourselves_alone_drops_the_left_we_still_have() {
    let mut one = One::new();
    // Nobody to our right answers.
    let mut tried = 0;
    let mut step = |one: &mut One| {
        while tried < one.connects.len() {
            let a = one.connects[tried];
            tried += 1;
            let now = one.now();
            one.ring.connect_failed(a, now, &mut one.dir);
            one.drain();
        }
    };
    step(&mut one);
    let now = one.now();
    one.ring
        .connected(LEFT, daddr(1).ip, Direction::Incoming, now, &mut one.dir);
    let left = one.incoming_handshake(1);
    one.feed(LEFT, &left);
    assert_eq!(one.ring.overview().left, Some(daddr(1)));
    assert!(!one.ring.is_synced());
    for _ in 0..19 {
        one.advance_ms(1000);
        step(&mut one);
        one.feed(LEFT, &[format!("PONG\t{}\t0", one.secs())]);
        assert!(one.disconnects.is_empty(), "{:?}", one.disconnects);
    }
    one.advance_ms(1000);
    step(&mut one);
    assert_eq!(
        one.disconnects,
        [(LEFT, "This connection is dead?".to_string())]
    );
    let o = one.ring.overview();
    assert_eq!((o.left, o.right), (None, None));
    assert!(o.synced && o.handshaked);
    assert!(one.dir.ring_status().synced);
}

#[test]
fn director_list_shows_the_round_trip_of_the_sync_that_synced_the_ring() {
    let mut one = One::in_a_ring();
    // The first SYNC back handshakes the ring; Dovecot measures only later ones.
    one.advance_ms(40);
    one.sync_returns();
    assert!(one.ring.is_synced());
    assert_eq!(one.self_row_last_sync_msecs(), "0");
    // A host change sends a new SYNC; it comes back 1.25 s later.
    one.advance_ms(500);
    let now = one.now();
    let secs = one.secs();
    one.dir
        .host_set(
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)),
            None,
            Some(50),
            secs,
        )
        .unwrap();
    one.ring
        .host_changed(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)), now, &mut one.dir);
    one.drain();
    assert!(!one.ring.is_synced());
    one.advance_ms(1250);
    one.sync_returns();
    assert!(one.ring.is_synced());
    assert_eq!(one.self_row_last_sync_msecs(), "1250");
}

#[test]
fn pings_and_pongs_carry_the_buffered_count_their_sender_stamps() {
    let mut one = One::in_a_ring();
    one.feed(RIGHT, &[format!("PING\t{}\t0", one.secs())]);
    let pong = one
        .sent_on(RIGHT)
        .into_iter()
        .rev()
        .find(|m| matches!(m, RingMessage::Pong(_)))
        .cloned()
        .expect("a PONG");
    let mut stamped = pong.clone();
    director_ring::stamp_buffered(&mut stamped, 4096);
    assert_eq!(
        String::from_utf8(stamped.encode()).unwrap(),
        format!("PONG\t{}\t4096\n", one.secs())
    );
    let mut other = RingMessage::Connect(daddr(1));
    director_ring::stamp_buffered(&mut other, 4096);
    assert_eq!(other, RingMessage::Connect(daddr(1)));
}
