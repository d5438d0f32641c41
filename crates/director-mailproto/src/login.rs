//! What the untagged pre-login machines ([`crate::pop3::Pop3Login`],
//! [`crate::smtp::SubmissionLogin`], [`crate::managesieve::SieveLogin`])
//! share: their states, when they read input, and how driver-reported
//! failures and SASL errors map onto the protocol's reply texts. Only the
//! texts differ between the protocols, so they are data ([`Replies`]) and the
//! decisions live here once. (IMAP's machine carries a tag in its states and
//! keeps its own.)

use crate::action::{LoginFailure, MAX_PENDING_INPUT};
use crate::sasl::{SaslError, SaslExchange, SaslStep};

/// Where a pre-login machine is.
#[derive(Debug)]
pub(crate) enum State {
    /// Reading commands.
    Commands,
    /// Reading the next SASL response line.
    Sasl(SaslExchange),
    /// The driver runs the TLS handshake.
    TlsHandshake,
    /// The driver runs the login replay; input is buffered, not parsed.
    LoginPending,
    /// Logged in: the driver splices bytes.
    Proxying,
    /// Closed (or about to be).
    Closed,
}

impl State {
    /// Client bytes are dropped in these states (nothing to parse them for).
    pub(crate) fn ignores_input(&self) -> bool {
        matches!(self, Self::Closed | Self::TlsHandshake | Self::Proxying)
    }

    /// False while the machine waits for its driver or is done.
    pub(crate) fn wants_input(&self) -> bool {
        !matches!(
            self,
            Self::LoginPending | Self::TlsHandshake | Self::Proxying | Self::Closed
        )
    }

    /// The pre-login idle timeout no longer applies.
    pub(crate) fn past_login(&self) -> bool {
        matches!(self, Self::Closed | Self::Proxying)
    }

    /// Buffered lines are parsed in these states.
    pub(crate) fn parses(&self) -> bool {
        matches!(self, Self::Commands | Self::Sasl(_))
    }

    /// A SASL exchange waits for a response.
    pub(crate) fn is_sasl(&self) -> bool {
        matches!(self, Self::Sasl(_))
    }

    /// `incoming` more bytes on top of `buffered` would exceed
    /// [`MAX_PENDING_INPUT`] while the machine is not reading (the driver
    /// ignored `wants_input`): the machine must close.
    pub(crate) fn pending_overflow(&self, buffered: usize, incoming: usize) -> bool {
        !self.wants_input() && buffered.saturating_add(incoming) > MAX_PENDING_INPUT
    }
}

/// A protocol's reply texts (without CRLF) for the outcomes decided here.
pub(crate) struct Replies {
    /// [`LoginFailure::Temporary`].
    pub temporary: &'static str,
    /// [`LoginFailure::AuthFailed`] and malformed SASL messages.
    pub auth_failed: &'static str,
    /// The client answered a challenge with `*`.
    pub aborted: &'static str,
    /// A SASL response was not base64.
    pub invalid_base64: &'static str,
}

impl Replies {
    /// The reply for a failure the driver reports (`None`: the backend's
    /// reply was already relayed).
    pub(crate) fn login_failed(&self, why: &LoginFailure) -> Option<&'static str> {
        match why {
            LoginFailure::Relayed => None,
            LoginFailure::Temporary => Some(self.temporary),
            LoginFailure::AuthFailed => Some(self.auth_failed),
        }
    }
}

/// What to do with the outcome of a SASL response.
pub(crate) enum SaslOutcome {
    /// Go on with the exchange (a challenge or the credentials).
    Step(SaslExchange, SaslStep),
    /// Send this reply and return to reading commands.
    Reply(&'static str),
    /// Close without a reply (the response was too large, as Dovecot does).
    Close,
}

/// Feeds one response to `ex` and maps errors onto `replies`.
pub(crate) fn sasl_respond(replies: &Replies, mut ex: SaslExchange, data: &[u8]) -> SaslOutcome {
    match ex.respond(data) {
        Ok(step) => SaslOutcome::Step(ex, step),
        Err(SaslError::Aborted) => SaslOutcome::Reply(replies.aborted),
        Err(SaslError::InvalidBase64) => SaslOutcome::Reply(replies.invalid_base64),
        Err(SaslError::TooLong) => SaslOutcome::Close,
        Err(SaslError::Malformed) => SaslOutcome::Reply(replies.auth_failed),
    }
}
