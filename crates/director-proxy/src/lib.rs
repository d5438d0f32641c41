//! The director's built-in mail proxy (DIRECTOR-SPEC §7.5): `directord` as the whole proxy
//! tier.
//!
//! A client connects, the pre-login conversation runs in a sans-I/O machine of
//! `director-mailproto`, the login name is routed by the director core through the driver's
//! [`DirectorHandle`](director_driver::DirectorHandle),
//! the credentials are replayed to the chosen backend (which gives the verdict: we store no
//! passwords), and then bytes are spliced both ways. LMTP recipients are routed one by one
//! and a transaction fans out to every backend involved.
//!
//! Public API (what the daemon wires in):
//! * [`ProxySettings::from_config`] — listeners, TLS, backend ports, limits (the settings
//!   and their defaults are rows of `director_config::catalog`).
//! * [`SessionRegistry`] — live sessions; the driver kicks and refreshes them through its
//!   [`LocalSessions`](director_driver::LocalSessions) implementation.
//! * [`BackendFailureHook`] — told about failed backends (future automatic host-down).
//! * [`Proxy::start`] / [`Proxy::reload`] / [`Proxy::shutdown`] — bind, serve, take new
//!   settings on SIGHUP, drain on SIGTERM; [`Proxy::metrics`] — the login counters.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod budget;
mod lmtp;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod router;
mod session;
pub mod settings;
mod splice;
pub mod stream;
pub mod tls;
mod workers;

pub use metrics::{LoginResult, ProxyMetrics, RecipientResult};
pub use proxy::{Proxy, ProxyError, ReloadSummary};
pub use registry::{KillReason, SessionGuard, SessionInfo, SessionRegistry};
pub use router::{
    route_user, BackendFailureHook, BackendFailureKind, NoBackendHook, Route, RouteError,
};
pub use settings::{
    BackendTlsMode, ClientTlsMode, ListenerSpec, Protocol, ProxyLimits, ProxySettings,
    SettingsError,
};
