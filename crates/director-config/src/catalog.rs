//! The settings catalogue: every setting the director reads, in one table.
//!
//! Each row says the setting's name, its default (Dovecot 2.3.19's for Dovecot's names, ours
//! for the `director_*` names Dovecot has no equivalent of), what kind of value it takes,
//! which part of the director reads it, and what it means. Everything else is derived from
//! this table: which `director_*` names are known (a typo is an error), the defaults that
//! [`Values`] falls back to, which values `directord -n` normalises as times and sizes, and
//! the settings tables of the README (`directord --settings-table PART` prints them; a test
//! checks that the README shows the same).
//!
//! Adding a setting: one row here, then read it where it is used ([`Values`] returns it
//! typed, with the row's default), then paste the new table into the README.

use std::time::Duration;

use crate::error::ConfigError;
use crate::tree::Section;
use crate::units::{parse_size_bytes, parse_time_msecs, parse_time_secs};

/// What kind of value a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text (its reader checks it).
    Text,
    /// A time interval (`30 secs`, `1 min`); read in seconds.
    Time,
    /// A time interval that may be given in milliseconds (`200 ms`, `5 secs`).
    TimeMsecs,
    /// A size (`10 M`); read in bytes.
    Size,
    /// An unsigned 32-bit number.
    Number,
    /// Dovecot's boolean (`yes`/`no`).
    Boolean,
    /// Text that must never be printed (a private key).
    Secret,
}

/// Which part of the director reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The director itself: hashing, hosts, users, moves, logs, the ring.
    Director,
    /// The built-in mail proxy.
    Proxy,
    /// The admin listeners.
    Admin,
    /// The nginx `auth_http` listener.
    AuthHttp,
    /// The Prometheus metrics listener.
    Metrics,
}

impl Part {
    /// Every part, in README order.
    pub const ALL: [Part; 5] = [
        Part::Director,
        Part::Proxy,
        Part::Admin,
        Part::AuthHttp,
        Part::Metrics,
    ];

    /// The name `directord --settings-table` takes.
    pub fn name(self) -> &'static str {
        match self {
            Part::Director => "director",
            Part::Proxy => "proxy",
            Part::Admin => "admin",
            Part::AuthHttp => "auth-http",
            Part::Metrics => "metrics",
        }
    }

    /// The part named `name`.
    pub fn from_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDef {
    /// The name in the config file.
    pub key: &'static str,
    /// The value when the config does not set it.
    pub default: &'static str,
    /// What kind of value it takes.
    pub kind: Kind,
    /// Who reads it.
    pub part: Part,
    /// Dovecot has no setting of this name: it is ours.
    pub ours: bool,
    /// What it means, in one line (the README's text).
    pub doc: &'static str,
}

const fn def(
    key: &'static str,
    default: &'static str,
    kind: Kind,
    part: Part,
    ours: bool,
    doc: &'static str,
) -> SettingDef {
    SettingDef {
        key,
        default,
        kind,
        part,
        ours,
        doc,
    }
}

use Kind::{Boolean, Number, Secret, Size, Text, Time, TimeMsecs};
use Part::{Admin, AuthHttp, Director, Metrics, Proxy};

/// Every setting the director reads.
pub const SETTINGS: &[SettingDef] = &[
    // The director.
    def(
        "base_dir",
        "/run/dovecot",
        Text,
        Director,
        false,
        "the admin socket `director-admin` lives here",
    ),
    def(
        "instance_name",
        "dovecot",
        Text,
        Director,
        false,
        "the instance's name (Dovecot's)",
    ),
    def(
        "log_path",
        "syslog",
        Text,
        Director,
        false,
        "where errors are logged (`syslog`, a file, `/dev/stderr`)",
    ),
    def(
        "info_log_path",
        "",
        Text,
        Director,
        false,
        "where informational messages go (empty: as `log_path`)",
    ),
    def(
        "debug_log_path",
        "",
        Text,
        Director,
        false,
        "where debug messages go (empty: as `info_log_path`)",
    ),
    def(
        "listen",
        "*, ::",
        Text,
        Director,
        false,
        "addresses of `inet_listener`s that name none",
    ),
    def(
        "state_dir",
        "/var/lib/dovecot",
        Text,
        Director,
        false,
        "the hosts and user assignments are saved to `director-state` here",
    ),
    def(
        "director_state_save_interval",
        "5 secs",
        Time,
        Director,
        true,
        "save the state this often when it changed (and at shutdown); `0`: never save or restore it",
    ),
    def(
        "director_servers",
        "",
        Text,
        Director,
        false,
        "other directors; empty (or only ourselves) = standalone",
    ),
    def(
        "director_mail_servers",
        "",
        Text,
        Director,
        false,
        "backends: IPs, ranges `a-b`, host names (every address), `@tag`",
    ),
    def(
        "director_username_hash",
        "%Lu",
        Text,
        Director,
        false,
        "what is hashed (`%u %n %d`, modifiers, offsets)",
    ),
    def(
        "director_user_expire",
        "15 mins",
        Time,
        Director,
        false,
        "how long an assignment outlives the last connection",
    ),
    def(
        "director_user_kick_delay",
        "2 secs",
        Time,
        Director,
        false,
        "wait after killing a moved user's sessions",
    ),
    def(
        "director_flush_socket",
        "",
        Text,
        Director,
        false,
        "`exec:`, `unix:` or `tcp:` flush program run after a move",
    ),
    def(
        "director_ping_idle_timeout",
        "30 secs",
        Time,
        Director,
        false,
        "ring: ping a quiet peer after this long",
    ),
    def(
        "director_ping_max_timeout",
        "1 mins",
        Time,
        Director,
        false,
        "ring: give up on a peer that has not answered",
    ),
    def(
        "director_max_parallel_moves",
        "100",
        Number,
        Director,
        false,
        "moves in flight during `flush`",
    ),
    def(
        "director_max_parallel_kicks",
        "100",
        Number,
        Director,
        false,
        "kicks in flight",
    ),
    def(
        "director_output_buffer_size",
        "10 M",
        Size,
        Director,
        false,
        "ring: most bytes queued for one peer",
    ),
    def(
        "auth_master_user_separator",
        "",
        Text,
        Director,
        false,
        "master-user logins are routed by the part before it",
    ),
    def(
        "master_user_separator",
        "",
        Text,
        Director,
        false,
        "Dovecot 2.3.19's older name of `auth_master_user_separator`",
    ),
    def(
        "director_health_check_interval",
        "0",
        TimeMsecs,
        Director,
        true,
        "probe every backend this often (TCP connect and greeting per protocol); `0`: no health checks",
    ),
    def(
        "director_health_check_timeout",
        "5 secs",
        TimeMsecs,
        Director,
        true,
        "a probe that has not connected and read the greeting by then fails",
    ),
    def(
        "director_health_check_fails",
        "3",
        Number,
        Director,
        true,
        "failed rounds in a row before a host is marked down (as `doveadm director down`)",
    ),
    def(
        "director_health_check_successes",
        "2",
        Number,
        Director,
        true,
        "good rounds in a row before a host the checker marked down is marked up again",
    ),
    def(
        "director_health_check_hold_down",
        "1 min",
        TimeMsecs,
        Director,
        true,
        "the checker changes a host's state at most once per this period (no flapping)",
    ),
    def(
        "director_health_check_protocols",
        "",
        Text,
        Director,
        true,
        "protocols probed (`imap pop3 submission sieve lmtp`); empty: those of the proxy's listeners, else `imap`",
    ),
    def(
        "director_health_check_user",
        "",
        Text,
        Director,
        true,
        "when set, the IMAP, POP3, Submission and ManageSieve probes also log in as this user (`LOGIN`, `USER`/`PASS`, `AUTH PLAIN`, `AUTHENTICATE \"PLAIN\"`) and fail unless the backend accepts it",
    ),
    def(
        "director_health_check_password",
        "",
        Secret,
        Director,
        true,
        "the password of `director_health_check_user`",
    ),
    def(
        "director_health_check_ssl",
        "",
        Text,
        Director,
        true,
        "TLS of the probes: `no`, `yes` (implicit TLS) or `starttls`, verified with `ssl_client_ca_file` as the proxy's backend connections are; empty: as `director_backend_ssl`. LMTP probes are plaintext, as the proxy's LMTP is",
    ),
    def(
        "director_health_check_flush",
        "no",
        Boolean,
        Director,
        true,
        "also flush a host's users when the checker marks it down (as poolmon did)",
    ),
    def(
        "director_consistent_hashing",
        "yes",
        Boolean,
        Director,
        true,
        "`no` selects Dovecot 2.2's modulo mode for 2.2 migrations",
    ),
    // The built-in mail proxy: Dovecot's names.
    def("protocols", "", Text, Proxy, false, "when set, only these protocols' listeners are served (unset: every protocol with a listener)"),
    def(
        "ssl",
        "yes",
        Text,
        Proxy,
        false,
        "client TLS: `no`, `yes` (offered) or `required`",
    ),
    def(
        "ssl_cert",
        "",
        Text,
        Proxy,
        false,
        "our certificate chain (`</path`)",
    ),
    def(
        "ssl_key",
        "",
        Secret,
        Proxy,
        false,
        "its private key (`</path`)",
    ),
    def(
        "ssl_client_ca_file",
        "",
        Text,
        Proxy,
        false,
        "the CAs that sign the backends' certificates",
    ),
    def(
        "disable_plaintext_auth",
        "yes",
        Boolean,
        Proxy,
        false,
        "refuse plaintext logins before TLS (not from trusted networks)",
    ),
    def(
        "login_trusted_networks",
        "",
        Text,
        Proxy,
        false,
        "clients whose logins count as secured and whose address backends take",
    ),
    def(
        "login_greeting",
        "Dovecot ready.",
        Text,
        Proxy,
        false,
        "the greeting text",
    ),
    def(
        "hostname",
        "localhost",
        Text,
        Proxy,
        false,
        "our name in SMTP and LMTP greetings and EHLO",
    ),
    def(
        "auth_failure_delay",
        "2 secs",
        Time,
        Proxy,
        false,
        "pause before refusing credentials the proxy itself refuses",
    ),
    def(
        "login_proxy_timeout",
        "30 secs",
        Time,
        Proxy,
        false,
        "connecting and logging in to a backend, reconnects included",
    ),
    def(
        "login_proxy_max_reconnects",
        "3",
        Number,
        Proxy,
        false,
        "reconnects to a backend that refused the connection",
    ),
    // The built-in mail proxy: ours.
    def(
        "director_backend_port_imap",
        "143",
        Number,
        Proxy,
        true,
        "the backends' IMAP port",
    ),
    def(
        "director_backend_port_pop3",
        "110",
        Number,
        Proxy,
        true,
        "the backends' POP3 port",
    ),
    def(
        "director_backend_port_submission",
        "587",
        Number,
        Proxy,
        true,
        "the backends' Submission port",
    ),
    def(
        "director_backend_port_sieve",
        "4190",
        Number,
        Proxy,
        true,
        "the backends' ManageSieve port",
    ),
    def(
        "director_backend_port_lmtp",
        "24",
        Number,
        Proxy,
        true,
        "the backends' LMTP port",
    ),
    def(
        "director_backend_ssl",
        "no",
        Text,
        Proxy,
        true,
        "TLS to the backends: `no`, `yes` (implicit TLS) or `starttls`; needs `ssl_client_ca_file`",
    ),
    def(
        "director_proxy_protocol",
        "no",
        Boolean,
        Proxy,
        true,
        "send a HAProxy PROXY v2 header to the backends (`haproxy = yes` listener there)",
    ),
    def(
        "director_proxy_login_timeout",
        "1 min",
        Time,
        Proxy,
        true,
        "accept → backend verdict (slowloris bound); LMTP idle timeout",
    ),
    def(
        "director_lmtp_max_message_size",
        "50 M",
        Size,
        Proxy,
        true,
        "largest LMTP message accepted",
    ),
    def(
        "director_lmtp_data_timeout",
        "10 mins",
        Time,
        Proxy,
        true,
        "a whole LMTP message body must arrive within this, however busy the client looks",
    ),
    def(
        "director_proxy_buffer_memory",
        "128 M",
        Size,
        Proxy,
        true,
        "buffer memory all connections together may hold beyond their fixed share (bulk splices, large LMTP transactions)",
    ),
    def(
        "director_proxy_max_connections",
        "10000",
        Number,
        Proxy,
        true,
        "client connections at once (restart to change)",
    ),
    def(
        "director_proxy_max_connections_per_ip",
        "100",
        Number,
        Proxy,
        true,
        "client connections at once from one address",
    ),
    def(
        "director_proxy_drain_time",
        "30 secs",
        Time,
        Proxy,
        true,
        "how long sessions may drain after SIGTERM",
    ),
    def(
        "director_proxy_workers",
        "0",
        Number,
        Proxy,
        true,
        "proxy worker threads (0: one per CPU, at most 1024), each accepting on its own `SO_REUSEPORT` socket (restart to change)",
    ),
    // The admin listeners.
    def(
        "ssl_ca",
        "",
        Text,
        Admin,
        false,
        "the CAs that sign admin clients' certificates (a TCP admin listener with `ssl = yes` uses `ssl_cert` and `ssl_key`)",
    ),
    def(
        "ssl_verify_client_cert",
        "no",
        Boolean,
        Admin,
        false,
        "TCP admin clients must present a certificate signed by `ssl_ca`",
    ),
    def(
        "director_admin_allow_nets",
        "127.0.0.0/8 ::1",
        Text,
        Admin,
        true,
        "networks (`IP/bits` or `IP`) a TCP admin listener serves; the ring's directors are always added; others are logged and closed without a reply",
    ),
    def(
        "director_admin_tcp_max_connections",
        "100",
        Number,
        Admin,
        true,
        "TCP admin clients served at once, a pool apart from the UNIX socket's 10,000",
    ),
    def(
        "director_admin_idle_timeout",
        "1 min",
        Time,
        Admin,
        true,
        "a TCP admin client that keeps us waiting this long (for a request, a reply to be read, or the TLS handshake) is closed; UNIX clients have none",
    ),
    // The nginx auth_http listener (`inet_listener director-auth-http`).
    def(
        "director_auth_http_allow_nets",
        "127.0.0.0/8 ::1",
        Text,
        AuthHttp,
        true,
        "networks (`IP/bits` or `IP`) the `director-auth-http` listener serves (the nginx hosts); others are logged and closed without a reply",
    ),
    def(
        "director_auth_http_max_connections",
        "1000",
        Number,
        AuthHttp,
        true,
        "auth_http requests served at once (nginx opens one connection per login); more wait in the listen backlog",
    ),
    def(
        "director_auth_http_timeout",
        "10 secs",
        Time,
        AuthHttp,
        true,
        "a client that has not sent its whole request within this time is closed without a reply",
    ),
    def(
        "director_auth_http_login_timeout",
        "30 secs",
        Time,
        AuthHttp,
        true,
        "longest wait for the director's answer (a user being moved, no host up); then nginx gets a temporary failure with `Auth-Wait`",
    ),
    def(
        "director_auth_http_wait",
        "3 secs",
        Time,
        AuthHttp,
        true,
        "the `Auth-Wait` of a temporary failure: nginx waits this long, gives the client the error and lets it retry",
    ),
    // The Prometheus metrics listener (`inet_listener director-metrics`).
    def(
        "director_metrics_allow_nets",
        "127.0.0.0/8 ::1",
        Text,
        Metrics,
        true,
        "networks (`IP/bits` or `IP`) the `director-metrics` listener serves (the Prometheus servers); others are logged and closed without a reply",
    ),
    def(
        "director_metrics_max_connections",
        "10",
        Number,
        Metrics,
        true,
        "scrapes served at once; more wait in the listen backlog",
    ),
    def(
        "director_metrics_timeout",
        "10 secs",
        Time,
        Metrics,
        true,
        "a client that has not sent its whole request, or not taken the answer, within this time is closed",
    ),
];

/// The catalogue's row for `key`.
pub fn setting(key: &str) -> Option<&'static SettingDef> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The settings table of `part` in Markdown, as the README shows it.
pub fn markdown_table(part: Part) -> String {
    let mut out = String::from("| setting | default | meaning |\n|---|---|---|\n");
    for s in SETTINGS.iter().filter(|s| s.part == part) {
        let default = if s.default.is_empty() {
            "empty".to_owned()
        } else {
            format!("`{}`", s.default)
        };
        let ours = if s.ours { "ours: " } else { "" };
        out.push_str(&format!("| `{}` | {default} | {ours}{} |\n", s.key, s.doc));
    }
    out
}

/// Typed reads of settings from a config section (normally the top level), with the
/// catalogue's defaults. An invalid value is an error naming the setting and where it was
/// set.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    section: &'a Section,
}

impl<'a> Values<'a> {
    /// Reads `section`.
    pub fn new(section: &'a Section) -> Self {
        Values { section }
    }

    /// The value as written, or the default. A key missing from the catalogue reads as
    /// empty; it is a bug, which debug builds (and so every test) stop at.
    pub fn text(&self, key: &str) -> &'a str {
        debug_assert!(
            setting(key).is_some(),
            "{key} is read but is not in the settings catalogue"
        );
        match self.section.get(key) {
            Some(v) => v,
            None => setting(key).map_or("", |s| s.default),
        }
    }

    /// Whether the config sets `key` itself.
    pub fn is_set(&self, key: &str) -> bool {
        debug_assert!(
            setting(key).is_some(),
            "{key} is read but is not in the settings catalogue"
        );
        self.section.get(key).is_some()
    }

    /// The value, or `None` when it is empty or blank.
    pub fn non_empty(&self, key: &str) -> Option<&'a str> {
        Some(self.text(key)).filter(|v| !v.trim().is_empty())
    }

    /// The error for `key`, at the line that set it.
    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        match self.section.get_setting(key) {
            Some(s) => ConfigError::at(&s.location, format!("{key}: {message}")),
            None => ConfigError::general(format!("{key} (default): {message}")),
        }
    }

    /// A time setting, in seconds.
    pub fn seconds(&self, key: &str) -> Result<u32, ConfigError> {
        parse_time_secs(self.text(key)).map_err(|m| self.error(key, m))
    }

    /// A time setting.
    pub fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        self.seconds(key).map(|s| Duration::from_secs(u64::from(s)))
    }

    /// A millisecond time setting ([`Kind::TimeMsecs`]).
    pub fn duration_msecs(&self, key: &str) -> Result<Duration, ConfigError> {
        parse_time_msecs(self.text(key))
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .map_err(|m| self.error(key, m))
    }

    /// A size setting, in bytes.
    pub fn bytes(&self, key: &str) -> Result<u64, ConfigError> {
        parse_size_bytes(self.text(key)).map_err(|m| self.error(key, m))
    }

    /// A number setting.
    pub fn number(&self, key: &str) -> Result<u32, ConfigError> {
        crate::settings::parse_u32_setting(self.text(key).trim()).map_err(|m| self.error(key, m))
    }

    /// A boolean setting.
    pub fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        crate::settings::parse_bool(self.text(key).trim()).map_err(|m| self.error(key, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name once, defaults of the right kind.
    #[test]
    fn every_row_is_consistent() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[..i].iter().all(|o| o.key != s.key),
                "{} twice",
                s.key
            );
            match s.kind {
                Kind::Time => assert!(parse_time_secs(s.default).is_ok(), "{}", s.key),
                Kind::TimeMsecs => assert!(parse_time_msecs(s.default).is_ok(), "{}", s.key),
                Kind::Size => assert!(parse_size_bytes(s.default).is_ok(), "{}", s.key),
                Kind::Number => assert!(
                    crate::settings::parse_u32_setting(s.default).is_ok(),
                    "{}",
                    s.key
                ),
                Kind::Boolean => {
                    assert!(crate::settings::parse_bool(s.default).is_ok(), "{}", s.key)
                }
                Kind::Text | Kind::Secret => {}
            }
            if !s.ours {
                assert!(
                    crate::defaults::is_dovecot_setting(s.key),
                    "{} is not a Dovecot 2.3.19 setting: mark it ours",
                    s.key
                );
            }
        }
    }

    /// Dovecot's names keep Dovecot's defaults, except where we say why.
    #[test]
    fn dovecot_names_keep_dovecots_defaults() {
        // Dovecot's `hostname` default is the system's host name; `listen` and `base_dir`
        // are what Debian's package sets; `login_greeting` is the same text without the
        // version placeholders.
        let differ = [
            "hostname",
            "listen",
            "base_dir",
            "login_greeting",
            "ssl_cert",
            "ssl_key",
        ];
        for s in SETTINGS
            .iter()
            .filter(|s| !s.ours && !differ.contains(&s.key))
        {
            let theirs = crate::defaults::dovecot_default(s.key).unwrap_or_default();
            let norm = |v: &str| match s.kind {
                Kind::Time => parse_time_secs(v).map(u64::from).ok(),
                Kind::Size => parse_size_bytes(v).ok(),
                _ => None,
            };
            if matches!(s.kind, Kind::Time | Kind::Size) {
                assert_eq!(norm(s.default), norm(theirs), "{}", s.key);
            } else {
                assert_eq!(s.default, theirs, "{}", s.key);
            }
        }
    }
}
