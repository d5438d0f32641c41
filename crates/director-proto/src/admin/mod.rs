//! The director admin protocol (`director-admin` UNIX socket or a TCP
//! `*-admin`/`*-doveadm` listener), spec §8 and lab/admin/NOTES.md §4.
//!
//! * [`handshake`]: the VERSION lines both sides exchange first.
//! * [`request`]: [`AdminRequest`], [`parse_request`] (server) and
//!   [`encode_request`] (client).
//! * [`session`]: [`AdminServerSession`] / [`AdminClientSession`], the
//!   sans-I/O connection state machines (the daemon serves its admin
//!   connections with the server side; doveadm drives the pieces itself).
//! * [`reply`]: [`AdminReply`] encoders (server) and [`ReplyReader`] (client).
//!
//! Framing is [`crate::line::LineBuffer`] with
//! [`crate::line::ADMIN_MAX_LINE_LEN`]; the server closes the connection
//! without a reply on any handshake or parse error.

pub mod handshake;
pub mod reply;
pub mod request;
pub mod session;

pub use handshake::{
    check_client_handshake, check_server_greeting, check_version_line, HandshakeError,
    CLIENT_HANDSHAKE, HANDSHAKE_ERROR_LOG, SERVER_GREETING,
};
pub use reply::{
    parse_host_list_line, parse_user_list_line, parse_user_lookup, AdminReply, DirectorListEntry,
    HostListEntry, ReplyParseError, ReplyReader, StatusReply, UserListEntry, UserLookupReply,
    TEXT_HOST_BEING_UPDATED, TEXT_HOST_TAG_CANT_BE_CHANGED, TEXT_RING_SYNC_TIMED_OUT,
    TEXT_VHOST_COUNT_TOO_LARGE,
};
pub use request::{
    command, encode_request, parse_request, AdminParseError, AdminRequest, UserRef,
    DEFAULT_VHOST_COUNT, MAX_VHOST_COUNT,
};
pub use session::{
    AdminClientSession, AdminServerSession, ClientError, ServerClose, CLIENT_MAX_LINE_LEN,
};
