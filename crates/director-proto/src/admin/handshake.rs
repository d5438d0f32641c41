//! The admin socket's VERSION handshake (spec §8.1, lab/admin/NOTES.md §4).
//!
//! The server speaks first, immediately on accept, with [`SERVER_GREETING`].
//! The client's first line must be `VERSION\tdirector-doveadm\t1\t<minor>`
//! (exactly four fields, service name exact and case-sensitive, major
//! exactly 1 (`01` is fine), minor any u32);
//! otherwise the server logs [`HANDSHAKE_ERROR_LOG`] and closes without a
//! reply.

use thiserror::Error;

use crate::tabescape::split_fields;
use crate::value::parse_uint;

/// Service name in the admin VERSION line.
pub const SERVICE_NAME: &str = "director-doveadm";
/// Major protocol version; must match exactly.
pub const MAJOR_VERSION: u32 = 1;
/// Minor protocol version we speak.
pub const MINOR_VERSION: u32 = 0;

/// The line the server sends on accept (with its LF).
pub const SERVER_GREETING: &[u8] = b"VERSION\tdirector-doveadm\t1\t0\n";

/// The line doveadm sends first (with its LF). Same bytes as the greeting.
pub const CLIENT_HANDSHAKE: &[u8] = b"VERSION\tdirector-doveadm\t1\t0\n";

/// What Dovecot logs (at error level) before closing on a bad handshake.
pub const HANDSHAKE_ERROR_LOG: &str =
    "doveadm not compatible with this server (mixed old and new binaries?)";

/// A VERSION line that is not acceptable. Both sides close the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{HANDSHAKE_ERROR_LOG}")]
pub struct HandshakeError;

/// Checks a peer's VERSION line (without LF; a trailing CR must already be
/// stripped, as [`crate::line::LineBuffer`] does). Returns the peer's minor version.
///
/// Used by the server on the client's first line, and by the client on the
/// server's greeting (the rules are symmetric).
pub fn check_version_line(line: &[u8]) -> Result<u32, HandshakeError> {
    let line = crate::line::cut_at_nul(line);
    let fields = split_fields(line);
    if fields.len() != 4 || fields[0] != b"VERSION" || fields[1] != SERVICE_NAME.as_bytes() {
        return Err(HandshakeError);
    }
    match (parse_uint(&fields[2]), parse_uint(&fields[3])) {
        (Some(MAJOR_VERSION), Some(minor)) => Ok(minor),
        _ => Err(HandshakeError),
    }
}

/// Server side: checks the client's first line. Returns the client's minor version.
pub fn check_client_handshake(line: &[u8]) -> Result<u32, HandshakeError> {
    check_version_line(line)
}

/// Client side: checks the server's greeting. doveadm exits with 76
/// ("director-doveadm protocol version mismatch"-style fatal) when this fails.
pub fn check_server_greeting(line: &[u8]) -> Result<u32, HandshakeError> {
    check_version_line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_recorded_forms() {
        assert_eq!(
            check_client_handshake(b"VERSION\tdirector-doveadm\t1\t0"),
            Ok(0)
        );
        assert_eq!(
            check_client_handshake(b"VERSION\tdirector-doveadm\t1\t9"),
            Ok(9)
        );
        assert_eq!(
            check_client_handshake(b"VERSION\tdirector-doveadm\t01\t0"),
            Ok(0)
        );
    }

    #[test]
    fn rejects_the_recorded_forms() {
        for bad in [
            &b"HOST-LIST"[..],
            b"VERSION\tdirector-foo\t1\t0",
            b"VERSION\tdirector-doveadm\t2\t0",
            b"VERSION\tdirector-doveadm",
            b"version\tdirector-doveadm\t1\t0",
            b"",
            b"VERSION\tdirector-doveadm\t1\t-1",
            // Checked against Dovecot 2.3.19.1: an extra field, an empty or
            // a 33-bit minor are refused.
            b"VERSION\tdirector-doveadm\t1\t0\tx",
            b"VERSION\tdirector-doveadm\t1\t",
            b"VERSION\tdirector-doveadm\t1\t4294967296",
        ] {
            assert_eq!(check_client_handshake(bad), Err(HandshakeError), "{bad:?}");
        }
    }
}
