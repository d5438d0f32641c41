//! Fuzz target: pop3 pre-login machine (client side) and login replay
//! (backend side) on arbitrary bytes, in arbitrary chunks. Must never panic.
#![no_main]

use director_mailproto::pop3::{Pop3Backend, Pop3BackendConfig, Pop3Login, Pop3LoginConfig};
use director_mailproto::{Action, ConnInfo, Credentials, LoginFailure, Mechanism};
use libfuzzer_sys::fuzz_target;

fn conn() -> ConnInfo {
    ConnInfo {
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        client_port: 40000,
        local_ip: std::net::IpAddr::from([127, 0, 0, 2]),
        local_port: 1,
        session_id: Some("fuzz".into()),
        proxy_ttl: ConnInfo::DEFAULT_TTL,
    }
}

fn creds() -> Credentials {
    Credentials {
        authzid: Vec::new(),
        authcid: b"user".to_vec(),
        password: b"pass".to_vec(),
        mechanism: Mechanism::Login,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let chunk = usize::from(ctl % 17) + 1;
    let mut m = Pop3Login::new(Pop3LoginConfig { tls_available: true, disable_plaintext_auth: ctl & 1 != 0, ..Pop3LoginConfig::default() }, false, false);
    let _ = m.start();
    for c in rest.chunks(chunk) {
        let acts = m.feed(c);
        if acts.iter().any(|a| matches!(a, Action::StartTls)) {
            let _ = m.tls_established();
        }
        if acts.iter().any(|a| matches!(a, Action::Login(_))) {
            if ctl & 0x80 != 0 {
                let _ = m.login_succeeded();
            } else {
                let _ = m.login_failed(LoginFailure::Temporary);
            }
        }
    }
    let mut b = Pop3Backend::new(Pop3BackendConfig { starttls: ctl & 2 != 0, ..Pop3BackendConfig::default() }, conn(), creds());
    for c in rest.chunks(chunk) {
        let _ = b.feed(c);
        let _ = b.tls_established();
    }
    let _ = b.take_remaining();
});
