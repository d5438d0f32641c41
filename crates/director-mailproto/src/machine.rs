//! The interface between the protocol machines and the proxy that drives them.
//!
//! Each login protocol (IMAP, POP3, Submission, ManageSieve) implements [`LoginProtocol`]:
//! how to build its client-side pre-login machine ([`LoginMachine`]) for a new connection,
//! and its backend-side login replay ([`BackendMachine`]) for a login request. The proxy runs
//! one generic loop over these traits, so nothing protocol-specific lives outside this crate.

use crate::action::{Action, BackendAction, LoginFailure};
use crate::connection::{ConnInfo, Credentials};
use crate::protocol::Protocol;

/// A client-side pre-login machine.
pub trait LoginMachine: Send {
    /// What [`Action::Login`] carries.
    type Req: Send;
    /// The first actions on a new connection (the greeting).
    fn start(&mut self) -> Vec<Action<Self::Req>>;
    /// Client bytes arrived.
    fn feed(&mut self, data: &[u8]) -> Vec<Action<Self::Req>>;
    /// The TLS handshake asked for by [`Action::StartTls`] finished.
    fn tls_established(&mut self) -> Vec<Action<Self::Req>>;
    /// The login asked for by [`Action::Login`] did not reach the proxying state.
    fn login_failed(&mut self, why: LoginFailure) -> Vec<Action<Self::Req>>;
    /// The backend accepted the login: the bytes the client gets before the splice.
    fn login_succeeded(&mut self) -> Vec<u8>;
    /// The credentials a login request carries (the routing user name comes from them).
    fn credentials(req: &Self::Req) -> &Credentials;
    /// The hops a login request may still take ([`crate::connection::LOGIN_PROXY_TTL`]
    /// unless a trusted client set it); the proxy refuses it when none is left
    /// ([`crate::connection::next_hop_ttl`]).
    fn proxy_ttl(req: &Self::Req) -> u32;
    /// Whether a reply of this machine refuses the credentials (the proxy delays it by
    /// `auth_failure_delay`).
    fn is_auth_failure(reply: &[u8]) -> bool;
}

/// A backend-side login replay machine.
pub trait BackendMachine: Send {
    /// What to send once connected, before the backend said anything (nothing by default).
    fn start(&mut self) -> Vec<BackendAction> {
        Vec::new()
    }
    /// Backend bytes arrived.
    fn feed(&mut self, data: &[u8]) -> Vec<BackendAction>;
    /// The TLS handshake asked for by the machine finished.
    fn tls_established(&mut self) -> Vec<BackendAction>;
    /// Client bytes that arrived during the login replay, to forward once spliced.
    fn take_remaining(&mut self) -> Vec<u8>;
}

/// What a new client connection's pre-login machine is built from.
#[derive(Debug, Clone)]
pub struct LoginSetup {
    /// `login_greeting`.
    pub greeting: String,
    /// `hostname`: the name in SMTP greetings and EHLO.
    pub hostname: String,
    /// STARTTLS can be offered.
    pub tls_available: bool,
    /// `disable_plaintext_auth`, already resolved for this connection.
    pub disable_plaintext_auth: bool,
    /// TLS is already on (implicit-TLS listener).
    pub tls_active: bool,
    /// The connection counts as secured (TLS, or a trusted or local client address).
    pub secured: bool,
    /// The client address is in `login_trusted_networks`: an upstream proxy, whose
    /// forwarded facts (the proxy TTL) are obeyed.
    pub trusted: bool,
}

/// What a backend login replay is built from.
#[derive(Debug, Clone)]
pub struct BackendSetup {
    /// The name sent in EHLO (Submission).
    pub hostname: String,
    /// Run STARTTLS before the login.
    pub starttls: bool,
}

/// A login-then-splice protocol: its machines and how to build them.
pub trait LoginProtocol: Send + Sync + 'static {
    /// The client-side machine.
    type Login: LoginMachine;
    /// The backend-side machine.
    type Backend: BackendMachine;
    /// Which protocol this is.
    const PROTOCOL: Protocol;
    /// The pre-login machine for a new client connection.
    fn login_machine(setup: &LoginSetup) -> Self::Login;
    /// A backend machine replaying `req` for the client `conn`.
    fn backend_machine(
        req: <Self::Login as LoginMachine>::Req,
        conn: ConnInfo,
        setup: &BackendSetup,
    ) -> Self::Backend;
}

/// Implements [`LoginMachine`] and [`BackendMachine`] for a protocol's machines over their
/// inherent methods of the same names (`start` of the backend only when it has one).
macro_rules! impl_machines {
    ($login:ty, $req:ty, $backend:ty $(, $start:ident)?) => {
        impl $crate::machine::LoginMachine for $login {
            type Req = $req;
            fn start(&mut self) -> Vec<$crate::Action<$req>> {
                <$login>::start(self)
            }
            fn feed(&mut self, data: &[u8]) -> Vec<$crate::Action<$req>> {
                <$login>::feed(self, data)
            }
            fn tls_established(&mut self) -> Vec<$crate::Action<$req>> {
                <$login>::tls_established(self)
            }
            fn login_failed(&mut self, why: $crate::LoginFailure) -> Vec<$crate::Action<$req>> {
                <$login>::login_failed(self, why)
            }
            fn login_succeeded(&mut self) -> Vec<u8> {
                <$login>::login_succeeded(self)
            }
            fn credentials(req: &$req) -> &$crate::Credentials {
                &req.credentials
            }
            fn proxy_ttl(req: &$req) -> u32 {
                req.proxy_ttl
            }
            fn is_auth_failure(reply: &[u8]) -> bool {
                <$login>::is_auth_failure(reply)
            }
        }

        impl $crate::machine::BackendMachine for $backend {
            $(
                fn start(&mut self) -> Vec<$crate::BackendAction> {
                    <$backend>::$start(self)
                }
            )?
            fn feed(&mut self, data: &[u8]) -> Vec<$crate::BackendAction> {
                <$backend>::feed(self, data)
            }
            fn tls_established(&mut self) -> Vec<$crate::BackendAction> {
                <$backend>::tls_established(self)
            }
            fn take_remaining(&mut self) -> Vec<u8> {
                <$backend>::take_remaining(self)
            }
        }
    };
}
pub(crate) use impl_machines;
