//! SASL PLAIN and LOGIN as the login processes run them, with base64 and limits.
//!
//! The director runs these mechanisms itself (it has no auth process) only to
//! learn the credentials; the password is checked by the backend when the
//! credentials are replayed. Only plaintext mechanisms can be replayed, which
//! is why PLAIN and LOGIN are all there is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::connection::{Credentials, Mechanism};

/// Longest SASL response line we accept (base64 text, without CRLF).
/// Dovecot's login processes disconnect with "Authentication response too
/// large" past 8 KiB (`LOGIN_MAX_AUTH_BUF_SIZE`, verified on imap-login).
pub const MAX_AUTH_RESPONSE: usize = 8192;

/// Longest decoded user name or password (bytes). Longer ones are refused as
/// an authentication failure rather than replayed.
pub const MAX_CREDENTIAL_FIELD: usize = 4096;

/// Base64 of `Username:`, the first SASL LOGIN challenge (as Dovecot sends it).
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// Base64 of `Password:`, the second SASL LOGIN challenge.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Why a SASL exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client sent `*`.
    #[error("Authentication aborted by client.")]
    Aborted,
    /// The response was not valid base64.
    #[error("Invalid base64 data")]
    InvalidBase64,
    /// The response line exceeded [`MAX_AUTH_RESPONSE`].
    #[error("Authentication response too large")]
    TooLong,
    /// The decoded response is not a valid message for the mechanism (PLAIN
    /// without two NULs, empty user name, over-long field, ...). Dovecot's auth
    /// process answers these with a plain authentication failure.
    #[error("invalid input")]
    Malformed,
}

/// The mechanisms we can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMech {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism (username and password challenges).
    Login,
}

impl SaslMech {
    /// Parses a mechanism name, case-insensitively.
    pub fn parse(name: &[u8]) -> Option<Self> {
        if name.eq_ignore_ascii_case(b"PLAIN") {
            Some(Self::Plain)
        } else if name.eq_ignore_ascii_case(b"LOGIN") {
            Some(Self::Login)
        } else {
            None
        }
    }
}

/// The advertised mechanism list, in Dovecot's order (`auth_mechanisms = plain login`).
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// One step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// Send this base64 challenge (possibly empty) and wait for a response.
    Challenge(&'static str),
    /// The exchange is complete.
    Done(Credentials),
}

/// A running server-side exchange.
#[derive(Debug, Clone)]
pub struct SaslExchange {
    mech: SaslMech,
    username: Option<Vec<u8>>,
}

/// Decodes a base64 response; `=` is the empty response (RFC 4954/9051).
pub fn decode_response(text: &[u8]) -> Result<Vec<u8>, SaslError> {
    if text.len() > MAX_AUTH_RESPONSE {
        return Err(SaslError::TooLong);
    }
    if text == b"=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(text).map_err(|_| SaslError::InvalidBase64)
}

/// Splits a decoded PLAIN message `authzid NUL authcid NUL passwd`.
pub fn parse_plain(msg: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let creds = Credentials {
        authzid: authzid.to_vec(),
        authcid: authcid.to_vec(),
        password: password.to_vec(),
        mechanism: Mechanism::Plain,
    };
    check_fields(&creds)?;
    Ok(creds)
}

/// Refuses credentials the backend could never accept (and that would make
/// replay unbounded): empty user, over-long fields.
pub fn check_fields(creds: &Credentials) -> Result<(), SaslError> {
    if creds.authcid.is_empty()
        || creds.authcid.len() > MAX_CREDENTIAL_FIELD
        || creds.authzid.len() > MAX_CREDENTIAL_FIELD
        || creds.password.len() > MAX_CREDENTIAL_FIELD
    {
        return Err(SaslError::Malformed);
    }
    Ok(())
}

/// Base64 of a PLAIN message, for replaying credentials to a backend. It holds the password:
/// it is wiped when dropped, and so is the message it was made from.
pub fn encode_plain(authzid: &[u8], authcid: &[u8], password: &[u8]) -> zeroize::Zeroizing<String> {
    let mut msg = zeroize::Zeroizing::new(Vec::with_capacity(
        authzid.len() + authcid.len() + password.len() + 2,
    ));
    msg.extend_from_slice(authzid);
    msg.push(0);
    msg.extend_from_slice(authcid);
    msg.push(0);
    msg.extend_from_slice(password);
    zeroize::Zeroizing::new(STANDARD.encode(&*msg))
}

/// [`encode_plain`] of `c` with the authorization identity defaulting to the
/// login name, as Dovecot's submission and ManageSieve proxies send it
/// (`user\0user\0pass`).
pub fn encode_plain_as_user(c: &Credentials) -> zeroize::Zeroizing<String> {
    let authzid = if c.authzid.is_empty() {
        &c.authcid
    } else {
        &c.authzid
    };
    encode_plain(authzid, &c.authcid, &c.password)
}

/// Base64 encoding (for LOGIN replay and tests).
pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

impl SaslExchange {
    /// Starts an exchange. `initial` is the initial response as it appeared on
    /// the wire (base64 or `=`), if the client sent one.
    pub fn start(mech: SaslMech, initial: Option<&[u8]>) -> Result<(Self, SaslStep), SaslError> {
        let mut ex = Self {
            mech,
            username: None,
        };
        let step = match initial {
            None => match mech {
                SaslMech::Plain => SaslStep::Challenge(""),
                SaslMech::Login => SaslStep::Challenge(LOGIN_USERNAME_CHALLENGE),
            },
            Some(ir) => {
                let data = decode_response(ir)?;
                ex.accept(data)?
            }
        };
        Ok((ex, step))
    }

    /// Feeds one response line (base64, `=` or `*`).
    pub fn respond(&mut self, line: &[u8]) -> Result<SaslStep, SaslError> {
        if line == b"*" {
            return Err(SaslError::Aborted);
        }
        let data = decode_response(line)?;
        self.accept(data)
    }

    fn accept(&mut self, data: Vec<u8>) -> Result<SaslStep, SaslError> {
        // A decoded response may be a password: wiped when dropped.
        let mut data = zeroize::Zeroizing::new(data);
        match self.mech {
            SaslMech::Plain => parse_plain(&data).map(SaslStep::Done),
            SaslMech::Login => match self.username.take() {
                None => {
                    if data.len() > MAX_CREDENTIAL_FIELD {
                        return Err(SaslError::Malformed);
                    }
                    self.username = Some(std::mem::take(&mut *data));
                    Ok(SaslStep::Challenge(LOGIN_PASSWORD_CHALLENGE))
                }
                Some(user) => {
                    let creds = Credentials {
                        authzid: Vec::new(),
                        authcid: user,
                        password: std::mem::take(&mut *data),
                        mechanism: Mechanism::SaslLogin,
                    };
                    check_fields(&creds)?;
                    Ok(SaslStep::Done(creds))
                }
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_roundtrip() {
        let b64 = encode_plain(b"", b"user1", b"pass");
        assert_eq!(b64.as_str(), "AHVzZXIxAHBhc3M=");
        let (_, step) = SaslExchange::start(SaslMech::Plain, Some(b64.as_bytes())).unwrap();
        let SaslStep::Done(c) = step else {
            panic!("not done")
        };
        assert_eq!(c.authcid, b"user1");
        assert_eq!(c.password, b"pass");
        // What Dovecot's submission proxy sent to the backend: authzid = user.
        assert_eq!(
            encode_plain(b"user1", b"user1", b"pass").as_str(),
            "dXNlcjEAdXNlcjEAcGFzcw=="
        );
    }

    #[test]
    fn login_mech_steps() {
        let (mut ex, step) = SaslExchange::start(SaslMech::Login, None).unwrap();
        assert_eq!(step, SaslStep::Challenge("VXNlcm5hbWU6"));
        assert_eq!(
            ex.respond(b"dXNlcjE=").unwrap(),
            SaslStep::Challenge("UGFzc3dvcmQ6")
        );
        let SaslStep::Done(c) = ex.respond(b"cGFzcw==").unwrap() else {
            panic!("not done")
        };
        assert_eq!(
            (c.authcid.as_slice(), c.password.as_slice()),
            (&b"user1"[..], &b"pass"[..])
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            SaslExchange::start(SaslMech::Plain, Some(b"!!!")).err(),
            Some(SaslError::InvalidBase64)
        );
        assert_eq!(
            SaslExchange::start(SaslMech::Plain, Some(b"=")).err(),
            Some(SaslError::Malformed)
        );
        let (mut ex, _) = SaslExchange::start(SaslMech::Plain, None).unwrap();
        assert_eq!(ex.respond(b"*"), Err(SaslError::Aborted));
        assert_eq!(
            decode_response(&vec![b'A'; MAX_AUTH_RESPONSE + 4]),
            Err(SaslError::TooLong)
        );
        assert_eq!(parse_plain(b"a\0b\0c\0d"), Err(SaslError::Malformed));
    }

    proptest! {
        #[test]
        fn never_panics(mech in prop_oneof![Just(SaslMech::Plain), Just(SaslMech::Login)],
                        ir in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                        resp in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)) {
            if let Ok((mut ex, _)) = SaslExchange::start(mech, ir.as_deref()) {
                for r in resp { let _ = ex.respond(&r); }
            }
        }

        #[test]
        fn plain_encode_decode(z in "[a-z]{0,8}", c in "[a-z]{1,8}", p in "[ -~]{0,12}") {
            let b64 = encode_plain(z.as_bytes(), c.as_bytes(), p.as_bytes());
            let got = parse_plain(&decode_response(b64.as_bytes()).unwrap()).unwrap();
            prop_assert_eq!(&got.authzid, &z.into_bytes());
            prop_assert_eq!(&got.authcid, &c.into_bytes());
            prop_assert_eq!(&got.password, &p.into_bytes());
        }
    }
}
