//! IMAP glue: the mailproto machines ([`ImapLogin`], [`ImapBackend`]) plugged into the
//! generic driver. The backend gets the client's address through `ID` (`x-originating-ip`,
//! `x-originating-port`, `x-connected-ip`, `x-connected-port`), which Dovecot honours from
//! `login_trusted_networks`.

use director_mailproto::imap::{
    ImapBackend, ImapBackendConfig, ImapLogin, ImapLoginConfig, ImapLoginRequest,
};
use director_mailproto::ConnInfo;

use crate::session::{LoginTls, ProtocolGlue};
use crate::settings::{Protocol, ProxySettings};

/// IMAP protocol glue.
pub(crate) struct Imap;

impl ProtocolGlue for Imap {
    type Login = ImapLogin;
    type Backend = ImapBackend;

    fn protocol(&self) -> Protocol {
        Protocol::Imap
    }

    fn login_machine(&self, settings: &ProxySettings, tls: LoginTls) -> ImapLogin {
        let cfg = ImapLoginConfig {
            greeting: settings.login_greeting.clone(),
            tls_available: tls.available,
            disable_plaintext_auth: settings.plaintext_auth_disabled(),
            ..ImapLoginConfig::default()
        };
        ImapLogin::new(cfg, tls.active, tls.secured)
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
