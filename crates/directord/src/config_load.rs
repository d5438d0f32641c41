//! Loading the Dovecot-syntax configuration into [`DaemonSettings`].
//!
//! `director-config` parses the file (or its embedded default, a standalone director for
//! 127.0.1.1-127.0.1.3 with a writable `base_dir`), applies `-o` overrides and validates the
//! director settings; here we only map its result to what the daemon binds and what the core
//! is built from.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use director_config::{
    parse_listen_address, Config, DirectorSettings, Listener, ListenerTransport, SocketType,
};
use director_proto::ring::DirectorAddr;
use director_ring::{find_self, RingConfig};

use crate::admin::listener::UnixSocketSpec;
use crate::admin::tcp::{AdminTlsAcceptor, TcpAdminSettings, TcpAdminSpec};
use crate::auth_http::{AuthHttpSettings, BackendPorts};
use crate::cli::Cli;
use crate::logging::LogTargets;
use crate::metrics::MetricsSettings;
use crate::proxy_notify::NotifyFifo;
use crate::settings::{DaemonSettings, RingSettings, STANDALONE_SELF};

/// The result of loading: the settings, the `-n` text, and notes for the log.
pub struct Loaded {
    /// Effective daemon settings.
    pub settings: DaemonSettings,
    /// What `-n` prints.
    pub printed: String,
    /// Settings and sections of other services, ignored (logged at debug).
    pub ignored: Vec<String>,
    /// Parser warnings (logged at warn).
    pub warnings: Vec<String>,
}

/// Loads the configuration named by `cli` (or the embedded default) with its overrides.
pub fn load(cli: &Cli) -> anyhow::Result<Loaded> {
    let (mut config, origin) = match &cli.config_path {
        Some(path) => (
            Config::load(path).map_err(|e| anyhow!("{e}"))?,
            path.display().to_string(),
        ),
        None => (
            Config::default_standalone().map_err(|e| anyhow!("{e}"))?,
            "<builtin>".to_string(),
        ),
    };
    for (k, v) in &cli.overrides {
        config
            .apply_override(&format!("{k}={v}"))
            .map_err(|e| anyhow!("{e}"))?;
    }
    let ds = DirectorSettings::from_config(&config).map_err(|e| anyhow!("{e}"))?;
    let mut settings = from_director_settings(&ds)?;
    let proxy = director_proxy::ProxySettings::from_config(&config).map_err(|e| anyhow!("{e}"))?;
    // nginx's protocols reach the backends' IMAP, POP3 and submission services.
    settings.auth_http.ports = BackendPorts {
        imap: proxy.backend_port(director_proxy::Protocol::Imap),
        pop3: proxy.backend_port(director_proxy::Protocol::Pop3),
        smtp: proxy.backend_port(director_proxy::Protocol::Submission),
    };
    let mut served: Vec<director_proxy::Protocol> = Vec::new();
    for l in &proxy.listeners {
        if !served.contains(&l.protocol) {
            served.push(l.protocol);
        }
    }
    settings.health = crate::health::HealthSettings::from_values(
        &director_config::Values::new(config.root()),
        &served,
        |p| proxy.backend_port(p),
        proxy.backend_tls,
        proxy.backend_ca_pem.as_deref(),
        proxy.proxy_protocol,
    )
    .map_err(|e| anyhow!("{e}"))?;
    settings.proxy = Some(proxy).filter(|p| !p.listeners.is_empty());
    let mut ignored: Vec<String> = ds
        .ignored
        .iter()
        .map(|i| format!("{} ({})", i.key, i.location))
        .collect();
    for l in &ds.listeners {
        let served_fifo = l.socket_type == SocketType::Notify
            && l.location.is_some()
            && matches!(l.transport, ListenerTransport::Fifo { .. });
        let served_ring = l.socket_type == SocketType::Ring && settings.ring.is_some();
        if !served_fifo
            && !served_ring
            && !matches!(
                l.socket_type,
                SocketType::Admin | SocketType::AuthHttp | SocketType::Metrics
            )
        {
            ignored.push(format!(
                "service director listener {:?} ({:?}): not served yet",
                l.name, l.socket_type
            ));
        }
    }
    Ok(Loaded {
        settings,
        printed: director_config::print_non_default(&config, &origin),
        ignored,
        warnings: config.warnings().to_vec(),
    })
}

/// Maps the validated director settings to the daemon's.
pub fn from_director_settings(ds: &DirectorSettings) -> anyhow::Result<DaemonSettings> {
    let mut admin_sockets = Vec::new();
    let mut admin_tcp = Vec::new();
    for l in &ds.admin_listeners {
        match &l.transport {
            ListenerTransport::Unix {
                path,
                mode,
                user,
                group,
            } => admin_sockets.push(UnixSocketSpec {
                path: path.clone(),
                mode: *mode,
                user: user.clone(),
                group: group.clone(),
            }),
            ListenerTransport::Inet {
                addresses,
                port,
                ssl,
                ..
            } => {
                for a in addresses {
                    let ip = parse_listen_address(a).with_context(|| {
                        format!("admin listener {}: {a:?} is not an IP address", l.name)
                    })?;
                    admin_tcp.push(TcpAdminSpec {
                        addr: SocketAddr::new(ip, *port),
                        tls: *ssl,
                    });
                }
            }
            ListenerTransport::Fifo { .. } => {}
        }
    }
    // The default `director-admin` first: it is the one we print.
    admin_sockets.sort_by_key(|s| !s.path.ends_with("director-admin"));
    if admin_sockets.is_empty() {
        anyhow::bail!("service director has no admin unix_listener (director-admin)");
    }

    let self_addr = if ds.is_standalone() {
        STANDALONE_SELF
    } else {
        match ds.ring_listener.as_ref().map(|l| &l.transport) {
            Some(ListenerTransport::Inet {
                addresses, port, ..
            }) => {
                let ip = addresses
                    .iter()
                    .filter_map(|a| parse_listen_address(a))
                    .find(|ip| !ip.is_unspecified())
                    .or_else(|| ds.ring_listen_ips().into_iter().next())
                    .unwrap_or(STANDALONE_SELF.0);
                (ip, *port)
            }
            _ => STANDALONE_SELF,
        }
    };
    let core = ds.core_settings()?;
    let ring = ring_settings(ds)?;
    let tls = match &ds.admin_tls {
        Some(t) => {
            let ca = t.ca_pem.as_deref().filter(|_| t.verify_client_cert);
            let acceptor =
                director_proxy::tls::server_acceptor_with_client_ca(&t.cert_pem, &t.key_pem, ca)
                    .context("TLS of the TCP admin listener (ssl = yes)")?;
            Some(AdminTlsAcceptor(acceptor))
        }
        None => None,
    };
    let admin_tcp = TcpAdminSettings {
        listeners: admin_tcp,
        allow_nets: ds.admin_allow_nets.clone(),
        max_connections: usize::try_from(ds.admin_tcp_max_connections)
            .context("director_admin_tcp_max_connections")?,
        idle_timeout: Duration::from_secs(u64::from(ds.admin_idle_timeout_secs)),
        tls,
    };
    let auth_http_listeners = http_addresses(
        &ds.auth_http_listeners,
        "auth_http",
        "nginx's auth_http speaks plain HTTP",
    )?;
    let metrics = MetricsSettings {
        listeners: http_addresses(
            &ds.metrics_listeners,
            "metrics",
            "Prometheus scrapes it in plain HTTP",
        )?,
        allow_nets: ds.metrics_allow_nets.clone(),
        max_connections: usize::try_from(ds.metrics_max_connections)
            .context("director_metrics_max_connections")?,
        timeout: Duration::from_secs(u64::from(ds.metrics_timeout_secs)),
    };
    let auth_http = AuthHttpSettings {
        listeners: auth_http_listeners,
        allow_nets: ds.auth_http_allow_nets.clone(),
        max_connections: usize::try_from(ds.auth_http_max_connections)
            .context("director_auth_http_max_connections")?,
        request_timeout: Duration::from_secs(u64::from(ds.auth_http_timeout_secs)),
        login_timeout: Duration::from_secs(u64::from(ds.auth_http_login_timeout_secs)),
        wait_secs: ds.auth_http_wait_secs,
        // The protocols' defaults until the proxy settings are read (`load`).
        ports: BackendPorts {
            imap: director_proxy::Protocol::Imap.default_port(),
            pop3: director_proxy::Protocol::Pop3.default_port(),
            smtp: director_proxy::Protocol::Submission.default_port(),
        },
        master_user_separator: ds.auth_master_user_separator.clone(),
    };
    // Only FIFOs the config names: Dovecot's built-in `login/proxy-notify` is not created.
    let notify_fifos = ds
        .listeners
        .iter()
        .filter(|l| l.socket_type == SocketType::Notify && l.location.is_some() && l.is_enabled())
        .filter_map(|l| match &l.transport {
            ListenerTransport::Fifo {
                path,
                mode,
                user,
                group,
            } => Some(NotifyFifo {
                path: path.clone(),
                mode: *mode,
                user: user.clone(),
                group: group.clone(),
            }),
            _ => None,
        })
        .collect();
    Ok(DaemonSettings {
        base_dir: ds.base_dir.clone(),
        admin_sockets,
        admin_tcp,
        auth_http,
        metrics,
        notify_fifos,
        log: LogTargets {
            log_path: ds.log_path.clone(),
            info_log_path: ds.info_log_path.clone(),
            debug_log_path: ds.debug_log_path.clone(),
        },
        saved_state: ds.saved_state(),
        core,
        self_addr,
        ring,
        proxy: None,
        health: None,
    })
}

/// The addresses of plain-HTTP inet listeners (`what`: auth_http, metrics); `ssl = yes` is
/// refused, for the reason `why_plain`.
fn http_addresses(
    listeners: &[Listener],
    what: &str,
    why_plain: &str,
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for l in listeners {
        if let ListenerTransport::Inet {
            addresses,
            port,
            ssl,
            ..
        } = &l.transport
        {
            if *ssl {
                anyhow::bail!(
                    "inet_listener {}: ssl = yes is not supported ({why_plain})",
                    l.name
                );
            }
            for a in addresses {
                let ip = parse_listen_address(a).with_context(|| {
                    format!("{what} listener {}: {a:?} is not an IP address", l.name)
                })?;
                out.push(SocketAddr::new(ip, *port));
            }
        }
    }
    Ok(out)
}

/// The ring: where we listen, who we are, who the others are (`director_servers`), and its
/// timeouts. `None` for a standalone director.
fn ring_settings(ds: &DirectorSettings) -> anyhow::Result<Option<RingSettings>> {
    if ds.is_standalone() {
        return Ok(None);
    }
    let Some(Listener {
        transport: ListenerTransport::Inet {
            addresses, port, ..
        },
        ..
    }) = ds.ring_listener.as_ref()
    else {
        anyhow::bail!("director_servers is set but service director has no ring inet_listener");
    };
    let listen: Vec<SocketAddr> = addresses
        .iter()
        .map(|a| {
            parse_listen_address(a)
                .map(|ip| SocketAddr::new(ip, *port))
                .with_context(|| format!("ring listener: {a:?} is not an IP address"))
        })
        .collect::<anyhow::Result<_>>()?;
    let servers: Vec<DirectorAddr> = ds
        .director_servers
        .iter()
        .map(|d| DirectorAddr {
            ip: d.ip,
            port: d.port,
        })
        .collect();
    let first = *listen
        .first()
        .context("the ring inet_listener has no address")?;
    // A listener on the any-address is whichever listed director we can bind locally.
    let is_local = |ip: &std::net::IpAddr| std::net::TcpListener::bind((*ip, 0)).is_ok();
    let me = find_self(first, &servers, is_local).map_err(|e| anyhow!("{e}"))?;
    if servers.iter().all(|s| *s == me) {
        // A ring of one: nothing to connect to, so nothing to listen for; served as a
        // standalone director that lists itself under its ring address.
        return Ok(None);
    }
    let mut config = RingConfig::new(me, servers);
    config.ping_idle_timeout_secs = u64::from(ds.ping_idle_timeout_secs);
    config.ping_max_timeout_secs = u64::from(ds.ping_max_timeout_secs);
    Ok(Some(RingSettings {
        listen,
        config,
        output_buffer_size: usize::try_from(ds.output_buffer_size).unwrap_or(usize::MAX),
    }))
}
