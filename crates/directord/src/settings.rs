//! The daemon's view of the configuration: what it binds, where it logs, and what it hands
//! to the core. Built from `director-config`'s [`director_config::DirectorSettings`] by
//! [`crate::config_load`], so the rest of the daemon never looks at raw settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use director_core::lookup::ConfigHost;
use director_core::CoreSettings;

use crate::admin::listener::UnixSocketSpec;
use crate::admin::tcp::TcpAdminSettings;
use crate::auth_http::AuthHttpSettings;
use crate::logging::LogTargets;
use crate::metrics::MetricsSettings;
use crate::proxy_notify::NotifyFifo;

/// Standalone directors call themselves this (observed: `127.0.0.1\t0\tself`).
pub const STANDALONE_SELF: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Everything the daemon needs from the configuration.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// `base_dir` (created at start if missing).
    pub base_dir: PathBuf,
    /// The admin UNIX sockets; the first is `director-admin` and is printed at start.
    pub admin_sockets: Vec<UnixSocketSpec>,
    /// TCP admin listeners (`inet_listener director-doveadm` / `*-admin`, usually none) and
    /// their allow-list, limits and TLS.
    pub admin_tcp: TcpAdminSettings,
    /// The nginx auth_http listeners (`inet_listener director-auth-http`, usually none) and
    /// their policy.
    pub auth_http: AuthHttpSettings,
    /// The Prometheus metrics listeners (`inet_listener director-metrics`, usually none) and
    /// their policy.
    pub metrics: MetricsSettings,
    /// The proxy-notify FIFOs configured in `service director` (`fifo_listener PATH`).
    pub notify_fifos: Vec<NotifyFifo>,
    /// Log destinations.
    pub log: LogTargets,
    /// `state_dir` and `director_state_save_interval`, unless saving is off.
    pub saved_state: Option<(PathBuf, std::time::Duration)>,
    /// What the core is built from.
    pub core: CoreSettings,
    /// Our identity in a standalone `DIRECTOR-LIST` (127.0.0.1:0).
    pub self_addr: (IpAddr, u16),
    /// The ring, unless standalone.
    pub ring: Option<RingSettings>,
    /// The built-in mail proxy, when the config has `service imap-login` / `pop3-login` /
    /// `submission-login` / `managesieve-login` / `lmtp` inet listeners.
    pub proxy: Option<director_proxy::ProxySettings>,
    /// Backend health checks, when `director_health_check_interval` is set.
    pub health: Option<crate::health::HealthSettings>,
}

/// The director ring, when `director_servers` names other directors.
#[derive(Debug, Clone)]
pub struct RingSettings {
    /// Where the ring listener binds.
    pub listen: Vec<SocketAddr>,
    /// Who we are, the directors, the ring's timeouts.
    pub config: director_ring::RingConfig,
    /// `director_output_buffer_size`.
    pub output_buffer_size: usize,
}

impl DaemonSettings {
    /// The configured mail servers (what SIGHUP reloads).
    pub fn config_hosts(&self) -> Vec<ConfigHost> {
        self.core.config_hosts.clone()
    }
}
