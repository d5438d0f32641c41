//! ManageSieve glue: [`SieveLogin`] / [`SieveBackend`] in the generic driver.

use director_mailproto::managesieve::{
    SieveBackend, SieveBackendConfig, SieveLogin, SieveLoginConfig, SieveLoginRequest,
};
use director_mailproto::ConnInfo;

use crate::session::{LoginTls, ProtocolGlue};
use crate::settings::{Protocol, ProxySettings};

/// ManageSieve protocol glue.
pub(crate) struct Sieve;

impl ProtocolGlue for Sieve {
    type Login = SieveLogin;
    type Backend = SieveBackend;

    fn protocol(&self) -> Protocol {
        Protocol::ManageSieve
    }

    fn login_machine(&self, settings: &ProxySettings, tls: LoginTls) -> SieveLogin {
        let cfg = SieveLoginConfig {
            greeting: settings.login_greeting.clone(),
            tls_available: tls.available,
            disable_plaintext_auth: settings.plaintext_auth_disabled(),
            ..SieveLoginConfig::default()
        };
        SieveLogin::new(cfg, tls.active, tls.secured)
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
