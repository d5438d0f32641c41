//! [`DirectorSettings`]: the director's settings with Dovecot's names and
//! defaults (spec §12, `doveconf -d` of 2.3.19.1), validated.
//!
//! * Every `director_*` key must be one we know; a typo or a bad value is an
//!   error naming the file and line.
//! * Everything else (passdb/userdb, protocols, other services, ssl, ...) is
//!   accepted and listed in [`DirectorSettings::ignored`] for debug logging.
//! * `director_consistent_hashing` is **our** extension (Dovecot 2.2.16–2.2.36
//!   had it; 2.3 has no such key and always hashes consistently). Default
//!   `yes`; `no` selects the 2.2-era `hash % vhosts` mode for rings still
//!   shared with old 2.2 directors.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::catalog::{setting, Values};
use crate::config::Config;
use crate::error::{ConfigError, Location};
use crate::listeners::{
    is_wildcard_address, service_listeners, Listener, ListenerTransport, SocketType,
};
use crate::nets::{parse_nets, IpNet};
use crate::servers::{
    parse_director_servers, parse_mail_servers, DirectorServer, MailServer, Resolver,
    SystemResolver,
};

/// Smallest accepted `director_user_expire` (the director refuses less).
pub const MIN_USER_EXPIRE_SECS: u32 = 10;

/// Whether `key` is a `director_*` setting we accept (Dovecot's or ours).
pub fn is_director_key(key: &str) -> bool {
    key.starts_with("director_") && setting(key).is_some()
}

/// The default of a setting the director reads (the catalogue's).
pub fn director_default(key: &str) -> Option<&'static str> {
    setting(key).map(|s| s.default)
}

/// A setting present in the config that the director does not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredSetting {
    /// `key` for top-level settings, `kind name` for sections.
    pub key: String,
    /// Where it is.
    pub location: Location,
}

/// TLS of the TCP admin listeners (`ssl = yes` in `inet_listener director-doveadm`), with
/// Dovecot's setting names. The PEM texts are what the settings hold (`ssl_cert = </path`
/// reads the file).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTls {
    /// `ssl_cert`: our certificate chain.
    pub cert_pem: String,
    /// `ssl_key`: its private key.
    pub key_pem: String,
    /// `ssl_ca`: the CAs that sign admin clients' certificates (required with
    /// `ssl_verify_client_cert = yes`).
    pub ca_pem: Option<String>,
    /// `ssl_verify_client_cert = yes`: a client must present a certificate signed by `ssl_ca`.
    pub verify_client_cert: bool,
}

impl std::fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AdminTls")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &format_args!("<secret>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(String::len))
            .field("verify_client_cert", &self.verify_client_cert)
            .finish()
    }
}

/// The director's effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorSettings {
    /// `base_dir` (Dovecot default `/run/dovecot` on Debian). Relative UNIX
    /// listener paths live here.
    pub base_dir: PathBuf,
    /// `instance_name` (default `dovecot`).
    pub instance_name: String,
    /// `log_path` (default `syslog`).
    pub log_path: String,
    /// `info_log_path` (empty = same as `log_path`).
    pub info_log_path: String,
    /// `debug_log_path` (empty = same as `info_log_path`).
    pub debug_log_path: String,
    /// `state_dir` (Dovecot default `/var/lib/dovecot`): where the state is saved.
    pub state_dir: PathBuf,
    /// `director_state_save_interval` in seconds (ours, default 5; 0 = no saved state).
    pub state_save_interval_secs: u32,
    /// `director_servers`, resolved; empty = standalone.
    pub director_servers: Vec<DirectorServer>,
    /// `director_mail_servers`, expanded and resolved ("initial config").
    pub mail_servers: Vec<MailServer>,
    /// `director_username_hash` (default `%Lu`); validated by the core.
    pub username_hash: String,
    /// `director_user_expire` in seconds (default 900, at least 10).
    pub user_expire_secs: u32,
    /// `director_user_kick_delay` in seconds (default 2).
    pub user_kick_delay_secs: u32,
    /// `director_flush_socket` (empty = none) as written, unexpanded (`%i`, `%h`); use
    /// [`DirectorSettings::flush_socket_uri`] to run it.
    pub flush_socket: String,
    /// `director_ping_idle_timeout` in seconds (default 30).
    pub ping_idle_timeout_secs: u32,
    /// `director_ping_max_timeout` in seconds (default 60).
    pub ping_max_timeout_secs: u32,
    /// `director_max_parallel_moves` (default 100).
    pub max_parallel_moves: u32,
    /// `director_max_parallel_kicks` (default 100).
    pub max_parallel_kicks: u32,
    /// `director_output_buffer_size` in bytes (default 10 MiB).
    pub output_buffer_size: u64,
    /// `director_consistent_hashing` (our extension, default yes).
    pub consistent_hashing: bool,
    /// `auth_master_user_separator`, or 2.3.19's hidden
    /// `master_user_separator` when the former is empty.
    pub auth_master_user_separator: String,
    /// `listen` (default `*, ::`): addresses for inet listeners without one.
    pub listen: String,
    /// Every listener of `service director` (defaults merged with the config).
    pub listeners: Vec<Listener>,
    /// The admin-protocol listeners (UNIX `director-admin` by default, plus
    /// any inet listener named `*-admin`/`*-doveadm`).
    pub admin_listeners: Vec<Listener>,
    /// The ring listener (first inet listener of type ring with a port).
    pub ring_listener: Option<Listener>,
    /// Who may connect to a TCP admin listener: `director_admin_allow_nets` plus every
    /// director of `director_servers`.
    pub admin_allow_nets: Vec<IpNet>,
    /// `director_admin_tcp_max_connections` (default 100, at least 1).
    pub admin_tcp_max_connections: u32,
    /// `director_admin_idle_timeout` in seconds (default 60, at least 1).
    pub admin_idle_timeout_secs: u32,
    /// TLS material, when a TCP admin listener has `ssl = yes`.
    pub admin_tls: Option<AdminTls>,
    /// The nginx `auth_http` listeners (`inet_listener director-auth-http`, usually none).
    pub auth_http_listeners: Vec<Listener>,
    /// `director_auth_http_allow_nets`: who may use them (default loopback).
    pub auth_http_allow_nets: Vec<IpNet>,
    /// `director_auth_http_max_connections` (default 1000, at least 1).
    pub auth_http_max_connections: u32,
    /// `director_auth_http_timeout` in seconds (default 10, at least 1).
    pub auth_http_timeout_secs: u32,
    /// `director_auth_http_login_timeout` in seconds (default 30, at least 1).
    pub auth_http_login_timeout_secs: u32,
    /// `director_auth_http_wait` in seconds (default 3): `Auth-Wait` of a temporary failure.
    pub auth_http_wait_secs: u32,
    /// The Prometheus metrics listeners (`inet_listener director-metrics`, usually none).
    pub metrics_listeners: Vec<Listener>,
    /// `director_metrics_allow_nets`: who may scrape them (default loopback).
    pub metrics_allow_nets: Vec<IpNet>,
    /// `director_metrics_max_connections` (default 10, at least 1).
    pub metrics_max_connections: u32,
    /// `director_metrics_timeout` in seconds (default 10, at least 1).
    pub metrics_timeout_secs: u32,
    /// Settings and sections present but not used, for debug logging.
    pub ignored: Vec<IgnoredSetting>,
}

/// Dovecot's boolean, exactly as `doveconf` 2.3.19.1 accepts it
/// (case-insensitive): `yes`, `y` and `1` are true, `no` is false; anything
/// else (`n`, `0`, `true`, `on`, empty, ...) is an error.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "y" | "1" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("Invalid boolean value: {value} (use yes or no)")),
    }
}

/// Dovecot's unsigned number setting, with `doveconf`'s error texts.
pub fn parse_u32_setting(value: &str) -> Result<u32, String> {
    if let Some(v) = director_proto::value::parse_uint(value.as_bytes()) {
        return Ok(v);
    }
    let digits = value.strip_prefix('-').unwrap_or(value);
    let why = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if value.starts_with('-') {
            "Number too small"
        } else {
            "Number too large"
        }
    } else {
        "Not a valid number"
    };
    Err(format!("Invalid number {value}: {why}"))
}

/// Where a listener was configured, for errors: its block, else the whole config.
fn listener_error(l: &Listener, msg: String) -> ConfigError {
    match &l.location {
        Some(loc) => ConfigError::at(loc, msg),
        None => ConfigError::general(msg),
    }
}

/// Refuses a TCP admin listener on a wildcard address. It serves the full admin protocol
/// (`HOST-SET`, `USER-MOVE`, ...), so it binds only addresses the operator named. The
/// auth_http listener (`what` = "an auth_http listener") follows the same rule: it creates
/// user assignments for whoever asks; and so does the metrics listener, which names the
/// backends and how busy they are.
fn check_explicit_addresses(
    listeners: &[Listener],
    listen: &str,
    what: &str,
) -> Result<(), ConfigError> {
    for l in listeners {
        let ListenerTransport::Inet {
            addresses,
            address_set,
            ..
        } = &l.transport
        else {
            continue;
        };
        let name = &l.name;
        if addresses.is_empty() {
            return Err(listener_error(
                l,
                format!(
                    "inet_listener {name}: no address: {what} binds only an \
                     explicit address (set address = 127.0.0.1 or another one of ours)"
                ),
            ));
        }
        if let Some(w) = addresses.iter().find(|a| is_wildcard_address(a)) {
            let msg = if *address_set {
                format!(
                    "inet_listener {name}: address = {w} is a wildcard: {what} \
                     binds only an explicit address (set address = 127.0.0.1 or another one \
                     of ours)"
                )
            } else {
                format!(
                    "inet_listener {name} has no address, and listen = {listen} is a \
                     wildcard: {what} binds only an explicit address (set \
                     address = 127.0.0.1 or another one of ours in inet_listener {name})"
                )
            };
            return Err(listener_error(l, msg));
        }
    }
    Ok(())
}

/// The TLS material of the TCP admin listeners, when one of them has `ssl = yes`.
fn admin_tls(
    config: &Config,
    admin_listeners: &[Listener],
) -> Result<Option<AdminTls>, ConfigError> {
    let Some(l) = admin_listeners
        .iter()
        .find(|l| matches!(l.transport, ListenerTransport::Inet { ssl: true, .. }))
    else {
        return Ok(None);
    };
    let name = &l.name;
    let setting = |key: &str| {
        config
            .get(key)
            .map(str::to_owned)
            .filter(|v| !v.trim().is_empty())
    };
    let missing = |key: &str, why: &str| {
        listener_error(
            l,
            format!("inet_listener {name} has ssl = yes, but {key} {why}"),
        )
    };
    if config.get("ssl").is_some_and(|v| v.trim() == "no") {
        return Err(missing("ssl", "= no"));
    }
    let cert_pem = setting("ssl_cert").ok_or_else(|| missing("ssl_cert", "is not set"))?;
    let key_pem = setting("ssl_key").ok_or_else(|| missing("ssl_key", "is not set"))?;
    let ca_pem = setting("ssl_ca");
    let verify_client_cert = match config.get_setting("ssl_verify_client_cert") {
        Some(s) => parse_bool(&s.value)
            .map_err(|m| ConfigError::at(&s.location, format!("ssl_verify_client_cert: {m}")))?,
        None => false,
    };
    if verify_client_cert && ca_pem.is_none() {
        return Err(missing(
            "ssl_ca",
            "is not set (ssl_verify_client_cert = yes needs the CA that signs admin clients)",
        ));
    }
    Ok(Some(AdminTls {
        cert_pem,
        key_pem,
        ca_pem,
        verify_client_cert,
    }))
}

impl DirectorSettings {
    /// What the director core is built from: these settings in the core's own types.
    pub fn core_settings(&self) -> Result<director_core::CoreSettings, ConfigError> {
        let username_hash = director_core::HashFormat::parse(&self.username_hash)
            .map_err(|e| ConfigError::general(format!("director_username_hash: {e}")))?;
        Ok(director_core::CoreSettings {
            user_expire_secs: self.user_expire_secs,
            username_hash,
            hashing_mode: if self.consistent_hashing {
                director_core::HashingMode::Consistent
            } else {
                director_core::HashingMode::Modulo
            },
            kick_delay_secs: self.user_kick_delay_secs,
            max_parallel_moves: self.max_parallel_moves,
            max_parallel_kicks: self.max_parallel_kicks,
            flush_socket: self.flush_socket_uri(),
            // The mail servers are parsed into the core's own type (`MailServer = ConfigHost`).
            config_hosts: self.mail_servers.clone(),
        })
    }

    /// The flush socket to use, if any: a relative `unix:` path names a socket in
    /// `base_dir`, where Dovecot's director runs; other values are kept as written.
    pub fn flush_socket_uri(&self) -> Option<String> {
        let value = self.flush_socket.as_str();
        match value.strip_prefix("unix:") {
            _ if value.is_empty() => None,
            Some(path) if !path.is_empty() && !path.starts_with('/') => {
                Some(format!("unix:{}", self.base_dir.join(path).display()))
            }
            _ => Some(value.to_string()),
        }
    }

    /// Validates and converts `config`, resolving host names with the system
    /// resolver.
    pub fn from_config(config: &Config) -> Result<DirectorSettings, ConfigError> {
        Self::from_config_with_resolver(config, &SystemResolver)
    }

    /// Like [`from_config`](Self::from_config) with a chosen [`Resolver`].
    pub fn from_config_with_resolver(
        config: &Config,
        resolver: &dyn Resolver,
    ) -> Result<DirectorSettings, ConfigError> {
        let root = config.root();
        let mut ignored = Vec::new();
        for s in root.settings() {
            if s.key.starts_with("director_") {
                if !is_director_key(&s.key) {
                    return Err(ConfigError::at(
                        &s.location,
                        format!("Unknown setting: {}", s.key),
                    ));
                }
            } else if setting(&s.key).is_none() {
                ignored.push(IgnoredSetting {
                    key: s.key.clone(),
                    location: s.location.clone(),
                });
            }
        }
        for sec in root.sections() {
            if !(sec.kind == "service" && sec.name.as_deref() == Some("director")) {
                let key = match &sec.name {
                    Some(n) => format!("{} {n}", sec.kind),
                    None => sec.kind.clone(),
                };
                ignored.push(IgnoredSetting {
                    key,
                    location: sec.location.clone(),
                });
            }
        }
        for var in config.unresolved_variables() {
            if var.key.starts_with("director_") || setting(&var.key).is_some() {
                return Err(ConfigError::at(
                    &var.location,
                    format!("Unknown variable: {}", var.word),
                ));
            }
        }

        let v = Values::new(config.root());
        let time = |key: &str| v.seconds(key);
        let uint = |key: &str| v.number(key);
        let string = |key: &str| v.text(key).to_owned();

        let user_expire_secs = time("director_user_expire")?;
        if user_expire_secs < MIN_USER_EXPIRE_SECS {
            // Dovecot's settings check says exactly this (no line number);
            // we add where the value was set.
            let text =
                format!("director_user_expire is too low (minimum {MIN_USER_EXPIRE_SECS} secs)");
            return Err(match config.get_setting("director_user_expire") {
                Some(s) => ConfigError::at(&s.location, text),
                None => ConfigError::general(text),
            });
        }
        let output_buffer_size = v.bytes("director_output_buffer_size")?;
        let consistent_hashing = v.boolean("director_consistent_hashing")?;

        let base_dir = PathBuf::from(string("base_dir"));
        let listen = string("listen");
        let listeners = service_listeners(config, &base_dir, &listen)?;
        let admin_listeners: Vec<Listener> = listeners
            .iter()
            .filter(|l| l.socket_type == SocketType::Admin && l.is_enabled())
            .cloned()
            .collect();
        let ring_listener = listeners
            .iter()
            .find(|l| {
                l.socket_type == SocketType::Ring
                    && l.is_enabled()
                    && matches!(l.transport, ListenerTransport::Inet { .. })
            })
            .cloned();
        let ring_port = ring_listener.as_ref().and_then(|l| match l.transport {
            ListenerTransport::Inet { port, .. } => Some(port),
            _ => None,
        });

        let mail_servers = parse_mail_servers(v.text("director_mail_servers"), resolver)
            .map_err(|m| v.error("director_mail_servers", m))?;
        let director_servers =
            parse_director_servers(v.text("director_servers"), ring_port, resolver)
                .map_err(|m| v.error("director_servers", m))?;
        if !director_servers.is_empty() && ring_listener.is_none() {
            return Err(v.error(
                "director_servers",
                "No inet_listeners defined for director service (for standalone keep director_servers empty)",
            ));
        }

        check_explicit_addresses(&admin_listeners, &listen, "a TCP admin listener")?;
        let auth_http_listeners: Vec<Listener> = listeners
            .iter()
            .filter(|l| l.socket_type == SocketType::AuthHttp && l.is_enabled())
            .cloned()
            .collect();
        check_explicit_addresses(&auth_http_listeners, &listen, "an auth_http listener")?;
        let metrics_listeners: Vec<Listener> = listeners
            .iter()
            .filter(|l| l.socket_type == SocketType::Metrics && l.is_enabled())
            .cloned()
            .collect();
        check_explicit_addresses(&metrics_listeners, &listen, "a metrics listener")?;
        let metrics_allow_nets = parse_nets(v.text("director_metrics_allow_nets"))
            .map_err(|m| v.error("director_metrics_allow_nets", m))?;
        let auth_http_allow_nets = parse_nets(v.text("director_auth_http_allow_nets"))
            .map_err(|m| v.error("director_auth_http_allow_nets", m))?;
        let mut admin_allow_nets = parse_nets(v.text("director_admin_allow_nets"))
            .map_err(|m| v.error("director_admin_allow_nets", m))?;
        for d in &director_servers {
            let net = IpNet::host(d.ip);
            if !admin_allow_nets.contains(&net) {
                admin_allow_nets.push(net);
            }
        }
        let at_least_one = |key: &str, n: u32| -> Result<u32, ConfigError> {
            if n == 0 {
                Err(v.error(key, "must be at least 1"))
            } else {
                Ok(n)
            }
        };
        let admin_tcp_max_connections = at_least_one(
            "director_admin_tcp_max_connections",
            uint("director_admin_tcp_max_connections")?,
        )?;
        let admin_idle_timeout_secs = at_least_one(
            "director_admin_idle_timeout",
            time("director_admin_idle_timeout")?,
        )?;
        let admin_tls = admin_tls(config, &admin_listeners)?;
        let auth_http_max_connections = at_least_one(
            "director_auth_http_max_connections",
            uint("director_auth_http_max_connections")?,
        )?;
        let auth_http_timeout_secs = at_least_one(
            "director_auth_http_timeout",
            time("director_auth_http_timeout")?,
        )?;
        let auth_http_login_timeout_secs = at_least_one(
            "director_auth_http_login_timeout",
            time("director_auth_http_login_timeout")?,
        )?;
        let auth_http_wait_secs = time("director_auth_http_wait")?;
        let metrics_max_connections = at_least_one(
            "director_metrics_max_connections",
            uint("director_metrics_max_connections")?,
        )?;
        let metrics_timeout_secs = at_least_one(
            "director_metrics_timeout",
            time("director_metrics_timeout")?,
        )?;

        let mut auth_master_user_separator = string("auth_master_user_separator");
        if auth_master_user_separator.is_empty() {
            auth_master_user_separator = string("master_user_separator");
        }

        Ok(DirectorSettings {
            base_dir,
            instance_name: string("instance_name"),
            log_path: string("log_path"),
            info_log_path: string("info_log_path"),
            debug_log_path: string("debug_log_path"),
            state_dir: PathBuf::from(string("state_dir")),
            state_save_interval_secs: time("director_state_save_interval")?,
            director_servers,
            mail_servers,
            username_hash: string("director_username_hash"),
            user_expire_secs,
            user_kick_delay_secs: time("director_user_kick_delay")?,
            flush_socket: string("director_flush_socket"),
            ping_idle_timeout_secs: time("director_ping_idle_timeout")?,
            ping_max_timeout_secs: time("director_ping_max_timeout")?,
            max_parallel_moves: uint("director_max_parallel_moves")?,
            max_parallel_kicks: uint("director_max_parallel_kicks")?,
            output_buffer_size,
            consistent_hashing,
            auth_master_user_separator,
            listen,
            listeners,
            admin_listeners,
            ring_listener,
            admin_allow_nets,
            admin_tcp_max_connections,
            admin_idle_timeout_secs,
            admin_tls,
            auth_http_listeners,
            auth_http_allow_nets,
            auth_http_max_connections,
            auth_http_timeout_secs,
            auth_http_login_timeout_secs,
            auth_http_wait_secs,
            metrics_listeners,
            metrics_allow_nets,
            metrics_max_connections,
            metrics_timeout_secs,
            ignored,
        })
    }

    /// Where the state is saved and how often, unless saving is off (an empty `state_dir`
    /// or `director_state_save_interval = 0`).
    pub fn saved_state(&self) -> Option<(PathBuf, std::time::Duration)> {
        if self.state_dir.as_os_str().is_empty() || self.state_save_interval_secs == 0 {
            return None;
        }
        let interval = std::time::Duration::from_secs(u64::from(self.state_save_interval_secs));
        Some((self.state_dir.clone(), interval))
    }

    /// Whether this director runs alone (no `director_servers`).
    pub fn is_standalone(&self) -> bool {
        self.director_servers.is_empty()
    }

    /// The ring's own address candidates: the ring listener's addresses.
    pub fn ring_listen_ips(&self) -> Vec<IpAddr> {
        match &self.ring_listener {
            Some(Listener {
                transport: ListenerTransport::Inet { addresses, .. },
                ..
            }) => addresses
                .iter()
                .filter_map(|a| director_proto::value::parse_ip(a.as_bytes()))
                .collect(),
            _ => Vec::new(),
        }
    }
}
