//! The built-in mail proxy (`director-proxy`) wired to the actor: logins are routed by the
//! core through [`ActorRouter`], and the core's kicks stop proxied sessions through
//! [`RegistryKiller`] (§7.4, §7.5).

use std::net::IpAddr;
use std::sync::Arc;

use director_core::RequestError;
use director_proxy::{BoxFuture, Route, RouteError, RouteRequest, Router, SessionRegistry};

use crate::actor::DirectorHandle;
use crate::effects::kick::{KickFuture, SessionKiller};

/// [`Router`] over the actor: `route` waits for the core's answer (queued logins end within
/// its 30 s request timeout).
pub struct ActorRouter {
    director: DirectorHandle,
}

impl ActorRouter {
    /// A router talking to `director`.
    pub fn new(director: DirectorHandle) -> Self {
        Self { director }
    }
}

impl Router for ActorRouter {
    fn route<'a>(&'a self, req: RouteRequest<'a>) -> BoxFuture<'a, Result<Route, RouteError>> {
        Box::pin(async move {
            match self.director.login(req.username.to_vec()).await {
                Some(Ok(route)) => Ok(route),
                Some(Err(RequestError::HashFailed(e))) => Err(RouteError::Failed(e.to_string())),
                Some(Err(e)) => Err(RouteError::Temporary(e.to_string())),
                None => Err(RouteError::Temporary("director is shutting down".into())),
            }
        })
    }

    fn refresh_user(&self, username: &[u8]) {
        self.director.refresh(username.to_vec());
    }
}

/// [`SessionKiller`] over the proxy's session registry: kicks take effect at once (the
/// sessions are signalled and close on their own), so each future is ready immediately with
/// the number of sessions told to stop.
pub struct RegistryKiller {
    registry: Arc<SessionRegistry>,
}

impl RegistryKiller {
    /// A killer acting on `registry`.
    pub fn new(registry: Arc<SessionRegistry>) -> Self {
        Self { registry }
    }
}

impl SessionKiller for RegistryKiller {
    fn kick_user_hash(&self, user_hash: u32, except_ip: Option<IpAddr>) -> KickFuture {
        let n = self.registry.kick_user_hash(user_hash, except_ip);
        tracing::info!(user_hash, except = ?except_ip, kicked = n, "KICK-DIRECTOR-HASH");
        Box::pin(std::future::ready(n))
    }

    fn kick_user(&self, user: Vec<u8>) -> KickFuture {
        let n = self.registry.kick_user(&user);
        tracing::info!(user = %String::from_utf8_lossy(&user), kicked = n, "KICK");
        Box::pin(std::future::ready(n))
    }

    fn kick_user_alt(&self, field: String, value: String) -> KickFuture {
        let n = self.registry.kick_alt(&field, &value);
        tracing::info!(%field, %value, kicked = n, "KICK-ALT");
        Box::pin(std::future::ready(n))
    }

    fn kick_backend(&self, ip: IpAddr) -> usize {
        let n = self.registry.kick_backend(ip);
        tracing::info!(host = %ip, kicked = n, "kicked the sessions of a removed or flushed host");
        n
    }
}
