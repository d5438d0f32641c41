//! How the proxy asks the director which backend serves a user ([`route_user`], through the
//! driver's [`DirectorHandle`]), and the [`BackendFailureHook`] through which it reports dead
//! backends.
//!
//! Logins of a user being moved wait inside `route_user` until the core answers (at most its
//! 30 s request timeout); any error becomes the protocol's temporary failure for the client.

use std::net::IpAddr;

use director_driver::{DirectorHandle, RequestError};

pub use director_core::Route;

/// Why no backend was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The director can't answer now (move in progress and timed out, no hosts, ring not
    /// synced, director stopped): temporary failure to the client.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The director refused the request (e.g. the user name cannot be hashed); the client
    /// still gets a temporary failure, but it is logged as an error.
    #[error("routing failed: {0}")]
    Failed(String),
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

/// Asks the director for `username`'s backend (§6), waiting while the core queues the
/// request.
pub async fn route_user(director: &DirectorHandle, username: &[u8]) -> Result<Route, RouteError> {
    match director.login(username.to_vec()).await {
        Some(Ok(route)) => Ok(route),
        Some(Err(RequestError::HashFailed(e))) => Err(RouteError::Failed(e.to_string())),
        Some(Err(e)) => Err(RouteError::Temporary(e.to_string())),
        None => Err(RouteError::Temporary("the director has stopped".into())),
    }
}
