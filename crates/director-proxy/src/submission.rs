//! Submission glue: [`SubmissionLogin`] / [`SubmissionBackend`] in the generic driver. The
//! client's address and EHLO name reach the backend through `XCLIENT` when advertised.

use director_mailproto::routing::routing_user;
use director_mailproto::smtp::{
    SubmissionBackend, SubmissionBackendConfig, SubmissionLogin, SubmissionLoginConfig,
    SubmissionLoginRequest,
};
use director_mailproto::ConnInfo;

use crate::session::ProtocolGlue;
use crate::settings::{ClientTlsMode, Protocol, ProxySettings};

/// Submission protocol glue.
pub(crate) struct Submission {
    /// Name sent in EHLO to backends.
    pub hostname: String,
}

/// The pre-login machine for a new Submission connection.
pub(crate) fn login_machine(
    settings: &ProxySettings,
    tls_available: bool,
    tls_active: bool,
    secured: bool,
) -> SubmissionLogin {
    let cfg = SubmissionLoginConfig {
        hostname: settings.hostname.clone(),
        greeting: settings.login_greeting.clone(),
        tls_available,
        disable_plaintext_auth: settings.disable_plaintext_auth
            || settings.client_tls == ClientTlsMode::Required,
        ..SubmissionLoginConfig::default()
    };
    SubmissionLogin::new(cfg, tls_active, secured)
}

impl ProtocolGlue for Submission {
    type Login = SubmissionLogin;
    type Backend = SubmissionBackend;

    fn protocol(&self) -> Protocol {
        Protocol::Submission
    }

    fn username(&self, req: &SubmissionLoginRequest, settings: &ProxySettings) -> Vec<u8> {
        routing_user(&req.credentials, &settings.master_user_separator)
    }

    fn backend(
        &self,
        req: SubmissionLoginRequest,
        conn: ConnInfo,
        starttls: bool,
    ) -> SubmissionBackend {
        let cfg = SubmissionBackendConfig {
            ehlo_name: self.hostname.clone(),
            starttls,
            ..SubmissionBackendConfig::default()
        };
        SubmissionBackend::new(cfg, conn, req)
    }

    fn backend_lost(&self) -> &'static [u8] {
        b"421 4.4.2 Lost connection to the mail server\r\n"
    }
}
