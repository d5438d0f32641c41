//! IMAP glue: the mailproto machines ([`ImapLogin`], [`ImapBackend`]) plugged into the
//! generic driver. The backend gets the client's address through `ID` (`x-originating-ip`,
//! `x-originating-port`, `x-connected-ip`, `x-connected-port`), which Dovecot honours from
//! `login_trusted_networks`.

use director_mailproto::imap::{
    ImapBackend, ImapBackendConfig, ImapLogin, ImapLoginConfig, ImapLoginRequest,
};
use director_mailproto::routing::routing_user;
use director_mailproto::ConnInfo;

use crate::session::ProtocolGlue;
use crate::settings::{ClientTlsMode, Protocol, ProxySettings};

/// IMAP protocol glue.
pub(crate) struct Imap;

/// The pre-login machine for a new IMAP connection.
pub(crate) fn login_machine(
    settings: &ProxySettings,
    tls_available: bool,
    tls_active: bool,
    secured: bool,
) -> ImapLogin {
    let cfg = ImapLoginConfig {
        greeting: settings.login_greeting.clone(),
        tls_available,
        disable_plaintext_auth: settings.disable_plaintext_auth
            || settings.client_tls == ClientTlsMode::Required,
        ..ImapLoginConfig::default()
    };
    ImapLogin::new(cfg, tls_active, secured)
}

impl ProtocolGlue for Imap {
    type Login = ImapLogin;
    type Backend = ImapBackend;

    fn protocol(&self) -> Protocol {
        Protocol::Imap
    }

    fn username(&self, req: &ImapLoginRequest, settings: &ProxySettings) -> Vec<u8> {
        routing_user(&req.credentials, &settings.master_user_separator)
    }

    fn backend(&self, req: ImapLoginRequest, conn: ConnInfo, starttls: bool) -> ImapBackend {
        let cfg = ImapBackendConfig {
            starttls,
            ..ImapBackendConfig::default()
        };
        ImapBackend::new(cfg, conn, req)
    }

    fn backend_lost(&self) -> &'static [u8] {
        b"* BYE [UNAVAILABLE] Lost connection to the mail server.\r\n"
    }
}
