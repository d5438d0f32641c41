//! [`Proxy`]: binds the listeners, enforces connection limits, spawns one task per client
//! connection, and drains on shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::budget::BufferBudget;
use crate::metrics::ProxyMetrics;
use crate::registry::SessionRegistry;
use director_driver::DirectorHandle;

use crate::router::BackendFailureHook;
use director_mailproto::imap::Imap;
use director_mailproto::managesieve::Sieve;
use director_mailproto::pop3::Pop3;
use director_mailproto::submission::Submission;

use crate::session::{self, Client, LoginTls, Shared};
use crate::settings::{BackendTlsMode, ListenerSpec, Protocol, ProxySettings};
use crate::stream::Stream;
use crate::tls::{backend_connector, server_acceptor, TlsSetupError};
use crate::workers::{worker_count, WorkerError, Workers};

/// How often the shutdown drain checks whether sessions are gone.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Starting the proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// A worker thread could not be started.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A listener could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Counts connections per client IP; the guard decrements on drop.
#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            table: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut c = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// The settings and TLS material new connections start with; SIGHUP swaps them. A session
/// keeps the snapshot it started with, so a reload never changes a login half-way.
struct Current(RwLock<Arc<Shared>>);

impl Current {
    fn get(&self) -> Arc<Shared> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, shared: Arc<Shared>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = shared;
    }
}

/// What a reload changed, for the log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Settings that only take effect after a restart (listeners, the connection limit);
    /// they keep their running values.
    pub need_restart: Vec<&'static str>,
}

/// The proxy, before and while running.
pub struct Proxy {
    current: Arc<Current>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
    bound: Vec<(ListenerSpec, SocketAddr)>,
    connections: Arc<Semaphore>,
    /// The size of `connections`, fixed at start.
    max_connections: usize,
    /// The threads that accept and serve client connections.
    workers: Option<Workers>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the TLS configuration, binds every listener in `settings` and starts serving.
    /// `registry` must be the one the daemon's kick executor uses.
    pub async fn start(
        settings: ProxySettings,
        director: DirectorHandle,
        registry: Arc<SessionRegistry>,
        hook: Arc<dyn BackendFailureHook>,
    ) -> Result<Proxy, ProxyError> {
        let (acceptor, connector) = tls_material(&settings)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let max_conns = settings.limits.max_connections;
        let budget = BufferBudget::new(budget_bytes(&settings));
        let shared = Arc::new(Shared {
            settings: Arc::new(settings),
            director,
            registry,
            hook,
            metrics: Arc::new(ProxyMetrics::new()),
            budget,
            acceptor,
            connector,
            shutdown: shutdown_rx,
        });
        let specs = shared.settings.listeners.clone();
        let workers = Workers::start(worker_count(shared.settings.workers))?;
        let mut proxy = Proxy {
            current: Arc::new(Current(RwLock::new(shared))),
            shutdown_tx,
            tasks: JoinSet::new(),
            bound: Vec::new(),
            connections: Arc::new(Semaphore::new(max_conns)),
            max_connections: max_conns,
            workers: None,
        };
        let per_ip = Arc::new(PerIp::default());
        for spec in specs {
            let bind_err = |source| ProxyError::Bind {
                addr: spec.addr,
                source,
            };
            let (local, sockets) = bind_group(spec.addr, workers.len()).map_err(bind_err)?;
            tracing::info!(protocol = spec.protocol.name(), listener = %spec.name, addr = %local, tls = spec.implicit_tls, "listening");
            proxy.bound.push((spec.clone(), local));
            // Sessions take their local address from here (port 0 resolved).
            let served = ListenerSpec {
                addr: local,
                ..spec.clone()
            };
            for (socket, worker) in sockets.into_iter().zip(workers.handles()) {
                // Registered with the worker's own reactor: its connections stay there.
                let listener = {
                    let _in_worker = worker.enter();
                    TcpListener::from_std(socket).map_err(bind_err)?
                };
                proxy.tasks.spawn_on(
                    accept_loop(
                        Arc::clone(&proxy.current),
                        listener,
                        served.clone(),
                        Arc::clone(&proxy.connections),
                        Arc::clone(&per_ip),
                    ),
                    worker,
                );
            }
        }
        proxy.workers = Some(workers);
        Ok(proxy)
    }

    /// SIGHUP: new connections use `settings` (TLS certificates and keys, CA file, limits
    /// other than the total, timeouts, trusted networks, greeting, backend ports and TLS...);
    /// open sessions keep what they started with. On an error (unreadable certificate, say)
    /// nothing changes. Listeners, `director_proxy_max_connections` and
    /// `director_proxy_workers` keep their running values until a restart; the summary names
    /// them when they differ.
    pub fn reload(&self, settings: ProxySettings) -> Result<ReloadSummary, ProxyError> {
        let (acceptor, connector) = tls_material(&settings)?;
        let old = self.current.get();
        let mut summary = ReloadSummary::default();
        if settings.listeners != old.settings.listeners {
            summary.need_restart.push("listeners");
        }
        let mut settings = settings;
        if settings.limits.max_connections != self.max_connections {
            summary.need_restart.push("director_proxy_max_connections");
            settings.limits.max_connections = self.max_connections;
        }
        if settings.workers != old.settings.workers {
            summary.need_restart.push("director_proxy_workers");
            settings.workers = old.settings.workers;
        }
        settings.listeners.clone_from(&old.settings.listeners);
        old.budget.set_limit(budget_bytes(&settings));
        self.current.set(Arc::new(Shared {
            settings: Arc::new(settings),
            director: old.director.clone(),
            registry: Arc::clone(&old.registry),
            hook: Arc::clone(&old.hook),
            metrics: Arc::clone(&old.metrics),
            budget: Arc::clone(&old.budget),
            acceptor,
            connector,
            shutdown: old.shutdown.clone(),
        }));
        Ok(summary)
    }

    /// The TLS connector new backend connections use (from `ssl_client_ca_file`, replaced by
    /// SIGHUP), for others who talk to the backends as the proxy does (the health checks);
    /// it gives `None` while `director_backend_ssl = no`.
    pub fn backend_connector(&self) -> impl Fn() -> Option<TlsConnector> + Send + Sync + 'static {
        let current = Arc::clone(&self.current);
        move || current.get().connector.clone()
    }

    /// The buffer budget all connections share (it survives a reload).
    pub fn buffer_budget(&self) -> Arc<BufferBudget> {
        Arc::clone(&self.current.get().budget)
    }

    /// The login counters (they survive a reload).
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        Arc::clone(&self.current.get().metrics)
    }

    /// The bound listeners with their actual addresses.
    pub fn local_addrs(&self) -> &[(ListenerSpec, SocketAddr)] {
        &self.bound
    }

    /// The first bound address of `protocol` (`implicit_tls` as given).
    pub fn addr_of(&self, protocol: Protocol, implicit_tls: bool) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(s, _)| s.protocol == protocol && s.implicit_tls == implicit_tls)
            .map(|(_, a)| *a)
    }

    /// The session registry.
    pub fn registry(&self) -> Arc<SessionRegistry> {
        Arc::clone(&self.current.get().registry)
    }

    /// Client connections currently open (pre-login and proxied).
    pub fn open_connections(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }

    /// SIGTERM: stop accepting, close connections still logging in, let proxied sessions
    /// run for up to `drain` (default: `director_proxy_drain_time`), then close the rest.
    pub async fn shutdown(mut self, drain: Option<Duration>) {
        let shared = self.current.get();
        let drain = drain.unwrap_or(shared.settings.limits.drain_time);
        let _ = self.shutdown_tx.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let deadline = Instant::now() + drain;
        while self.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let left = shared.registry.kill_all();
        if left > 0 {
            tracing::info!(
                sessions = left,
                "drain time over, closing remaining sessions"
            );
        }
        // Give killed sessions a moment to close their sockets.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if let Some(mut workers) = self.workers.take() {
            // Joining blocks; the threads exit as soon as they see the stop.
            let _ = tokio::task::spawn_blocking(move || workers.stop(true)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        self.tasks.abort_all();
    }
}

/// Accept backlog of each listener.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds `addr` once per worker and returns the bound address (port 0 resolved) and the
/// listening sockets.
///
/// Like Dovecot: `SO_REUSEADDR`, and IPv6 sockets are IPv6-only, so the default `listen =
/// *, ::` binds `0.0.0.0:port` and `[::]:port` side by side. Several workers share the
/// port with `SO_REUSEPORT`; because that would also let a second `directord` bind the
/// same port and silently take half the connections, the port is first bound once without
/// it, so a port in use is still an error.
fn bind_group(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let open = |addr: SocketAddr, reuse_port: bool| -> std::io::Result<socket2::Socket> {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        // Accepted sockets inherit it: one setsockopt per listener, not per connection.
        socket.set_tcp_nodelay(true)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    let listen = |socket: socket2::Socket| -> std::io::Result<std::net::TcpListener> {
        socket.listen(LISTEN_BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    if workers <= 1 {
        let socket = listen(open(addr, false)?)?;
        return Ok((socket.local_addr()?, vec![socket]));
    }
    let probe = open(addr, false)?;
    let bound = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("bound address is not an IP address"))?;
    drop(probe);
    let sockets = (0..workers)
        .map(|_| listen(open(bound, true)?))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((bound, sockets))
}

/// The client-side acceptor and the backend-side connector `settings` ask for.
fn tls_material(
    settings: &ProxySettings,
) -> Result<(Option<TlsAcceptor>, Option<TlsConnector>), TlsSetupError> {
    let acceptor = match (&settings.ssl_cert_pem, &settings.ssl_key_pem) {
        (Some(c), Some(k)) if settings.tls_available() => Some(server_acceptor(c, k)?),
        _ => None,
    };
    let connector = match (&settings.backend_ca_pem, settings.backend_tls) {
        (Some(ca), mode) if mode != BackendTlsMode::None => Some(backend_connector(ca)?),
        _ => None,
    };
    Ok((acceptor, connector))
}

async fn accept_loop(
    current: Arc<Current>,
    listener: TcpListener,
    spec: ListenerSpec,
    connections: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = current.get();
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(client = %peer, "connection limit reached");
            reject(tcp, spec.protocol, b"Too many connections");
            continue;
        };
        let Some(ip_guard) =
            per_ip.try_take(peer.ip(), shared.settings.limits.max_connections_per_ip)
        else {
            tracing::warn!(client = %peer, "per-IP connection limit reached");
            reject(tcp, spec.protocol, b"Too many connections from your IP");
            continue;
        };
        let spec = spec.clone();
        tokio::spawn(async move {
            handle(shared, tcp, peer, spec, permit, ip_guard).await;
        });
    }
}

/// Refuses a connection over a limit with the protocol's "try later" line, without reading.
fn reject(tcp: TcpStream, protocol: Protocol, why: &[u8]) {
    let line = protocol.refusal(why);
    // try_write: never wait for a peer we are refusing.
    let _ = tcp.try_write(&line);
}

async fn handle(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    spec: ListenerSpec,
    _permit: OwnedSemaphorePermit,
    _ip_guard: PerIpGuard,
) {
    // TCP_NODELAY comes from the listener. A listener on a specific address knows the
    // local address; only a wildcard one has to ask.
    let local = if spec.addr.ip().is_unspecified() {
        tcp.local_addr().unwrap_or(spec.addr)
    } else {
        spec.addr
    };
    let s = &shared.settings;
    let mut client = Client {
        stream: Stream::Plain(tcp),
        peer,
        local,
        deadline: Instant::now() + s.limits.login_timeout,
        shutdown: shared.shutdown.clone(),
    };
    if spec.implicit_tls {
        let Some(acceptor) = shared.acceptor.clone() else {
            return;
        };
        if let Err(e) = client.start_tls(&acceptor).await {
            tracing::debug!(client = %peer, error = ?e, "TLS handshake failed");
            return;
        }
    }
    let tls = LoginTls {
        available: shared.acceptor.is_some(),
        active: client.stream.is_tls(),
        secured: client.stream.is_tls() || s.is_secured(peer.ip(), local.ip()),
        trusted: s.is_trusted(peer.ip()),
    };
    match spec.protocol {
        Protocol::Imap => session::run_login::<Imap>(shared, client, tls).await,
        Protocol::Pop3 => session::run_login::<Pop3>(shared, client, tls).await,
        Protocol::Submission => session::run_login::<Submission>(shared, client, tls).await,
        Protocol::ManageSieve => session::run_login::<Sieve>(shared, client, tls).await,
        Protocol::Lmtp => crate::lmtp::run(shared, client).await,
    }
}

/// `director_proxy_buffer_memory` in bytes (saturated on 32-bit targets).
fn budget_bytes(settings: &ProxySettings) -> usize {
    usize::try_from(settings.limits.buffer_memory).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{ErrorKind, Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    use std::time::Duration;

    use super::bind_group;

    fn any_port() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    #[test]
    fn every_worker_gets_a_socket_on_one_port_and_each_accepts() {
        let (bound, sockets) = bind_group(any_port(), 3).unwrap();
        assert_ne!(bound.port(), 0);
        assert_eq!(sockets.len(), 3);
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), bound);
        }
        // The kernel spreads connections over the sockets; each one accepts what it gets.
        let clients: Vec<TcpStream> = (0..30)
            .map(|_| TcpStream::connect(bound).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let mut accepted = 0;
        for s in &sockets {
            while let Ok((mut c, _)) = s.accept() {
                c.write_all(b"x").unwrap();
                accepted += 1;
            }
        }
        assert_eq!(accepted, clients.len());
        for mut c in clients {
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
        }
    }

    #[test]
    fn a_port_in_use_is_an_error_even_with_several_workers() {
        // Another directord with several workers on the same port must not silently share it.
        let (bound, _sockets) = bind_group(any_port(), 2).unwrap();
        for workers in [1, 2, 4] {
            let e = bind_group(bound, workers).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::AddrInUse, "{workers} workers: {e}");
        }
        // A port some other program listens on, likewise.
        let other = std::net::TcpListener::bind(any_port()).unwrap();
        let e = bind_group(other.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse);
    }
}
