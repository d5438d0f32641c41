//! Bounded framing of a ring connection: bytes in, [`RingMessage`]s out, with
//! Dovecot's limits (spec §10.2).
//!
//! Dovecot reads a ring connection through a 1024-byte input buffer: a line
//! may hold [`RING_MAX_LINE_LEN`] bytes plus its LF; on a longer one
//! Dovecot 2.3.19 logs "Director sent us more than 1024 bytes" and drops the
//! connection (probed: 1023 bytes + LF pass, 1024 + LF do not;
//! `tests/data/ring/dovecot-acceptance.tsv`).
//! Output is not bounded per line but per connection:
//! [`DEFAULT_OUTPUT_BUFFER_SIZE`] (`director_output_buffer_size`) bytes may
//! wait unsent; beyond that the driver disconnects the peer.
//!
//! [`RingDecoder`] also tracks the one piece of parse context the protocol
//! has: `HOST` lines between `HOST-HAND-START` and `HOST-HAND-END` are the
//! handshake form without an origin ([`RingContext::HostHandshake`]).

use thiserror::Error;

pub use crate::line::RING_MAX_LINE_LEN;
use crate::line::{LineBuffer, LineTooLong};

use super::message::{RingContext, RingMessage};
use super::parse::{parse_in, RingParseError};

/// Default of `director_output_buffer_size`: bytes a ring connection may have
/// waiting to be sent before the peer is disconnected (Dovecot: 10 MiB).
pub const DEFAULT_OUTPUT_BUFFER_SIZE: usize = 10 * 1024 * 1024;

/// The handshake's user list is flushed after this many `U` lines (Dovecot:
/// 10 000), so a large user directory streams instead of piling up.
pub const HANDSHAKE_USERS_PER_FLUSH: usize = 10_000;

/// … or after this many bytes of `U` lines (Dovecot: 128 KiB), whichever
/// comes first.
pub const HANDSHAKE_FLUSH_BYTES: usize = 128 * 1024;

/// Why [`RingDecoder::next_message`] gave up. Either way Dovecot drops the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingDecodeError {
    /// No LF within [`RING_MAX_LINE_LEN`] bytes.
    #[error("peer sent more than {} bytes without a LF", RING_MAX_LINE_LEN + 1)]
    LineTooLong(#[from] LineTooLong),
    /// A line did not parse.
    #[error("Invalid input {:?}: {error}", String::from_utf8_lossy(line))]
    Parse {
        /// The offending line, without its LF.
        line: Vec<u8>,
        /// What was wrong with it.
        error: RingParseError,
    },
}

/// Turns the bytes of one ring connection into messages.
#[derive(Debug, Clone)]
pub struct RingDecoder {
    lines: LineBuffer,
    context: RingContext,
}

impl Default for RingDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RingDecoder {
    /// A decoder with the ring's line limit, outside any handshake host list.
    pub fn new() -> Self {
        Self {
            lines: LineBuffer::new(RING_MAX_LINE_LEN),
            context: RingContext::Normal,
        }
    }

    /// Copies as many bytes as fit; returns how many were taken (0 when the
    /// buffer is full: pop messages first).
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.lines.feed(data)
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The context the next line will be parsed in.
    pub fn context(&self) -> RingContext {
        self.context
    }

    /// The next complete line, parsed. `Ok(None)`: more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<RingMessage>, RingDecodeError> {
        let Some(line) = self.lines.next_line()? else {
            return Ok(None);
        };
        let msg = parse_in(&line, self.context)
            .map_err(|error| RingDecodeError::Parse { line, error })?;
        match msg {
            RingMessage::HostHandStart { .. } => self.context = RingContext::HostHandshake,
            RingMessage::HostHandEnd { .. } => self.context = RingContext::Normal,
            _ => {}
        }
        Ok(Some(msg))
    }
}
