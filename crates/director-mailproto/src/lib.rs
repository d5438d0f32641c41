//! Sans-I/O pre-authentication state machines for the director's built-in mail
//! proxy (DIRECTOR-SPEC §7.5).
//!
//! The director answers a client's pre-login conversation itself, learns the
//! credentials, lets the core pick the user's backend, replays the credentials
//! to that backend (the backend gives the verdict: the director stores no
//! passwords) and then splices bytes. Everything protocol-specific lives here,
//! with no tokio and no sockets: every machine is fed bytes and returns
//! actions, so the proxy is a thin driver and every parser is fuzzable.
//!
//! The reply texts were recorded from the real Dovecot 2.3.19 login processes
//! (`imap-login`, `pop3-login`, `submission-login`, `managesieve-login`) and the
//! LMTP proxy, run on loopback; see `tests/data/oracle/`.
//!
//! Modules:
//! * [`imap`] — client side ([`imap::ImapLogin`]) and backend side
//!   ([`imap::ImapBackend`]).
//! * [`pop3`] — [`pop3::Pop3Login`], [`pop3::Pop3Backend`].
//! * [`smtp`] — Submission: [`smtp::SubmissionLogin`], [`smtp::SubmissionBackend`].
//! * [`managesieve`] — [`managesieve::SieveLogin`], [`managesieve::SieveBackend`].
//! * [`lmtp`] — [`lmtp::LmtpServer`] and the per-transaction fan-out
//!   ([`lmtp::plan_fanout`], [`lmtp::LmtpBackendSession`], [`lmtp::merge_replies`]).
//! * [`sasl`] — PLAIN and LOGIN, base64 with limits.
//! * [`proxy_v2`] — HAProxy PROXY v2 header encoder.
//! * Shared: [`action`] (what machines ask the driver to do), [`line`](mod@line)
//!   (bounded line framing), [`session`] (connection facts and credentials),
//!   [`routing`] (which name the core hashes).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod imap;
pub mod line;
pub mod lmtp;
mod login;
pub mod managesieve;
pub mod pop3;
pub mod proxy_v2;
pub mod routing;
pub mod sasl;
pub mod session;
pub mod smtp;

pub use action::{Action, BackendAction, BackendFailure, LoginFailure};
pub use session::{ConnInfo, Credentials, Mechanism};
