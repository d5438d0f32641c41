//! What a state machine asks its driver to do.
//!
//! Every client-side machine returns [`Action`]s and every backend-side machine
//! returns [`BackendAction`]s, in the order the driver must carry them out
//! (write bytes, then upgrade to TLS, ...). Keeping the effects as data is what
//! lets the proxy stay a thin loop and the machines be tested byte for byte.

/// Most client bytes a machine buffers while it waits for its driver (login
/// or recipient lookup in progress). Dovecot's login processes simply stop
/// reading (TCP backpressure); drivers should do the same by checking the
/// machines' `wants_input()`, and this limit is the safety net: past it the
/// machine closes the connection.
pub const MAX_PENDING_INPUT: usize = 1 << 20;

/// How long a client may stay in the pre-login state without sending
/// anything before the driver calls the machine's `idle_timeout`. Dovecot's
/// login processes disconnected idle pre-login clients after 180 s
/// (measured on all four login services).
pub const LOGIN_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// An effect requested by a client-side (pre-login) machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<L> {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Flush what was sent so far, then run the TLS server handshake on the
    /// client connection and call the machine's `tls_established`.
    StartTls,
    /// The client has given credentials: ask the core for the user's backend,
    /// run the protocol's backend machine, then report the outcome with the
    /// machine's `login_succeeded` / `login_failed`. The machine buffers (does
    /// not parse) further input until then.
    Login(L),
    /// Flush what was sent so far and close the connection.
    Close,
}

/// Why a login attempt did not reach the proxying state, as reported by the
/// driver to the client machine (`login_failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// The backend answered the replayed login with a failure, and the backend
    /// machine has already produced the reply for the client
    /// ([`BackendAction::SendClient`]); the client machine only resets.
    Relayed,
    /// The backend could not be chosen or reached (core timeout, connect
    /// failure, protocol error): the client machine sends its protocol's
    /// temporary-failure reply, e.g. IMAP
    /// `NO [UNAVAILABLE] Account is temporarily unavailable.`
    Temporary,
    /// Authentication failed before any backend was involved (e.g. empty user
    /// name): `NO [AUTHENTICATIONFAILED] Authentication failed.` and friends.
    AuthFailed,
    /// The login arrived with no proxy hop left ([`crate::connection::next_hop_ttl`]): the
    /// proxies forward to each other in a loop, and a retry cannot help. Dovecot answers
    /// with its reply for a misconfigured remote, e.g. IMAP
    /// `NO [SERVERBUG] Account is temporarily unavailable.`
    Looping,
}

/// An effect requested by a backend-side (login replay) machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAction {
    /// Write these bytes to the backend.
    SendBackend(Vec<u8>),
    /// Run the TLS client handshake on the backend connection, then call the
    /// machine's `tls_established`.
    StartTls,
    /// Write these bytes to the client (relayed replies, with the client's tag).
    SendClient(Vec<u8>),
    /// The backend accepted the login: from now on splice bytes both ways.
    /// Bytes the backend sent after its final reply are in `take_remaining`.
    LoggedIn,
    /// The login replay failed; see [`BackendFailure`]. Close the backend
    /// connection and report to the client machine.
    Failed(BackendFailure),
}

impl BackendAction {
    /// The end of a replay with a verdict: the backend's final reply (wire
    /// bytes) is relayed to the client, then the login is done
    /// ([`BackendAction::LoggedIn`]) or rejected ([`BackendFailure::AuthRejected`]).
    pub(crate) fn verdict(reply: Vec<u8>, accepted: bool) -> [Self; 2] {
        let end = if accepted {
            Self::LoggedIn
        } else {
            Self::Failed(BackendFailure::AuthRejected)
        };
        [Self::SendClient(reply), end]
    }

    /// The end of a replay that went wrong (logged with the protocol's name).
    pub(crate) fn protocol_error(protocol: &'static str, why: &str) -> Self {
        tracing::debug!(protocol, reason = why, "backend login failed");
        Self::Failed(BackendFailure::Protocol(why.into()))
    }
}

/// How a backend login replay ended without success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendFailure {
    /// The backend rejected the credentials; its reply was relayed to the
    /// client (report [`LoginFailure::Relayed`]).
    #[error("backend rejected the login")]
    AuthRejected,
    /// The backend said something we did not expect, or sent an over-long
    /// line (report [`LoginFailure::Temporary`]).
    #[error("backend protocol error: {0}")]
    Protocol(String),
}
