//! POP3: the pre-login side facing the client ([`Pop3Login`], what
//! `pop3-login` does) and the login replay facing the backend ([`Pop3Backend`]).
//!
//! Recorded from Dovecot 2.3.19's pop3-login proxy: after the backend's
//! `+OK [XCLIENT] …` greeting it pipelines `XCLIENT ADDR=… PORT=… SESSION=…
//! TTL=4` with `USER <name>`, waits for `+OK Updated` and `+OK`, then sends
//! `PASS <password>` and relays the backend's answer. It uses USER/PASS even
//! when the client logged in with `AUTH PLAIN`.

pub mod backend;
pub mod login;

pub use backend::{xclient_line, Pop3Backend, Pop3BackendConfig, Pop3BackendLogin};
pub use login::{Pop3, Pop3Login, Pop3LoginConfig, Pop3LoginRequest};

/// Longest command line (Dovecot's 1 KiB login input buffer; past it
/// pop3-login answers `-ERR Input buffer full, aborting` and disconnects).
pub const MAX_LINE: usize = 1024;

/// Bad commands after which the connection is closed.
pub const MAX_BAD_COMMANDS: u32 = 3;

/// Longest backend reply line during the replay.
pub const MAX_BACKEND_LINE: usize = 8192;

/// Capability lines Dovecot 2.3.19 lists before `STLS`/`USER`/`SASL`.
pub const DEFAULT_CAPA: &[&str] = &[
    "CAPA",
    "TOP",
    "UIDL",
    "RESP-CODES",
    "PIPELINING",
    "AUTH-RESP-CODE",
];

use crate::connection::ConnInfo;
use crate::machine::{impl_machines, BackendSetup, LoginProtocol, LoginSetup};
use crate::protocol::Protocol;

impl_machines!(Pop3Login, Pop3LoginRequest, Pop3Backend);

/// POP3, for the proxy. The backend gets the client's address through `XCLIENT` when its
/// greeting advertises it (Dovecot does for `login_trusted_networks`).
impl LoginProtocol for Pop3 {
    type Login = Pop3Login;
    type Backend = Pop3Backend;
    const PROTOCOL: Protocol = Protocol::Pop3;

    fn login_machine(setup: &LoginSetup) -> Pop3Login {
        let cfg = Pop3LoginConfig {
            greeting: setup.greeting.clone(),
            tls_available: setup.tls_available,
            disable_plaintext_auth: setup.disable_plaintext_auth,
            ..Pop3LoginConfig::default()
        };
        Pop3Login::new(cfg, setup.tls_active, setup.secured).with_trusted(setup.trusted)
    }

    fn backend_machine(req: Pop3LoginRequest, conn: ConnInfo, setup: &BackendSetup) -> Pop3Backend {
        let cfg = Pop3BackendConfig {
            starttls: setup.starttls,
            ..Pop3BackendConfig::default()
        };
        Pop3Backend::new(cfg, conn, req.credentials)
    }
}
