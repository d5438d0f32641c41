//! The generic login-then-splice driver shared by IMAP, POP3, Submission and ManageSieve:
//! run the protocol's pre-login machine on the client connection, and on `Login` route the
//! user, connect to the backend, replay the login with the backend machine, relay the
//! verdict and splice bytes both ways.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use director_mailproto::connection::{next_hop_ttl, TTL_EXHAUSTED};
use director_mailproto::routing::{is_routable, routing_user};
use director_mailproto::{
    Action, BackendAction, BackendFailure, BackendMachine, BackendSetup, ConnInfo, LoginFailure,
    LoginMachine, LoginProtocol, LoginSetup,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use director_driver::DirectorHandle;
use director_proto::log_text::LogText;

use crate::budget::BufferBudget;
use crate::metrics::{LoginResult, ProxyMetrics};
use crate::registry::SessionRegistry;

use crate::router::{self, BackendFailureHook, BackendFailureKind, Route, RouteError};
use crate::settings::{BackendTlsMode, ListenerSpec, Protocol, ProxySettings};
use crate::splice::{splice, SpliceEnd, CLOSE_FLUSH_TIMEOUT};
use crate::stream::Stream;
use crate::tls::backend_server_name;

/// Read buffer size for LMTP.
pub(crate) const IO_BUF: usize = 16 * 1024;
/// Read buffer for pre-login input, client and backend: login lines are short, and the
/// allocator serves 4 KiB from its thread cache (16 KiB takes its slower large-object path,
/// measurable at thousands of logins per second).
const LOGIN_BUF: usize = 4 * 1024;

/// Everything a connection task needs.
pub(crate) struct Shared {
    pub settings: Arc<ProxySettings>,
    pub director: DirectorHandle,
    pub registry: Arc<SessionRegistry>,
    pub hook: Arc<dyn BackendFailureHook>,
    pub metrics: Arc<ProxyMetrics>,
    pub budget: Arc<BufferBudget>,
    pub acceptor: Option<TlsAcceptor>,
    pub connector: Option<TlsConnector>,
    pub shutdown: watch::Receiver<bool>,
}

/// Why a client connection ended before or instead of proxying.
#[derive(Debug)]
pub(crate) enum End {
    /// Clean EOF from the client.
    Eof,
    /// The pre-login deadline passed.
    Timeout,
    /// The proxy is shutting down.
    Shutdown,
    /// I/O error.
    Io(std::io::Error),
}

/// The client side of one connection.
pub(crate) struct Client {
    pub stream: Stream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub deadline: Instant,
    pub shutdown: watch::Receiver<bool>,
}

impl Client {
    /// Reads pre-login input, bounded by the login deadline and shutdown.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        if *self.shutdown.borrow() {
            return Err(End::Shutdown);
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            r = tokio::time::timeout_at(self.deadline, self.stream.read(buf)) => match r {
                Ok(Ok(0)) => Err(End::Eof),
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(End::Io(e)),
                Err(_) => Err(End::Timeout),
            },
            _ = shutdown.wait_for(|s| *s) => Err(End::Shutdown),
        }
    }

    /// Writes and flushes, bounded by the login deadline (a client that doesn't read can't
    /// hold us forever).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), End> {
        let fut = async {
            self.stream.write_all(data).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout_at(self.deadline, fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Timeout),
        }
    }

    /// Runs the server-side TLS handshake (bounded by the deadline).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Result<(), End> {
        match tokio::time::timeout_at(self.deadline, self.stream.accept_tls(acceptor)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Timeout),
        }
    }

    /// Best-effort final write and close.
    pub async fn close_with(&mut self, data: &[u8]) {
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
            if !data.is_empty() {
                self.stream.write_all(data).await?;
            }
            self.stream.flush().await?;
            self.stream.shutdown().await
        })
        .await;
    }

    /// Facts for the backend (ID / XCLIENT / PROXY header).
    pub fn conn_info(&self, session_id: Option<String>, proxy_ttl: u32) -> ConnInfo {
        ConnInfo {
            client_ip: self.peer.ip(),
            client_port: self.peer.port(),
            local_ip: self.local.ip(),
            local_port: self.local.port(),
            session_id,
            proxy_ttl,
        }
    }
}

/// The TLS state a new client connection starts its pre-login machine with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoginTls {
    /// STARTTLS can be offered (a TLS acceptor is configured).
    pub available: bool,
    /// TLS is already on (implicit-TLS listener).
    pub active: bool,
    /// The connection counts as secured (TLS, or a trusted/local client address).
    pub secured: bool,
    /// The client address is in `login_trusted_networks` (it may set the proxy TTL).
    pub trusted: bool,
}

/// How a login attempt ended.
enum LoginEnd {
    /// Proxied until one side closed; the connection is finished.
    Done,
    /// Back to the pre-login machine, with what the client sent while the backend login ran.
    Failed(LoginFailure, Vec<u8>),
    /// Drop the connection.
    Abort,
}

/// Runs a whole client connection for a login-then-splice protocol.
pub(crate) async fn run_login<P: LoginProtocol>(
    shared: Arc<Shared>,
    mut client: Client,
    tls: LoginTls,
) {
    let settings = &shared.settings;
    let mut machine = P::login_machine(&LoginSetup {
        greeting: settings.login_greeting.clone(),
        hostname: settings.hostname.clone(),
        tls_available: tls.available,
        disable_plaintext_auth: settings.plaintext_auth_disabled(),
        tls_active: tls.active,
        secured: tls.secured,
        trusted: tls.trusted,
    });
    let mut queue: VecDeque<Action<<P::Login as LoginMachine>::Req>> = machine.start().into();
    let mut buf = vec![0u8; LOGIN_BUF];
    loop {
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(bytes) => {
                    if P::Login::is_auth_failure(&bytes) {
                        tokio::time::sleep(shared.settings.limits.auth_failure_delay).await;
                    }
                    if client.write(&bytes).await.is_err() {
                        return;
                    }
                }
                Action::StartTls => {
                    let Some(acceptor) = shared.acceptor.clone() else {
                        return;
                    };
                    if let Err(e) = client.start_tls(&acceptor).await {
                        tracing::debug!(client = %client.peer, error = ?e, "STARTTLS handshake failed");
                        return;
                    }
                    queue.extend(machine.tls_established());
                }
                Action::Close => {
                    client.close_with(&[]).await;
                    return;
                }
                Action::Login(req) => {
                    match login::<P>(&shared, &mut client, &mut machine, req, &mut buf).await {
                        LoginEnd::Done | LoginEnd::Abort => return,
                        LoginEnd::Failed(why, early) => {
                            queue.extend(machine.login_failed(why));
                            let mut early = early;
                            if !early.is_empty() {
                                queue.extend(machine.feed(&early));
                            }
                            zeroize::Zeroize::zeroize(&mut early);
                        }
                    }
                }
            }
        }
        match client.read(&mut buf).await {
            Ok(n) => {
                queue.extend(machine.feed(&buf[..n]));
                // Pre-login input may be a password; the machine has its copy.
                zeroize::Zeroize::zeroize(&mut buf[..n]);
            }
            Err(End::Timeout) => {
                tracing::info!(client = %client.peer, protocol = P::PROTOCOL.name(), "pre-login timeout");
                client.close_with(P::PROTOCOL.idle_disconnect()).await;
                return;
            }
            Err(End::Shutdown) => {
                client.close_with(P::PROTOCOL.shutting_down()).await;
                return;
            }
            Err(End::Eof) => return,
            Err(End::Io(e)) => {
                tracing::debug!(client = %client.peer, error = %e, "client connection failed");
                return;
            }
        }
    }
}

/// A backend failure, with what the hook needs.
pub(crate) struct BackendErr {
    pub kind: BackendFailureKind,
    pub detail: String,
}

impl BackendErr {
    pub(crate) fn new(kind: BackendFailureKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// Routes `username` (waiting while the core queues the request), logging a refusal.
pub(crate) async fn route_user(shared: &Shared, username: &[u8]) -> Result<Route, RouteError> {
    let r = router::route_user(&shared.director, username).await;
    if let Err(e) = &r {
        match e {
            RouteError::Temporary(_) => {
                tracing::warn!(user = %LogText(username), error = %e, "no backend for login")
            }
            RouteError::Failed(_) => {
                tracing::error!(user = %LogText(username), error = %e, "no backend for login")
            }
        }
    }
    r
}

/// Whether `addr` is one of our own listening addresses: a backend there would be this proxy
/// again, and every hop would open one more connection to itself. A wildcard listener
/// covers every local address of its port.
pub(crate) fn is_own_listener(addr: SocketAddr, listeners: &[ListenerSpec]) -> bool {
    listeners.iter().any(|l| {
        l.addr.port() == addr.port()
            && (l.addr.ip() == addr.ip()
                || (l.addr.ip().is_unspecified()
                    && std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()))
    })
}

/// Connects to the routed backend: TCP (with the connect timeout), the PROXY v2 header if
/// configured, and implicit TLS if configured. A failure counts in the metrics, for every
/// protocol (LMTP included).
pub(crate) async fn connect_backend(
    shared: &Shared,
    route: &Route,
    protocol: Protocol,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Stream, BackendErr> {
    let r = connect_backend_once(shared, route, protocol, peer, local).await;
    if r.is_err() {
        shared.metrics.backend_connect_failed(route.ip);
    }
    r
}

/// [`connect_backend`]'s work, without the counting.
async fn connect_backend_once(
    shared: &Shared,
    route: &Route,
    protocol: Protocol,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Stream, BackendErr> {
    let s = &shared.settings;
    let addr = SocketAddr::new(route.ip, s.backend_port(protocol));
    if is_own_listener(addr, &s.listeners) {
        return Err(BackendErr::new(
            BackendFailureKind::Connect,
            format!(
                "backend {addr} is this proxy's own listener: director_mail_servers names the \
                 director itself (a proxy loop), not a mail server"
            ),
        ));
    }
    let tcp = connect_tcp(addr, s.limits.connect_timeout, s.limits.max_reconnects).await?;
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Plain(tcp);
    if s.proxy_protocol {
        let header = director_mailproto::proxy_v2::encode(peer, local);
        stream.write_all(&header).await.map_err(|e| {
            BackendErr::new(BackendFailureKind::Connect, format!("PROXY header: {e}"))
        })?;
    }
    if s.backend_tls == BackendTlsMode::Implicit {
        let Some(connector) = &shared.connector else {
            return Err(BackendErr::new(BackendFailureKind::Tls, "no TLS connector"));
        };
        let name = backend_server_name(route.hostname.as_deref(), route.ip);
        match tokio::time::timeout(
            s.limits.connect_timeout,
            stream.connect_tls(connector, name),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(BackendErr::new(
                    BackendFailureKind::Tls,
                    format!("TLS to {addr}: {e}"),
                ))
            }
            Err(_) => {
                return Err(BackendErr::new(
                    BackendFailureKind::Tls,
                    format!("TLS to {addr}: timed out"),
                ))
            }
        }
    }
    Ok(stream)
}

/// Pause before reconnecting to a backend that refused or failed a connect (Dovecot's login
/// proxy waits one second too).
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// TCP connect with up to `max_reconnects` retries, all within `timeout`.
async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
    max_reconnects: u32,
) -> Result<TcpStream, BackendErr> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempt = 0u32;
    loop {
        let detail = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(e)) => format!("connect({addr}): {e}"),
            Err(_) => format!("connect({addr}): timed out"),
        };
        let retry_at = tokio::time::Instant::now() + RECONNECT_DELAY;
        if attempt >= max_reconnects || retry_at >= deadline {
            let detail = if attempt > 0 {
                format!("{detail} (after {attempt} reconnects)")
            } else {
                detail
            };
            return Err(BackendErr::new(BackendFailureKind::Connect, detail));
        }
        attempt += 1;
        tracing::debug!(backend = %addr, attempt, error = %detail, "backend connect failed, reconnecting");
        tokio::time::sleep_until(retry_at).await;
    }
}

/// Logs a backend failure and tells the hook.
pub(crate) fn report_backend_failure(
    shared: &Shared,
    username: &[u8],
    route: &Route,
    err: &BackendErr,
) {
    tracing::warn!(
        user = %LogText(username),
        host = %route.ip,
        hostname = route.hostname.as_deref().unwrap_or(""),
        kind = ?err.kind,
        error = %err.detail,
        "backend failed"
    );
    shared
        .hook
        .backend_failed(route.ip, username, err.kind.clone(), &err.detail);
}

/// A backend login that failed: what the client is told, and what the metrics count.
struct ReplayErr(LoginFailure, LoginResult);

async fn login<P: LoginProtocol>(
    shared: &Arc<Shared>,
    client: &mut Client,
    machine: &mut P::Login,
    req: <P::Login as LoginMachine>::Req,
    buf: &mut [u8],
) -> LoginEnd {
    let protocol = P::PROTOCOL;
    let started = Instant::now();
    let finished = |result| {
        shared
            .metrics
            .login_finished(protocol, result, started.elapsed())
    };
    let username = routing_user(
        P::Login::credentials(&req),
        &shared.settings.master_user_separator,
    );
    let creds = P::Login::credentials(&req);
    if !is_routable(&username) || creds.authcid.contains(&0) || creds.authzid.contains(&0) {
        tracing::info!(user = %LogText(&username), protocol = protocol.name(), client = %client.peer, "login name refused: empty or containing NUL");
        finished(LoginResult::Refused);
        return LoginEnd::Failed(LoginFailure::AuthFailed, Vec::new());
    }
    let Some(proxy_ttl) = next_hop_ttl(P::Login::proxy_ttl(&req)) else {
        tracing::error!(user = %LogText(&username), protocol = protocol.name(), client = %client.peer, "{TTL_EXHAUSTED}");
        finished(LoginResult::Refused);
        return LoginEnd::Failed(LoginFailure::Looping, Vec::new());
    };
    let guard = shared.registry.register(&username, protocol, client.peer);
    let session_id = guard.session_id();
    let conn = client.conn_info(Some(session_id), proxy_ttl);
    let setup = BackendSetup {
        hostname: shared.settings.hostname.clone(),
        starttls: shared.settings.backend_tls == BackendTlsMode::StartTls,
    };
    let mut bm = P::backend_machine(req, conn, &setup);

    let (peer, local) = (client.peer, client.local);
    // What the backend says during the login (relayed replies) reaches the client after the
    // login's bookkeeping, so that what the client sees next is already true; meanwhile the
    // client connection is only watched (see `watch_client`).
    let mut to_client = Vec::new();
    let mut routed: Option<Route> = None;
    let phase = async {
        let route = route_user(shared, &username)
            .await
            .map_err(|_| ReplayErr(LoginFailure::Temporary, LoginResult::NoBackend))?;
        guard.set_backend(route.ip);
        routed = Some(route.clone());
        // One deadline for the whole backend login (Dovecot's login_proxy_timeout): a backend
        // that trickles its replies cannot hold the login, and the client's slot, longer.
        let limit = shared.settings.limits.connect_timeout;
        let backend_login = async {
            let mut backend = match connect_backend(shared, &route, protocol, peer, local).await {
                Ok(b) => b,
                Err(e) => return Err(Replay::Backend(e)),
            };
            let remaining =
                replay(shared, &mut backend, &mut bm, &route, buf, &mut to_client).await?;
            Ok((backend, remaining))
        };
        let outcome = match tokio::time::timeout(limit, backend_login).await {
            Ok(r) => r,
            Err(_) => Err(Replay::Backend(BackendErr::new(
                BackendFailureKind::Protocol,
                format!(
                    "login to the backend did not finish within login_proxy_timeout ({} s)",
                    limit.as_secs()
                ),
            ))),
        };
        let failed = match outcome {
            Ok((backend, remaining)) => return Ok((route, backend, remaining)),
            Err(Replay::Rejected) => ReplayErr(LoginFailure::Relayed, LoginResult::Rejected),
            Err(Replay::Backend(e)) => {
                report_backend_failure(shared, &username, &route, &e);
                ReplayErr(LoginFailure::Temporary, LoginResult::BackendFailed)
            }
        };
        forget_unproven_user(shared, &username, &route, 1, "failed first login");
        Err(failed)
    };
    let mut early = Vec::new();
    let result = tokio::select! {
        r = phase => r,
        reason = guard.wait_killed() => {
            tracing::info!(user = %LogText(&username), ?reason, "login stopped by kick");
            finished(LoginResult::Aborted);
            // The backend connection went with `phase`; the client's goes before the
            // session leaves the registry, which is what the kick waits for.
            client.stream = Stream::Gone;
            return LoginEnd::Abort;
        }
        gone = watch_client(&mut client.stream, &mut early) => {
            tracing::debug!(user = %LogText(&username), client = %peer, reason = %gone, "client left during the backend login");
            finished(LoginResult::Aborted);
            // The backend connection went with `phase`, unanswered: the password was never
            // proven, so an assignment this login made is not kept.
            if let Some(route) = &routed {
                forget_unproven_user(shared, &username, route, 1, "failed first login");
            }
            return LoginEnd::Abort;
        }
    };
    // The backend machine holds the credentials: drop (and so wipe) them before the
    // session, which may last for days, starts.
    drop(bm);
    match result {
        Ok((route, mut backend, from_backend)) => {
            finished(LoginResult::Ok);
            tracing::info!(
                user = %LogText(&username),
                host = %route.ip,
                protocol = protocol.name(),
                client = %client.peer,
                "started proxying"
            );
            let mut from_client = zeroize::Zeroizing::new(machine.login_succeeded());
            from_client.extend_from_slice(&early);
            zeroize::Zeroize::zeroize(&mut early);
            to_client.extend_from_slice(&from_backend);
            if !to_client.is_empty() && client.write(&to_client).await.is_err() {
                return LoginEnd::Abort;
            }
            if !from_client.is_empty() && backend.write_all(&from_client).await.is_err() {
                client.close_with(protocol.backend_lost()).await;
                return LoginEnd::Abort;
            }
            drop(from_backend);
            let end = splice(&mut client.stream, &mut backend, &guard, &shared.budget).await;
            match &end {
                SpliceEnd::BackendError(e) => {
                    let err = BackendErr::new(BackendFailureKind::MidSession, e.to_string());
                    report_backend_failure(shared, &username, &route, &err);
                    client.close_with(protocol.backend_lost()).await;
                }
                SpliceEnd::Killed(reason) => {
                    tracing::info!(user = %LogText(&username), host = %route.ip, ?reason, "session killed");
                    // Both connections close, with no goodbye, before the session leaves the
                    // registry (the guard, below): only then is the kick done.
                    drop(std::mem::replace(&mut backend, Stream::Gone));
                    client.stream = Stream::Gone;
                }
                SpliceEnd::ClientError(e) => {
                    tracing::debug!(user = %LogText(&username), error = %e, "client connection failed");
                }
                SpliceEnd::Closed => {}
            }
            tracing::debug!(user = %LogText(&username), host = %route.ip, end = ?end, "session ended");
            LoginEnd::Done
        }
        Err(ReplayErr(why, result)) => {
            finished(result);
            if !to_client.is_empty() && client.write(&to_client).await.is_err() {
                return LoginEnd::Abort;
            }
            LoginEnd::Failed(why, early)
        }
    }
}

/// Most bytes a client may send while its backend login runs; they are kept for after the
/// login. Beyond this the client is no longer read until the login ends.
const EARLY_INPUT_MAX: usize = 16 * 1024;
/// Most bytes a backend may send the client during its login (relayed untagged replies).
const LOGIN_RELAY_MAX: usize = 64 * 1024;

/// Reads the client while its backend login runs; returns when the client is gone (EOF or a
/// failed connection). What it sends meanwhile (pipelined commands) is kept in `early`.
pub(crate) async fn watch_client(stream: &mut Stream, early: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 1024];
    loop {
        if early.len() >= EARLY_INPUT_MAX {
            // Enough kept: leave the rest in the socket until the login is over.
            return std::future::pending().await;
        }
        let room = (EARLY_INPUT_MAX - early.len()).min(buf.len());
        match stream.read(&mut buf[..room]).await {
            Ok(0) => return "connection closed".into(),
            Ok(n) => early.extend_from_slice(&buf[..n]),
            Err(e) => return e.to_string(),
        }
    }
}

/// What made `username`'s new assignment (a login, an LMTP recipient) did not prove the
/// user. If the user has no other session than `own_sessions` (open or logging in), nothing
/// real depends on the assignment: drop it, so that names made up by a stranger cost
/// nothing. `what` names the failure in the debug log.
pub(crate) fn forget_unproven_user(
    shared: &Shared,
    username: &[u8],
    route: &Route,
    own_sessions: usize,
    what: &str,
) {
    if shared.registry.count_user(username) == own_sessions
        && shared.director.discard_new_user(username, route)
    {
        tracing::debug!(user = %LogText(username), host = %route.ip, "{what}: assignment dropped");
    }
}

enum Replay {
    /// The backend refused the credentials (reply already relayed).
    Rejected,
    /// The backend failed.
    Backend(BackendErr),
}

/// Drives the backend machine until the login succeeds or fails. Returns backend bytes that
/// followed the final reply.
async fn replay<B: BackendMachine>(
    shared: &Shared,
    backend: &mut Stream,
    bm: &mut B,
    route: &Route,
    buf: &mut [u8],
    to_client: &mut Vec<u8>,
) -> Result<Vec<u8>, Replay> {
    let timeout = shared.settings.limits.connect_timeout;
    let mut queue: VecDeque<BackendAction> = bm.start().into();
    loop {
        while let Some(a) = queue.pop_front() {
            match a {
                BackendAction::SendBackend(mut b) => {
                    let written = backend.write_all(&b).await;
                    // Login commands carry the password: wipe them once sent.
                    zeroize::Zeroize::zeroize(&mut b);
                    if let Err(e) = written {
                        return Err(Replay::Backend(BackendErr::new(
                            BackendFailureKind::Protocol,
                            e.to_string(),
                        )));
                    }
                }
                BackendAction::StartTls => {
                    let Some(connector) = &shared.connector else {
                        return Err(Replay::Backend(BackendErr::new(
                            BackendFailureKind::Tls,
                            "no TLS connector",
                        )));
                    };
                    let name = backend_server_name(route.hostname.as_deref(), route.ip);
                    match tokio::time::timeout(timeout, backend.connect_tls(connector, name)).await
                    {
                        Ok(Ok(())) => queue.extend(bm.tls_established()),
                        Ok(Err(e)) => {
                            return Err(Replay::Backend(BackendErr::new(
                                BackendFailureKind::Tls,
                                e.to_string(),
                            )))
                        }
                        Err(_) => {
                            return Err(Replay::Backend(BackendErr::new(
                                BackendFailureKind::Tls,
                                "handshake timed out",
                            )))
                        }
                    }
                }
                BackendAction::SendClient(b) => {
                    if to_client.len() + b.len() > LOGIN_RELAY_MAX {
                        return Err(Replay::Backend(BackendErr::new(
                            BackendFailureKind::Protocol,
                            format!("backend sent more than {LOGIN_RELAY_MAX} bytes of replies during the login"),
                        )));
                    }
                    to_client.extend_from_slice(&b);
                }
                BackendAction::LoggedIn => return Ok(bm.take_remaining()),
                BackendAction::Failed(BackendFailure::AuthRejected) => {
                    return Err(Replay::Rejected)
                }
                BackendAction::Failed(BackendFailure::Protocol(p)) => {
                    return Err(Replay::Backend(BackendErr::new(
                        BackendFailureKind::Protocol,
                        p,
                    )))
                }
            }
        }
        let n = match tokio::time::timeout(timeout, backend.read(buf)).await {
            Ok(Ok(0)) => {
                return Err(Replay::Backend(BackendErr::new(
                    BackendFailureKind::Protocol,
                    "backend closed the connection during login",
                )))
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(Replay::Backend(BackendErr::new(
                    BackendFailureKind::Protocol,
                    e.to_string(),
                )))
            }
            Err(_) => {
                return Err(Replay::Backend(BackendErr::new(
                    BackendFailureKind::Protocol,
                    "backend login timed out",
                )))
            }
        };
        queue.extend(bm.feed(&buf[..n]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(addr: &str) -> ListenerSpec {
        ListenerSpec {
            protocol: Protocol::Imap,
            name: "imap".into(),
            addr: addr.parse().expect("address"),
            implicit_tls: false,
        }
    }

    /// A host list that names the director's own proxy is a loop, caught before connecting.
    #[test]
    fn a_backend_on_our_own_listener_is_a_loop() {
        let at = |a: &str| a.parse::<SocketAddr>().expect("address");
        let specific = [listener("127.0.9.1:143")];
        assert!(is_own_listener(at("127.0.9.1:143"), &specific));
        assert!(!is_own_listener(at("127.0.9.2:143"), &specific));
        assert!(!is_own_listener(at("127.0.9.1:10143"), &specific));
        let wildcard = [listener("0.0.0.0:143")];
        assert!(
            is_own_listener(at("127.0.9.5:143"), &wildcard),
            "loopback is local"
        );
        // 192.0.2.0/24 is reserved for documentation: never an address of this machine.
        assert!(!is_own_listener(at("192.0.2.7:143"), &wildcard));
    }
}
