//! Dovecot's configuration syntax and the director's settings.
//!
//! An operator's existing `dovecot.conf` / `conf.d/10-director.conf` works
//! unchanged: settings keep Dovecot's names, defaults and value syntax
//! (checked against the real `doveconf` 2.3.19.1).
//!
//! Public API:
//! * [`Config`] — the parsed file tree: [`Config::load`],
//!   [`Config::parse_str`], [`Config::apply_override`] (`-o key=value`),
//!   [`Config::get`] (raw top-level value), [`Config::root`] (the
//!   [`Section`] tree for other services' settings),
//!   [`Config::warnings`], [`Config::default_standalone`].
//! * [`DirectorSettings`] — validated settings:
//!   [`DirectorSettings::from_config`] (and `_with_resolver`), public fields
//!   (`base_dir`, `mail_servers: Vec<MailServer>`, `director_servers`,
//!   `user_expire_secs`, `output_buffer_size`, `admin_listeners`,
//!   `ring_listener`, `ignored`, ...).
//! * [`MailServer`], [`DirectorServer`], [`Resolver`], [`SystemResolver`],
//!   [`parse_mail_servers`], [`parse_director_servers`].
//! * [`Listener`], [`ListenerTransport`], [`SocketType`].
//! * [`units`] — Dovecot time/size values: `parse_time_secs`,
//!   `parse_size_bytes`, `format_time_secs`, `format_size_bytes`.
//! * [`print_non_default`] — a `doveconf -n`-like dump.
//! * [`DEFAULT_CONFIG`] — the built-in standalone config of `directord`.
//! * [`ConfigError`] — `path:line: message`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod catalog;
mod config;
mod defaults;
mod error;
mod listeners;
pub mod nets;
mod parser;
mod printer;
mod servers;
mod settings;
mod tree;
pub mod units;

pub use catalog::{markdown_table, setting, Kind, Part, SettingDef, Values, SETTINGS};
pub use config::Config;
pub use defaults::{
    default_standalone_base_dir, dovecot_default, is_dovecot_setting, DEFAULT_CONFIG,
};
pub use error::{ConfigError, Location};
pub use listeners::{
    inet_listeners, is_wildcard_address, parse_listen_address, socket_type_for, Listener,
    ListenerTransport, SocketType, DEFAULT_LISTENER_MODE,
};
pub use nets::{parse_nets, IpNet};
pub use parser::{
    UnresolvedVariable, MAX_FILE_SIZE, MAX_INCLUDED_FILES, MAX_INCLUDE_DEPTH, MAX_LINE_LEN,
    MAX_SECTION_DEPTH,
};
pub use printer::print_non_default;
pub use servers::{
    format_mail_server, parse_director_servers, parse_mail_servers, DirectorServer, MailServer,
    Resolver, SystemResolver, MAX_MAIL_SERVERS,
};
pub use settings::{
    director_default, is_director_key, parse_bool, parse_u32_setting, AdminTls, DirectorSettings,
    IgnoredSetting, MIN_USER_EXPIRE_SECS,
};
pub use tree::{Item, Section, Setting};
