//! Submission (SMTP with AUTH): the pre-login side facing the client
//! ([`SubmissionLogin`], what `submission-login` does) and the login replay
//! facing the backend ([`SubmissionBackend`]). SMTP replies are read with
//! [`crate::smtp::ReplyReader`], shared with [`crate::lmtp`].
//!
//! Recorded from Dovecot 2.3.19's submission-login proxy: `EHLO <our name>`,
//! then (if the backend advertises it) `XCLIENT HELO=<client helo> PROTO=ESMTP
//! TTL=4 PORT=… ADDR=… SESSION=…`, which makes the backend greet again
//! (`220 …`), then `EHLO` again and `AUTH PLAIN <user\0user\0pass>`; the
//! backend's `235`/`535` line is relayed to the client.

pub mod backend;
pub mod login;

pub use backend::{SubmissionBackend, SubmissionBackendConfig};
pub use login::{Submission, SubmissionLogin, SubmissionLoginConfig, SubmissionLoginRequest};

/// Longest command line. submission-login answered a 1107-byte `EHLO` with
/// `500 5.5.2 Line too long` and kept the connection; RFC 5321 allows 512,
/// we accept up to 1000 (exact Dovecot threshold not measured).
pub const MAX_LINE: usize = 1000;

/// Unknown commands tolerated; the next one gets
/// `421 4.7.0 <host> Too many invalid commands.` and the connection closes
/// (recorded: 10 × `500 5.5.1 Unknown command`, then 421).
pub const MAX_BAD_COMMANDS: u32 = 10;

/// EHLO keywords between `AUTH` and `STARTTLS`/`PIPELINING`, as Dovecot 2.3.19
/// lists them before login.
pub const DEFAULT_EXTENSIONS: &[&str] = &["BURL imap", "CHUNKING", "ENHANCEDSTATUSCODES", "SIZE"];

use crate::connection::ConnInfo;
use crate::machine::{impl_machines, BackendSetup, LoginProtocol, LoginSetup};
use crate::protocol::Protocol;

impl_machines!(SubmissionLogin, SubmissionLoginRequest, SubmissionBackend);

/// Submission, for the proxy.
impl LoginProtocol for Submission {
    type Login = SubmissionLogin;
    type Backend = SubmissionBackend;
    const PROTOCOL: Protocol = Protocol::Submission;

    fn login_machine(setup: &LoginSetup) -> SubmissionLogin {
        let cfg = SubmissionLoginConfig {
            hostname: setup.hostname.clone(),
            greeting: setup.greeting.clone(),
            tls_available: setup.tls_available,
            disable_plaintext_auth: setup.disable_plaintext_auth,
            ..SubmissionLoginConfig::default()
        };
        SubmissionLogin::new(cfg, setup.tls_active, setup.secured).with_trusted(setup.trusted)
    }

    fn backend_machine(
        req: SubmissionLoginRequest,
        conn: ConnInfo,
        setup: &BackendSetup,
    ) -> SubmissionBackend {
        let cfg = SubmissionBackendConfig {
            ehlo_name: setup.hostname.clone(),
            starttls: setup.starttls,
            ..SubmissionBackendConfig::default()
        };
        SubmissionBackend::new(cfg, conn, req)
    }
}
