//! One director's ring fed hand-written peer lines, with its clock under the test's
//! control (to the millisecond): what it does after sending or receiving `CONNECT`, when it
//! declares itself alone with a left still connected, the round trip of its SYNC, and the
//! warnings it logs for slow handshakes and pings (Dovecot 2.3's `director-connection.c`
//! and `director.c`: `DIRECTOR_WAIT_DISCONNECT_SECS` 10, `DIRECTOR_RECONNECT_AFTER_WRONG_
//! CONNECT_MSECS` 1000, `DIRECTOR_HANDSHAKE_WARN_SECS` 29,
//! `DIRECTOR_CONNECTION_PINGPONG_WARN_MSECS` 5000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use director_core::lookup::ConfigHost;
use director_core::{CoreSettings, Director};
use director_proto::ring::{DirectorAddr, RingDecoder, RingMessage};
use director_ring::{ConnCounters, ConnId, Direction, Output, Ring, RingConfig, RingTime};

const T0_MS: u64 = 1_795_896_443_000;

fn daddr(n: u8) -> DirectorAddr {
    DirectorAddr {
        ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n)),
        port: 9090,
    }
}

/// Director 2 of three (127.0.0.11–13): its right is 3, its left is 1.
struct One {
    ring: Ring,
    dir: Director,
    now_ms: u64,
    decoders: std::collections::BTreeMap<ConnId, RingDecoder>,
    sent: Vec<(ConnId, RingMessage)>,
    connects: Vec<DirectorAddr>,
    disconnects: Vec<(ConnId, String)>,
}

const RIGHT: ConnId = ConnId(1);
const LEFT: ConnId = ConnId(2);
const OTHER: ConnId = ConnId(3);

impl One {
    fn new() -> Self {
        let settings = CoreSettings {
            config_hosts: vec![ConfigHost {
                ip: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)),
                tag: String::new(),
                hostname: None,
            }],
            ..CoreSettings::default()
        };
        let mut one = One {
            ring: Ring::new(RingConfig::new(daddr(2), (1..=3).map(daddr).collect())),
            dir: Director::new(settings).unwrap(),
            now_ms: T0_MS,
            decoders: Default::default(),
            sent: Vec::new(),
            connects: Vec::new(),
            disconnects: Vec::new(),
        };
        let now = one.now();
        one.ring.start(now, &mut one.dir);
        one.drain();
        one
    }

    fn now(&self) -> RingTime {
        RingTime::from(Duration::from_millis(self.now_ms))
    }

    fn secs(&self) -> u64 {
        self.now_ms / 1000
    }

    fn drain(&mut self) {
        while let Some(out) = self.ring.poll_output() {
            match out {
                Output::Send { conn, message } => self.sent.push((conn, message)),
                Output::Connect { addr } => self.connects.push(addr),
                Output::NotifyWritten { conn } => {
                    let now = self.now();
                    self.ring.written(conn, now, &self.dir);
                }
                Output::Disconnect { conn, reason } => self.disconnects.push((conn, reason)),
            }
        }
    }

    /// Lines from the peer on `conn`, through the real codec.
    fn feed(&mut self, conn: ConnId, lines: &[String]) {
        let dec = self.decoders.entry(conn).or_default();
        let mut msgs = Vec::new();
        for l in lines {
            dec.feed(format!("{l}\n").as_bytes());
            while let Some(m) = dec.next_message().unwrap() {
                msgs.push(m);
            }
        }
        let now = self.now();
        for m in msgs {
            self.ring.line(conn, m, now, &mut self.dir);
        }
        self.drain();
    }

    /// Advances the clock by `ms`, running the ring's timers when due.
    fn advance_ms(&mut self, ms: u64) {
        self.now_ms += ms;
        let now = self.now();
        if self.ring.next_timeout().is_some_and(|t| t <= self.secs()) {
            self.ring.handle_timeout(now, &mut self.dir);
        }
        self.drain();
    }

    fn greeting(&self, n: u8) -> Vec<String> {
        vec![
            "VERSION\tdirector\t1\t9".into(),
            format!("ME\t127.0.0.{}\t9090\t{}", 10 + n, self.secs()),
        ]
    }

    fn incoming_handshake(&self, n: u8) -> Vec<String> {
        let mut l = self.greeting(n);
        l.extend(
            [
                "HOST-HAND-START\t1",
                "HOST\t127.0.1.1\t100\t\tU0\t",
                "HOST-HAND-END\t1",
                "OPTIONS\tconsistent-hashing",
                "DONE",
            ]
            .map(String::from),
        );
        l
    }

    /// Right (3) and left (1) connected and handshaked.
    fn in_a_ring() -> Self {
        let mut one = One::new();
        assert_eq!(one.connects, [daddr(3)]);
        let now = one.now();
        one.ring.connected(
            RIGHT,
            daddr(3).ip,
            Direction::Outgoing(daddr(3)),
            now,
            &mut one.dir,
        );
        one.drain();
        let mut right = one.greeting(3);
        right.push("DONE".into());
        one.feed(RIGHT, &right);
        one.ring
            .connected(LEFT, daddr(1).ip, Direction::Incoming, now, &mut one.dir);
        let left = one.incoming_handshake(1);
        one.feed(LEFT, &left);
        let o = one.ring.overview();
        assert_eq!((o.left, o.right), (Some(daddr(1)), Some(daddr(3))));
        one
    }

    fn sent_on(&self, conn: ConnId) -> Vec<&RingMessage> {
        self.sent
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, m)| m)
            .collect()
    }

    fn last_sync_seq(&self) -> u32 {
        self.sent
            .iter()
            .rev()
            .find_map(|(c, m)| match m {
                RingMessage::Sync { origin, seq, .. } if *c == RIGHT && *origin == daddr(2) => {
                    Some(*seq)
                }
                _ => None,
            })
            .expect("our SYNC went right")
    }

    /// Our SYNC coming back round the ring, from our left.
    fn sync_returns(&mut self) {
        let seq = self.last_sync_seq();
        let hash = self.dir.hosts_hash();
        let line = format!("SYNC\t127.0.0.12\t9090\t{seq}\t9\t{}\t{hash}", self.secs());
        self.feed(LEFT, &[line]);
    }

    fn self_row_last_sync_msecs(&self) -> String {
        let rows = self.ring.status(self.secs(), |_| ConnCounters::default());
        let row = rows
            .iter()
            .find(|r| r.fields[2] == "self")
            .expect("a row for ourselves");
        row.fields[5].clone()
    }
}

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

/// The log lines written while `f` runs.
fn logs_of(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text
}

fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN ")).collect()
}

#[test]
fn a_handshake_of_29_s_or_more_is_logged_as_a_warning() {
    for (secs, warned) in [(28_999, false), (29_000, true)] {
        let log = logs_of(|| {
            let mut one = One::in_a_ring();
            let now = one.now();
            one.ring
                .connected(OTHER, daddr(3).ip, Direction::Incoming, now, &mut one.dir);
            let mut lines = one.incoming_handshake(3);
            let done = lines.pop().unwrap();
            one.feed(OTHER, &lines);
            one.now_ms += secs;
            one.feed(OTHER, &[done]);
        });
        let finished: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Handshake finished in"))
            .collect();
        let slow = format!(
            "Handshake finished in {}.{:03} secs",
            secs / 1000,
            secs % 1000
        );
        let line = finished
            .iter()
            .find(|l| l.contains(&slow))
            .unwrap_or_else(|| panic!("no {slow:?} in {log}"));
        assert_eq!(line.contains(" WARN "), warned, "{line}");
    }
}

#[test]
fn slow_pings_and_pongs_are_logged_as_warnings() {
    let log = logs_of(|| {
        let mut one = One::in_a_ring();
        one.sync_returns();
        // Sending the SYNC pinged both neighbours; they answer at once.
        one.feed(LEFT, &[format!("PONG\t{}\t0", one.secs())]);
        one.feed(RIGHT, &[format!("PONG\t{}\t0", one.secs())]);
        // Our next PING to the left goes out after 15 s without input; its PONG comes 5.001 s
        // later.
        one.advance_ms(15_000);
        assert!(one
            .sent_on(LEFT)
            .iter()
            .any(|m| matches!(m, RingMessage::Ping(_))));
        one.advance_ms(5_001);
        one.feed(LEFT, &[format!("PONG\t{}\t12345", one.secs() - 1)]);
        // A PING from the right sent 5 s before it arrived.
        one.feed(RIGHT, &[format!("PING\t{}\t777", one.secs() - 5)]);
        // A PING 4 s late is not worth a warning.
        one.feed(RIGHT, &[format!("PING\t{}\t0", one.secs() - 4)]);
    });
    let w = warnings(&log);
    assert!(
        w.iter().any(|l| l.contains("PONG response took 5.001 secs")
            && l.contains("remote buffer size at PONG was 12345 bytes")),
        "{log}"
    );
    assert!(
        w.iter().any(|l| l
            .contains("PING response took 5 secs to receive (send buffer was 777 bytes)")),
        "{log}"
    );
    assert!(!w.iter().any(|l| l.contains("took 4 secs")), "{log}");
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
