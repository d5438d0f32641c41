//! POP3 glue: the mailproto machines ([`Pop3Login`], [`Pop3Backend`]) plugged into the
//! generic driver. The backend gets the client's address through `XCLIENT` when its
//! greeting advertises it (Dovecot does for `login_trusted_networks`).

use director_mailproto::pop3::{
    Pop3Backend, Pop3BackendConfig, Pop3Login, Pop3LoginConfig, Pop3LoginRequest,
};
use director_mailproto::routing::routing_user;
use director_mailproto::ConnInfo;

use crate::session::ProtocolGlue;
use crate::settings::{ClientTlsMode, Protocol, ProxySettings};

/// POP3 protocol glue.
pub(crate) struct Pop3;

/// The pre-login machine for a new POP3 connection.
pub(crate) fn login_machine(
    settings: &ProxySettings,
    tls_available: bool,
    tls_active: bool,
    secured: bool,
) -> Pop3Login {
    let cfg = Pop3LoginConfig {
        greeting: settings.login_greeting.clone(),
        tls_available,
        disable_plaintext_auth: settings.disable_plaintext_auth
            || settings.client_tls == ClientTlsMode::Required,
        ..Pop3LoginConfig::default()
    };
    Pop3Login::new(cfg, tls_active, secured)
}

impl ProtocolGlue for Pop3 {
    type Login = Pop3Login;
    type Backend = Pop3Backend;

    fn protocol(&self) -> Protocol {
        Protocol::Pop3
    }

    fn username(&self, req: &Pop3LoginRequest, settings: &ProxySettings) -> Vec<u8> {
        routing_user(&req.credentials, &settings.master_user_separator)
    }

    fn backend(&self, req: Pop3LoginRequest, conn: ConnInfo, starttls: bool) -> Pop3Backend {
        let cfg = Pop3BackendConfig {
            starttls,
            ..Pop3BackendConfig::default()
        };
        Pop3Backend::new(cfg, conn, req.credentials)
    }

    fn backend_lost(&self) -> &'static [u8] {
        b"-ERR [SYS/TEMP] Lost connection to the mail server.\r\n"
    }
}
