//! Fuzz target: pop3 pre-login machine (client side) and login replay
//! (backend side) on arbitrary bytes, in arbitrary chunks. Must never panic.
#![no_main]

#[path = "mail_common.rs"]
mod mail_common;

use director_mailproto::pop3::{Pop3Backend, Pop3BackendConfig, Pop3Login, Pop3LoginConfig};
use libfuzzer_sys::fuzz_target;
use mail_common::{conn, creds, fuzz_login_pair};

fuzz_target!(|data: &[u8]| {
    fuzz_login_pair!(
        data,
        |ctl| Pop3Login::new(
            Pop3LoginConfig {
                tls_available: true,
                disable_plaintext_auth: ctl & 1 != 0,
                ..Pop3LoginConfig::default()
            },
            false,
            false
        )
        // Trusted: the upstream-proxy command (XCLIENT) is parsed.
        .with_trusted(ctl & 0x40 != 0),
        Pop3Backend::new(
            Pop3BackendConfig {
                starttls: ctl & 2 != 0,
                ..Pop3BackendConfig::default()
            },
            conn(),
            creds()
        )
    );
});
