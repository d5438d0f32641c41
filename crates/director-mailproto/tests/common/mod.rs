//! Helpers shared by the transcript tests.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
#![allow(dead_code)]

use director_mailproto::{Action, ConnInfo, Credentials, Mechanism};

pub fn sent<L>(actions: &[Action<L>]) -> String {
    let bytes: Vec<u8> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(b.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .concat();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn login_of<L: Clone>(actions: &[Action<L>]) -> Option<L> {
    actions.iter().find_map(|a| match a {
        Action::Login(r) => Some(r.clone()),
        _ => None,
    })
}

pub fn conn(port: u16, local_port: u16, session: &str) -> ConnInfo {
    ConnInfo {
        client_ip: "127.0.0.1".parse().unwrap(),
        client_port: port,
        local_ip: "127.0.77.1".parse().unwrap(),
        local_port,
        session_id: Some(session.into()),
        proxy_ttl: ConnInfo::DEFAULT_TTL,
    }
}

pub fn creds(user: &str, pass: &str) -> Credentials {
    Credentials {
        authzid: Vec::new(),
        authcid: user.as_bytes().to_vec(),
        password: pass.as_bytes().to_vec(),
        mechanism: Mechanism::Login,
    }
}
