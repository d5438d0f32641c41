//! Kicking user sessions (spec §7.4, §11.2, §11.4).
//!
//! Dovecot's director asks the login processes over IPC to drop a user's proxied sessions
//! (`KICK-DIRECTOR-HASH`, `KICK`, `KICK-ALT`). In this daemon the proxied sessions will live
//! in-process (the proxy issue); until then there are no local sessions, and every kick
//! completes immediately with zero sessions kicked — which is also what a Dovecot director
//! with no login processes does (the lab's `kick` and `move` answered `OK`).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// A boxed future returning how many sessions were kicked.
pub type KickFuture = Pin<Box<dyn Future<Output = usize> + Send + 'static>>;

/// Something that can drop local proxied sessions. The proxy implements this; the actor holds
/// one and calls it for the core's kick effects, then reports completion to the core.
pub trait SessionKiller: Send + Sync + 'static {
    /// Drop every session whose user hashes to `user_hash` (`KICK-DIRECTOR-HASH`; used by
    /// moves and flushes), except sessions to backend `except_ip`.
    fn kick_user_hash(&self, user_hash: u32, except_ip: Option<IpAddr>) -> KickFuture;
    /// Drop every session of `user` (admin `USER-KICK`).
    fn kick_user(&self, user: Vec<u8>) -> KickFuture;
    /// Drop every session whose passdb `field` equals `value` (admin `USER-KICK-ALT`).
    fn kick_user_alt(&self, field: String, value: String) -> KickFuture;
    /// Drop every session proxied to backend `ip` (after `HOST-REMOVE` or `HOST-FLUSH`: the
    /// host's users were dropped, so their next logins may go elsewhere; a session left on
    /// that host would serve the same user from two backends at once). Returns how many were
    /// told to stop. Without local sessions there is nothing to do.
    fn kick_backend(&self, _ip: IpAddr) -> usize {
        0
    }
}

/// The killer used while the daemon has no proxy: nothing to kick, done at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLocalSessions;

impl SessionKiller for NoLocalSessions {
    fn kick_user_hash(&self, _user_hash: u32, _except_ip: Option<IpAddr>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user(&self, _user: Vec<u8>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user_alt(&self, _field: String, _value: String) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
}
