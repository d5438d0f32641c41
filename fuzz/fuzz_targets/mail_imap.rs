//! Fuzz target: imap pre-login machine (client side) and login replay
//! (backend side) on arbitrary bytes, in arbitrary chunks. Must never panic.
#![no_main]

#[path = "mail_common.rs"]
mod mail_common;

use director_mailproto::imap::{
    ImapBackend, ImapBackendConfig, ImapLogin, ImapLoginConfig, ImapLoginRequest,
};
use libfuzzer_sys::fuzz_target;
use mail_common::{conn, creds, fuzz_login_pair};

fuzz_target!(|data: &[u8]| {
    fuzz_login_pair!(
        data,
        |ctl| ImapLogin::new(
            ImapLoginConfig {
                tls_available: true,
                disable_plaintext_auth: ctl & 1 != 0,
                ..ImapLoginConfig::default()
            },
            false,
            false
        )
        // Trusted: the upstream-proxy commands (ID x-proxy-ttl, XCLIENT) are parsed.
        .with_trusted(ctl & 0x40 != 0),
        {
            let mut b = ImapBackend::new(
                ImapBackendConfig {
                    starttls: ctl & 2 != 0,
                    forward_client_id: true,
                    ..ImapBackendConfig::default()
                },
                conn(),
                ImapLoginRequest {
                    tag: b"a".to_vec(),
                    credentials: creds(),
                    client_id: Vec::new(),
                    capability_requested: ctl & 4 != 0,
                    proxy_ttl: director_mailproto::connection::LOGIN_PROXY_TTL,
                },
            );
            // The login pipelined ahead of the greeting, as the proxy does.
            if ctl & 8 != 0 {
                let _ = b.start();
            }
            b
        }
    );
});
