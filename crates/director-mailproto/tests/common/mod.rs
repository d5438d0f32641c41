//! Helpers shared by the transcript tests.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
#![allow(dead_code)]

use director_mailproto::imap::{ImapBackend, ImapLogin};
use director_mailproto::managesieve::{SieveBackend, SieveLogin};
use director_mailproto::pop3::{Pop3Backend, Pop3Login};
use director_mailproto::submission::{SubmissionBackend, SubmissionLogin};
use director_mailproto::{Action, BackendAction, ConnInfo, Credentials, LoginFailure, Mechanism};

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

/// Unifies the four login machines for the test drivers.
pub trait LoginSide {
    type Req;
    fn start(&mut self) -> Vec<Action<Self::Req>>;
    fn feed(&mut self, b: &[u8]) -> Vec<Action<Self::Req>>;
    fn failed(&mut self, f: LoginFailure) -> Vec<Action<Self::Req>>;
    fn succeeded(&mut self) -> Vec<u8>;
    fn tls_established(&mut self) -> Vec<Action<Self::Req>>;
    fn idle_timeout(&mut self) -> Vec<Action<Self::Req>>;
}

/// Unifies the four backend machines.
pub trait BackendSide {
    fn feed(&mut self, b: &[u8]) -> Vec<BackendAction>;
    fn take_remaining(&mut self) -> Vec<u8>;
    fn tls_established(&mut self) -> Vec<BackendAction>;
}

macro_rules! sides {
    ($login:ty, $req:ty, $backend:ty) => {
        impl LoginSide for $login {
            type Req = $req;
            fn start(&mut self) -> Vec<Action<$req>> {
                <$login>::start(self)
            }
            fn feed(&mut self, b: &[u8]) -> Vec<Action<$req>> {
                <$login>::feed(self, b)
            }
            fn failed(&mut self, f: LoginFailure) -> Vec<Action<$req>> {
                <$login>::login_failed(self, f)
            }
            fn succeeded(&mut self) -> Vec<u8> {
                <$login>::login_succeeded(self)
            }
            fn tls_established(&mut self) -> Vec<Action<$req>> {
                <$login>::tls_established(self)
            }
            fn idle_timeout(&mut self) -> Vec<Action<$req>> {
                <$login>::idle_timeout(self)
            }
        }
        impl BackendSide for $backend {
            fn feed(&mut self, b: &[u8]) -> Vec<BackendAction> {
                <$backend>::feed(self, b)
            }
            fn take_remaining(&mut self) -> Vec<u8> {
                <$backend>::take_remaining(self)
            }
            fn tls_established(&mut self) -> Vec<BackendAction> {
                <$backend>::tls_established(self)
            }
        }
    };
}

sides!(
    ImapLogin,
    director_mailproto::imap::ImapLoginRequest,
    ImapBackend
);
sides!(
    Pop3Login,
    director_mailproto::pop3::Pop3LoginRequest,
    Pop3Backend
);
sides!(
    SubmissionLogin,
    director_mailproto::submission::SubmissionLoginRequest,
    SubmissionBackend
);
sides!(
    SieveLogin,
    director_mailproto::managesieve::SieveLoginRequest,
    SieveBackend
);

/// Feeds each client chunk and checks the exact text answered; returns the
/// actions of the last step.
pub fn run<M: LoginSide>(m: &mut M, steps: &[(&str, &str)]) -> Vec<Action<M::Req>> {
    let mut last = Vec::new();
    for (i, w) in steps {
        last = LoginSide::feed(m, i.as_bytes());
        assert_eq!(sent(&last), *w, "after {i:?}");
    }
    last
}

/// The idle timeout before login answers exactly `text`, then closes.
pub fn assert_idle_timeout<M: LoginSide>(m: &mut M, text: &str) {
    let acts = m.idle_timeout();
    assert_eq!(sent(&acts), text);
    assert!(matches!(acts.last(), Some(Action::Close)), "closes last");
}

/// Feeds `chunks` the way a driver would: a StartTls is answered with
/// `tls_established`, a Login with `login` (`None`: `login_succeeded`).
/// For the never-panics properties.
pub fn drive_login<M: LoginSide>(m: &mut M, chunks: &[Vec<u8>], login: Option<LoginFailure>) {
    m.start();
    for c in chunks {
        let acts = LoginSide::feed(m, c);
        if acts.iter().any(|a| matches!(a, Action::StartTls)) {
            LoginSide::tls_established(m);
        }
        if acts.iter().any(|a| matches!(a, Action::Login(_))) {
            match &login {
                Some(f) => {
                    m.failed(f.clone());
                }
                None => {
                    m.succeeded();
                }
            }
        }
    }
}

/// Feeds `chunks` to a backend replay, reporting a TLS handshake after each.
pub fn drive_backend<B: BackendSide>(b: &mut B, chunks: &[Vec<u8>]) {
    for c in chunks {
        BackendSide::feed(b, c);
        BackendSide::tls_established(b);
    }
}
