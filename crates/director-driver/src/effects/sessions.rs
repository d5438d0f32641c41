//! The local sessions the director serves (spec §3.4, §7.4, §11.2, §11.4).
//!
//! Dovecot's director asks its login processes over IPC to drop a user's proxied sessions
//! (`KICK-DIRECTOR-HASH`, `KICK`, `KICK-ALT`), and the login processes tell it which users
//! still have sessions (proxy-notify) so their assignments don't expire. Here the built-in
//! mail proxy plays that part through [`LocalSessions`]; a director without the proxy has
//! none ([`NoLocalSessions`]): every kick completes at once with zero sessions kicked, which
//! is also what a Dovecot director without login processes does.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// A boxed future returning how many sessions were kicked.
pub type KickFuture = Pin<Box<dyn Future<Output = usize> + Send + 'static>>;

/// The sessions this director serves. The driver calls it for the core's kick effects (then
/// reports completion to the core) and, every `director_user_expire / 2`, to refresh the
/// users that still have sessions open.
pub trait LocalSessions: Send + Sync + 'static {
    /// Drop every session whose user hashes to `user_hash` (`KICK-DIRECTOR-HASH`; used by
    /// moves and flushes), except sessions to backend `except_ip`.
    fn kick_user_hash(&self, user_hash: u32, except_ip: Option<IpAddr>) -> KickFuture;
    /// Drop every session of `user` (admin `USER-KICK`).
    fn kick_user(&self, user: Vec<u8>) -> KickFuture;
    /// Drop every session whose passdb `field` equals `value` (admin `USER-KICK-ALT`).
    fn kick_user_alt(&self, field: String, value: String) -> KickFuture;
    /// Drop every session proxied to backend `ip` (after `HOST-REMOVE` or `HOST-FLUSH`: the
    /// host's users were dropped, so their next logins may go elsewhere; a session left on
    /// that host would serve the same user from two backends at once). Runs while the driver
    /// holds the state, so it must only signal the sessions, never wait. Returns how many
    /// were told to stop.
    fn kick_backend(&self, ip: IpAddr) -> usize;
    /// The routing names of the users with at least one open session.
    fn users_with_sessions(&self) -> Vec<Vec<u8>>;
}

/// The sessions of a director without the built-in proxy: none.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLocalSessions;

impl LocalSessions for NoLocalSessions {
    fn kick_user_hash(&self, _user_hash: u32, _except_ip: Option<IpAddr>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user(&self, _user: Vec<u8>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user_alt(&self, _field: String, _value: String) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_backend(&self, _ip: IpAddr) -> usize {
        0
    }
    fn users_with_sessions(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}
