//! [`ProxySettings`]: what the proxy reads from the Dovecot-syntax config.
//!
//! Dovecot names are used where Dovecot has the setting (`ssl`, `ssl_cert`, `ssl_key`,
//! `ssl_client_ca_file`, `disable_plaintext_auth`, `login_trusted_networks`,
//! `auth_master_user_separator`, `auth_failure_delay`, `protocols`, the `service *-login`
//! listeners). Dovecot's login processes took the backend port, TLS mode and so on from passdb
//! fields (`port=`, `ssl=`, `starttls=`); a director that is the whole proxy tier has no passdb,
//! so those become `director_*` settings of ours (see `director_config::catalog`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use director_config::{Config, ConfigError, Section, Values};
use director_core::HashFormat;

pub use director_mailproto::Protocol;

/// Our setting naming the backend port of `protocol`.
pub fn backend_port_key(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Imap => "director_backend_port_imap",
        Protocol::Pop3 => "director_backend_port_pop3",
        Protocol::Submission => "director_backend_port_submission",
        Protocol::ManageSieve => "director_backend_port_sieve",
        Protocol::Lmtp => "director_backend_port_lmtp",
    }
}

/// Dovecot's `ssl` setting for client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// `ssl = no`: no TLS at all (no STARTTLS, implicit-TLS listeners are an error).
    No,
    /// `ssl = yes`: TLS offered.
    Yes,
    /// `ssl = required`: authentication only after TLS, even from trusted addresses.
    Required,
}

/// How the proxy talks to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTlsMode {
    /// Plaintext (`director_backend_ssl = no`, default).
    None,
    /// TLS from the first byte (`director_backend_ssl = yes`; Dovecot passdb `ssl=yes`).
    Implicit,
    /// STARTTLS/STLS before the login (`director_backend_ssl = starttls`).
    StartTls,
}

impl BackendTlsMode {
    /// A `director_backend_ssl`-style value: `no`, `yes` or `starttls`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "no" => Some(BackendTlsMode::None),
            "yes" => Some(BackendTlsMode::Implicit),
            "starttls" => Some(BackendTlsMode::StartTls),
            _ => None,
        }
    }
}

/// One inet listener of a `service *-login` / `service lmtp` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Which protocol it speaks.
    pub protocol: Protocol,
    /// The listener's name (`imap`, `imaps`, ...).
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
    /// `ssl = yes` on the listener: TLS from the first byte.
    pub implicit_tls: bool,
}

/// An address block of `login_trusted_networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Network {
    /// Parses `a.b.c.d/len`, `::1/128` or a single address.
    pub fn parse(s: &str) -> Option<Network> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Network { addr, prefix })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Limits that bound what one unauthenticated peer can cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Time from accept until the backend accepted the login
    /// (`director_proxy_login_timeout`, default 60 s like Dovecot's login processes'
    /// "no auth attempts" timeout). Slowloris clients end here.
    pub login_timeout: Duration,
    /// Connect + login-replay timeout towards a backend (Dovecot's `login_proxy_timeout`,
    /// default 30 s). Reconnect attempts share it.
    pub connect_timeout: Duration,
    /// How often a refused or failed backend TCP connect is retried, one second apart, while
    /// `connect_timeout` allows (Dovecot's `login_proxy_max_reconnects`, default 3): a
    /// backend restarting under the proxy costs the client a short wait, not an error.
    pub max_reconnects: u32,
    /// Largest LMTP message the proxy buffers for fan-out (`director_lmtp_max_message_size`,
    /// default 50 MiB).
    pub max_lmtp_message: u64,
    /// Time for a whole LMTP message body (`director_lmtp_data_timeout`, default 10 min): a
    /// client that sends a byte now and then cannot hold a delivery for ever.
    pub lmtp_data_timeout: Duration,
    /// Buffer memory all connections together may hold beyond their fixed share
    /// (`director_proxy_buffer_memory`, default 128 MiB; see [`crate::budget`]).
    pub buffer_memory: u64,
    /// Most client connections at once (`director_proxy_max_connections`, default 10000).
    pub max_connections: usize,
    /// Most client connections from one IP (`director_proxy_max_connections_per_ip`,
    /// default 100).
    pub max_connections_per_ip: usize,
    /// Pause before answering an authentication the proxy itself rejects
    /// (`auth_failure_delay`, Dovecot default 2 s). Relayed backend refusals are not
    /// delayed again: the backend already applied its own delay.
    pub auth_failure_delay: Duration,
    /// How long sessions may drain after SIGTERM before they are closed
    /// (`director_proxy_drain_time`, default 30 s).
    pub drain_time: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            login_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            max_reconnects: 3,
            max_lmtp_message: 50 * 1024 * 1024,
            lmtp_data_timeout: Duration::from_secs(600),
            buffer_memory: 128 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            auth_failure_delay: Duration::from_secs(2),
            drain_time: Duration::from_secs(30),
        }
    }
}

/// Largest accepted `director_proxy_workers` (each is a thread).
pub const MAX_WORKERS: usize = 1024;

/// Everything the proxy needs from the config.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Client listeners, one per bound address.
    pub listeners: Vec<ListenerSpec>,
    /// `ssl`.
    pub client_tls: ClientTlsMode,
    /// `ssl_cert` contents (PEM; `ssl_cert = </path` reads the file).
    pub ssl_cert_pem: Option<String>,
    /// `ssl_key` contents (PEM).
    pub ssl_key_pem: Option<String>,
    /// `disable_plaintext_auth` (Dovecot default yes): plaintext LOGIN/PLAIN/USER refused
    /// before TLS unless the connection is secured (client IP == local IP, or a
    /// `login_trusted_networks` address, like Dovecot's login processes).
    pub disable_plaintext_auth: bool,
    /// `login_trusted_networks`.
    pub trusted_networks: Vec<Network>,
    /// Backend port per protocol.
    pub backend_ports: HashMap<Protocol, u16>,
    /// `director_backend_ssl`.
    pub backend_tls: BackendTlsMode,
    /// `ssl_client_ca_file` contents (PEM) used to verify backend certificates. Without it
    /// the system has no trust anchors here, so backend TLS requires it.
    pub backend_ca_pem: Option<String>,
    /// `director_proxy_protocol`: send a HAProxy PROXY v2 header to the backend instead of
    /// relying on IMAP `ID` / `XCLIENT` (the backend listener needs `haproxy = yes`).
    pub proxy_protocol: bool,
    /// `auth_master_user_separator` (or 2.3.19's `master_user_separator`).
    pub master_user_separator: String,
    /// `director_username_hash`, for the session registry's user hashes.
    pub username_hash: HashFormat,
    /// `hostname` (Dovecot: the system host name): used in SMTP/LMTP greetings.
    pub hostname: String,
    /// `login_greeting` (Dovecot default `Dovecot ready.`).
    pub login_greeting: String,
    /// Limits.
    pub limits: ProxyLimits,
    /// `director_proxy_workers`: proxy worker threads, each with its own listening sockets
    /// and sessions; 0 (the default) is one per CPU. Fixed at start.
    pub workers: usize,
}

/// A setting had a bad value: what is wrong, naming the setting and the line that set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct SettingsError(#[from] pub ConfigError);

impl ProxySettings {
    /// Reads the proxy settings from `config` (its top-level settings and the
    /// `service imap-login` / `pop3-login` / `submission-login` / `managesieve-login` /
    /// `lmtp` listener blocks). A protocol left out of a set `protocols` has no listeners.
    pub fn from_config(config: &Config) -> Result<ProxySettings, SettingsError> {
        Self::from_root(config.root())
    }

    /// Like [`from_config`](Self::from_config), from the raw tree.
    pub fn from_root(root: &Section) -> Result<ProxySettings, SettingsError> {
        let v = Values::new(root);
        let err = |k: &str, m: &dyn std::fmt::Display| SettingsError(v.error(k, m));
        let count = |k: &str| -> Result<usize, SettingsError> {
            Ok(usize::try_from(v.number(k)?).unwrap_or(usize::MAX))
        };

        let client_tls = match v.text("ssl").trim() {
            "no" => ClientTlsMode::No,
            "yes" => ClientTlsMode::Yes,
            "required" => ClientTlsMode::Required,
            other => return Err(err("ssl", &format!("Invalid ssl value: {other}"))),
        };
        let non_empty = |k: &str| v.non_empty(k).map(str::to_string);
        let ssl_cert_pem = non_empty("ssl_cert");
        let ssl_key_pem = non_empty("ssl_key");

        let protocols: Option<Vec<&str>> = v
            .is_set("protocols")
            .then(|| v.text("protocols").split_whitespace().collect());
        let listen = v.text("listen");
        let mut listeners = Vec::new();
        for proto in Protocol::ALL {
            if let Some(list) = &protocols {
                if !list.contains(&proto.name()) {
                    continue;
                }
            }
            let blocks = director_config::inet_listeners(root, proto.service(), listen, |name| {
                proto.listener_default_port(name)
            })
            .map_err(|e| err("inet_listener", &e))?;
            for l in blocks {
                let director_config::ListenerTransport::Inet {
                    addresses,
                    port,
                    ssl: implicit_tls,
                    haproxy,
                    ..
                } = l.transport
                else {
                    continue;
                };
                if port == 0 {
                    continue;
                }
                let name = l.name;
                if haproxy {
                    // Refused rather than ignored: a load balancer's PROXY header would be
                    // read as the client's first command.
                    return Err(err(
                        "haproxy",
                        &format!(
                            "inet_listener {name}: haproxy = yes is not supported by the \
                             director's mail proxy (clients must connect to it directly)"
                        ),
                    ));
                }
                if implicit_tls && client_tls == ClientTlsMode::No {
                    return Err(err(
                        "ssl",
                        &format!("listener {name} has ssl=yes, but ssl=no"),
                    ));
                }
                for a in &addresses {
                    let ip = director_config::parse_listen_address(a)
                        .ok_or_else(|| err("address", &format!("Invalid address: {a}")))?;
                    listeners.push(ListenerSpec {
                        protocol: proto,
                        name: name.clone(),
                        addr: SocketAddr::new(ip, port),
                        implicit_tls,
                    });
                }
            }
        }
        let tls_needed = listeners.iter().any(|l| l.implicit_tls);
        if tls_needed && (ssl_cert_pem.is_none() || ssl_key_pem.is_none()) {
            return Err(err(
                "ssl_cert",
                &"an ssl=yes listener needs ssl_cert and ssl_key",
            ));
        }
        // TLS material is only checked when the proxy runs at all: a plain director config
        // (no proxy listeners) may carry Dovecot's other ssl settings.
        let serving = !listeners.is_empty();
        if serving
            && client_tls == ClientTlsMode::Required
            && (ssl_cert_pem.is_none() || ssl_key_pem.is_none())
        {
            return Err(err("ssl_cert", &"ssl=required needs ssl_cert and ssl_key"));
        }

        let mut backend_ports = HashMap::new();
        for proto in Protocol::ALL {
            let k = backend_port_key(proto);
            let text = v.text(k).trim();
            let port = text
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(k, &format!("Invalid port: {text}")))?;
            backend_ports.insert(proto, port);
        }
        let text = v.text("director_backend_ssl").trim();
        let backend_tls = BackendTlsMode::parse(text).ok_or_else(|| {
            err(
                "director_backend_ssl",
                &format!("must be no, yes or starttls, not {text}"),
            )
        })?;
        let backend_ca_pem = non_empty("ssl_client_ca_file");
        if serving && backend_tls != BackendTlsMode::None && backend_ca_pem.is_none() {
            return Err(err(
                "ssl_client_ca_file",
                &"director_backend_ssl needs ssl_client_ca_file = </path/to/ca.pem",
            ));
        }

        let mut trusted_networks = Vec::new();
        for n in v
            .text("login_trusted_networks")
            .split([' ', ','])
            .filter(|n| !n.is_empty())
        {
            trusted_networks.push(
                Network::parse(n).ok_or_else(|| {
                    err("login_trusted_networks", &format!("Invalid network: {n}"))
                })?,
            );
        }

        let mut master_user_separator = v.text("auth_master_user_separator").to_string();
        if master_user_separator.is_empty() {
            master_user_separator = v.text("master_user_separator").to_string();
        }
        let username_hash = HashFormat::parse(v.text("director_username_hash"))
            .map_err(|e| err("director_username_hash", &e))?;
        let workers = count("director_proxy_workers")?;
        if workers > MAX_WORKERS {
            return Err(err(
                "director_proxy_workers",
                &format!("must be between 0 (one per CPU) and {MAX_WORKERS}"),
            ));
        }
        let limits = ProxyLimits {
            login_timeout: v.duration("director_proxy_login_timeout")?,
            connect_timeout: v.duration("login_proxy_timeout")?,
            max_reconnects: v.number("login_proxy_max_reconnects")?,
            max_lmtp_message: v.bytes("director_lmtp_max_message_size")?,
            lmtp_data_timeout: v.duration("director_lmtp_data_timeout")?,
            buffer_memory: v.bytes("director_proxy_buffer_memory")?,
            max_connections: count("director_proxy_max_connections")?,
            max_connections_per_ip: count("director_proxy_max_connections_per_ip")?,
            auth_failure_delay: v.duration("auth_failure_delay")?,
            drain_time: v.duration("director_proxy_drain_time")?,
        };
        Ok(ProxySettings {
            listeners,
            client_tls,
            ssl_cert_pem,
            ssl_key_pem,
            disable_plaintext_auth: v.boolean("disable_plaintext_auth")?,
            trusted_networks,
            backend_ports,
            backend_tls,
            backend_ca_pem,
            proxy_protocol: v.boolean("director_proxy_protocol")?,
            master_user_separator,
            username_hash,
            hostname: v.text("hostname").to_string(),
            login_greeting: v.text("login_greeting").to_string(),
            limits,
            workers,
        })
    }

    /// The backend port for `protocol`.
    pub fn backend_port(&self, protocol: Protocol) -> u16 {
        self.backend_ports
            .get(&protocol)
            .copied()
            .unwrap_or_else(|| protocol.default_port())
    }

    /// Whether a connection from `client` to `local` counts as secured without TLS
    /// (Dovecot: remote IP == local IP, or a trusted network), unless `ssl = required`.
    pub fn is_secured(&self, client: IpAddr, local: IpAddr) -> bool {
        if self.client_tls == ClientTlsMode::Required {
            return false;
        }
        client == local || self.is_trusted(client)
    }

    /// Whether `client` is in `login_trusted_networks`: an upstream proxy, whose forwarded
    /// proxy TTL is obeyed (Dovecot's `client->trusted`, independent of `ssl`).
    pub fn is_trusted(&self, client: IpAddr) -> bool {
        self.trusted_networks.iter().any(|n| n.contains(client))
    }

    /// Whether the pre-login machines refuse plaintext authentication on an unsecured
    /// connection: `disable_plaintext_auth`, or `ssl = required` (which implies it).
    pub fn plaintext_auth_disabled(&self) -> bool {
        self.disable_plaintext_auth || self.client_tls == ClientTlsMode::Required
    }

    /// Whether STARTTLS can be offered (a certificate is configured and `ssl != no`).
    pub fn tls_available(&self) -> bool {
        self.client_tls != ClientTlsMode::No
            && self.ssl_cert_pem.is_some()
            && self.ssl_key_pem.is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listeners_and_defaults() {
        let cfg = Config::parse_str(
            "protocols = imap lmtp\n\
             service imap-login {\n inet_listener imap {\n address = 127.0.0.5\n port = 1143\n }\n\
             inet_listener imaps {\n port = 0\n }\n}\n\
             service pop3-login {\n inet_listener pop3 {\n port = 1110\n }\n}\n\
             service lmtp {\n inet_listener lmtp {\n address = 127.0.0.5\n port = 2424\n }\n}\n\
             director_backend_port_imap = 10143\n",
            "test.conf",
        )
        .unwrap();
        let s = ProxySettings::from_config(&cfg).unwrap();
        assert_eq!(s.listeners.len(), 2);
        assert_eq!(s.listeners[0].addr, "127.0.0.5:1143".parse().unwrap());
        assert_eq!(s.listeners[1].protocol, Protocol::Lmtp);
        assert_eq!(s.backend_port(Protocol::Imap), 10143);
        assert_eq!(s.backend_port(Protocol::Pop3), 110);
        assert!(s.disable_plaintext_auth);
    }

    /// A listener option the proxy cannot honour is refused, naming the listener, rather
    /// than ignored.
    #[test]
    fn haproxy_on_a_mail_listener_is_refused() {
        let cfg = Config::parse_str(
            "service imap-login {\n inet_listener imap {\n address = 127.0.0.5\n port = 1143\n \
             haproxy = yes\n }\n}\n",
            "test.conf",
        )
        .unwrap();
        let e = ProxySettings::from_config(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("inet_listener imap: haproxy = yes is not supported"),
            "{e}"
        );
    }

    #[test]
    fn login_proxy_settings_use_dovecots_names_and_defaults() {
        let parse = |text: &str| Config::parse_str(text, "t.conf").unwrap();
        let s = ProxySettings::from_config(&parse("")).unwrap();
        assert_eq!(s.limits.connect_timeout, Duration::from_secs(30));
        assert_eq!(s.limits.max_reconnects, 3);
        let s = ProxySettings::from_config(&parse(
            "login_proxy_timeout = 5 secs\nlogin_proxy_max_reconnects = 0\n",
        ))
        .unwrap();
        assert_eq!(s.limits.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.limits.max_reconnects, 0);
        let e =
            ProxySettings::from_config(&parse("login_proxy_max_reconnects = many\n")).unwrap_err();
        assert!(e.to_string().contains("login_proxy_max_reconnects"), "{e}");
    }

    #[test]
    fn proxy_workers_default_to_one_per_cpu_and_are_bounded() {
        let parse = |text: &str| Config::parse_str(text, "t.conf").unwrap();
        assert_eq!(ProxySettings::from_config(&parse("")).unwrap().workers, 0);
        let s = ProxySettings::from_config(&parse("director_proxy_workers = 3\n")).unwrap();
        assert_eq!(s.workers, 3);
        for bad in ["100000", "-1", "two"] {
            let e =
                ProxySettings::from_config(&parse(&format!("director_proxy_workers = {bad}\n")))
                    .unwrap_err();
            assert!(
                e.to_string().contains("director_proxy_workers"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn implicit_tls_needs_cert() {
        let cfg = Config::parse_str(
            "service imap-login {\n inet_listener imaps {\n address = 127.0.0.5\n port = 1993\n ssl = yes\n }\n}\n",
            "t.conf",
        )
        .unwrap();
        assert!(ProxySettings::from_config(&cfg).is_err());
    }

    #[tokio::test]
    async fn default_listen_binds_v4_and_v6_side_by_side() {
        let cfg = Config::parse_str(
            "service imap-login {\n inet_listener imap {\n port = 0\n }\n}\n",
            "t.conf",
        )
        .unwrap();
        // Port 0 disables a listener: none.
        assert!(ProxySettings::from_config(&cfg)
            .unwrap()
            .listeners
            .is_empty());
        let cfg = Config::parse_str(
            "service imap-login {\n inet_listener imap {\n port = 1143\n }\n}\n",
            "t.conf",
        )
        .unwrap();
        let s = ProxySettings::from_config(&cfg).unwrap();
        let addrs: Vec<String> = s.listeners.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, vec!["0.0.0.0:1143", "[::]:1143"]);
    }

    #[test]
    fn networks() {
        let n = Network::parse("127.0.0.0/8").unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.0.0.1".parse().unwrap()));
        assert!(Network::parse("::1")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Network::parse("1.2.3.4/33").is_none());
    }
}
