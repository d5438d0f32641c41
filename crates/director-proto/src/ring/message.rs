//! The typed ring messages of protocol 1.9 (spec §10.3–§10.4, §10.11).
//!
//! Every line a director sends or receives on a ring connection is one
//! [`RingMessage`]. Free-text fields (usernames, tags, host names, kick
//! fields, the QUIT reason, OPTIONS and unknown arguments) are bytes, as
//! Dovecot carries them; numbers and addresses are typed.
//!
//! Optional trailing fields are modelled so that a parsed line re-encodes to
//! the same bytes: an `Option` (or [`HostFields`]) records whether the field
//! was on the wire. Which fields a sender may put on the wire depends on the
//! peer's protocol minor version; [`RingMessage::min_peer_minor`] and the
//! per-field docs say which.

use std::net::IpAddr;

/// Protocol name in the `VERSION` line.
pub const PROTOCOL_NAME: &[u8] = b"director";
/// Protocol major version; a peer with another major is refused.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Protocol minor version Dovecot 2.3 speaks (and we speak).
pub const PROTOCOL_MINOR: u32 = 9;

/// The option every 2.3 director announces (and requires) in `OPTIONS`.
pub const OPTION_CONSISTENT_HASHING: &[u8] = b"consistent-hashing";

/// Command names, exactly as on the wire (case-sensitive).
pub mod command {
    #![allow(missing_docs)]
    pub const VERSION: &[u8] = b"VERSION";
    pub const ME: &[u8] = b"ME";
    pub const DIRECTOR: &[u8] = b"DIRECTOR";
    pub const DIRECTOR_REMOVE: &[u8] = b"DIRECTOR-REMOVE";
    pub const CONNECT: &[u8] = b"CONNECT";
    pub const HOST_HAND_START: &[u8] = b"HOST-HAND-START";
    pub const HOST_HAND_END: &[u8] = b"HOST-HAND-END";
    pub const HOST: &[u8] = b"HOST";
    pub const HOST_REMOVE: &[u8] = b"HOST-REMOVE";
    pub const HOST_FLUSH: &[u8] = b"HOST-FLUSH";
    pub const U: &[u8] = b"U";
    pub const OPTIONS: &[u8] = b"OPTIONS";
    pub const DONE: &[u8] = b"DONE";
    pub const PING: &[u8] = b"PING";
    pub const PONG: &[u8] = b"PONG";
    pub const USER: &[u8] = b"USER";
    pub const USER_WEAK: &[u8] = b"USER-WEAK";
    pub const USER_MOVE: &[u8] = b"USER-MOVE";
    pub const USER_KILLED: &[u8] = b"USER-KILLED";
    pub const USER_KILLED_EVERYWHERE: &[u8] = b"USER-KILLED-EVERYWHERE";
    pub const USER_KICK: &[u8] = b"USER-KICK";
    pub const USER_KICK_ALT: &[u8] = b"USER-KICK-ALT";
    pub const USER_KICK_HASH: &[u8] = b"USER-KICK-HASH";
    pub const SYNC: &[u8] = b"SYNC";
    pub const QUIT: &[u8] = b"QUIT";

    /// Every command name of protocol 1.9.
    pub const ALL: &[&[u8]] = &[
        VERSION,
        ME,
        DIRECTOR,
        DIRECTOR_REMOVE,
        CONNECT,
        HOST_HAND_START,
        HOST_HAND_END,
        HOST,
        HOST_REMOVE,
        HOST_FLUSH,
        U,
        OPTIONS,
        DONE,
        PING,
        PONG,
        USER,
        USER_WEAK,
        USER_MOVE,
        USER_KILLED,
        USER_KILLED_EVERYWHERE,
        USER_KICK,
        USER_KICK_ALT,
        USER_KICK_HASH,
        SYNC,
        QUIT,
    ];
}

/// Unix seconds as carried on the ring. Dovecot reads handshake user
/// timestamps with `str_to_uint` (32 bits); the same range (digits only,
/// at most `u32::MAX`, i.e. until the year 2106) is applied to every
/// timestamp field.
pub type Timestamp = u32;

/// A director's identity: its ring listener's address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirectorAddr {
    /// Listener IP (`inet_ntop` form on the wire).
    pub ip: IpAddr,
    /// Listener port, 1–65535 (`net_str2port` rejects 0).
    pub port: u16,
}

/// The `<orig_ip>\t<orig_port>\t<seq>` prefix of a seq-tracked message
/// (§10.4): the director that originated it and its per-origin sequence
/// number, used to drop copies already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The originating director.
    pub director: DirectorAddr,
    /// Its sequence number for this message (`++last_seq` at the origin).
    pub seq: u32,
}

/// `VERSION\t<name>\t<major>\t<minor>`: the first line on every ring
/// connection, in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Protocol name; [`PROTOCOL_NAME`] for a director.
    pub name: Vec<u8>,
    /// Major version; [`PROTOCOL_MAJOR`].
    pub major: u32,
    /// Minor version; [`PROTOCOL_MINOR`] for 2.3.
    pub minor: u32,
}

impl Version {
    /// The line we send: `VERSION\tdirector\t1\t9`.
    pub fn ours() -> Self {
        Self {
            name: PROTOCOL_NAME.to_vec(),
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
        }
    }

    /// Whether a peer sending this may ring with us: name `director`, major 1
    /// (spec §10.3; the minor-version checks happen later in the handshake).
    pub fn is_compatible(&self) -> bool {
        self.name == PROTOCOL_NAME && self.major == PROTOCOL_MAJOR
    }
}

/// `ME\t<ip>\t<port>[\t<unix time>]`: the sender's own identity, second line
/// of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    /// The sender.
    pub director: DirectorAddr,
    /// The sender's clock (since 2.2.20; receivers warn on > 1 s skew).
    pub timestamp: Option<Timestamp>,
}

/// The `U|D<timestamp>` field of a `HOST` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostState {
    /// `D`: the host is down (gets no new users).
    pub down: bool,
    /// Unix time of the last up/down change (0 = never).
    pub last_updown_change: Timestamp,
}

/// Which optional trailing fields of a `HOST` line are on the wire (§10.3,
/// §10.4). A 2.3 ring always sends [`HostFields::All`]; the shorter forms
/// come from senders on rings with peers older than minor 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostFields {
    /// `<ip>\t<vhosts>`.
    IpVhosts,
    /// `… \t<tag>`.
    Tag,
    /// `… \t<tag>\t<U|D><ts>` (minor 6).
    State,
    /// `… \t<tag>\t<U|D><ts>\t<hostname>` (minor ≥ 7; hostname may be
    /// empty, so the line then ends with a TAB).
    All,
}

/// The host part of a `HOST` line, shared by the handshake form
/// ([`RingMessage::HandshakeHost`]) and the seq-tracked update
/// ([`RingMessage::Host`]).
///
/// Fields that [`fields`](Self::fields) leaves off the wire hold their
/// defaults (untagged, up since 0, no host name), which is how Dovecot reads
/// a shorter line; [`HostRecord::with_fields`] keeps that invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// The backend's address.
    pub ip: IpAddr,
    /// Its vhost count (the receiver applies its own cap).
    pub vhost_count: u32,
    /// Tag; empty = untagged. Tab-escaped on the wire.
    pub tag: Vec<u8>,
    /// Up/down state and the time it last changed.
    pub state: HostState,
    /// Host name (2.2.20+); empty = none. Tab-escaped on the wire.
    pub hostname: Vec<u8>,
    /// Which optional fields are on the wire.
    pub fields: HostFields,
}

impl HostRecord {
    /// A record with every field on the wire, as a 2.3 director sends it.
    pub fn new(
        ip: IpAddr,
        vhost_count: u32,
        tag: Vec<u8>,
        state: HostState,
        hostname: Vec<u8>,
    ) -> Self {
        Self {
            ip,
            vhost_count,
            tag,
            state,
            hostname,
            fields: HostFields::All,
        }
    }

    /// The same record sent with only `fields`: the fields left off are reset
    /// to the defaults a receiver assumes.
    pub fn with_fields(mut self, fields: HostFields) -> Self {
        if fields < HostFields::Tag {
            self.tag.clear();
        }
        if fields < HostFields::State {
            self.state = HostState::default();
        }
        if fields < HostFields::All {
            self.hostname.clear();
        }
        self.fields = fields;
        self
    }
}

/// `U\t<hash>\t<ip>\t<timestamp>[\tw]`: one user sent in the handshake
/// (minor 9; older peers get the same fields under the name `USER`, which
/// this codec does not produce: 2.3 rings are minor 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeUser {
    /// User hash.
    pub hash: u32,
    /// The host the user is assigned to.
    pub ip: IpAddr,
    /// Last time the assignment was used.
    pub timestamp: Timestamp,
    /// Weak assignment (`w`; Dovecot takes any 4th field starting with `w`).
    pub weak: bool,
}

/// The optional `<unix time>\t<buffered bytes>` of `PING` and `PONG`
/// (sent to peers of minor 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingInfo {
    /// Sender's clock.
    pub timestamp: Timestamp,
    /// Bytes waiting in the sender's output buffer for this connection.
    pub buffered: u64,
}

/// The optional tail of `SYNC`: `<minor>\t<timestamp>[\t<hosts_hash>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncInfo {
    /// Lowest protocol minor seen along the ring (capped by each receiver).
    pub minor: u32,
    /// When the origin sent (or re-sent) this SYNC.
    pub timestamp: Timestamp,
    /// The origin's `hosts_hash` (§2.6); 0 = "don't check". 2.2.20+.
    pub hosts_hash: Option<u32>,
}

/// One line of the ring protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingMessage {
    // --- handshake ---
    /// `VERSION\t<name>\t<major>\t<minor>`.
    Version(Version),
    /// `ME\t<ip>\t<port>[\t<time>]`.
    Me(Me),
    /// `HOST-HAND-START\t<0|1>`: begins the host list (outgoing side).
    HostHandStart {
        /// `1`: the sender's ring is handshaked (the receiver adopts its hosts
        /// if it is not); any non-zero number reads as 1.
        ring_handshaked: bool,
    },
    /// `HOST\t<ip>\t<vhosts>[\t<tag>[\t<U|D><ts>[\t<hostname>]]]` between
    /// `HOST-HAND-START` and `HOST-HAND-END` (parse it with
    /// [`RingContext::HostHandshake`]).
    HandshakeHost(HostRecord),
    /// `HOST-HAND-END\t<0|1>`: the same flag as `HOST-HAND-START`.
    HostHandEnd {
        /// As in [`RingMessage::HostHandStart`].
        ring_handshaked: bool,
    },
    /// `U\t<hash>\t<ip>\t<ts>[\tw]`: a user in the handshake (minor 9).
    HandshakeUser(HandshakeUser),
    /// `OPTIONS[\t<option>…]`: must contain `consistent-hashing` (minor ≥ 5).
    Options(Vec<Vec<u8>>),
    /// `DONE`: end of the handshake (sent by both sides).
    Done,

    // --- directors ---
    /// `DIRECTOR\t<ip>\t<port>`: a director exists (handshake and later).
    Director(DirectorAddr),
    /// `DIRECTOR-REMOVE\t<ip>\t<port>` (minor ≥ 2).
    DirectorRemove(DirectorAddr),
    /// `CONNECT\t<ip>\t<port>`: "connect to this director instead".
    Connect(DirectorAddr),
    /// `SYNC\t<ip>\t<port>\t<seq>[\t<minor>\t<ts>[\t<hosts_hash>]]`: the ring
    /// sync token of `origin` (not an [`Origin`]-tracked message: its seq is
    /// the origin's `sync_seq`).
    Sync {
        /// The director whose SYNC this is.
        origin: DirectorAddr,
        /// The origin's `sync_seq`.
        seq: u32,
        /// Minor, timestamp and hosts_hash (sent to peers of minor ≥ 1).
        info: Option<SyncInfo>,
    },
    /// `PING[\t<time>\t<buffered>]`.
    Ping(Option<PingInfo>),
    /// `PONG[\t<time>\t<buffered>]`.
    Pong(Option<PingInfo>),
    /// `QUIT\t<reason>` (minor ≥ 3): the sender closes the connection.
    Quit {
        /// Free text, e.g. `CONNECT requested`, `Shutting down`.
        reason: Vec<u8>,
    },

    // --- users ---
    /// `USER\t<hash>\t<ip>[\t<ts>]`: assignment refresh; not seq-tracked.
    User {
        /// User hash.
        hash: u32,
        /// Assigned host.
        ip: IpAddr,
        /// Last use; sent to peers of minor ≥ 9 (missing = "now").
        timestamp: Option<Timestamp>,
    },
    /// `USER-WEAK\t<origin>\t<hash>\t<ip>` (minor ≥ 1).
    UserWeak {
        /// Originator and seq.
        origin: Origin,
        /// User hash.
        hash: u32,
        /// Host.
        ip: IpAddr,
    },
    /// `USER-MOVE\t<origin>\t<hash>\t<ip>`: move a user to `ip` (§11).
    UserMove {
        /// Originator and seq.
        origin: Origin,
        /// User hash.
        hash: u32,
        /// New host.
        ip: IpAddr,
    },
    /// `USER-KILLED\t<hash>`: sent to the right neighbour only (§11.2).
    UserKilled {
        /// User hash.
        hash: u32,
    },
    /// `USER-KILLED-EVERYWHERE\t<origin>\t<hash>`.
    UserKilledEverywhere {
        /// Originator and seq.
        origin: Origin,
        /// User hash.
        hash: u32,
    },
    /// `USER-KICK\t<origin>\t<username>` (minor ≥ 4).
    UserKick {
        /// Originator and seq.
        origin: Origin,
        /// Username (not a hash). Tab-escaped on the wire.
        username: Vec<u8>,
    },
    /// `USER-KICK-ALT\t<origin>\t<field>\t<value>` (minor ≥ 8).
    UserKickAlt {
        /// Originator and seq.
        origin: Origin,
        /// passdb field name. Tab-escaped on the wire.
        field: Vec<u8>,
        /// Its value. Tab-escaped on the wire.
        value: Vec<u8>,
    },
    /// `USER-KICK-HASH\t<origin>\t<hash>\t<except_ip>` (minor ≥ 4).
    UserKickHash {
        /// Originator and seq.
        origin: Origin,
        /// User hash.
        hash: u32,
        /// Connections to this host are kept.
        except_ip: IpAddr,
    },

    // --- hosts ---
    /// `HOST\t<origin>\t<ip>\t<vhosts>[\t<tag>[\t<U|D><ts>[\t<hostname>]]]`:
    /// a host was added or changed.
    Host {
        /// Originator and seq.
        origin: Origin,
        /// The host.
        host: HostRecord,
    },
    /// `HOST-REMOVE\t<origin>\t<ip>`.
    HostRemove {
        /// Originator and seq.
        origin: Origin,
        /// The host.
        ip: IpAddr,
    },
    /// `HOST-FLUSH\t<origin>\t<ip>`: forget the host's users.
    HostFlush {
        /// Originator and seq.
        origin: Origin,
        /// The host.
        ip: IpAddr,
    },

    /// A command this codec does not know. Dovecot treats an unknown command
    /// as a protocol error (the sender is marked failed for 60 s and the
    /// connection is dropped, spec §10.4); the caller decides.
    Unknown {
        /// Command name (non-empty, not one of [`command::ALL`]).
        command: Vec<u8>,
        /// Its fields, unescaped.
        args: Vec<Vec<u8>>,
    },
}

/// How a line is read. Only `HOST` depends on it: inside the handshake's
/// host list it has no origin prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingContext {
    /// Everything outside `HOST-HAND-START` … `HOST-HAND-END`.
    #[default]
    Normal,
    /// Between `HOST-HAND-START` and `HOST-HAND-END`: `HOST` lines are
    /// [`RingMessage::HandshakeHost`].
    HostHandshake,
}

impl RingMessage {
    /// The command name on the wire.
    pub fn command_name(&self) -> &[u8] {
        use command as c;
        match self {
            Self::Version(_) => c::VERSION,
            Self::Me(_) => c::ME,
            Self::HostHandStart { .. } => c::HOST_HAND_START,
            Self::HandshakeHost(_) | Self::Host { .. } => c::HOST,
            Self::HostHandEnd { .. } => c::HOST_HAND_END,
            Self::HandshakeUser(_) => c::U,
            Self::Options(_) => c::OPTIONS,
            Self::Done => c::DONE,
            Self::Director(_) => c::DIRECTOR,
            Self::DirectorRemove(_) => c::DIRECTOR_REMOVE,
            Self::Connect(_) => c::CONNECT,
            Self::Sync { .. } => c::SYNC,
            Self::Ping(_) => c::PING,
            Self::Pong(_) => c::PONG,
            Self::Quit { .. } => c::QUIT,
            Self::User { .. } => c::USER,
            Self::UserWeak { .. } => c::USER_WEAK,
            Self::UserMove { .. } => c::USER_MOVE,
            Self::UserKilled { .. } => c::USER_KILLED,
            Self::UserKilledEverywhere { .. } => c::USER_KILLED_EVERYWHERE,
            Self::UserKick { .. } => c::USER_KICK,
            Self::UserKickAlt { .. } => c::USER_KICK_ALT,
            Self::UserKickHash { .. } => c::USER_KICK_HASH,
            Self::HostRemove { .. } => c::HOST_REMOVE,
            Self::HostFlush { .. } => c::HOST_FLUSH,
            Self::Unknown { command, .. } => command,
        }
    }

    /// The context in which this message's line must be parsed to read it
    /// back ([`RingContext::HostHandshake`] only for
    /// [`RingMessage::HandshakeHost`]).
    pub fn context(&self) -> RingContext {
        match self {
            Self::HandshakeHost(_) => RingContext::HostHandshake,
            _ => RingContext::Normal,
        }
    }

    /// The originator and seq of a seq-tracked message (§10.4).
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            Self::UserWeak { origin, .. }
            | Self::UserMove { origin, .. }
            | Self::UserKilledEverywhere { origin, .. }
            | Self::UserKick { origin, .. }
            | Self::UserKickAlt { origin, .. }
            | Self::UserKickHash { origin, .. }
            | Self::Host { origin, .. }
            | Self::HostRemove { origin, .. }
            | Self::HostFlush { origin, .. } => Some(origin),
            _ => None,
        }
    }

    /// The lowest peer protocol minor that understands this command (§10.4,
    /// §10.11): forward it only to peers at least this new. Optional fields
    /// have their own thresholds (see the field docs).
    pub fn min_peer_minor(&self) -> u32 {
        match self {
            Self::UserWeak { .. } => 1,
            Self::DirectorRemove(_) => 2,
            Self::Quit { .. } => 3,
            Self::UserKick { .. } | Self::UserKickHash { .. } => 4,
            Self::Options(_) => 5,
            Self::UserKickAlt { .. } => 8,
            Self::HandshakeUser(_) => 9,
            _ => 0,
        }
    }
}
