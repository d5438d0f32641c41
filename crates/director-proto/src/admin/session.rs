//! Sans-I/O admin connection state machines: the server side (handshake,
//! then one request per line) and the client side (check the greeting, then
//! read one strictly parsed reply), driven with nothing but byte buffers.
//!
//! The daemon serves every admin connection with [`AdminServerSession`]
//! (`directord::admin::connection`), so the fuzz targets
//! (`fuzz/fuzz_targets/admin_*.rs`) and the recorded-probe tests exercise
//! the code that runs. doveadm drives the pieces itself: it sends several
//! requests on one connection and, like the real doveadm, skips malformed
//! reply lines instead of failing on them, which [`AdminClientSession`]
//! (one strictly parsed reply) does not do.

use thiserror::Error;

use super::handshake::{check_client_handshake, check_server_greeting, HandshakeError};
use super::reply::{AdminReply, ReplyParseError, ReplyReader};
use super::request::{parse_request, AdminParseError, AdminRequest};
use crate::line::{LineBuffer, LineTooLong, ADMIN_MAX_LINE_LEN};

/// Why the server closes an admin connection. Dovecot closes without
/// replying in every case; `Display` is what it logs (an over-long line is
/// not logged by Dovecot: see [`ServerClose::dovecot_logs`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServerClose {
    /// A line over [`ADMIN_MAX_LINE_LEN`] bytes.
    #[error(transparent)]
    LineTooLong(#[from] LineTooLong),
    /// Bad VERSION line.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Bad command line.
    #[error(transparent)]
    Parse(#[from] AdminParseError),
}

impl ServerClose {
    /// Whether Dovecot logs this close (it logs nothing for over-long lines).
    pub fn dovecot_logs(&self) -> bool {
        !matches!(self, Self::LineTooLong(_))
    }
}

/// Server side of one admin connection.
///
/// Send [`super::SERVER_GREETING`] on accept; then feed received bytes and
/// pop requests with [`next_request`](Self::next_request). Dovecot runs one
/// command at a time and stops reading while a command is unfinished, which
/// this type supports naturally: just don't pop the next request yet.
#[derive(Debug, Clone)]
pub struct AdminServerSession {
    lines: LineBuffer,
    client_minor: Option<u32>,
}

impl Default for AdminServerSession {
    fn default() -> Self {
        Self::new()
    }
}

impl AdminServerSession {
    /// A new connection with Dovecot's 1023-byte line limit.
    pub fn new() -> Self {
        Self {
            lines: LineBuffer::new(ADMIN_MAX_LINE_LEN),
            client_minor: None,
        }
    }

    /// The client's minor version once the handshake is done.
    pub fn client_minor(&self) -> Option<u32> {
        self.client_minor
    }

    /// Copies as many bytes as fit; see [`LineBuffer::feed`].
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.lines.feed(data)
    }

    /// Free buffer space to read into; see [`LineBuffer::spare_mut`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        self.lines.spare_mut()
    }

    /// Marks bytes read into [`spare_mut`](Self::spare_mut) as data.
    pub fn commit(&mut self, n: usize) {
        self.lines.commit(n)
    }

    /// The next request, `Ok(None)` if more bytes are needed, or the reason
    /// to close the connection (without a reply).
    pub fn next_request(&mut self) -> Result<Option<AdminRequest>, ServerClose> {
        loop {
            let Some(line) = self.lines.next_line()? else {
                return Ok(None);
            };
            if self.client_minor.is_none() {
                self.client_minor = Some(check_client_handshake(&line)?);
                continue;
            }
            return Ok(Some(parse_request(&line)?));
        }
    }
}

/// Why the client gives up on an admin connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// A reply line over the limit.
    #[error(transparent)]
    LineTooLong(#[from] LineTooLong),
    /// The server's VERSION line is wrong (doveadm exits 76).
    #[error("director sent invalid handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A reply line could not be parsed.
    #[error(transparent)]
    Reply(#[from] ReplyParseError),
}

/// Longest reply line the client accepts. Dovecot's doveadm reads replies
/// with a larger buffer than the server's input; USER-LOOKUP/HOST-LIST lines
/// are short, DIRECTOR-LIST lines stay well under this.
pub const CLIENT_MAX_LINE_LEN: usize = 64 * 1024;

/// Client side of one admin connection, for one request.
///
/// Write [`super::CLIENT_HANDSHAKE`] and [`super::encode_request`] of the
/// request (this type does not need the greeting to arrive first; the real
/// doveadm waits for it before sending its request), then feed received
/// bytes until [`poll_reply`](Self::poll_reply) returns the reply.
#[derive(Debug, Clone)]
pub struct AdminClientSession {
    lines: LineBuffer,
    greeted: bool,
    reader: ReplyReader,
}

impl AdminClientSession {
    /// A session that expects the reply to `req`.
    pub fn new(req: &AdminRequest) -> Self {
        Self {
            lines: LineBuffer::new(CLIENT_MAX_LINE_LEN),
            greeted: false,
            reader: ReplyReader::new(req),
        }
    }

    /// Whether the server's greeting was received and accepted.
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// Copies as many bytes as fit; see [`LineBuffer::feed`].
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.lines.feed(data)
    }

    /// Free buffer space to read into; see [`LineBuffer::spare_mut`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        self.lines.spare_mut()
    }

    /// Marks bytes read into [`spare_mut`](Self::spare_mut) as data.
    pub fn commit(&mut self, n: usize) {
        self.lines.commit(n)
    }

    /// The complete reply, or `Ok(None)` if more bytes are needed.
    pub fn poll_reply(&mut self) -> Result<Option<AdminReply>, ClientError> {
        while let Some(line) = self.lines.next_line()? {
            if !self.greeted {
                check_server_greeting(&line)?;
                self.greeted = true;
                continue;
            }
            if let Some(reply) = self.reader.push_line(&line)? {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }
}
