//! The director ring protocol (director ↔ director over TCP, protocol 1.9,
//! spec §10), as a sans-I/O codec.
//!
//! Directors form a ring in which every state change (users, hosts,
//! directors) travels as one TAB-separated line; our director must exchange
//! these lines byte for byte with Dovecot 2.3 directors. This module only
//! turns bytes into typed messages and back; the decisions (who is left and
//! right, seq de-duplication, SYNC forwarding) belong to the core and the
//! driver.
//!
//! * [`message`]: [`RingMessage`] and its parts ([`DirectorAddr`],
//!   [`Origin`], [`HostRecord`], …), the command names, protocol version
//!   constants and [`RingMessage::min_peer_minor`].
//! * [`parse()`]/[`parse_in`]: one line → [`RingMessage`], with range-checked
//!   fields and [`RingParseError`]s naming the command and field. The only
//!   context is [`RingContext`]: `HOST` inside the handshake's host list has
//!   no origin prefix.
//! * [`RingMessage::encode_into`]: the exact bytes Dovecot sends.
//! * [`framing`]: [`RingDecoder`] (bounded LF framing + context tracking) and
//!   the limits: [`RING_MAX_LINE_LEN`] (1023 bytes + LF, Dovecot's 1024-byte
//!   input buffer), [`DEFAULT_OUTPUT_BUFFER_SIZE`] (10 MiB,
//!   `director_output_buffer_size`), the handshake user flush batch sizes.
//!
//! Checked against the lines real Dovecot 2.3.19.1 directors exchanged
//! (`tests/ring_recorded.rs`): every recorded line parses and re-encodes to
//! the same bytes.

pub mod encode;
pub mod framing;
pub mod message;
pub mod parse;

pub use framing::{
    RingDecodeError, RingDecoder, DEFAULT_OUTPUT_BUFFER_SIZE, HANDSHAKE_FLUSH_BYTES,
    HANDSHAKE_USERS_PER_FLUSH, RING_MAX_LINE_LEN,
};
pub use message::{
    command, DirectorAddr, HandshakeUser, HostFields, HostRecord, HostState, Me, Origin, PingInfo,
    RingContext, RingMessage, SyncInfo, Timestamp, Version, OPTION_CONSISTENT_HASHING,
    PROTOCOL_MAJOR, PROTOCOL_MINOR, PROTOCOL_NAME,
};
pub use parse::{parse, parse_in, RingParseError, ERROR_VALUE_MAX_LEN};

#[cfg(test)]
mod tests;
