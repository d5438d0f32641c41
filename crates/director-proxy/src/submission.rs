//! Submission glue: [`SubmissionLogin`] / [`SubmissionBackend`] in the generic driver. The
//! client's address and EHLO name reach the backend through `XCLIENT` when advertised.

use director_mailproto::smtp::{
    SubmissionBackend, SubmissionBackendConfig, SubmissionLogin, SubmissionLoginConfig,
    SubmissionLoginRequest,
};
use director_mailproto::ConnInfo;

use crate::session::{LoginTls, ProtocolGlue};
use crate::settings::{Protocol, ProxySettings};

/// Submission protocol glue.
pub(crate) struct Submission {
    /// Name sent in EHLO to backends.
    pub hostname: String,
}

impl ProtocolGlue for Submission {
    type Login = SubmissionLogin;
    type Backend = SubmissionBackend;

    fn protocol(&self) -> Protocol {
        Protocol::Submission
    }

    fn login_machine(&self, settings: &ProxySettings, tls: LoginTls) -> SubmissionLogin {
        let cfg = SubmissionLoginConfig {
            hostname: settings.hostname.clone(),
            greeting: settings.login_greeting.clone(),
            tls_available: tls.available,
            disable_plaintext_auth: settings.plaintext_auth_disabled(),
            ..SubmissionLoginConfig::default()
        };
        SubmissionLogin::new(cfg, tls.active, tls.secured)
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
