//! ManageSieve glue: [`SieveLogin`] / [`SieveBackend`] in the generic driver.

use director_mailproto::managesieve::{
    SieveBackend, SieveBackendConfig, SieveLogin, SieveLoginConfig, SieveLoginRequest,
};
use director_mailproto::routing::routing_user;
use director_mailproto::ConnInfo;

use crate::session::ProtocolGlue;
use crate::settings::{ClientTlsMode, Protocol, ProxySettings};

/// ManageSieve protocol glue.
pub(crate) struct Sieve;

/// The pre-login machine for a new ManageSieve connection.
pub(crate) fn login_machine(
    settings: &ProxySettings,
    tls_available: bool,
    tls_active: bool,
    secured: bool,
) -> SieveLogin {
    let cfg = SieveLoginConfig {
        greeting: settings.login_greeting.clone(),
        tls_available,
        disable_plaintext_auth: settings.disable_plaintext_auth
            || settings.client_tls == ClientTlsMode::Required,
        ..SieveLoginConfig::default()
    };
    SieveLogin::new(cfg, tls_active, secured)
}

impl ProtocolGlue for Sieve {
    type Login = SieveLogin;
    type Backend = SieveBackend;

    fn protocol(&self) -> Protocol {
        Protocol::ManageSieve
    }

    fn username(&self, req: &SieveLoginRequest, settings: &ProxySettings) -> Vec<u8> {
        routing_user(&req.credentials, &settings.master_user_separator)
    }

    fn backend(&self, req: SieveLoginRequest, conn: ConnInfo, starttls: bool) -> SieveBackend {
        let cfg = SieveBackendConfig {
            starttls,
            ..SieveBackendConfig::default()
        };
        SieveBackend::new(cfg, conn, req.credentials)
    }

    fn backend_lost(&self) -> &'static [u8] {
        b"BYE \"Lost connection to the mail server.\"\r\n"
    }
}
