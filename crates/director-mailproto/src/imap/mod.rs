//! IMAP: the pre-login side facing the client ([`ImapLogin`]) and the login
//! replay facing the backend ([`ImapBackend`]), over a shared command parser
//! ([`parse`]).

pub mod backend;
pub mod login;
pub mod parse;

pub use backend::{BackendLoginMethod, ImapBackend, ImapBackendConfig};
pub use login::{ImapLogin, ImapLoginConfig, ImapLoginRequest};

use crate::connection::ConnInfo;
use crate::machine::{impl_machines, BackendSetup, LoginProtocol, LoginSetup};
use crate::protocol::Protocol;

// IMAP may pipeline its login ahead of the backend's greeting: its backend has a `start`.
impl_machines!(ImapLogin, ImapLoginRequest, ImapBackend, start);

/// IMAP, for the proxy. The backend gets the client's address through `ID`
/// (`x-originating-ip`, `x-originating-port`, `x-connected-ip`, `x-connected-port`), which
/// Dovecot honours from `login_trusted_networks`.
#[derive(Debug, Clone, Copy)]
pub struct Imap;

impl LoginProtocol for Imap {
    type Login = ImapLogin;
    type Backend = ImapBackend;
    const PROTOCOL: Protocol = Protocol::Imap;

    fn login_machine(setup: &LoginSetup) -> ImapLogin {
        let cfg = ImapLoginConfig {
            greeting: setup.greeting.clone(),
            tls_available: setup.tls_available,
            disable_plaintext_auth: setup.disable_plaintext_auth,
            ..ImapLoginConfig::default()
        };
        ImapLogin::new(cfg, setup.tls_active, setup.secured).with_trusted(setup.trusted)
    }

    fn backend_machine(req: ImapLoginRequest, conn: ConnInfo, setup: &BackendSetup) -> ImapBackend {
        let cfg = ImapBackendConfig {
            starttls: setup.starttls,
            ..ImapBackendConfig::default()
        };
        ImapBackend::new(cfg, conn, req)
    }
}
