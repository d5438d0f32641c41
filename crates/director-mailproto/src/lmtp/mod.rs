//! LMTP: the server side facing the MTA ([`LmtpServer`]) and the fan-out of
//! one transaction to the recipients' backends ([`plan_fanout`],
//! [`LmtpBackendSession`], [`merge_replies`]).
//!
//! Unlike the login protocols, LMTP has no credentials: each `RCPT TO`
//! names a user, the driver asks the core for that user's backend
//! ([`LmtpAction::Resolve`]), and after `DATA` the message goes to every
//! backend holding recipients. LMTP answers `DATA` with one reply per accepted
//! recipient, in RCPT order, so the per-backend replies are merged back in
//! the original order.
//!
//! Recorded from Dovecot 2.3.19's LMTP proxy (`lmtp_proxy = yes`): towards a
//! backend it sends `LHLO <hostname>`, then `XCLIENT HELO=… PROTO=LMTP
//! SESSION=… TTL=… PORT=… ADDR=…` (the backend greets again), `LHLO` again,
//! `MAIL FROM`, the `RCPT TO`s, then the body, and relays each recipient's
//! final reply (`250 2.0.0 <user1@x> <id> Saved`).

pub mod backend;
pub mod server;

pub use backend::{
    dot_stuff, DotStuffer, LmtpBackendAction, LmtpBackendConfig, LmtpBackendSession,
    REPLY_SESSION_FAILED,
};
pub use server::{
    merge_replies, plan_fanout, LmtpAction, LmtpServer, LmtpServerConfig, Recipient, SessionPlan,
    Transaction, LMTP_PROXY_DEFAULT_TTL, REPLY_DATA_TIMEOUT, REPLY_LOOPING, REPLY_TOO_BIG,
};

/// Longest command line. Dovecot answered a 5018-byte `MAIL FROM` with
/// `500 5.5.2 Line too long` (exact threshold not measured).
pub const MAX_LINE: usize = 4096;

/// Most recipients in one transaction (RFC 5321 requires at least 100).
pub const MAX_RECIPIENTS: usize = 1000;

/// Default largest message accepted in `DATA` (bytes, after un-stuffing).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Longest body line accepted in DATA. RFC 5321 says 1000; real mail breaks
/// that, so allow much more but keep it bounded.
pub const MAX_DATA_LINE: usize = 1024 * 1024;
