//! Fuzz target: managesieve pre-login machine (client side) and login replay
//! (backend side) on arbitrary bytes, in arbitrary chunks. Must never panic.
#![no_main]

#[path = "mail_common.rs"]
mod mail_common;

use director_mailproto::managesieve::{
    SieveBackend, SieveBackendConfig, SieveLogin, SieveLoginConfig,
};
use libfuzzer_sys::fuzz_target;
use mail_common::{conn, creds, fuzz_login_pair};

fuzz_target!(|data: &[u8]| {
    fuzz_login_pair!(
        data,
        |ctl| SieveLogin::new(
            SieveLoginConfig {
                tls_available: true,
                disable_plaintext_auth: ctl & 1 != 0,
                ..SieveLoginConfig::default()
            },
            false,
            false
        )
        // Trusted: the upstream-proxy command (XCLIENT) is parsed.
        .with_trusted(ctl & 0x40 != 0),
        SieveBackend::new(
            SieveBackendConfig {
                starttls: ctl & 2 != 0,
                send_xclient: true
            },
            conn(),
            creds()
        )
    );
});
