//! POP3 glue: the mailproto machines ([`Pop3Login`], [`Pop3Backend`]) plugged into the
//! generic driver. The backend gets the client's address through `XCLIENT` when its
//! greeting advertises it (Dovecot does for `login_trusted_networks`).

use director_mailproto::pop3::{
    Pop3Backend, Pop3BackendConfig, Pop3Login, Pop3LoginConfig, Pop3LoginRequest,
};
use director_mailproto::ConnInfo;

use crate::session::{LoginTls, ProtocolGlue};
use crate::settings::{Protocol, ProxySettings};

/// POP3 protocol glue.
pub(crate) struct Pop3;

impl ProtocolGlue for Pop3 {
    type Login = Pop3Login;
    type Backend = Pop3Backend;

    fn protocol(&self) -> Protocol {
        Protocol::Pop3
    }

    fn login_machine(&self, settings: &ProxySettings, tls: LoginTls) -> Pop3Login {
        let cfg = Pop3LoginConfig {
            greeting: settings.login_greeting.clone(),
            tls_available: tls.available,
            disable_plaintext_auth: settings.plaintext_auth_disabled(),
            ..Pop3LoginConfig::default()
        };
        Pop3Login::new(cfg, tls.active, tls.secured)
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
