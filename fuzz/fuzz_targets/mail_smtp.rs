//! Fuzz target: smtp pre-login machine (client side) and login replay
//! (backend side) on arbitrary bytes, in arbitrary chunks; the inbound XCLIENT
//! parameter reader and xtext on the same bytes. Must never panic.
#![no_main]

#[path = "mail_common.rs"]
mod mail_common;

use director_mailproto::smtp::{parse_xclient, xtext, xtext_decode};
use director_mailproto::submission::{
    SubmissionBackend, SubmissionBackendConfig, SubmissionLogin, SubmissionLoginConfig,
    SubmissionLoginRequest,
};
use libfuzzer_sys::fuzz_target;
use mail_common::{conn, creds, fuzz_login_pair};

fuzz_target!(|data: &[u8]| {
    let _ = parse_xclient(data);
    // xtext: what we encode decodes to the same bytes.
    let encoded = xtext(data);
    assert_eq!(xtext_decode(encoded.as_bytes()).as_deref(), Some(data));
    let _ = xtext_decode(data);
    fuzz_login_pair!(
        data,
        |ctl| SubmissionLogin::new(
            SubmissionLoginConfig {
                tls_available: true,
                disable_plaintext_auth: ctl & 1 != 0,
                ..SubmissionLoginConfig::default()
            },
            false,
            false
        )
        // Trusted: the upstream-proxy command (XCLIENT) is parsed.
        .with_trusted(ctl & 0x40 != 0),
        SubmissionBackend::new(
            SubmissionBackendConfig {
                starttls: ctl & 2 != 0,
                ..SubmissionBackendConfig::default()
            },
            conn(),
            SubmissionLoginRequest {
                credentials: creds(),
                helo: None,
                proxy_ttl: director_mailproto::connection::LOGIN_PROXY_TTL,
            }
        )
    );
});
