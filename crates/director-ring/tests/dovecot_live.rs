//! `Ring` + `Director` ring with a real Dovecot 2.3 director over loopback TCP, driven by
//! a small blocking driver in this test (threads read the sockets; the ring's own timers
//! decide when to wake). Shows: both rings sync (Dovecot forwards our SYNC only when our
//! hosts_hash equals its own), a user we assign is what Dovecot's `USER-LOOKUP` reports,
//! a host added through Dovecot's admin socket reaches our core, and one added through
//! ours reaches Dovecot's `HOST-LIST`.
//!
//! Requires real Dovecot (`apt-get install -y dovecot-core`); testkit fails with that
//! hint when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use director_core::lookup::ConfigHost;
use director_core::{CoreSettings, Director, Effect, RequestOutcome};
use director_proto::ring::{DirectorAddr, RingDecoder};
use director_ring::{ConnId, Direction, Output, Ring, RingConfig};
use testkit::{free_port, DirectorOptions, DovecotDirector, LoopbackAllocator};

/// Bound on every wait in this test.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

enum Ev {
    Accepted(TcpStream, SocketAddr),
    Bytes(ConnId, Vec<u8>),
    Closed(ConnId),
    Wake,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn spawn_reader(id: ConnId, mut stream: TcpStream, tx: mpsc::Sender<Ev>) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Ev::Closed(id));
                    return;
                }
                Ok(n) => {
                    if tx.send(Ev::Bytes(id, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// The test's driver: our `Ring` and `Director` and their sockets.
struct Live {
    ring: Ring,
    dir: Director,
    my_ip: IpAddr,
    streams: HashMap<ConnId, TcpStream>,
    decoders: HashMap<ConnId, RingDecoder>,
    rx: mpsc::Receiver<Ev>,
    tx: mpsc::Sender<Ev>,
    next_id: u64,
    wakes: usize,
}

impl Live {
    /// Our director at `me` (listening on `listener`), started.
    fn start(
        me: DirectorAddr,
        servers: Vec<DirectorAddr>,
        hosts: &[IpAddr],
        listener: TcpListener,
    ) -> Live {
        let (tx, rx) = mpsc::channel();
        let accept_tx = tx.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { return };
                let from = stream.peer_addr().unwrap();
                if accept_tx.send(Ev::Accepted(stream, from)).is_err() {
                    return;
                }
            }
        });
        let settings = CoreSettings {
            config_hosts: hosts.iter().map(|ip| ConfigHost::new(*ip)).collect(),
            ..CoreSettings::default()
        };
        let mut live = Live {
            ring: Ring::new(RingConfig::new(me, servers)),
            dir: Director::new(settings).unwrap(),
            my_ip: me.ip,
            streams: HashMap::new(),
            decoders: HashMap::new(),
            rx,
            tx,
            next_id: 0,
            wakes: 0,
        };
        live.ring.start(now(), &mut live.dir);
        live
    }

    fn add_conn(&mut self, stream: TcpStream) -> ConnId {
        self.next_id += 1;
        let id = ConnId(self.next_id);
        spawn_reader(id, stream.try_clone().unwrap(), self.tx.clone());
        self.streams.insert(id, stream);
        self.decoders.insert(id, RingDecoder::new());
        id
    }

    /// Performs queued outputs and core effects until there are none.
    fn run_outputs(&mut self) {
        loop {
            let now = now();
            let mut busy = false;
            while let Some(e) = self.dir.poll_effect() {
                busy = true;
                if let Some(
                    Effect::KickDirectorHash { ticket, .. }
                    | Effect::Kick { ticket, .. }
                    | Effect::KickAlt { ticket, .. },
                ) = self.ring.core_effect(e, now)
                {
                    self.dir.kick_finished(ticket, now);
                }
            }
            while let Some(out) = self.ring.poll_output() {
                busy = true;
                match out {
                    Output::Send { conn, message } => {
                        if let Some(s) = self.streams.get_mut(&conn) {
                            let _ = s.write_all(&message.encode());
                        }
                    }
                    // Blocking writes: what was queued is written.
                    Output::NotifyWritten { conn } => self.ring.written(conn, now, &self.dir),
                    Output::Connect { addr } => self.connect(addr),
                    Output::Disconnect { conn, .. } => {
                        if let Some(s) = self.streams.remove(&conn) {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                        self.decoders.remove(&conn);
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn connect(&mut self, addr: DirectorAddr) {
        let now = now();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(self.my_ip, 0).into()).unwrap();
        let target = SocketAddr::new(addr.ip, addr.port);
        match socket.connect_timeout(&target.into(), Duration::from_secs(5)) {
            Ok(()) => {
                let id = self.add_conn(socket.into());
                self.ring
                    .connected(id, addr.ip, Direction::Outgoing(addr), now, &mut self.dir);
            }
            Err(_) => self.ring.connect_failed(addr, now, &mut self.dir),
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = now();
        match ev {
            Ev::Accepted(stream, from) => {
                let id = self.add_conn(stream);
                self.ring
                    .connected(id, from.ip(), Direction::Incoming, now, &mut self.dir);
            }
            Ev::Bytes(id, bytes) => {
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let Some(dec) = self.decoders.get_mut(&id) else {
                        return;
                    };
                    let n = dec.feed(rest);
                    rest = &rest[n..];
                    loop {
                        let Some(dec) = self.decoders.get_mut(&id) else {
                            return;
                        };
                        match dec.next_message() {
                            Ok(Some(m)) => self.ring.line(id, m, now, &mut self.dir),
                            Ok(None) => break,
                            Err(e) => {
                                panic!("Dovecot sent a line our codec refuses: {e}");
                            }
                        }
                    }
                }
            }
            Ev::Closed(id) => {
                if self.streams.remove(&id).is_some() {
                    self.decoders.remove(&id);
                    self.ring.closed(id, now, &mut self.dir);
                }
            }
            Ev::Wake => self.wakes += 1,
        }
    }

    /// Drives the ring until `done` holds (bounded by [`STEP_TIMEOUT`]).
    fn pump_until(&mut self, what: &str, mut done: impl FnMut(&mut Live) -> bool) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            self.run_outputs();
            if done(self) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}: {:?}",
                self.ring.overview()
            );
            // Wake for the ring's next timer (whole seconds) or the next event.
            let next = [self.ring.next_timeout(), self.dir.next_timeout()]
                .into_iter()
                .flatten()
                .min();
            let timer = next.map(|t| {
                Duration::from_secs(t.saturating_sub(now())).max(Duration::from_millis(50))
            });
            let wait = timer.map_or(left, |t| t.min(left));
            match self.rx.recv_timeout(wait) {
                Ok(ev) => self.handle(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = now();
                    if self.ring.next_timeout().is_some_and(|t| t <= now) {
                        self.ring.handle_timeout(now, &mut self.dir);
                    }
                    if self.dir.next_timeout().is_some_and(|t| t <= now) {
                        self.dir.handle_timeout(now);
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Runs a blocking admin command on Dovecot while our ring keeps answering it.
    fn dovecot_admin(&mut self, d: &DovecotDirector, line: &str) -> Vec<String> {
        let before = self.wakes;
        thread::scope(|s| {
            let wake = self.tx.clone();
            let h = s.spawn(move || {
                let r = d.admin_client().unwrap().command(line).unwrap();
                let _ = wake.send(Ev::Wake);
                r
            });
            self.pump_until(line, |l| l.wakes > before);
            h.join().unwrap()
        })
    }
}

#[test]
fn our_ring_state_machine_rings_with_a_real_dovecot_director() {
    let mut alloc = LoopbackAllocator::new();
    let (d_ip, p_ip) = (alloc.next_ip(), alloc.next_ip());
    let hosts: Vec<IpAddr> = (0..3).map(|_| IpAddr::V4(alloc.next_ip())).collect();
    let (dovecot_host, our_host) = (IpAddr::V4(alloc.next_ip()), IpAddr::V4(alloc.next_ip()));
    let d_port = free_port(IpAddr::V4(d_ip)).unwrap();
    let listener = TcpListener::bind((p_ip, 0)).unwrap();
    let p_port = listener.local_addr().unwrap().port();
    let dovecot = DirectorAddr {
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
    let start_dovecot = || {
        DovecotDirector::start(
            DirectorOptions::new(mail_servers.clone())
                .with_ip(d_ip)
                .with_ring_port(d_port)
                .with_director_servers(format!("{d_ip}:{d_port} {p_ip}:{p_port}"))
                .without_sync_wait(),
        )
        .unwrap()
    };
    let d = start_dovecot();

    let mut live = Live::start(me, vec![dovecot, me], &hosts, listener);

    // 1. Our SYNC came back through Dovecot (so our hosts_hash equals its own), and
    //    Dovecot's ring is synced too.
    live.pump_until("our ring to sync", |l| {
        let o = l.ring.overview();
        o.synced && o.handshaked && o.left == Some(dovecot) && o.right == Some(dovecot)
    });
    let list = live.dovecot_admin(&d, "DIRECTOR-LIST");
    assert!(
        list.iter()
            .any(|l| l.contains("\tself\t") && l.contains("ring synced")),
        "{list:?}"
    );

    // 2. A user assigned by us is what Dovecot reports for it.
    let now_s = now();
    let RequestOutcome::Ready(route) = live.dir.request(b"ring-live-user", "", now_s) else {
        panic!("a synced ring routes at once");
    };
    let mut current = String::new();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while current != route.ip.to_string() {
        assert!(
            Instant::now() < deadline,
            "Dovecot never learned the user: {current:?}"
        );
        let reply = live.dovecot_admin(&d, "USER-LOOKUP\tring-live-user");
        current = reply[0].split('\t').next().unwrap_or_default().to_string();
    }

    // 3. A host added on Dovecot (OK only once its ring synced again) reaches our core.
    assert_eq!(
        live.dovecot_admin(&d, &format!("HOST-SET\t{dovecot_host}\t50")),
        ["OK"]
    );
    live.pump_until("Dovecot's host", |l| {
        l.dir
            .host_list()
            .iter()
            .any(|h| h.ip == dovecot_host && h.vhost_count == 50)
    });

    // 4. A host added on our side goes round; our SYNC returns only when Dovecot's
    //    hosts_hash equals ours again.
    let now_s = now();
    live.dir.host_set(our_host, None, Some(20), now_s).unwrap();
    live.ring.host_changed(our_host, now_s, &mut live.dir);
    live.pump_until("our ring to sync after our HOST", |l| l.ring.is_synced());
    let hosts_list = live.dovecot_admin(&d, "HOST-LIST");
    assert!(
        hosts_list
            .iter()
            .any(|l| l.starts_with(&format!("{our_host}\t20\t"))),
        "{hosts_list:?}"
    );

    // 5. A move started on Dovecot: USER-MOVE reaches us, the USER-KILLED token goes
    //    round both directors, and both end with the user on the new host and no move
    //    in progress (after the 2 s kick delay).
    let target = hosts.iter().copied().find(|ip| *ip != route.ip).unwrap();
    let hash = director_core::user_hash(b"ring-live-user", &Default::default()).unwrap();
    assert_eq!(
        live.dovecot_admin(&d, &format!("USER-MOVE\t{hash}\t{target}")),
        ["OK"]
    );
    let key = director_core::UserKey::Hash(hash);
    live.pump_until("the move to reach us and finish", |l| {
        let now = now();
        let cur = l
            .dir
            .user_lookup(&key, "", now)
            .unwrap()
            .current
            .map(|c| c.0);
        cur == Some(target) && l.dir.counters().moves_in_progress == 0
    });
    let reply = live.dovecot_admin(&d, "USER-LOOKUP\tring-live-user");
    assert!(reply[0].starts_with(&format!("{target}\t")), "{reply:?}");
    // Dovecot's move finished too: another move is accepted (not TRYAGAIN).
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let r = live.dovecot_admin(&d, &format!("USER-MOVE\t{hash}\t{}", route.ip));
        if r == ["OK"] {
            break;
        }
        assert_eq!(r, ["TRYAGAIN"]);
        assert!(Instant::now() < deadline, "Dovecot's move never finished");
        let until = Instant::now() + Duration::from_millis(200);
        live.pump_until("a moment", |_| Instant::now() >= until);
    }
    live.pump_until("the second move to finish here", |l| {
        l.dir.counters().moves_in_progress == 0
    });

    // 6. Dovecot stops and a new Dovecot starts in its place: it learns every host and
    //    user from us (our outgoing handshake: HOST-HAND-START 1, hosts, U lines).
    drop(d);
    live.pump_until("Dovecot to go", |l| l.ring.overview().connections == 0);
    let d = start_dovecot();
    live.pump_until("the ring with the new Dovecot", |l| {
        let o = l.ring.overview();
        o.synced && o.left == Some(dovecot) && o.right == Some(dovecot)
    });
    let reply = live.dovecot_admin(&d, "USER-LOOKUP\tring-live-user");
    assert!(
        reply[0].starts_with(&format!("{}\t", route.ip)),
        "{reply:?}"
    );
    let hosts_list = live.dovecot_admin(&d, "HOST-LIST");
    for (ip, vhosts) in [(dovecot_host, 50), (our_host, 20)] {
        assert!(
            hosts_list
                .iter()
                .any(|l| l.starts_with(&format!("{ip}\t{vhosts}\t"))),
            "{ip} in {hosts_list:?}"
        );
    }
}

#[test]
fn we_join_a_ring_of_two_dovecot_directors_in_the_middle() {
    // Three addresses in order: Dovecot A < us < Dovecot B, so we sit between them.
    let mut alloc = LoopbackAllocator::new();
    let mut ips = [alloc.next_ip(), alloc.next_ip(), alloc.next_ip()];
    ips.sort();
    let [a_ip, p_ip, b_ip] = ips;
    let hosts: Vec<IpAddr> = (0..3).map(|_| IpAddr::V4(alloc.next_ip())).collect();
    let new_host = IpAddr::V4(alloc.next_ip());
    let (a_port, b_port) = (
        free_port(IpAddr::V4(a_ip)).unwrap(),
        free_port(IpAddr::V4(b_ip)).unwrap(),
    );
    let listener = TcpListener::bind((p_ip, 0)).unwrap();
    let p_port = listener.local_addr().unwrap().port();
    let addr = |ip, port| DirectorAddr {
        ip: IpAddr::V4(ip),
        port,
    };
    let (a, me, b) = (addr(a_ip, a_port), addr(p_ip, p_port), addr(b_ip, b_port));
    let servers = format!("{a_ip}:{a_port} {p_ip}:{p_port} {b_ip}:{b_port}");
    let mail_servers = hosts
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let start = |ip, port| {
        DovecotDirector::start(
            DirectorOptions::new(mail_servers.clone())
                .with_ip(ip)
                .with_ring_port(port)
                .with_director_servers(servers.clone())
                .without_sync_wait(),
        )
        .unwrap()
    };
    let da = start(a_ip, a_port);
    let db = start(b_ip, b_port);
    da.wait_ring_synced(STEP_TIMEOUT).unwrap();
    db.wait_ring_synced(STEP_TIMEOUT).unwrap();

    // We start: we connect to B (our right); B tells A (its left) to connect to us.
    let mut live = Live::start(me, vec![a, me, b], &hosts, listener);
    live.pump_until("the ring of three", |l| {
        let o = l.ring.overview();
        o.synced && o.left == Some(a) && o.right == Some(b)
    });
    // Each Dovecot director reports synced once its own SYNC came back round, which may be
    // a moment after ours did.
    for d in [&da, &db] {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let list = live.dovecot_admin(d, "DIRECTOR-LIST");
            if list
                .iter()
                .any(|l| l.contains("\tself\t") && l.contains("ring synced"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{list:?}");
        }
    }
    let a_list = live.dovecot_admin(&da, "DIRECTOR-LIST");
    assert!(
        a_list
            .iter()
            .any(|l| l.starts_with(&format!("{p_ip}\t{p_port}\tright\t"))),
        "A's right is us: {a_list:?}"
    );
    let b_list = live.dovecot_admin(&db, "DIRECTOR-LIST");
    assert!(
        b_list
            .iter()
            .any(|l| l.starts_with(&format!("{p_ip}\t{p_port}\tleft\t"))),
        "B's left is us: {b_list:?}"
    );

    // A user we assign is known to both; a host added on A reaches us and B.
    let RequestOutcome::Ready(route) = live.dir.request(b"middle-user", "", now()) else {
        panic!("a synced ring routes at once");
    };
    for d in [&da, &db] {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let reply = live.dovecot_admin(d, "USER-LOOKUP\tmiddle-user");
            if reply[0].starts_with(&format!("{}\t", route.ip)) {
                break;
            }
            assert!(Instant::now() < deadline, "{reply:?}");
        }
    }
    assert_eq!(
        live.dovecot_admin(&da, &format!("HOST-SET\t{new_host}\t30")),
        ["OK"]
    );
    live.pump_until("A's host", |l| {
        l.dir
            .host_list()
            .iter()
            .any(|h| h.ip == new_host && h.vhost_count == 30)
    });
    let b_hosts = live.dovecot_admin(&db, "HOST-LIST");
    assert!(
        b_hosts
            .iter()
            .any(|l| l.starts_with(&format!("{new_host}\t30\t"))),
        "{b_hosts:?}"
    );
}
