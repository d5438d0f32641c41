//! Sans-I/O codecs for the Dovecot director's wire protocols: bytes in,
//! typed messages out, and back. No tokio, no sockets; every parser has hard
//! limits and never panics (proptests here, fuzz targets in `/fuzz`).
//!
//! Public API:
//! * [`tabescape`] — Dovecot tab-escaping on bytes: [`tabescape::escape`],
//!   [`tabescape::unescape`], [`tabescape::split_fields`],
//!   [`tabescape::join_fields`].
//! * [`line`](mod@line) — bounded LF framing: [`line::LineBuffer`] (`feed`/`spare_mut`+`commit`,
//!   `next_line`), [`line::LineTooLong`], [`line::ADMIN_MAX_LINE_LEN`],
//!   [`line::cut_at_nul`].
//! * [`value`] — Dovecot scalar parsers: [`value::parse_ip`] (`net_addr2ip`,
//!   inet_aton rules), [`value::parse_uint`], [`value::parse_port`],
//!   [`value::parse_u64`], [`value::parse_time`], [`value::format_ip`], [`value::ip_cmp`].
//! * [`admin`] — the admin protocol: [`admin::SERVER_GREETING`],
//!   [`admin::check_client_handshake`], [`admin::AdminRequest`],
//!   [`admin::parse_request`], [`admin::encode_request`],
//!   [`admin::AdminParseError`] (its `Display` is Dovecot's log text),
//!   [`admin::AdminReply`] (`encode`), [`admin::ReplyReader`] (client).
//! * [`flush_script`] — `director_flush_socket`: [`flush_script::expand_flush_socket`],
//!   [`flush_script::parse_flush_uri`] → [`flush_script::FlushTarget`],
//!   [`flush_script::FlushArgs`], [`flush_script::encode_script_request`],
//!   [`flush_script::ScriptResultReader`].
//! * [`auth_master`] — client side of Dovecot's auth-master protocol (user
//!   iteration for `doveadm director map`): [`auth_master::UserListSession`],
//!   [`auth_master::encode_request`], [`auth_master::parse_reply`].
//! * [`auth_http`] — nginx's mail `auth_http` protocol: [`auth_http::RequestReader`]
//!   (bounded: [`auth_http::MAX_LINE_LEN`], [`auth_http::MAX_HEADERS`],
//!   [`auth_http::MAX_REQUEST_LEN`]), [`auth_http::AuthRequest`],
//!   [`auth_http::encode_response`].
//! * [`ring`] — the director ↔ director ring protocol 1.9:
//!   [`ring::RingMessage`], [`ring::parse()`]/[`ring::parse_in`],
//!   [`ring::RingMessage::encode_into`], [`ring::RingDecoder`] (bounded
//!   framing), [`ring::RING_MAX_LINE_LEN`], [`ring::DEFAULT_OUTPUT_BUFFER_SIZE`].
//! * [`state_file`] — the saved-state file (`state_dir/director-state`):
//!   [`state_file::encode`], [`state_file::decode`] (bounded, self-checking:
//!   [`state_file::StateFileError`] says what and where).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod admin;
pub mod auth_http;
pub mod auth_master;
pub mod flush_script;
pub mod line;
pub mod log_text;
pub mod ring;
pub mod state_file;
pub mod tabescape;
pub mod value;
