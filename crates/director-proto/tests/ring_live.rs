//! Interop with a real Dovecot 2.3 director over the ring: this test plays
//! the second director of a two-director ring, speaking only through the ring
//! codec, and checks that
//! * every line Dovecot sends parses (no unknown commands) and re-encodes to
//!   the identical bytes;
//! * Dovecot accepts our handshake (it answers `DONE`) and our `SYNC`, whose
//!   hosts_hash comes from `director_core` — Dovecot forwards a SYNC only when
//!   the hash equals its own, so our SYNC coming back proves the hash matches;
//! * Dovecot's ring becomes synced (admin `DIRECTOR-LIST`);
//! * a `USER` we send is learned with its timestamp (admin `USER-LOOKUP`);
//! * an admin `HOST-SET` reaches us as a seq-tracked `HOST`, and the next
//!   SYNC carries the hosts_hash the core computes for the new host list.
//!
//! Requires real Dovecot (`apt-get install -y dovecot-core`); testkit fails
//! with that hint when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use director_core::hash::{user_hash, HashFormat};
use director_core::host::HostList;
use director_core::hosts_hash::hosts_hash;
use director_proto::line::LineBuffer;
use director_proto::ring::*;
use testkit::{free_port, DirectorOptions, DovecotDirector, LoopbackAllocator};

/// Bound on every wait for Dovecot in this test.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Which of our two connections a line came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Dovecot connected to us (we are its right; it is our left).
    Left,
    /// We connected to Dovecot (it is our right).
    Right,
}

/// What the test's director waits for.
#[derive(Debug)]
enum Event {
    /// A line from Dovecot.
    Line(Received),
    /// A helper thread (admin request) finished.
    Wake,
}

/// One line received from Dovecot.
#[derive(Debug)]
struct Received {
    link: Link,
    raw: Vec<u8>,
    msg: Result<RingMessage, RingParseError>,
}

fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::try_from(secs).unwrap()
}

/// Reads one connection's lines and hands them over, parsed in the context
/// the HOST-HAND-START/END lines set (what [`RingDecoder`] does; done by hand
/// here to keep the raw line for the byte comparison).
fn spawn_reader(link: Link, mut stream: TcpStream, tx: mpsc::Sender<Event>) {
    thread::spawn(move || {
        let mut lines = LineBuffer::new(RING_MAX_LINE_LEN);
        let mut context = RingContext::Normal;
        loop {
            let spare = lines.spare_mut();
            let n = match stream.read(spare) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            lines.commit(n);
            while let Ok(Some(raw)) = lines.next_line() {
                let msg = parse_in(&raw, context);
                match msg {
                    Ok(RingMessage::HostHandStart { .. }) => context = RingContext::HostHandshake,
                    Ok(RingMessage::HostHandEnd { .. }) => context = RingContext::Normal,
                    _ => {}
                }
                if tx.send(Event::Line(Received { link, raw, msg })).is_err() {
                    return;
                }
            }
        }
    });
}

/// The test's director: the other end of both ring connections.
struct Peer {
    me: DirectorAddr,
    dovecot: DirectorAddr,
    hosts: Vec<IpAddr>,
    left: TcpStream,
    right: TcpStream,
    rx: mpsc::Receiver<Event>,
    /// For helper threads to wake [`Peer::pump_until`].
    wake: mpsc::Sender<Event>,
    /// How many [`Event::Wake`]s arrived (a helper thread is finished once
    /// its wake is counted).
    wakes: usize,
    /// Every message Dovecot sent, in arrival order.
    log: Vec<(Link, RingMessage)>,
    sent_host_handshake: bool,
    left_done: bool,
    right_done: bool,
    our_sync_sent: bool,
    our_sync_returned: bool,
}

impl Peer {
    fn send(&mut self, link: Link, msgs: &[RingMessage]) {
        let mut out = Vec::new();
        for m in msgs {
            m.encode_into(&mut out);
        }
        let stream = match link {
            Link::Left => &mut self.left,
            Link::Right => &mut self.right,
        };
        stream.write_all(&out).unwrap();
    }

    fn host_list(hosts: &[(IpAddr, u32)]) -> HostList {
        let mut list = HostList::new();
        for (ip, vhosts) in hosts {
            list.add(*ip, "", *vhosts, None).unwrap();
        }
        list
    }

    fn our_hosts_hash(&self) -> u32 {
        let hosts: Vec<_> = self.hosts.iter().map(|ip| (*ip, 100)).collect();
        hosts_hash(&Self::host_list(&hosts))
    }

    /// Handles one received line the way a director must for the ring to
    /// work: answer PINGs, finish both handshakes, pass Dovecot's SYNC on.
    fn handle(&mut self, r: Received) {
        let msg = r.msg.unwrap_or_else(|e| {
            panic!(
                "Dovecot sent a line we can't parse: {:?}: {e}",
                String::from_utf8_lossy(&r.raw)
            )
        });
        let mut wire = r.raw.clone();
        wire.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(&msg.encode()),
            String::from_utf8_lossy(&wire),
            "re-encoding differs"
        );
        assert!(
            !matches!(msg, RingMessage::Unknown { .. }),
            "unknown command from Dovecot: {msg:?}"
        );
        match (&msg, r.link) {
            (RingMessage::Ping(_), link) => self.send(
                link,
                &[RingMessage::Pong(Some(PingInfo {
                    timestamp: now(),
                    buffered: 0,
                }))],
            ),
            (RingMessage::Version(v), Link::Right) if !self.sent_host_handshake => {
                assert!(v.is_compatible(), "{v:?}");
                assert_eq!(v.minor, PROTOCOL_MINOR);
                self.sent_host_handshake = true;
                let mut lines = vec![RingMessage::HostHandStart {
                    ring_handshaked: false,
                }];
                for ip in &self.hosts {
                    lines.push(RingMessage::HandshakeHost(HostRecord::new(
                        *ip,
                        100,
                        Vec::new(),
                        HostState::default(),
                        Vec::new(),
                    )));
                }
                lines.push(RingMessage::HostHandEnd {
                    ring_handshaked: false,
                });
                lines.push(RingMessage::Options(vec![
                    OPTION_CONSISTENT_HASHING.to_vec()
                ]));
                lines.push(RingMessage::Done);
                self.send(Link::Right, &lines);
            }
            (RingMessage::Done, Link::Left) if !self.left_done => {
                self.left_done = true;
                self.send(Link::Left, &[RingMessage::Done]);
            }
            (RingMessage::Done, Link::Right) => self.right_done = true,
            (RingMessage::Sync { origin, .. }, Link::Left) if *origin == self.dovecot => {
                self.send(Link::Right, std::slice::from_ref(&msg));
            }
            (RingMessage::Sync { origin, .. }, _) if *origin == self.me => {
                self.our_sync_returned = true;
            }
            _ => {}
        }
        if self.left_done && self.right_done && !self.our_sync_sent {
            self.our_sync_sent = true;
            let sync = RingMessage::Sync {
                origin: self.me,
                seq: 1,
                info: Some(SyncInfo {
                    minor: PROTOCOL_MINOR,
                    timestamp: now(),
                    hosts_hash: Some(self.our_hosts_hash()),
                }),
            };
            self.send(Link::Right, &[sync]);
        }
        self.log.push((r.link, msg));
    }

    /// Processes lines until `done` holds (bounded by [`STEP_TIMEOUT`]).
    fn pump_until(&mut self, what: &str, mut done: impl FnMut(&Peer) -> bool) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Line(r)) => self.handle(r),
                Ok(Event::Wake) => self.wakes += 1,
                Err(e) => panic!("waiting for {what}: {e}; seen {:#?}", self.log),
            }
        }
    }
}

fn admin(d: &DovecotDirector, line: &str) -> Vec<String> {
    d.admin_client().unwrap().command(line).unwrap()
}

#[test]
fn a_real_dovecot_director_rings_with_our_codec() {
    let mut alloc = LoopbackAllocator::new();
    let (d_ip, p_ip) = (alloc.next_ip(), alloc.next_ip());
    let hosts: Vec<IpAddr> = (0..3).map(|_| IpAddr::V4(alloc.next_ip())).collect();
    let new_host = IpAddr::V4(alloc.next_ip());
    let d_port = free_port(IpAddr::V4(d_ip)).unwrap();
    let listener = TcpListener::bind((p_ip, 0)).unwrap();
    let p_port = listener.local_addr().unwrap().port();
    let dovecot_addr = DirectorAddr {
        ip: IpAddr::V4(d_ip),
        port: d_port,
    };
    let me = DirectorAddr {
        ip: IpAddr::V4(p_ip),
        port: p_port,
    };

    let mail_servers = hosts
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let d = DovecotDirector::start(
        DirectorOptions::new(mail_servers)
            .with_ip(d_ip)
            .with_ring_port(d_port)
            .with_director_servers(format!("{d_ip}:{d_port} {p_ip}:{p_port}"))
            .without_sync_wait(),
    )
    .unwrap();

    // Our outgoing connection, from our own address (Dovecot drops ring
    // connections from addresses not in director_servers).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((p_ip, 0)).into()).unwrap();
    socket
        .connect_timeout(&SocketAddr::from((d_ip, d_port)).into(), STEP_TIMEOUT)
        .unwrap();
    let right: TcpStream = socket.into();

    // Dovecot's outgoing connection to us (it connects as soon as its
    // director process runs, which `start` waited for).
    let (accept_tx, accept_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = accept_tx.send(listener.accept());
    });
    let (left, from) = accept_rx.recv_timeout(STEP_TIMEOUT).unwrap().unwrap();
    assert_eq!(from.ip(), IpAddr::V4(d_ip));

    let (tx, rx) = mpsc::channel();
    spawn_reader(Link::Left, left.try_clone().unwrap(), tx.clone());
    spawn_reader(Link::Right, right.try_clone().unwrap(), tx.clone());
    let mut peer = Peer {
        me,
        dovecot: dovecot_addr,
        hosts: hosts.clone(),
        left,
        right,
        rx,
        wake: tx,
        wakes: 0,
        log: Vec::new(),
        sent_host_handshake: false,
        left_done: false,
        right_done: false,
        our_sync_sent: false,
        our_sync_returned: false,
    };
    let version = RingMessage::Version(Version::ours());
    let our_me = RingMessage::Me(Me {
        director: me,
        timestamp: Some(now()),
    });
    peer.send(Link::Left, &[version.clone(), our_me.clone()]);
    peer.send(
        Link::Right,
        &[
            version,
            our_me,
            RingMessage::Director(dovecot_addr),
            RingMessage::Director(me),
        ],
    );

    // 1. Both handshakes, then our SYNC goes round (Dovecot forwards it only
    //    if its hosts_hash equals ours).
    peer.pump_until("our SYNC to come back", |p| p.our_sync_returned);
    let from_left: Vec<_> = peer
        .log
        .iter()
        .filter(|(l, _)| *l == Link::Left)
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(from_left[0], RingMessage::Version(Version::ours()));
    assert!(
        matches!(from_left[1], RingMessage::Me(Me { director, timestamp: Some(_) }) if director == dovecot_addr),
        "{:?}",
        from_left[1]
    );
    assert!(from_left.contains(&RingMessage::Director(me)));
    assert!(from_left.contains(&RingMessage::Options(vec![
        OPTION_CONSISTENT_HASHING.to_vec()
    ])));
    for ip in &hosts {
        assert!(
            from_left.iter().any(|m| matches!(m, RingMessage::HandshakeHost(h) if h.ip == *ip && h.vhost_count == 100 && h.fields == HostFields::All)),
            "handshake HOST {ip} missing: {from_left:?}"
        );
    }

    // 2. Dovecot's ring is synced: keep pumping while the admin socket is asked.
    thread::scope(|s| {
        let wake = peer.wake.clone();
        let d = &d;
        let waiter = s.spawn(move || {
            let r = d.wait_ring_synced(STEP_TIMEOUT);
            let _ = wake.send(Event::Wake);
            r
        });
        peer.pump_until("Dovecot's ring to sync", |p| p.wakes == 1);
        waiter.join().unwrap().unwrap();
    });

    // 3. A USER we send is learned and forwarded back unchanged.
    let user = b"ring-live-user";
    let hash = user_hash(user, &HashFormat::default()).unwrap();
    let lookup = |d: &DovecotDirector| -> Vec<String> {
        let reply = admin(d, "USER-LOOKUP\tring-live-user");
        reply[0].split('\t').map(str::to_owned).collect()
    };
    let before = lookup(&d);
    assert_eq!(before[0], "", "user already assigned: {before:?}");
    let target = hosts
        .iter()
        .find(|ip| ip.to_string() != before[2])
        .copied()
        .unwrap();
    // A timestamp in the past shows that Dovecot took ours: expire = ts + 900.
    let ts = now() - 100;
    // Dovecot handles a connection's lines in order: once the PONG for the
    // PING behind the USER is back, the USER was processed. (With two
    // directors Dovecot does not forward it: both links lead to the sender.)
    let pongs = |p: &Peer| {
        p.log
            .iter()
            .filter(|(l, m)| *l == Link::Right && matches!(m, RingMessage::Pong(_)))
            .count()
    };
    let pongs_before = pongs(&peer);
    peer.send(
        Link::Right,
        &[
            RingMessage::User {
                hash,
                ip: target,
                timestamp: Some(ts),
            },
            RingMessage::Ping(Some(PingInfo {
                timestamp: now(),
                buffered: 0,
            })),
        ],
    );
    peer.pump_until("the PONG behind our USER", |p| pongs(p) > pongs_before);
    let after = lookup(&d);
    assert_eq!(after[0], target.to_string(), "{after:?}");
    assert_eq!(after[1], (u64::from(ts) + 900).to_string(), "{after:?}");

    // 4. An admin HOST-SET reaches us as HOST, and the next SYNC carries the
    //    core's hosts_hash of the new list. Dovecot answers OK only once its
    //    ring synced again, so keep pumping meanwhile.
    let seen_before = peer.log.len();
    thread::scope(|s| {
        let wake = peer.wake.clone();
        let d = &d;
        let set = s.spawn(move || {
            let r = admin(d, &format!("HOST-SET\t{new_host}\t50"));
            let _ = wake.send(Event::Wake);
            r
        });
        peer.pump_until("HOST-SET to finish", |p| p.wakes == 2);
        assert_eq!(set.join().unwrap(), vec!["OK".to_owned()]);
    });
    let new_msgs: Vec<&RingMessage> = peer.log[seen_before..].iter().map(|(_, m)| m).collect();
    let host = new_msgs
        .iter()
        .find_map(|m| match m {
            RingMessage::Host { origin, host } => Some((*origin, host.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no HOST after HOST-SET: {new_msgs:?}"));
    assert_eq!(host.0.director, dovecot_addr);
    assert_eq!(
        host.1,
        HostRecord::new(new_host, 50, Vec::new(), HostState::default(), Vec::new())
    );
    let mut with_new: Vec<_> = hosts.iter().map(|ip| (*ip, 100)).collect();
    with_new.push((new_host, 50));
    let want_hash = hosts_hash(&Peer::host_list(&with_new));
    let sync_hash = new_msgs
        .iter()
        .rev()
        .find_map(|m| match m {
            RingMessage::Sync {
                origin,
                info:
                    Some(SyncInfo {
                        hosts_hash: Some(h),
                        ..
                    }),
                ..
            } if *origin == dovecot_addr => Some(*h),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SYNC after HOST-SET: {new_msgs:?}"));
    assert_eq!(sync_hash, want_hash, "log:\n{}", d.log());

    let _ = peer.left.shutdown(std::net::Shutdown::Both);
    let _ = peer.right.shutdown(std::net::Shutdown::Both);
}
