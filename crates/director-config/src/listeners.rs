//! Listeners of `service director` (spec §5), merged with Dovecot's
//! defaults the way `doveconf` merges them.
//!
//! Dovecot 2.3.19.1 defaults (`doveconf -d`): `unix_listener director-admin`
//! (mode 0600), `unix_listener login/director` and `fifo_listener
//! login/proxy-notify` (mode 0 as printed by doveconf). A config block
//! with the same kind and name changes those; other blocks add listeners.
//! Repeated `service director { }` blocks are merged in order.
//!
//! The socket *type* comes from the listener name (basename, part after the
//! last `-`): `auth`, `userdb`, `authreply`, `ring`, `admin`/`doveadm`,
//! `notify`; otherwise inet → ring, unix → auth; FIFOs are always notify.
//! Ours: an inet listener whose name ends in `auth-http` (`director-auth-http`) serves
//! nginx's mail `auth_http` protocol, and one whose name ends in `metrics`
//! (`director-metrics`) serves Prometheus metrics over HTTP; Dovecot has neither.
//! A TCP admin listener therefore exists only when configured, e.g.
//! `inet_listener director-doveadm { port = ... }`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{ConfigError, Location};
use crate::settings::parse_bool;
use crate::tree::Section;

/// One word of a `listen` / `inet_listener { address }` value, as Dovecot reads it: `*` is
/// every IPv4 address, `::` (or `[::]`) every IPv6 address, anything else an IP address,
/// brackets allowed. `None` for anything else (Dovecot would resolve a host name here; we
/// never send a name lookup off the machine at start).
pub fn parse_listen_address(word: &str) -> Option<IpAddr> {
    match word {
        "*" => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        "::" | "[::]" => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok(),
    }
}

/// Whether a `listen` / `address` word means "every address" (`*`, `::`, `0.0.0.0`, `[::]`).
pub fn is_wildcard_address(word: &str) -> bool {
    parse_listen_address(word).is_some_and(|ip| ip.is_unspecified())
}

/// What protocol a director listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// Login processes' auth proxy (`login/director`).
    Auth,
    /// LMTP / userdb auth proxy (`director-userdb`).
    Userdb,
    /// auth-reply socket.
    AuthReply,
    /// Director ring (TCP).
    Ring,
    /// Admin protocol (doveadm).
    Admin,
    /// proxy-notify.
    Notify,
    /// nginx's mail `auth_http` protocol (ours: `inet_listener director-auth-http`).
    AuthHttp,
    /// Prometheus metrics over HTTP (ours: `inet_listener director-metrics`).
    Metrics,
}

/// How a listener is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenerTransport {
    /// `unix_listener PATH { mode user group }`.
    Unix {
        /// Absolute path (`base_dir` joined with a relative name).
        path: PathBuf,
        /// Permission bits.
        mode: u32,
        /// Owner user name (empty = process user).
        user: String,
        /// Owner group name (empty = process group).
        group: String,
    },
    /// `fifo_listener PATH { mode user group }`.
    Fifo {
        /// Absolute path.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
        /// Owner user name.
        user: String,
        /// Owner group name.
        group: String,
    },
    /// `inet_listener [NAME] { address port ssl haproxy }`.
    Inet {
        /// Addresses to bind (`*` = all IPv4, `::` = all IPv6); from
        /// `address`, else the global `listen`.
        addresses: Vec<String>,
        /// Port; 0 = disabled.
        port: u16,
        /// `ssl = yes`.
        ssl: bool,
        /// `haproxy = yes`.
        haproxy: bool,
        /// Whether the listener's own `address` was set (else `addresses` is `listen`).
        address_set: bool,
    },
}

/// One listener of `service director`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listener {
    /// The name as written (path for unix/fifo, may be empty for inet).
    pub name: String,
    /// Protocol derived from the name.
    pub socket_type: SocketType,
    /// Address and options.
    pub transport: ListenerTransport,
    /// Where it was (last) configured; `None` for a built-in default.
    pub location: Option<Location>,
}

impl Listener {
    /// A usable listener: inet with a port, or unix/fifo with a path.
    pub fn is_enabled(&self) -> bool {
        match &self.transport {
            ListenerTransport::Inet { port, .. } => *port != 0,
            ListenerTransport::Unix { path, .. } | ListenerTransport::Fifo { path, .. } => {
                !path.as_os_str().is_empty()
            }
        }
    }
}

/// Dovecot's rule for the socket type of a listener name.
pub fn socket_type_for(kind: &str, name: &str) -> SocketType {
    if kind == "fifo_listener" {
        return SocketType::Notify;
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    if kind == "inet_listener" && base.ends_with("auth-http") {
        return SocketType::AuthHttp;
    }
    if kind == "inet_listener" && base.ends_with("metrics") {
        return SocketType::Metrics;
    }
    let suffix = base.rsplit('-').next().unwrap_or(base);
    match suffix {
        "auth" => SocketType::Auth,
        "userdb" => SocketType::Userdb,
        "authreply" => SocketType::AuthReply,
        "ring" => SocketType::Ring,
        "admin" | "doveadm" => SocketType::Admin,
        "notify" => SocketType::Notify,
        _ if kind == "inet_listener" => SocketType::Ring,
        _ => SocketType::Auth,
    }
}

fn split_addresses(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Octal mode as Dovecot writes it (`0600`, `0666`, `00`).
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// An editable listener while merging.
struct Draft {
    kind: String,
    name: String,
    mode: u32,
    user: String,
    group: String,
    address: String,
    /// `None` until a block sets it: then the service's default applies.
    port: Option<u16>,
    ssl: bool,
    haproxy: bool,
    location: Option<Location>,
}

impl Draft {
    fn new(kind: &str, name: &str, mode: u32) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            mode,
            user: String::new(),
            group: String::new(),
            address: String::new(),
            port: None,
            ssl: false,
            haproxy: false,
            location: None,
        }
    }

    fn apply(&mut self, sec: &Section) -> Result<(), ConfigError> {
        self.location = Some(sec.location.clone());
        for s in sec.settings() {
            let bad = |what: &str| {
                ConfigError::at(
                    &s.location,
                    format!("{}: Invalid {what}: {}", s.key, s.value),
                )
            };
            match s.key.as_str() {
                "mode" => self.mode = parse_mode(&s.value).ok_or_else(|| bad("mode"))?,
                "user" => self.user = s.value.clone(),
                "group" => self.group = s.value.clone(),
                "address" => self.address = s.value.clone(),
                "port" => {
                    let v = director_proto::value::parse_uint(s.value.as_bytes())
                        .ok_or_else(|| bad("port"))?;
                    self.port = Some(u16::try_from(v).map_err(|_| bad("port"))?);
                }
                "ssl" => self.ssl = parse_bool(&s.value).map_err(|_| bad("boolean"))?,
                "haproxy" => self.haproxy = parse_bool(&s.value).map_err(|_| bad("boolean"))?,
                _ => {}
            }
        }
        Ok(())
    }

    fn build(self, base_dir: &Path, listen: &str, default_port: u16) -> Listener {
        let socket_type = socket_type_for(&self.kind, &self.name);
        let path = if self.name.is_empty() {
            PathBuf::new()
        } else {
            base_dir.join(&self.name)
        };
        let transport = match self.kind.as_str() {
            "fifo_listener" => ListenerTransport::Fifo {
                path,
                mode: self.mode,
                user: self.user,
                group: self.group,
            },
            "inet_listener" => ListenerTransport::Inet {
                addresses: split_addresses(if self.address.is_empty() {
                    listen
                } else {
                    &self.address
                }),
                port: self.port.unwrap_or(default_port),
                ssl: self.ssl,
                haproxy: self.haproxy,
                address_set: !self.address.is_empty(),
            },
            _ => ListenerTransport::Unix {
                path,
                mode: self.mode,
                user: self.user,
                group: self.group,
            },
        };
        Listener {
            name: self.name,
            socket_type,
            transport,
            location: self.location,
        }
    }
}

/// Mode Dovecot gives a new unix/fifo listener when the config sets none.
pub const DEFAULT_LISTENER_MODE: u32 = 0o600;

/// Merges every `service SERVICE { KIND NAME { ... } }` block of `root` whose kind is in
/// `kinds` into `drafts`, in order: a block with the kind and name of an existing draft
/// changes it (repeated blocks merge, as in `doveconf`), any other adds one.
fn merge_blocks(
    root: &Section,
    service: &str,
    kinds: &[&str],
    drafts: &mut Vec<Draft>,
) -> Result<(), ConfigError> {
    for block in root.sections_named("service", Some(service)) {
        for sec in block.sections() {
            if !kinds.contains(&sec.kind.as_str()) {
                continue;
            }
            let name = sec.name.clone().unwrap_or_default();
            let idx = match drafts
                .iter()
                .position(|d| d.kind == sec.kind && d.name == name)
            {
                Some(i) => i,
                None => {
                    drafts.push(Draft::new(&sec.kind, &name, DEFAULT_LISTENER_MODE));
                    drafts.len() - 1
                }
            };
            drafts[idx].apply(sec)?;
        }
    }
    Ok(())
}

/// The listeners of `service director`: Dovecot's defaults merged with
/// every `service director { ... }` block of `config`.
pub fn service_listeners(
    config: &Config,
    base_dir: &Path,
    listen: &str,
) -> Result<Vec<Listener>, ConfigError> {
    let mut drafts = vec![
        Draft::new("fifo_listener", "login/proxy-notify", 0),
        Draft::new("unix_listener", "director-admin", 0o600),
        Draft::new("unix_listener", "login/director", 0),
    ];
    merge_blocks(
        config.root(),
        "director",
        &["unix_listener", "fifo_listener", "inet_listener"],
        &mut drafts,
    )?;
    Ok(drafts
        .into_iter()
        .map(|d| d.build(base_dir, listen, 0))
        .collect())
}

/// The `inet_listener` blocks of `service SERVICE` (e.g. `imap-login`), merged by name; a
/// listener whose blocks set no `port` gets `default_port(name)` (Dovecot's own defaults,
/// such as 143 for `imap`). Addresses default to `listen`. Only listeners the config names
/// are returned; a `port = 0` one is returned with port 0 (disabled).
pub fn inet_listeners(
    root: &Section,
    service: &str,
    listen: &str,
    default_port: impl Fn(&str) -> u16,
) -> Result<Vec<Listener>, ConfigError> {
    let mut drafts = Vec::new();
    merge_blocks(root, service, &["inet_listener"], &mut drafts)?;
    Ok(drafts
        .into_iter()
        .map(|d| {
            let port = default_port(&d.name);
            d.build(Path::new(""), listen, port)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_listeners_of_a_login_service() {
        let cfg = Config::parse_str(
            "service imap-login {\n inet_listener imap {\n address = 127.0.0.5\n }\n\
             inet_listener imaps {\n port = 0\n }\n}\n\
             service imap-login {\n inet_listener imap {\n port = 1143\n }\n\
             inet_listener other {\n ssl = yes\n }\n}\n",
            "t.conf",
        )
        .unwrap();
        let default = |name: &str| if name == "imaps" { 993 } else { 143 };
        let got = inet_listeners(cfg.root(), "imap-login", "*, ::", default).unwrap();
        let inet: Vec<(&str, Vec<String>, u16, bool)> = got
            .iter()
            .map(|l| match &l.transport {
                ListenerTransport::Inet {
                    addresses,
                    port,
                    ssl,
                    ..
                } => (l.name.as_str(), addresses.clone(), *port, *ssl),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            inet,
            vec![
                ("imap", vec!["127.0.0.5".to_string()], 1143, false),
                ("imaps", vec!["*".to_string(), "::".to_string()], 0, false),
                ("other", vec!["*".to_string(), "::".to_string()], 143, true),
            ],
            "repeated blocks merge by name; an unset port takes the default"
        );
        let bad = Config::parse_str(
            "service pop3-login {\n inet_listener pop3 {\n port = x\n }\n}\n",
            "t.conf",
        )
        .unwrap();
        let e = inet_listeners(bad.root(), "pop3-login", "*", |_| 110).unwrap_err();
        assert!(e.to_string().contains("Invalid port"), "{e}");
    }

    #[test]
    fn listen_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(parse_listen_address("*"), ip("0.0.0.0"));
        assert_eq!(parse_listen_address("::"), ip("::"));
        assert_eq!(parse_listen_address("[::]"), ip("::"));
        assert_eq!(parse_listen_address("127.0.0.5"), ip("127.0.0.5"));
        assert_eq!(parse_listen_address("[::1]"), ip("::1"));
        assert_eq!(parse_listen_address("mail.example.com"), None);
        for w in ["*", "::", "[::]", "0.0.0.0", "0:0::0"] {
            assert!(is_wildcard_address(w), "{w}");
        }
        for w in ["127.0.0.1", "::1", "10.0.0.1", "mail.example.com"] {
            assert!(!is_wildcard_address(w), "{w}");
        }
    }

    #[test]
    fn socket_types() {
        assert_eq!(
            socket_type_for("unix_listener", "director-admin"),
            SocketType::Admin
        );
        assert_eq!(
            socket_type_for("inet_listener", "director-doveadm"),
            SocketType::Admin
        );
        assert_eq!(
            socket_type_for("unix_listener", "login/director"),
            SocketType::Auth
        );
        assert_eq!(
            socket_type_for("unix_listener", "director-userdb"),
            SocketType::Userdb
        );
        assert_eq!(socket_type_for("inet_listener", ""), SocketType::Ring);
        assert_eq!(
            socket_type_for("inet_listener", "director-auth-http"),
            SocketType::AuthHttp
        );
        assert_eq!(
            socket_type_for("inet_listener", "director-metrics"),
            SocketType::Metrics
        );
        assert_eq!(
            socket_type_for("inet_listener", "director"),
            SocketType::Ring
        );
        assert_eq!(
            socket_type_for("fifo_listener", "login/proxy-notify"),
            SocketType::Notify
        );
        assert_eq!(
            socket_type_for("unix_listener", "x-authreply"),
            SocketType::AuthReply
        );
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0600"), Some(0o600));
        assert_eq!(parse_mode("00"), Some(0));
        assert_eq!(parse_mode("0666"), Some(0o666));
        assert_eq!(parse_mode("rw"), None);
        assert_eq!(parse_mode("0800"), None);
    }
}
