//! ManageSieve (RFC 5804): the pre-login side facing the client
//! ([`SieveLogin`], what `managesieve-login` does) and the login replay
//! facing the backend ([`SieveBackend`]).
//!
//! Recorded from Dovecot 2.3.19 (Pigeonhole) managesieve-login proxying: after
//! the backend's capability greeting (which lists `"XCLIENT"`), it sends
//! `XCLIENT ADDR=… PORT=… SESSION=… TTL=4`, waits for `OK "Updated"`, then
//! `AUTHENTICATE "PLAIN" "<base64 user\0user\0pass>"` and relays the answer.

pub mod backend;
pub mod login;

pub use backend::{SieveBackend, SieveBackendConfig};
pub use login::{Sieve, SieveLogin, SieveLoginConfig, SieveLoginRequest};

/// Bad commands after which the connection is closed (the third gets only
/// `BYE "Too many invalid MANAGESIEVE commands."`, recorded).
pub const MAX_BAD_COMMANDS: u32 = 3;

/// Longest backend line during the replay.
pub const MAX_BACKEND_LINE: usize = 8192;

use crate::connection::ConnInfo;
use crate::machine::{impl_machines, BackendSetup, LoginProtocol, LoginSetup};
use crate::protocol::Protocol;

impl_machines!(SieveLogin, SieveLoginRequest, SieveBackend);

/// ManageSieve, for the proxy.
impl LoginProtocol for Sieve {
    type Login = SieveLogin;
    type Backend = SieveBackend;
    const PROTOCOL: Protocol = Protocol::ManageSieve;

    fn login_machine(setup: &LoginSetup) -> SieveLogin {
        let cfg = SieveLoginConfig {
            greeting: setup.greeting.clone(),
            tls_available: setup.tls_available,
            disable_plaintext_auth: setup.disable_plaintext_auth,
            ..SieveLoginConfig::default()
        };
        SieveLogin::new(cfg, setup.tls_active, setup.secured).with_trusted(setup.trusted)
    }

    fn backend_machine(
        req: SieveLoginRequest,
        conn: ConnInfo,
        setup: &BackendSetup,
    ) -> SieveBackend {
        let cfg = SieveBackendConfig {
            starttls: setup.starttls,
            ..SieveBackendConfig::default()
        };
        SieveBackend::new(cfg, conn, req.credentials)
    }
}
