//! Shared harness of the `mail_*` fuzz targets (included with `#[path]`, not
//! a target itself): fixed connection facts and credentials, and one driver
//! for the pre-login + login-replay pair every login protocol has.
#![allow(dead_code)] // Each target uses only part of this module.

use director_mailproto::{ConnInfo, Credentials, Mechanism};

/// The connection facts every backend replay gets.
pub fn conn() -> ConnInfo {
    ConnInfo {
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        client_port: 40000,
        local_ip: std::net::IpAddr::from([127, 0, 0, 2]),
        local_port: 1,
        session_id: Some("fuzz".into()),
        proxy_ttl: ConnInfo::DEFAULT_TTL,
    }
}

/// The credentials every backend replay sends.
pub fn creds() -> Credentials {
    Credentials {
        authzid: Vec::new(),
        authcid: b"user".to_vec(),
        password: b"pass".to_vec(),
        mechanism: Mechanism::Login,
    }
}

/// Drives a login machine and a backend replay on `$data`: the first byte
/// (`ctl`) picks the chunk size and options, the rest is fed in chunks to
/// `$login` (answering StartTls and Login the way a driver would), then to
/// `$backend`. Both constructors may use `ctl`. Must never panic.
macro_rules! fuzz_login_pair {
    ($data:expr, |$ctl:ident| $login:expr, $backend:expr) => {{
        let Some((&$ctl, rest)) = $data.split_first() else {
            return;
        };
        let chunk = usize::from($ctl % 17) + 1;
        let mut m = $login;
        let _ = m.start();
        for c in rest.chunks(chunk) {
            let acts = m.feed(c);
            if acts
                .iter()
                .any(|a| matches!(a, director_mailproto::Action::StartTls))
            {
                let _ = m.tls_established();
            }
            if acts
                .iter()
                .any(|a| matches!(a, director_mailproto::Action::Login(_)))
            {
                if $ctl & 0x80 != 0 {
                    let _ = m.login_succeeded();
                } else {
                    let why = if $ctl & 0x20 != 0 {
                        director_mailproto::LoginFailure::Looping
                    } else {
                        director_mailproto::LoginFailure::Temporary
                    };
                    let _ = m.login_failed(why);
                }
            }
        }
        let mut b = $backend;
        for c in rest.chunks(chunk) {
            let _ = b.feed(c);
            let _ = b.tls_established();
        }
        let _ = b.take_remaining();
    }};
}
pub(crate) use fuzz_login_pair;
