//! A ring of directors inside the test process, each a driver in ring mode with its ring
//! listener and a built-in proxy, on its own 127.x address; real Dovecot backends behind
//! them; and a relay on every directed ring link that delays, bunches and cuts the ring's
//! traffic (as Dovecot's own `director-test` did).
//!
//! A member runs on a thread with a tokio runtime of its own, like `directord`'s driver
//! thread, and its proxy on its worker thread. Killing a member drops both runtimes at
//! once, so every socket it had closes as under `kill -9`; a restarted member has the same
//! addresses and an empty state, and has to learn everything from the ring.
//!
//! Each member dials its peers through [`RingDialer::via`]: director `i` reaches director
//! `j` at relay `(i, j)`, which connects onwards to `j`'s listed address from `i`'s ring
//! address, so `j` still sees the IP it expects from `i`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use director_config::{Config, DirectorSettings};
use director_driver::{Clock, DirectorHandle, Directors, DriverConfig, RingDialer};
use director_proto::admin::AdminRequest;
use director_proto::ring::DirectorAddr;
use director_proxy::{NoBackendHook, Protocol, Proxy, ProxySettings, SessionRegistry};
use director_ring::RingConfig;
use testkit::{free_port, free_ports, require_dovecot, DovecotBackend, LoopbackAllocator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// A small seeded generator (SplitMix64): the chaos is chosen by the seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    /// A generator for a sub-task, independent of later draws from this one.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// What a relay does to the bytes of its link; changed by the chaos while it runs.
pub struct LinkCtl {
    /// Longest pause before a batch of bytes is passed on (0: none).
    max_delay_ms: AtomicU64,
    /// New connections are refused (closed at once) while set.
    blocked: AtomicBool,
    /// Bumped to cut every open connection of the link.
    cut: watch::Sender<u64>,
    seed: AtomicU64,
}

impl LinkCtl {
    fn new(seed: u64) -> LinkCtl {
        LinkCtl {
            max_delay_ms: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            cut: watch::Sender::new(0),
            seed: AtomicU64::new(seed),
        }
    }

    pub fn set_max_delay(&self, ms: u64) {
        self.max_delay_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Closes both sides of every open connection of the link.
    pub fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    fn rng(&self) -> Rng {
        Rng::new(
            self.seed
                .fetch_add(0x2545_F491_4F6C_DD1D, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }
}

/// The relay of one directed ring link: director `from` dials director `to` through it.
pub struct Relay {
    pub from: usize,
    pub to: usize,
    pub addr: SocketAddr,
    pub ctl: Arc<LinkCtl>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Listens on `listen` and relays each connection to `target`, connecting from the IP
    /// the dialing director connected from.
    async fn start(
        from: usize,
        to: usize,
        listen: SocketAddr,
        target: SocketAddr,
        seed: u64,
    ) -> Relay {
        let listener = TcpListener::bind(listen).await.expect("bind a relay");
        let addr = listener.local_addr().expect("relay address");
        let ctl = Arc::new(LinkCtl::new(seed));
        let task = tokio::spawn(relay_accept(listener, target, Arc::clone(&ctl)));
        Relay {
            from,
            to,
            addr,
            ctl,
            task,
        }
    }
}

async fn relay_accept(listener: TcpListener, target: SocketAddr, ctl: Arc<LinkCtl>) {
    let mut pumps = tokio::task::JoinSet::new();
    loop {
        let Ok((inbound, peer)) = listener.accept().await else {
            continue;
        };
        while pumps.try_join_next().is_some() {}
        if ctl.blocked.load(Ordering::Relaxed) {
            continue;
        }
        let ctl = Arc::clone(&ctl);
        pumps.spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("relay socket");
            // From the dialer's own address: the peer accepts only listed directors.
            if socket.bind(SocketAddr::new(peer.ip(), 0)).is_err() {
                return;
            }
            let Ok(outbound) = socket.connect(target).await else {
                return;
            };
            let mut cut = ctl.cut.subscribe();
            cut.mark_unchanged();
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            let both = async {
                tokio::join!(
                    pump(ir, ow, Arc::clone(&ctl), ctl.rng()),
                    pump(or, iw, Arc::clone(&ctl), ctl.rng())
                )
            };
            tokio::select! {
                _ = both => {}
                // Dropping both halves of both sockets closes the link in both directions.
                _ = cut.changed() => {}
            }
        });
    }
}

/// Copies one direction of a link: reads as they come, then passes them on in batches after
/// a random pause (so several reads go out as one write) and sometimes in two writes split
/// at a random byte (so a line arrives in pieces).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    ctl: Arc<LinkCtl>,
    mut rng: Rng,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some(first) = rx.recv().await {
            let max = ctl.max_delay_ms.load(Ordering::Relaxed);
            if max > 0 {
                tokio::time::sleep(rng.millis(0, max)).await;
            }
            let mut batch = first;
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
            }
            if max > 0 && batch.len() > 1 && rng.chance(20) {
                let at = 1 + rng.below(batch.len() as u64 - 1) as usize;
                if to.write_all(&batch[..at]).await.is_err() {
                    return;
                }
                tokio::time::sleep(rng.millis(0, 3)).await;
                if to.write_all(&batch[at..]).await.is_err() {
                    return;
                }
            } else if to.write_all(&batch).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Where a member lives; the same across restarts.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub index: usize,
    pub ip: Ipv4Addr,
    pub ring_port: u16,
    /// The proxy's IMAP listener.
    pub imap: SocketAddr,
    /// The member's config file (Dovecot syntax, read like `directord -c`).
    pub config: std::path::PathBuf,
}

/// A running member: its driver (admin requests reach it here) and its proxy.
pub struct Member {
    pub director: DirectorHandle,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    proxy: Option<Proxy>,
}

impl Member {
    /// Starts member `spec` with an empty state, dialing its peers through `dialer`.
    pub async fn start(spec: &MemberSpec, servers: &[DirectorAddr], dialer: RingDialer) -> Member {
        let config = Config::load(&spec.config).expect("member config parses");
        let proxy_settings = ProxySettings::from_config(&config).expect("proxy settings");
        let core = DirectorSettings::from_config(&config)
            .and_then(|d| d.core_settings())
            .expect("director settings");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a member runtime");
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("director-{}", spec.index))
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Like kill -9: every task, and so every socket, goes at once.
                runtime.shutdown_background();
            })
            .expect("a member thread");
        let registry = SessionRegistry::new(proxy_settings.username_hash.clone());
        let me = DirectorAddr {
            ip: IpAddr::V4(spec.ip),
            port: spec.ring_port,
        };
        let ring_addr = SocketAddr::new(me.ip, me.port);
        let sessions = Arc::clone(&registry) as _;
        let servers = servers.to_vec();
        let director = {
            let _in_member = handle.enter();
            let (director, _task) = director_driver::spawn(DriverConfig {
                core,
                directors: Directors::Ring {
                    config: RingConfig::new(me, servers),
                    output_buffer_size: 10 * 1024 * 1024,
                    dialer,
                },
                sessions,
                clock: Clock::new(),
                // A restarted member starts empty and relearns from the ring.
                state: None,
            })
            .expect("a member driver starts");
            let std = std::net::TcpListener::bind(ring_addr).expect("bind the ring listener");
            std.set_nonblocking(true).expect("non-blocking");
            let listener = TcpListener::from_std(std).expect("register the ring listener");
            handle.spawn(ring_accept(listener, director.clone()));
            director
        };
        let proxy = Proxy::start(
            proxy_settings,
            director.clone(),
            registry,
            Arc::new(NoBackendHook),
        )
        .await
        .expect("a member proxy starts");
        assert_eq!(proxy.addr_of(Protocol::Imap, false), Some(spec.imap));
        Member {
            director,
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
            proxy: Some(proxy),
        }
    }

    /// Whether this member says the ring is synced.
    pub fn synced(&self) -> bool {
        self.director.ring_synced()
    }

    /// Kills the member: its driver, ring connections, listeners and proxied sessions all
    /// go at once.
    pub fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Its worker thread drops every session as it stops.
        drop(self.proxy.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("member thread");
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The ring listener's accept loop, as `directord` runs it.
async fn ring_accept(listener: TcpListener, director: DirectorHandle) {
    loop {
        if let Ok((stream, peer)) = listener.accept().await {
            director.ring_accept(stream, peer).await;
        }
    }
}

/// A ring of `n` members over relays, with real backends behind it.
pub struct RingLab {
    pub dir: tempfile::TempDir,
    pub backends: Vec<DovecotBackend>,
    /// The backends in `director_mail_servers`.
    pub config_backends: Vec<IpAddr>,
    /// Backends the chaos may add and remove as hosts.
    pub extra_backends: Vec<IpAddr>,
    pub specs: Vec<MemberSpec>,
    pub servers: Vec<DirectorAddr>,
    /// `relays[from * n + to]` (none for `from == to`).
    pub relays: Vec<Option<Relay>>,
    pub members: Mutex<Vec<Option<Member>>>,
    /// Addresses clients connect from.
    pub client_ips: Vec<Ipv4Addr>,
}

impl RingLab {
    /// Starts `config_backends + extra_backends` real backends and `n` members.
    pub async fn start(
        n: usize,
        config_backends: usize,
        extra_backends: usize,
        seed: u64,
    ) -> RingLab {
        require_dovecot();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut alloc = LoopbackAllocator::new();
        let member_ips: Vec<Ipv4Addr> = (0..n).map(|_| alloc.next_ip()).collect();
        let backend_ips: Vec<Ipv4Addr> = (0..config_backends + extra_backends)
            .map(|_| alloc.next_ip())
            .collect();
        let relay_ip = alloc.next_ip();
        let client_ips: Vec<Ipv4Addr> = (0..4).map(|_| alloc.next_ip()).collect();

        let backends = DovecotBackend::start_group(&backend_ips, [None; 3], |o| {
            // Ten thousand logins: one login and one imap process serve many, instead of a
            // fork per login.
            o.extra_config.push(
                "service imap-login {\n service_count = 0\n client_limit = 1000\n process_min_avail = 1\n}\n\
                 service imap {\n service_count = 0\n client_limit = 500\n}\n\
                 mail_max_userip_connections = 100"
                    .to_string(),
            );
        })
        .expect("backends start");
        let bimap = backends[0].imap_addr().port();
        let m0 = IpAddr::V4(member_ips[0]);
        let [ring_port, imap_port] = free_ports(m0, [None; 2]).expect("free ports");
        let servers: Vec<DirectorAddr> = member_ips
            .iter()
            .map(|ip| DirectorAddr {
                ip: IpAddr::V4(*ip),
                port: ring_port,
            })
            .collect();
        let listed: Vec<String> = servers
            .iter()
            .map(|s| format!("{}:{}", s.ip, s.port))
            .collect();
        let mail: Vec<String> = backend_ips[..config_backends]
            .iter()
            .map(Ipv4Addr::to_string)
            .collect();
        let specs: Vec<MemberSpec> = member_ips
            .iter()
            .enumerate()
            .map(|(index, ip)| {
                let config = dir.path().join(format!("director-{index}.conf"));
                let text = format!(
                    "director_servers = {servers}\n\
                     director_mail_servers = {mail}\n\
                     disable_plaintext_auth = no\n\
                     ssl = no\n\
                     auth_failure_delay = 0\n\
                     director_backend_port_imap = {bimap}\n\
                     login_proxy_timeout = 20 s\n\
                     director_proxy_workers = 1\n\
                     director_proxy_max_connections_per_ip = 10000\n\
                     service imap-login {{\n inet_listener imap {{\n address = {ip}\n port = {imap_port}\n }}\n}}\n\
                     service director {{\n inet_listener director {{\n address = {ip}\n port = {ring_port}\n }}\n}}\n",
                    servers = listed.join(" "),
                    mail = mail.join(" "),
                );
                std::fs::write(&config, text).expect("write a member config");
                MemberSpec {
                    index,
                    ip: *ip,
                    ring_port,
                    imap: SocketAddr::new(IpAddr::V4(*ip), imap_port),
                    config,
                }
            })
            .collect();

        let mut seeds = Rng::new(seed ^ 0x5EED_0F4E_1A00_u64);
        let mut relays = Vec::new();
        for from in 0..n {
            for (to, server) in servers.iter().enumerate() {
                if from == to {
                    relays.push(None);
                    continue;
                }
                let port = free_port(IpAddr::V4(relay_ip)).expect("a relay port");
                let listen = SocketAddr::new(IpAddr::V4(relay_ip), port);
                let target = SocketAddr::new(server.ip, server.port);
                relays.push(Some(
                    Relay::start(from, to, listen, target, seeds.next_u64()).await,
                ));
            }
        }
        let lab = RingLab {
            dir,
            config_backends: backend_ips[..config_backends]
                .iter()
                .map(|i| IpAddr::V4(*i))
                .collect(),
            extra_backends: backend_ips[config_backends..]
                .iter()
                .map(|i| IpAddr::V4(*i))
                .collect(),
            backends,
            specs,
            servers,
            relays,
            members: Mutex::new((0..n).map(|_| None).collect()),
            client_ips,
        };
        for i in 0..n {
            lab.start_member(i).await;
        }
        lab
    }

    pub fn n(&self) -> usize {
        self.specs.len()
    }

    /// Member `i`'s dialer: peer `j` through relay `(i, j)`.
    fn dialer(&self, i: usize) -> RingDialer {
        let n = self.n();
        let by_addr: Vec<(DirectorAddr, SocketAddr)> = (0..n)
            .filter(|j| *j != i)
            .map(|j| {
                let relay = self.relays[i * n + j].as_ref().expect("a relay");
                (self.servers[j], relay.addr)
            })
            .collect();
        RingDialer::via(move |addr| {
            by_addr
                .iter()
                .find(|(d, _)| *d == addr)
                .map_or(SocketAddr::new(addr.ip, addr.port), |(_, r)| *r)
        })
    }

    /// Starts member `i` (fresh state) unless it runs.
    pub async fn start_member(&self, i: usize) {
        if self.members.lock().expect("members")[i].is_some() {
            return;
        }
        let m = Member::start(&self.specs[i], &self.servers, self.dialer(i)).await;
        self.members.lock().expect("members")[i] = Some(m);
    }

    /// Kills member `i` if it runs; whether it did.
    pub fn kill_member(&self, i: usize) -> bool {
        let m = self.members.lock().expect("members")[i].take();
        match m {
            Some(m) => {
                m.kill();
                true
            }
            None => false,
        }
    }

    /// Which members run.
    pub fn alive(&self) -> Vec<usize> {
        let members = self.members.lock().expect("members");
        (0..members.len())
            .filter(|i| members[*i].is_some())
            .collect()
    }

    /// An admin request on member `i`; `None` when it is not running (or died meanwhile).
    pub async fn admin(&self, i: usize, request: AdminRequest) -> Option<String> {
        let (director, runtime) = {
            let members = self.members.lock().expect("members");
            let m = members[i].as_ref()?;
            (m.director.clone(), m.runtime.clone())
        };
        let reply = runtime
            .spawn(async move { director.admin(request).await })
            .await
            .ok()??;
        Some(String::from_utf8(reply).expect("admin replies are text"))
    }

    pub fn synced(&self, i: usize) -> bool {
        self.members.lock().expect("members")[i]
            .as_ref()
            .is_some_and(Member::synced)
    }

    /// Every relay.
    pub fn links(&self) -> impl Iterator<Item = &Relay> {
        self.relays.iter().flatten()
    }

    /// Stops all relay chaos: no delays, nothing blocked.
    pub fn calm(&self) {
        for r in self.links() {
            r.ctl.set_max_delay(0);
            r.ctl.set_blocked(false);
        }
    }

    /// `HOST-LIST` of member `i` without the time of the last up/down change (each director
    /// stamps it when it learns the change).
    pub async fn hosts(&self, i: usize) -> Option<Vec<String>> {
        let text = self.admin(i, AdminRequest::HostList).await?;
        Some(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.rsplit_once('\t').map_or(l, |(a, _)| a).to_string())
                .collect(),
        )
    }

    /// `USER-LIST` of member `i` as sorted `hash host` pairs (the expiry is each director's
    /// own clock).
    pub async fn users(&self, i: usize) -> Option<Vec<(u32, String)>> {
        let text = self.admin(i, AdminRequest::UserList { ip: None }).await?;
        let mut users: Vec<(u32, String)> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    f[0].parse().expect("a user hash"),
                    f.get(2).unwrap_or(&"").to_string(),
                )
            })
            .collect();
        users.sort();
        Some(users)
    }
}

impl Drop for RingLab {
    fn drop(&mut self) {
        let n = self.n();
        for i in 0..n {
            self.kill_member(i);
        }
    }
}
