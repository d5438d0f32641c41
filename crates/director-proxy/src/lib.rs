//! The director's built-in mail proxy (issue 3, DIRECTOR-SPEC §7.5): `directord` as the whole
//! proxy tier.
//!
//! A client connects, the pre-login conversation runs in a sans-I/O machine of
//! `director-mailproto`, the login name is routed through the director core ([`Router`]),
//! the credentials are replayed to the chosen backend (which gives the verdict: we store no
//! passwords), and then bytes are spliced both ways. LMTP recipients are routed one by one
//! and a transaction fans out to every backend involved.
//!
//! Public API (what the daemon wires in):
//! * [`ProxySettings::from_config`] — listeners, TLS, backend ports, limits
//!   ([`PROXY_SETTING_KEYS`] lists our own `director_*` settings).
//! * [`Router`] (+ [`RouteRequest`], [`RouteError`]) — implemented by the daemon over its
//!   actor; [`CoreRouter`] implements it over a `Director` behind a mutex.
//! * [`SessionRegistry`] — live sessions; `kick_user`, `kick_alt`, `kick_user_hash` return
//!   how many sessions were stopped (the daemon then reports `kick_finished`).
//! * [`BackendFailureHook`] — told about failed backends (future automatic host-down).
//! * [`Proxy::start`] / [`Proxy::reload`] / [`Proxy::shutdown`] — bind, serve, take new
//!   settings on SIGHUP, drain on SIGTERM.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod core_router;
mod imap;
mod lmtp;
mod machines;
mod pop3;
pub mod proxy;
pub mod registry;
pub mod router;
mod session;
pub mod settings;
mod sieve;
pub mod stream;
mod submission;
pub mod tls;
mod workers;

pub use core_router::CoreRouter;
pub use proxy::{Proxy, ProxyError, ReloadSummary};
pub use registry::{KillReason, SessionGuard, SessionInfo, SessionRegistry};
pub use router::{
    BackendFailureHook, BackendFailureKind, BoxFuture, NoBackendHook, Route, RouteError,
    RouteRequest, Router,
};
pub use settings::{
    BackendTlsMode, ClientTlsMode, ListenerSpec, Protocol, ProxyLimits, ProxySettings,
    SettingsError, PROXY_SETTING_KEYS,
};
