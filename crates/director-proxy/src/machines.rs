//! The mailproto machines behind the driver's [`LoginMachine`] / [`BackendMachine`] traits.

use director_mailproto::imap::{ImapBackend, ImapLogin, ImapLoginRequest};
use director_mailproto::managesieve::{SieveBackend, SieveLogin, SieveLoginRequest};
use director_mailproto::pop3::{Pop3Backend, Pop3Login, Pop3LoginRequest};
use director_mailproto::smtp::{SubmissionBackend, SubmissionLogin, SubmissionLoginRequest};
use director_mailproto::{Action, BackendAction, Credentials, LoginFailure};

use crate::session::{BackendMachine, LoginMachine};

macro_rules! machines {
    ($login:ty, $req:ty, $backend:ty $(, $start:ident)?) => {
        impl LoginMachine for $login {
            type Req = $req;
            fn start(&mut self) -> Vec<Action<$req>> {
                <$login>::start(self)
            }
            fn feed(&mut self, data: &[u8]) -> Vec<Action<$req>> {
                <$login>::feed(self, data)
            }
            fn tls_established(&mut self) -> Vec<Action<$req>> {
                <$login>::tls_established(self)
            }
            fn login_failed(&mut self, why: LoginFailure) -> Vec<Action<$req>> {
                <$login>::login_failed(self, why)
            }
            fn login_succeeded(&mut self) -> Vec<u8> {
                <$login>::login_succeeded(self)
            }
            fn credentials(req: &$req) -> &Credentials {
                &req.credentials
            }
            fn is_auth_failure(reply: &[u8]) -> bool {
                <$login>::is_auth_failure(reply)
            }
        }

        impl BackendMachine for $backend {
            $(
                fn start(&mut self) -> Vec<BackendAction> {
                    <$backend>::$start(self)
                }
            )?
            fn feed(&mut self, data: &[u8]) -> Vec<BackendAction> {
                <$backend>::feed(self, data)
            }
            fn tls_established(&mut self) -> Vec<BackendAction> {
                <$backend>::tls_established(self)
            }
            fn take_remaining(&mut self) -> Vec<u8> {
                <$backend>::take_remaining(self)
            }
        }
    };
}

// IMAP may pipeline its login ahead of the backend's greeting.
machines!(ImapLogin, ImapLoginRequest, ImapBackend, start);
machines!(Pop3Login, Pop3LoginRequest, Pop3Backend);
machines!(SubmissionLogin, SubmissionLoginRequest, SubmissionBackend);
machines!(SieveLogin, SieveLoginRequest, SieveBackend);
