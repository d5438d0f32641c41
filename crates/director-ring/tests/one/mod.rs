//! One director's ring (director 2 of 127.0.0.11–13) fed hand-written peer lines through
//! the real codec, with its clock under the test's control to the millisecond.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use director_core::lookup::ConfigHost;
use director_core::{CoreSettings, Director};
use director_proto::ring::{DirectorAddr, RingDecoder, RingMessage};
use director_ring::{ConnCounters, ConnId, Direction, Output, Ring, RingConfig, RingTime};

pub const T0_MS: u64 = 1_795_896_443_000;

pub fn daddr(n: u8) -> DirectorAddr {
    DirectorAddr {
        ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n)),
        port: 9090,
    }
}

/// Director 2 of three (127.0.0.11–13): its right is 3, its left is 1.
pub struct One {
    pub ring: Ring,
    pub dir: Director,
    pub now_ms: u64,
    decoders: std::collections::BTreeMap<ConnId, RingDecoder>,
    pub sent: Vec<(ConnId, RingMessage)>,
    pub connects: Vec<DirectorAddr>,
    pub disconnects: Vec<(ConnId, String)>,
}

pub const RIGHT: ConnId = ConnId(1);
pub const LEFT: ConnId = ConnId(2);
pub const OTHER: ConnId = ConnId(3);

impl One {
    pub fn new() -> Self {
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

    pub fn now(&self) -> RingTime {
        RingTime::from(Duration::from_millis(self.now_ms))
    }

    pub fn secs(&self) -> u64 {
        self.now_ms / 1000
    }

    pub fn drain(&mut self) {
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
    pub fn feed(&mut self, conn: ConnId, lines: &[String]) {
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
    pub fn advance_ms(&mut self, ms: u64) {
        self.now_ms += ms;
        let now = self.now();
        if self.ring.next_timeout().is_some_and(|t| t <= self.secs()) {
            self.ring.handle_timeout(now, &mut self.dir);
        }
        self.drain();
    }

    pub fn greeting(&self, n: u8) -> Vec<String> {
        vec![
            "VERSION\tdirector\t1\t9".into(),
            format!("ME\t127.0.0.{}\t9090\t{}", 10 + n, self.secs()),
        ]
    }

    pub fn incoming_handshake(&self, n: u8) -> Vec<String> {
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
    pub fn in_a_ring() -> Self {
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

    pub fn sent_on(&self, conn: ConnId) -> Vec<&RingMessage> {
        self.sent
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, m)| m)
            .collect()
    }

    pub fn last_sync_seq(&self) -> u32 {
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
    pub fn sync_returns(&mut self) {
        let seq = self.last_sync_seq();
        let hash = self.dir.hosts_hash();
        let line = format!("SYNC\t127.0.0.12\t9090\t{seq}\t9\t{}\t{hash}", self.secs());
        self.feed(LEFT, &[line]);
    }

    pub fn self_row_last_sync_msecs(&self) -> String {
        let rows = self.ring.status(self.secs(), |_| ConnCounters::default());
        let row = rows
            .iter()
            .find(|r| r.fields[2] == "self")
            .expect("a row for ourselves");
        row.fields[5].clone()
    }
}
