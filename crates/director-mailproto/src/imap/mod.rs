//! IMAP: the pre-login side facing the client ([`ImapLogin`]) and the login
//! replay facing the backend ([`ImapBackend`]), over a shared command parser
//! ([`parse`]).

pub mod backend;
pub mod login;
pub mod parse;

pub use backend::{BackendLoginMethod, ImapBackend, ImapBackendConfig};
pub use login::{ImapLogin, ImapLoginConfig, ImapLoginRequest};
