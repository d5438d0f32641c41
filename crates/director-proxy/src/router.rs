//! [`Router`]: how the proxy asks the director which backend serves a user, and the
//! [`BackendFailureHook`] through which it reports dead backends.
//!
//! The daemon implements [`Router`] over its actor (the one task owning the core). Logins of a
//! user being moved wait inside `route` until the core answers (at most its 30 s request
//! timeout); any error becomes the protocol's temporary failure for the client.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

pub use director_core::Route;

use crate::settings::Protocol;

/// A boxed future, so the traits stay object-safe without extra crates.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One login to route.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The routing user name (login name cut at `auth_master_user_separator`).
    pub username: &'a [u8],
    /// Protocol of the session.
    pub protocol: Protocol,
    /// The client's address.
    pub client: SocketAddr,
}

/// Why no backend was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The director can't answer now (move in progress and timed out, no hosts, ring not
    /// synced): temporary failure to the client.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The director refused the request (e.g. the user name cannot be hashed); the client
    /// still gets a temporary failure, but it is logged as an error.
    #[error("routing failed: {0}")]
    Failed(String),
}

/// The director, as seen by the proxy.
pub trait Router: Send + Sync + 'static {
    /// Picks the user's backend (§6), waiting while the core queues the request.
    fn route<'a>(&'a self, req: RouteRequest<'a>) -> BoxFuture<'a, Result<Route, RouteError>>;

    /// A session of `username` is still open: refresh its assignment (§3.4 proxy-notify).
    /// Called every `director_user_expire / 2` per user with open sessions.
    fn refresh_user(&self, username: &[u8]);
}

/// What went wrong with a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendFailureKind {
    /// TCP connect failed or timed out.
    Connect,
    /// TLS to the backend failed.
    Tls,
    /// The backend broke the login protocol or timed out during the login replay.
    Protocol,
    /// The connection failed with an I/O error after the login.
    MidSession,
}

/// Called when a backend fails, so automatic host-down can be added later (Dovecot has no
/// health checks either: the lab's dead backend stayed "up" until an admin ran `down`).
pub trait BackendFailureHook: Send + Sync + 'static {
    /// `ip` failed for `username` with `kind`; `detail` is the error text.
    fn backend_failed(&self, ip: IpAddr, username: &[u8], kind: BackendFailureKind, detail: &str);
}

/// The default hook: logging happens in the proxy already, nothing else to do.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBackendHook;

impl BackendFailureHook for NoBackendHook {
    fn backend_failed(
        &self,
        _ip: IpAddr,
        _username: &[u8],
        _kind: BackendFailureKind,
        _detail: &str,
    ) {
    }
}
