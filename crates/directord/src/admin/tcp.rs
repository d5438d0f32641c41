//! The TCP admin listeners (`inet_listener director-doveadm`) and what guards them.
//!
//! The admin protocol has no authentication (Dovecot's has none either): whoever reaches a
//! listener can `HOST-SET` a server of their own and `USER-MOVE` users to it, after which the
//! mail proxy sends those users' logins there. So a TCP listener
//!
//! * binds only an explicit address (director-config refuses a wildcard at start);
//! * serves only peers in `director_admin_allow_nets` (default loopback) and the ring's
//!   directors; anyone else is logged with their address and closed without a reply;
//! * can require TLS with client certificates (`ssl = yes` on the listener, `ssl_cert`,
//!   `ssl_key`, and `ssl_ca` with `ssl_verify_client_cert = yes`);
//! * has its own pool of `director_admin_tcp_max_connections` slots, apart from the UNIX
//!   socket's, and closes a client that keeps it waiting for `director_admin_idle_timeout`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use director_config::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::admin::connection::{self, ConnectionContext};
use crate::admin::listener::{self, ListenerError, PeerName};

/// One TCP admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpAdminSpec {
    /// Where it binds (never a wildcard).
    pub addr: SocketAddr,
    /// `ssl = yes`: clients speak TLS first.
    pub tls: bool,
}

/// The TLS acceptor of the `ssl = yes` listeners (built from `ssl_cert`, `ssl_key`, `ssl_ca`).
#[derive(Clone)]
pub struct AdminTlsAcceptor(pub TlsAcceptor);

impl fmt::Debug for AdminTlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminTlsAcceptor")
    }
}

/// The TCP admin listeners and their shared policy.
#[derive(Debug, Clone)]
pub struct TcpAdminSettings {
    /// The listeners; usually none.
    pub listeners: Vec<TcpAdminSpec>,
    /// Peers served: `director_admin_allow_nets` plus the ring's directors.
    pub allow_nets: Vec<IpNet>,
    /// `director_admin_tcp_max_connections`: clients served at once over all TCP listeners.
    pub max_connections: usize,
    /// `director_admin_idle_timeout`.
    pub idle_timeout: Duration,
    /// For the `ssl = yes` listeners.
    pub tls: Option<AdminTlsAcceptor>,
}

impl TcpAdminSettings {
    /// Whether a client at `ip` may use the listeners.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_nets.iter().any(|n| n.contains(ip))
    }
}

/// Binds every TCP admin listener. A wildcard address never gets here (the config refuses
/// it), and is refused again here in case one does.
pub fn bind_all(
    settings: &TcpAdminSettings,
) -> Result<Vec<(TcpAdminSpec, TcpListener)>, ListenerError> {
    settings
        .listeners
        .iter()
        .map(|spec| {
            if spec.addr.ip().is_unspecified() {
                return Err(ListenerError::Listen {
                    what: spec.addr.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a TCP admin listener binds only an explicit address",
                    ),
                });
            }
            Ok((*spec, listener::bind_tcp(spec.addr)?))
        })
        .collect()
}

use director_core::refusal_log::RefusalLog;

/// Serves the TCP admin listeners: one shared slot pool, the allow-list, TLS, idle timeout.
pub struct TcpAdmin {
    settings: Arc<TcpAdminSettings>,
    slots: Arc<Semaphore>,
    ctx: ConnectionContext,
    refusals: Arc<Mutex<RefusalLog<Instant>>>,
}

impl TcpAdmin {
    /// The TCP side of the admin server, with its own connection slots.
    pub fn new(settings: &TcpAdminSettings, ctx: ConnectionContext) -> TcpAdmin {
        TcpAdmin {
            settings: Arc::new(settings.clone()),
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            ctx,
            refusals: Arc::new(Mutex::new(RefusalLog::new())),
        }
    }

    /// Accepts clients of one listener until `shutdown` flips to `true`.
    pub fn accept_loop(
        &self,
        l: TcpListener,
        spec: TcpAdminSpec,
        shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let settings = Arc::clone(&self.settings);
        let ctx = self.ctx.clone();
        let refusals = Arc::clone(&self.refusals);
        listener::accept_with(
            l,
            spec.addr.to_string(),
            Arc::clone(&self.slots),
            self.settings.max_connections,
            move |stream, peer| {
                // Checked here, before a task is spawned: a refused peer costs one accept.
                let allowed = match &peer {
                    PeerName::Tcp(addr) if settings.allows(addr.ip()) => true,
                    _ => {
                        crate::http::log_refusal(
                            &refusals,
                            &peer,
                            spec.addr,
                            "admin",
                            "director_admin_allow_nets",
                        );
                        false
                    }
                };
                let settings = Arc::clone(&settings);
                let ctx = ctx.clone();
                async move {
                    if allowed {
                        admit(stream, peer, spec, settings, ctx).await;
                    }
                    // Otherwise dropping the stream closes it: nothing is sent, not even
                    // the greeting.
                }
            },
            shutdown,
        )
    }
}

/// Runs the TLS handshake on `ssl = yes` listeners, then serves the admin protocol with the
/// idle timeout. The peer already passed the allow-list.
async fn admit(
    stream: TcpStream,
    peer: PeerName,
    spec: TcpAdminSpec,
    settings: Arc<TcpAdminSettings>,
    ctx: ConnectionContext,
) {
    let PeerName::Tcp(addr) = peer else {
        return;
    };
    let idle = settings.idle_timeout;
    if !spec.tls {
        connection::serve(stream, peer, ctx, Some(idle)).await;
        return;
    }
    let Some(tls) = settings.tls.as_ref() else {
        tracing::error!(listener = %spec.addr, "ssl = yes listener without TLS settings");
        return;
    };
    match tokio::time::timeout(idle, tls.0.accept(stream)).await {
        Ok(Ok(stream)) => connection::serve(stream, peer, ctx, Some(idle)).await,
        Ok(Err(e)) => tracing::warn!(
            peer = %addr,
            listener = %spec.addr,
            error = %e,
            "admin connection refused: TLS handshake failed"
        ),
        Err(_) => tracing::info!(
            peer = %addr,
            listener = %spec.addr,
            "admin connection closed: no TLS handshake within director_admin_idle_timeout"
        ),
    }
}
