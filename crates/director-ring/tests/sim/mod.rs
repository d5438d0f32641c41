//! An in-memory network of directors: each node is a real [`Ring`] + [`Director`] pair;
//! every line a ring sends is encoded with the real codec, carried as bytes, and framed
//! and parsed again by a [`RingDecoder`] on the receiving end. Time is a counter that the
//! tests advance second by second; links deliver in one global FIFO order, so messages
//! arrive in the order they were sent.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use director_core::lookup::ConfigHost;
use director_core::{CoreSettings, Director, Effect, RequestOutcome, Route};
use director_proto::ring::{DirectorAddr, RingDecoder, RingMessage};
use director_ring::{ConnId, Direction, Output, Ring, RingConfig};

/// The lab's clock at the start of its recording (2026-11-28).
pub const T0: u64 = 1_795_896_443;
/// Most deliveries in one `pump`: more means the ring never goes quiet (a message loop).
pub const MAX_STEPS: usize = 100_000;
/// The ring port every simulated director listens on (as in the lab).
pub const RING_PORT: u16 = 9090;

/// Director `n` (1-based) at 127.0.0.1n, like the lab's d1..d3 (127.0.0.11..13).
pub fn daddr(n: usize) -> DirectorAddr {
    DirectorAddr {
        ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n as u8)),
        port: RING_PORT,
    }
}

/// Backend `n` at 127.0.1.n.
pub fn backend(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, n))
}

pub struct Node {
    pub addr: DirectorAddr,
    pub ring: Ring,
    pub dir: Director,
    pub alive: bool,
}

type End = (usize, ConnId);

enum InFlight {
    Bytes { to: End, from: End, bytes: Vec<u8> },
    Closed { to: End },
}

/// One line that went over the simulated wire.
#[derive(Debug, Clone)]
pub struct Wire {
    pub from: DirectorAddr,
    pub to: DirectorAddr,
    /// The sender opened this connection (it is the sender's outgoing link).
    pub on_senders_outgoing: bool,
    /// The sender's connection id.
    pub conn: ConnId,
    pub line: String,
}

pub struct Net {
    pub nodes: Vec<Node>,
    pub now: u64,
    servers: Vec<DirectorAddr>,
    backends: Vec<IpAddr>,
    next_conn: u64,
    peers: BTreeMap<End, End>,
    outgoing_ends: Vec<End>,
    decoders: BTreeMap<End, RingDecoder>,
    queue: VecDeque<InFlight>,
    pub wire: Vec<Wire>,
    /// Directors that refuse connections (network cut) even while alive.
    pub unreachable: Vec<usize>,
    /// Directors that hang: they take no input and run no timers, but their
    /// connections stay open (no FIN), so only pings can notice.
    pub frozen: Vec<usize>,
    /// `Output::Connect` per director, in order (target, time).
    pub connects: Vec<(usize, DirectorAddr, u64)>,
    /// `Output::Disconnect` per director (director, reason).
    pub disconnects: Vec<(usize, String)>,
    /// Queued login requests that finished (director, id, host).
    pub requests_done: Vec<(usize, director_core::RequestId, Option<IpAddr>)>,
    /// Hold `Output::NotifyWritten` (a peer that reads slowly) instead of answering at once.
    pub hold_written: bool,
    /// The held ones (director, connection).
    pub held_written: Vec<(usize, ConnId)>,
}

impl Net {
    /// `n` directors (not started), each with backends 127.0.1.1..=3 in its config.
    pub fn new(n: usize) -> Self {
        let servers: Vec<DirectorAddr> = (1..=n).map(daddr).collect();
        let mut net = Net {
            nodes: Vec::new(),
            now: T0,
            servers,
            backends: (1..=3).map(backend).collect(),
            next_conn: 1,
            peers: BTreeMap::new(),
            outgoing_ends: Vec::new(),
            decoders: BTreeMap::new(),
            queue: VecDeque::new(),
            wire: Vec::new(),
            unreachable: Vec::new(),
            frozen: Vec::new(),
            connects: Vec::new(),
            disconnects: Vec::new(),
            requests_done: Vec::new(),
            hold_written: false,
            held_written: Vec::new(),
        };
        for i in 0..n {
            let node = net.fresh_node(i);
            net.nodes.push(node);
        }
        net
    }

    fn fresh_node(&self, i: usize) -> Node {
        let settings = CoreSettings {
            config_hosts: self
                .backends
                .iter()
                .map(|ip| ConfigHost {
                    ip: *ip,
                    tag: String::new(),
                    hostname: None,
                })
                .collect(),
            ..CoreSettings::default()
        };
        let addr = self.servers[i];
        Node {
            addr,
            ring: Ring::new(RingConfig::new(addr, self.servers.clone())),
            dir: Director::new(settings).expect("director"),
            alive: false,
        }
    }

    /// Starts director `i` (0-based).
    pub fn start(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.alive = true;
        node.ring.start(now, &mut node.dir);
        self.pump();
    }

    /// Starts all and lets the ring form (a few seconds of simulated time).
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        self.advance(3);
    }

    /// Kills director `i` (like kill -9): its peers see their connections close.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        let ends: Vec<End> = self.peers.keys().filter(|e| e.0 == i).copied().collect();
        for e in ends {
            if let Some(remote) = self.peers.remove(&e) {
                self.peers.remove(&remote);
                self.queue.push_back(InFlight::Closed { to: remote });
            }
            self.decoders.remove(&e);
        }
        self.pump();
    }

    /// Cuts director `i` off the network while it runs: its links close and nobody can
    /// connect to it or be connected from it until `unreachable` no longer lists it.
    pub fn isolate(&mut self, i: usize) {
        self.unreachable.push(i);
        let ends: Vec<End> = self.peers.keys().filter(|e| e.0 == i).copied().collect();
        for e in ends {
            if let Some(remote) = self.peers.remove(&e) {
                self.peers.remove(&remote);
                self.queue.push_back(InFlight::Closed { to: remote });
                self.queue.push_back(InFlight::Closed { to: e });
            }
        }
        self.pump();
    }

    /// Restarts director `i` with empty state (a new process).
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].alive {
            self.kill(i);
        }
        self.nodes[i] = self.fresh_node(i);
        self.start(i);
    }

    /// Restarts director `i` as a new process that restored `saved` (its saved state).
    pub fn restart_from(&mut self, i: usize, saved: &director_core::Snapshot) {
        if self.nodes[i].alive {
            self.kill(i);
        }
        self.nodes[i] = self.fresh_node(i);
        let now = self.now;
        self.nodes[i].dir.restore(saved, now).expect("restore");
        self.start(i);
    }

    /// Advances time second by second, running every due timer.
    pub fn advance(&mut self, secs: u64) {
        for _ in 0..secs {
            self.now += 1;
            let now = self.now;
            let frozen = self.frozen.clone();
            for (_, node) in self
                .nodes
                .iter_mut()
                .enumerate()
                .filter(|(i, n)| n.alive && !frozen.contains(i))
            {
                if node.ring.next_timeout().is_some_and(|t| t <= now) {
                    node.ring.handle_timeout(now, &mut node.dir);
                }
                if node.dir.next_timeout().is_some_and(|t| t <= now) {
                    node.dir.handle_timeout(now);
                }
            }
            self.pump();
        }
    }

    /// Stops holding `NotifyWritten` and answers the held ones.
    pub fn release_written(&mut self) {
        self.hold_written = false;
        let now = self.now;
        for (i, conn) in std::mem::take(&mut self.held_written) {
            let node = &mut self.nodes[i];
            node.ring.written(conn, now, &node.dir);
        }
        self.pump();
    }

    /// Runs until nothing is in flight and no node has output.
    pub fn pump(&mut self) {
        for _ in 0..MAX_STEPS {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                busy |= self.drain_node(i);
            }
            match self.queue.pop_front() {
                Some(ev) => self.deliver(ev),
                None if !busy => return,
                None => {}
            }
        }
        let tail: Vec<String> = self
            .wire
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(|w| format!("{} > {} | {}", w.from.ip, w.to.ip, w.line))
            .collect();
        panic!(
            "the simulated ring never went quiet (message loop?); last lines:\n{}",
            tail.join("\n")
        );
    }

    fn drain_node(&mut self, i: usize) -> bool {
        let mut busy = false;
        let now = self.now;
        if !self.nodes[i].alive || self.frozen.contains(&i) {
            return false;
        }
        loop {
            let node = &mut self.nodes[i];
            let Some(effect) = node.dir.poll_effect() else {
                break;
            };
            busy = true;
            if let Some(local) = node.ring.core_effect(effect, now) {
                match local {
                    Effect::KickDirectorHash { ticket, .. }
                    | Effect::Kick { ticket, .. }
                    | Effect::KickAlt { ticket, .. } => node.dir.kick_finished(ticket, now),
                    Effect::RunFlushScript { ticket, .. } => {
                        node.dir.flush_script_finished(ticket, true, now)
                    }
                    Effect::RequestDone { id, result } => {
                        self.requests_done.push((i, id, result.ok().map(|r| r.ip)));
                    }
                    _ => {}
                }
            }
        }
        while let Some(out) = self.nodes[i].ring.poll_output() {
            busy = true;
            self.output(i, out);
        }
        busy
    }

    fn output(&mut self, i: usize, out: Output) {
        let now = self.now;
        match out {
            Output::Send { conn, message } => {
                let from = (i, conn);
                let Some(&to) = self.peers.get(&from) else {
                    return;
                };
                let bytes = message.encode();
                self.queue.push_back(InFlight::Bytes { to, from, bytes });
            }
            Output::Connect { addr } => {
                self.connects.push((i, addr, now));
                let target = self
                    .nodes
                    .iter()
                    .position(|n| n.addr == addr && n.alive)
                    .filter(|t| !self.unreachable.contains(t) && !self.unreachable.contains(&i));
                let Some(t) = target else {
                    let node = &mut self.nodes[i];
                    node.ring.connect_failed(addr, now, &mut node.dir);
                    return;
                };
                let (lid, rid) = (self.conn_id(), self.conn_id());
                self.peers.insert((i, lid), (t, rid));
                self.peers.insert((t, rid), (i, lid));
                self.outgoing_ends.push((i, lid));
                self.decoders.insert((i, lid), RingDecoder::new());
                self.decoders.insert((t, rid), RingDecoder::new());
                let local_ip = self.nodes[i].addr.ip;
                let remote = &mut self.nodes[t];
                remote
                    .ring
                    .connected(rid, local_ip, Direction::Incoming, now, &mut remote.dir);
                let node = &mut self.nodes[i];
                node.ring
                    .connected(lid, addr.ip, Direction::Outgoing(addr), now, &mut node.dir);
            }
            // Lines are handed over at once here: everything queued is "written".
            Output::NotifyWritten { conn } if self.hold_written => {
                self.held_written.push((i, conn));
            }
            Output::NotifyWritten { conn } => {
                let node = &mut self.nodes[i];
                node.ring.written(conn, now, &node.dir);
            }
            Output::Disconnect { conn, reason } => {
                self.disconnects.push((i, reason));
                let end = (i, conn);
                self.decoders.remove(&end);
                if let Some(remote) = self.peers.remove(&end) {
                    self.peers.remove(&remote);
                    self.queue.push_back(InFlight::Closed { to: remote });
                }
            }
        }
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn deliver(&mut self, ev: InFlight) {
        let now = self.now;
        match ev {
            InFlight::Bytes { to, from, bytes } => {
                if !self.nodes[to.0].alive || self.frozen.contains(&to.0) {
                    return;
                }
                let Some(dec) = self.decoders.get_mut(&to) else {
                    return;
                };
                let line = String::from_utf8_lossy(&bytes[..bytes.len() - 1]).into_owned();
                self.wire.push(Wire {
                    from: self.nodes[from.0].addr,
                    to: self.nodes[to.0].addr,
                    on_senders_outgoing: self.outgoing_ends.contains(&from),
                    conn: from.1,
                    line,
                });
                let mut msgs = Vec::new();
                let mut err = None;
                let mut rest = &bytes[..];
                'feed: loop {
                    let taken = dec.feed(rest);
                    rest = &rest[taken..];
                    loop {
                        match dec.next_message() {
                            Ok(Some(m)) => msgs.push(m),
                            Ok(None) => break,
                            Err(e) => {
                                err = Some(e);
                                break 'feed;
                            }
                        }
                    }
                    if rest.is_empty() {
                        break;
                    }
                }
                let node = &mut self.nodes[to.0];
                for m in msgs {
                    node.ring.line(to.1, m, now, &mut node.dir);
                }
                if let Some(e) = err {
                    node.ring.decode_error(to.1, &e, now, &mut node.dir);
                }
            }
            InFlight::Closed { to } => {
                self.decoders.remove(&to);
                if self.nodes[to.0].alive {
                    let node = &mut self.nodes[to.0];
                    node.ring.closed(to.1, now, &mut node.dir);
                }
            }
        }
    }

    /// Injects raw bytes as if director `from` had sent them on its link to `to`.
    pub fn inject(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let end = self
            .peers
            .iter()
            .find(|(a, b)| a.0 == from && b.0 == to)
            .map(|(a, b)| (*a, *b))
            .expect("no link between these directors");
        self.queue.push_back(InFlight::Bytes {
            to: end.1,
            from: end.0,
            bytes: bytes.to_vec(),
        });
        self.pump();
    }

    /// The handshake held at its round (see `hold_written`) on a connection that is still
    /// open: one that was held and then dropped (its director was sent elsewhere by
    /// `CONNECT`) doesn't count.
    pub fn open_held(&self) -> Option<(usize, ConnId)> {
        self.held_written
            .iter()
            .rev()
            .find(|end| self.peers.contains_key(end))
            .copied()
    }

    /// Injects raw bytes as if director `from` had sent them on its connection `conn`.
    pub fn inject_on(&mut self, from: usize, conn: ConnId, bytes: &[u8]) {
        let end = (from, conn);
        let to = *self.peers.get(&end).expect("no such connection");
        self.queue.push_back(InFlight::Bytes {
            to,
            from: end,
            bytes: bytes.to_vec(),
        });
        self.pump();
    }

    /// Runs an admin host command on director `i` the way the driver will: the core
    /// applies it, then the ring sends it round.
    pub fn admin_host_set(&mut self, i: usize, ip: IpAddr, vhosts: u32) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.dir
            .host_set(ip, None, Some(vhosts), now)
            .expect("host_set");
        node.ring.host_changed(ip, now, &mut node.dir);
        self.pump();
    }

    /// Admin `HOST-DOWN`/`HOST-UP` on director `i`.
    pub fn admin_host_down(&mut self, i: usize, ip: IpAddr, down: bool) {
        let now = self.now;
        let node = &mut self.nodes[i];
        if down {
            node.dir.host_down(ip, now).expect("host_down");
        } else {
            node.dir.host_up(ip, now).expect("host_up");
        }
        node.ring.host_changed(ip, now, &mut node.dir);
        self.pump();
    }

    /// Admin `HOST-REMOVE` on director `i`.
    pub fn admin_host_remove(&mut self, i: usize, ip: IpAddr) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.dir.host_remove(ip, now).expect("host_remove");
        node.ring.host_removed(ip, now, &mut node.dir);
        self.pump();
    }

    /// The host list of director `i` as (ip, vhosts, down).
    pub fn hosts(&self, i: usize) -> Vec<(IpAddr, u32, bool)> {
        self.nodes[i]
            .dir
            .host_list()
            .into_iter()
            .map(|h| (h.ip, h.vhost_count, h.down))
            .collect()
    }

    /// Current host of `user` on director `i`.
    pub fn user_host(&mut self, i: usize, user: &str) -> Option<IpAddr> {
        let now = self.now;
        let key = director_core::UserKey::Name(user.as_bytes().to_vec());
        let l = self.nodes[i]
            .dir
            .user_lookup(&key, "", now)
            .expect("lookup");
        l.current.map(|c| c.0)
    }

    /// Whether directors `a` and `b` have a link.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.peers.keys().any(|e| e.0 == a && self.peers[e].0 == b)
    }

    /// A login on director `i`; `None` if it had to wait.
    pub fn login(&mut self, i: usize, user: &str) -> Option<Route> {
        let now = self.now;
        let node = &mut self.nodes[i];
        let out = node.dir.request(user.as_bytes(), "", now);
        self.pump();
        match out {
            RequestOutcome::Ready(r) => Some(r),
            _ => None,
        }
    }

    pub fn all_alive_synced(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .all(|n| n.ring.overview().synced && n.ring.overview().handshaked)
    }

    /// Wire lines whose text starts with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<&Wire> {
        self.wire
            .iter()
            .filter(|w| w.line.starts_with(prefix))
            .collect()
    }

    /// Parses a line the way it went over the wire (to check it is Dovecot-shaped).
    pub fn parse(line: &str) -> RingMessage {
        director_proto::ring::parse(line.as_bytes()).expect("parse")
    }
}
