//! The ring state machine: connections, handshake, forwarding, SYNC and liveness
//! (spec §10.3–§10.10).
//!
//! Every method takes the current Unix time and, where the core is affected, the
//! [`Director`]; outputs queue up for [`Ring::poll_output`]. After each event the ring
//! state the core needs ([`RingStatus`]) is set on the director when it changed.
//!
//! Terms: our **right** is the director we connect to (the next one upward in the
//! sorted list, §10.1); our **left** connects to us. Seq-tracked messages carry
//! `(origin, seq)` and are forwarded to every connection except the one whose director
//! sent them, until they reach their origin; `SYNC` only travels rightwards.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use director_core::refusal_log::RefusalLog;
use director_core::user_directory::UserRef;
use director_core::{Director, Effect, RingHost, RingHostOutcome, RingStatus, RingUserOutcome};
use director_proto::admin::DirectorListEntry;
use director_proto::ring::{
    DirectorAddr, HandshakeUser, HostRecord, HostState, Me, Origin, PingInfo, RingDecodeError,
    RingMessage, SyncInfo, Timestamp, Version, OPTION_CONSISTENT_HASHING, PROTOCOL_MINOR,
};

use crate::topology::{addr_text, closer_left, closer_right, Directors, SHORT_CONNECTION_SECS};

/// Handshake `U` lines queued per [`Output::NotifyWritten`] round at most: about 300 KiB,
/// far below the default `director_output_buffer_size`, however many users the ring holds.
pub const HANDSHAKE_USERS_PER_ROUND: usize = 10_000;
/// An outgoing connection that isn't established within this many seconds is given up
/// (Dovecot: 10 s).
pub const CONNECT_TIMEOUT_SECS: u64 = 10;
/// The peer's `ME` must arrive this soon after the connection opened (Dovecot: 10 s).
pub const ME_TIMEOUT_SECS: u64 = 10;
/// After `ME`, the accepting side waits this long for `DONE` (Dovecot: 40 s).
pub const DONE_TIMEOUT_SECS: u64 = 40;
/// A link without input for this long is pinged (Dovecot: 15 s) …
pub const PING_IDLE_SECS: u64 = 15;
/// … or for this long while the ring is not synced (Dovecot: 1 s).
pub const PING_UNSYNCED_SECS: u64 = 1;
/// Default `director_ping_idle_timeout`: no input at all this long after a PING → close.
pub const DEFAULT_PING_IDLE_TIMEOUT_SECS: u64 = 30;
/// Default `director_ping_max_timeout`: no PONG this long after a PING → close.
pub const DEFAULT_PING_MAX_TIMEOUT_SECS: u64 = 60;
/// Our SYNC that hasn't come back is sent again after this long (Dovecot: 5 s).
pub const SYNC_RESEND_SECS: u64 = 5;
/// Without a reachable right neighbour we retry connecting this often (Dovecot: 1 s) …
pub const RING_RETRY_SECS: u64 = 1;
/// … and after this long declare ourselves the only director (Dovecot: 20 s).
pub const RING_ALONE_GIVE_UP_SECS: u64 = 20;
/// While our right is not the preferred one, the preferred one is retried this often
/// (Dovecot: 30 s).
pub const PREFERRED_RIGHT_RETRY_SECS: u64 = 30;
/// Removed directors are forgotten after this long (or at the next ring sync; Dovecot: 30 s).
pub const REMOVED_PURGE_SECS: u64 = 30;
/// An unchanged SYNC seen this many times is dropped (a loop breaker; Dovecot: 4).
pub const SYNC_MAX_DUPLICATES: u32 = 4;
/// A SYNC whose seq went backwards is a restart of its origin only if its timestamp is
/// at least this much newer (Dovecot: 120 s); otherwise it is stale.
pub const SYNC_STALE_SECS: u32 = 120;
/// SYNCs of other directors waiting for a right neighbour, at most (one per origin).
pub const MAX_DELAYED_SYNCS: usize = 64;

/// Peers older than this minor can't announce consistent hashing (`OPTIONS`, 2.2.16);
/// Dovecot 2.3 refuses them.
pub const MIN_PEER_MINOR: u32 = 5;
/// Host tags are only taken from peers of at least this minor (tags v2, 2.2.20).
pub const MIN_TAG_MINOR: u32 = 7;

/// A `PING` or `PONG` that took longer than this is logged as a warning (Dovecot: 5 s).
pub const PING_WARN_MSECS: u64 = 5_000;
/// A handshake that took at least this long is logged as a warning (Dovecot: 29 s).
pub const HANDSHAKE_WARN_MSECS: u64 = 29_000;
/// After we sent `CONNECT` to a peer that should be connected elsewhere, its input is
/// ignored and it has this long to hang up before we close the link (Dovecot: 10 s); the
/// wait is so that it reads the `CONNECT` before the link goes.
pub const WAIT_DISCONNECT_AFTER_CONNECT_SECS: u64 = 10;
/// A `CONNECT` we ignore (our right is closer, or the director is removed) closes the
/// link it came on this much later (Dovecot: 1 s).
pub const WRONG_CONNECT_CLOSE_SECS: u64 = 1;

/// When an event happens: Unix time, to the millisecond where the caller's clock has it.
/// Whole seconds (`u64`) are enough for the protocol's timers; milliseconds (a
/// [`std::time::Duration`] since the epoch) make the measured round trips and the slow
/// handshake and ping warnings exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingTime {
    millis: u64,
}

impl RingTime {
    /// Milliseconds since the epoch.
    pub fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// Whole seconds since the epoch.
    pub fn secs(self) -> u64 {
        self.millis / 1000
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.millis
    }
}

impl From<u64> for RingTime {
    /// Whole seconds since the epoch.
    fn from(secs: u64) -> Self {
        Self {
            millis: secs.saturating_mul(1000),
        }
    }
}

impl From<std::time::Duration> for RingTime {
    /// Time since the epoch.
    fn from(d: std::time::Duration) -> Self {
        Self {
            millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Sets the buffered byte count of a `PING` or `PONG` about to be queued: Dovecot's peers
/// log it when a ping is slow, to tell a congested link from a hung director. Only the
/// socket's owner knows the count, so it stamps the line as it queues it (any other
/// message is left alone).
pub fn stamp_buffered(message: &mut RingMessage, buffered: u64) {
    if let RingMessage::Ping(Some(info)) | RingMessage::Pong(Some(info)) = message {
        info.buffered = buffered;
    }
}

/// Identifies one ring connection. The driver picks the ids (unique while open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer connected to our ring listener.
    Incoming,
    /// We connected to this director (after [`Output::Connect`]).
    Outgoing(DirectorAddr),
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write this line (`message.encode()`) to the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The line.
        message: RingMessage,
    },
    /// Open a TCP connection to this director, then report [`Ring::connected`] with
    /// [`Direction::Outgoing`] or [`Ring::connect_failed`].
    Connect {
        /// The director's ring listener.
        addr: DirectorAddr,
    },
    /// Call [`Ring::written`] once everything queued for the connection so far has been
    /// written: the handshake's users go out a round at a time, so that a ring of millions
    /// of users stays within the output buffer limit.
    NotifyWritten {
        /// The connection.
        conn: ConnId,
    },
    /// Close the connection after writing what was queued for it; `reason` is for the
    /// log (Dovecot's wording where known). Don't report [`Ring::closed`] for it.
    Disconnect {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: String,
    },
}

/// Settings of the ring.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Our identity (see [`crate::find_self`]).
    pub me: DirectorAddr,
    /// `director_servers`, expanded (may include `me`). Empty = standalone.
    pub servers: Vec<DirectorAddr>,
    /// `director_ping_idle_timeout` in seconds.
    pub ping_idle_timeout_secs: u64,
    /// `director_ping_max_timeout` in seconds.
    pub ping_max_timeout_secs: u64,
    /// Handshake `U` lines per round (see [`RingConfig::fit_output_buffer`]).
    pub handshake_users_per_round: usize,
}

impl RingConfig {
    /// Settings with Dovecot's default timeouts.
    pub fn new(me: DirectorAddr, servers: Vec<DirectorAddr>) -> Self {
        Self {
            me,
            servers,
            ping_idle_timeout_secs: DEFAULT_PING_IDLE_TIMEOUT_SECS,
            ping_max_timeout_secs: DEFAULT_PING_MAX_TIMEOUT_SECS,
            handshake_users_per_round: HANDSHAKE_USERS_PER_ROUND,
        }
    }

    /// Sizes a handshake round to a quarter of `director_output_buffer_size`, so that one
    /// round never fills a peer's queue (at most [`HANDSHAKE_USERS_PER_ROUND`]).
    pub fn fit_output_buffer(&mut self, output_buffer_size: usize) {
        // The longest U line: an IPv6 address, both 32-bit numbers at their widest, weak.
        const LONGEST_U_LINE: usize = 72;
        self.handshake_users_per_round =
            (output_buffer_size / 4 / LONGEST_U_LINE).clamp(1, HANDSHAKE_USERS_PER_ROUND);
    }
}

/// What the owner of a connection's socket counts for `DIRECTOR-LIST` (all 0 where nobody
/// counts, as in the in-memory tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCounters {
    /// Round trip of the latest answered `PING`, in milliseconds.
    pub last_ping_msecs: u64,
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Bytes queued for the peer and not yet written.
    pub buffered: u64,
    /// The most that was ever queued.
    pub peak_buffered: u64,
}

/// A summary of the ring for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingOverview {
    /// Our left neighbour.
    pub left: Option<DirectorAddr>,
    /// Our right neighbour.
    pub right: Option<DirectorAddr>,
    /// The first own SYNC came back (or we are alone).
    pub handshaked: bool,
    /// Our latest SYNC came back.
    pub synced: bool,
    /// Open connections.
    pub connections: usize,
    /// Our current SYNC sequence number.
    pub sync_seq: u32,
    /// Lowest protocol minor along the ring, from the last returned SYNC.
    pub ring_min_version: u32,
}

#[derive(Debug, Clone)]
struct Conn {
    direction: Direction,
    remote_ip: IpAddr,
    /// The director at the other end: the target of an outgoing connection, the `ME`
    /// of an incoming one.
    peer: Option<DirectorAddr>,
    /// Protocol minor from the peer's `VERSION`.
    minor: Option<u32>,
    me_at: Option<u64>,
    /// Inside `HOST-HAND-START` … `HOST-HAND-END`: whether the peer's hosts are ignored.
    host_hand: Option<bool>,
    host_hand_seen: bool,
    options_ok: bool,
    done_received: bool,
    /// Both DONEs exchanged.
    handshaked: bool,
    users_received: u64,
    users_sent: u64,
    /// While our handshake's users are being sent: who is left, and what must wait until
    /// our `DONE` (the peer takes nothing else in the middle of a handshake).
    sending_users: Option<UserSend>,
    connected_at: u64,
    connected_at_ms: u64,
    last_input: u64,
    last_output: u64,
    ping_sent_at: Option<u64>,
    /// The same, to the millisecond, for the round trip.
    ping_sent_ms: u64,
    input_since_ping: bool,
    /// We pinged our left to check it is alive before believing a newcomer (§10.3 (d)).
    verifying_left: bool,
    /// The link is on its way out: its input is ignored until the peer hangs up or the
    /// deadline passes.
    closing: Option<Closing>,
}

/// Why and until when a link waits to be closed.
#[derive(Debug, Clone, Copy)]
struct Closing {
    at: u64,
    kind: ClosingKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClosingKind {
    /// We told the peer to connect to this director instead.
    SentConnect(DirectorAddr),
    /// The peer's `CONNECT` was wrong.
    WrongConnect,
}

impl Conn {
    fn new(direction: Direction, remote_ip: IpAddr, now: u64, now_ms: u64) -> Self {
        Self {
            direction,
            remote_ip,
            peer: match direction {
                Direction::Outgoing(a) => Some(a),
                Direction::Incoming => None,
            },
            minor: None,
            me_at: None,
            host_hand: None,
            host_hand_seen: false,
            options_ok: false,
            done_received: false,
            handshaked: false,
            users_received: 0,
            users_sent: 0,
            sending_users: None,
            connected_at: now,
            connected_at_ms: now_ms,
            last_input: now,
            last_output: now,
            ping_sent_at: None,
            ping_sent_ms: 0,
            input_since_ping: false,
            verifying_left: false,
            closing: None,
        }
    }

    fn incoming(&self) -> bool {
        self.direction == Direction::Incoming
    }
}

/// Our handshake's users still to send on one connection.
#[derive(Debug, Clone)]
struct UserSend {
    /// The users when the handshake began; each is looked up again when its turn comes,
    /// so the peer gets its state of that moment.
    left: std::vec::IntoIter<UserRef>,
    /// Lines for this peer that came up meanwhile, sent after our `DONE`.
    deferred: Vec<RingMessage>,
}

/// Whether a seq-tracked message is new to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    New,
    Duplicate,
    /// We originated it: it went round.
    Ours,
    /// Its origin is unknown or removed: process it and send it on as ours.
    UnknownOrigin,
}

type Handled = Result<(), String>;

/// The ring protocol state machine. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Ring {
    config: RingConfig,
    dirs: Directors,
    standalone: bool,
    conns: BTreeMap<ConnId, Conn>,
    left: Option<ConnId>,
    right: Option<ConnId>,
    connecting: Option<(DirectorAddr, u64)>,
    /// Since when no right neighbour could be reached.
    alone_since: Option<u64>,
    alone_declared: bool,
    alone_tried: Vec<DirectorAddr>,
    next_retry: Option<u64>,
    preferred_retry_at: Option<u64>,
    handshaked: bool,
    synced: bool,
    sync_seq: u32,
    sync_sent_at: Option<u64>,
    last_synced_at: u64,
    ring_min_version: u32,
    /// Our counter for seq-tracked messages we originate.
    last_seq: u32,
    /// Other directors' SYNCs waiting for a right neighbour.
    delayed_syncs: Vec<RingMessage>,
    directors_changed: bool,
    /// The director a CONNECT last sent us to, and when.
    connect_followed: Option<(DirectorAddr, u64)>,
    /// Our SYNC is to be sent at the end of the current event (with the final hosts_hash).
    sync_pending: bool,
    reported: Option<RingStatus>,
    outputs: VecDeque<Output>,
    /// The time of the event being handled, to the millisecond.
    now_ms: u64,
    /// Connections from IPs not in `director_servers`: a stranger connecting in a loop
    /// must not flood the log.
    refusals: RefusalLog<Duration>,
    /// When our latest SYNC was sent, to the millisecond.
    sync_sent_ms: u64,
    /// How long our SYNC took to come back the last time the ring became synced again
    /// (`DIRECTOR-LIST`'s last column for ourselves).
    last_sync_msecs: u64,
}

fn now32(now: u64) -> Timestamp {
    Timestamp::try_from(now).unwrap_or(Timestamp::MAX)
}

/// Dovecot's "Handshake finished in …" line: a warning when it took
/// [`HANDSHAKE_WARN_MSECS`] or more.
fn log_handshake_finished(c: &Conn, peer: DirectorAddr, now_ms: u64) {
    let msecs = now_ms.saturating_sub(c.connected_at_ms);
    let secs = format!("{}.{:03}", msecs / 1000, msecs % 1000);
    let (peer, received, sent) = (addr_text(&peer), c.users_received, c.users_sent);
    if msecs >= HANDSHAKE_WARN_MSECS {
        tracing::warn!(%peer, msecs, users_received = received, users_sent = sent,
            "Handshake finished in {secs} secs");
    } else {
        tracing::info!(%peer, msecs, users_received = received, users_sent = sent,
            "Handshake finished in {secs} secs");
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ring_host_of(r: &HostRecord) -> RingHost {
    RingHost {
        ip: r.ip,
        vhost_count: r.vhost_count,
        tag: lossy(&r.tag),
        down: r.state.down,
        // A negative time (accepted on the wire) means "never": the epoch.
        last_updown_change: u64::try_from(r.state.last_updown_change).unwrap_or(0),
        hostname: (!r.hostname.is_empty()).then(|| lossy(&r.hostname)),
    }
}

fn host_record_of(h: &RingHost) -> HostRecord {
    HostRecord::new(
        h.ip,
        h.vhost_count,
        h.tag.clone().into_bytes(),
        HostState {
            down: h.down,
            last_updown_change: now32(h.last_updown_change),
        },
        h.hostname.clone().unwrap_or_default().into_bytes(),
    )
}

impl Ring {
    /// A ring for `config`. Nothing happens until [`Ring::start`].
    pub fn new(config: RingConfig) -> Self {
        let dirs = Directors::new(config.me, &config.servers);
        let standalone = dirs.others_upward().is_empty();
        Self {
            config,
            dirs,
            standalone,
            conns: BTreeMap::new(),
            left: None,
            right: None,
            connecting: None,
            alone_since: None,
            alone_declared: false,
            alone_tried: Vec::new(),
            next_retry: None,
            preferred_retry_at: None,
            handshaked: standalone,
            synced: standalone,
            sync_seq: 0,
            sync_sent_at: None,
            last_synced_at: 0,
            ring_min_version: PROTOCOL_MINOR,
            last_seq: 0,
            delayed_syncs: Vec::new(),
            directors_changed: false,
            sync_pending: false,
            connect_followed: None,
            reported: None,
            outputs: VecDeque::new(),
            now_ms: 0,
            refusals: RefusalLog::new(),
            sync_sent_ms: 0,
            last_sync_msecs: 0,
        }
    }

    /// Notes the time of the event being handled; the protocol's timers count whole
    /// seconds.
    fn clock(&mut self, now: impl Into<RingTime>) -> u64 {
        let now = now.into();
        self.now_ms = now.millis();
        now.secs()
    }

    /// Sets the core's ring status and starts connecting to our right neighbour.
    pub fn start(&mut self, now: impl Into<RingTime>, dir: &mut Director) {
        let now = self.clock(now);
        self.connect_right(now, false);
        self.after_event(now, dir);
    }

    /// Our identity.
    pub fn me(&self) -> DirectorAddr {
        self.dirs.me
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Our latest SYNC came back: ring-sync-gated admin replies may be sent.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Left, right and sync state.
    pub fn overview(&self) -> RingOverview {
        RingOverview {
            left: self.left.and_then(|c| self.peer_of(c)),
            right: self.right.and_then(|c| self.peer_of(c)),
            handshaked: self.handshaked,
            synced: self.synced,
            connections: self.conns.len(),
            sync_seq: self.sync_seq,
            ring_min_version: self.ring_min_version,
        }
    }

    /// Whether we are the lowest-addressed live director of a synced ring: our left
    /// neighbour (the next lower director, wrapping) is above us, or we have none. Exactly
    /// one director of a synced ring is; when it dies the ring closes around it and the
    /// next lowest is. What one director alone decides for the ring (the health checks)
    /// follows this.
    pub fn is_lowest_live(&self) -> bool {
        let o = self.overview();
        o.synced
            && o.left
                .is_none_or(|left| crate::topology::addr_cmp(&left, &self.dirs.me).is_gt())
    }

    /// The ring status the core is given.
    pub fn ring_status(&self) -> RingStatus {
        RingStatus {
            handshaked: self.handshaked,
            synced: self.synced,
            has_right: self.right.is_some(),
            has_peers: !self.conns.is_empty(),
        }
    }

    fn peer_of(&self, c: ConnId) -> Option<DirectorAddr> {
        self.conns.get(&c).and_then(|c| c.peer)
    }

    // ---- events: connections --------------------------------------------------------------

    /// A connection opened: an accepted one (`Incoming`, `remote_ip` = the peer's source
    /// address) or ours after [`Output::Connect`] (`Outgoing`). Incoming connections from
    /// an IP that is not a director of the ring are refused.
    pub fn connected(
        &mut self,
        id: ConnId,
        remote_ip: IpAddr,
        direction: Direction,
        now: impl Into<RingTime>,
        dir: &mut Director,
    ) {
        let now = self.clock(now);
        match direction {
            Direction::Incoming => {
                if !self.dirs.ip_listed(&remote_ip) {
                    let verdict = self.refusals.refusal(Duration::from_millis(self.now_ms));
                    if verdict.suppressed_before > 0 {
                        tracing::warn!(count = verdict.suppressed_before,
                            "more connections from unknown director IPs were dropped and not logged");
                    }
                    if verdict.log {
                        tracing::warn!(peer = %remote_ip,
                            "Connection from unknown director IP, dropping");
                    }
                    self.outputs.push_back(Output::Disconnect {
                        conn: id,
                        reason: "Server not listed in director_servers, dropping".into(),
                    });
                    return;
                }
                self.conns
                    .insert(id, Conn::new(direction, remote_ip, now, self.now_ms));
                self.send_greeting(id, now);
            }
            Direction::Outgoing(addr) => {
                if self.connecting.is_some_and(|(a, _)| a == addr) {
                    self.connecting = None;
                }
                if let Some(e) = self.dirs.get_mut(&addr) {
                    e.reset_sequences();
                }
                self.conns
                    .insert(id, Conn::new(direction, remote_ip, now, self.now_ms));
                self.send_greeting(id, now);
                let known: Vec<DirectorAddr> = self
                    .dirs
                    .list
                    .iter()
                    .filter(|e| !e.removed())
                    .map(|e| e.addr)
                    .collect();
                for a in known {
                    self.send(id, RingMessage::Director(a), now);
                }
            }
        }
        self.after_event(now, dir);
    }

    /// Connecting to `addr` failed (refused, unreachable, timed out).
    pub fn connect_failed(
        &mut self,
        addr: DirectorAddr,
        now: impl Into<RingTime>,
        dir: &mut Director,
    ) {
        let now = self.clock(now);
        if self.connecting.is_some_and(|(a, _)| a == addr) {
            self.connecting = None;
        }
        tracing::info!(director = %addr_text(&addr), "connect to director failed");
        if let Some(e) = self.dirs.get_mut(&addr) {
            e.last_network_failure = Some(now);
        }
        if self.alone_since.is_some() {
            self.alone_tried.push(addr);
        }
        self.connect_right(now, false);
        self.after_event(now, dir);
    }

    /// The peer closed the connection, or it failed (EOF, reset, write error).
    pub fn closed(&mut self, id: ConnId, now: impl Into<RingTime>, dir: &mut Director) {
        let now = self.clock(now);
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if let Some(p) = c.peer {
            if now < c.connected_at + SHORT_CONNECTION_SECS {
                if let Some(e) = self.dirs.get_mut(&p) {
                    e.last_network_failure = Some(now);
                }
            }
            // While retrying alone, a peer that hung up on us is tried again next round.
            if self.alone_since.is_some() && !c.incoming() {
                self.alone_tried.push(p);
            }
        }
        match c.closing.map(|k| k.kind) {
            Some(ClosingKind::SentConnect(target)) => {
                tracing::warn!(conn = id.0, peer = ?c.peer.map(|p| addr_text(&p)),
                    "Director {} tried to connect to us, should use {} instead",
                    c.peer.map_or_else(|| c.remote_ip.to_string(), |p| addr_text(&p)),
                    addr_text(&target));
            }
            _ => tracing::info!(conn = id.0, peer = ?c.peer.map(|p| addr_text(&p)),
                "director disconnected: Connection closed"),
        }
        self.remove_conn(id, now);
        self.after_event(now, dir);
    }

    /// The connection's input could not be framed or parsed: Dovecot's protocol failure
    /// (too long line: just reconnect; anything else: no contact for 60 s).
    pub fn decode_error(
        &mut self,
        id: ConnId,
        error: &RingDecodeError,
        now: impl Into<RingTime>,
        dir: &mut Director,
    ) {
        let now = self.clock(now);
        match error {
            RingDecodeError::LineTooLong(_) => {
                self.close(id, "Too long input line", now);
            }
            RingDecodeError::Parse { .. } => {
                self.protocol_failure(id, &format!("Invalid input: {error}"), now);
            }
        }
        self.after_event(now, dir);
    }

    /// Shuts the ring down: `QUIT Shutting down` on every connection.
    pub fn shutdown(&mut self, now: impl Into<RingTime>) {
        let now = self.clock(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, "Shutting down", now);
        }
        self.connecting = None;
    }

    fn send_greeting(&mut self, id: ConnId, now: u64) {
        let me = self.dirs.me;
        self.send(id, RingMessage::Version(Version::ours()), now);
        self.send(
            id,
            RingMessage::Me(Me {
                director: me,
                timestamp: Some(now32(now)),
            }),
            now,
        );
    }

    fn send(&mut self, id: ConnId, message: RingMessage, now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            if let Some(sending) = &mut c.sending_users {
                sending.deferred.push(message);
                return;
            }
            c.last_output = now;
            self.outputs.push_back(Output::Send { conn: id, message });
        }
    }

    /// Sends to every connection whose peer is known and not `except`, of at least
    /// protocol minor `min_minor` (built per peer minor by `make`).
    fn broadcast_with(
        &mut self,
        except: Option<DirectorAddr>,
        min_minor: u32,
        now: u64,
        make: impl Fn(u32) -> RingMessage,
    ) {
        let targets: Vec<(ConnId, u32)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| {
                let minor = c.minor?;
                let peer = c.peer?;
                (Some(peer) != except && minor >= min_minor).then_some((*id, minor))
            })
            .collect();
        for (id, minor) in targets {
            self.send(id, make(minor), now);
        }
    }

    fn broadcast(&mut self, except: Option<DirectorAddr>, msg: RingMessage, now: u64) {
        let min = msg.min_peer_minor();
        self.broadcast_with(except, min, now, |_| msg.clone());
    }

    /// Closes a connection on purpose: `QUIT reason` (peers of minor ≥ 3), then
    /// [`Output::Disconnect`].
    fn close(&mut self, id: ConnId, reason: &str, now: u64) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        tracing::info!(conn = id.0, peer = %c.remote_ip, reason, "closing ring connection");
        if c.minor.unwrap_or(0) >= 3 {
            self.send(
                id,
                RingMessage::Quit {
                    reason: reason.as_bytes().to_vec(),
                },
                now,
            );
        }
        self.outputs.push_back(Output::Disconnect {
            conn: id,
            reason: reason.to_string(),
        });
        self.remove_conn(id, now);
    }

    /// The peer broke the protocol: no contact with it for 60 s, and the link goes.
    fn protocol_failure(&mut self, id: ConnId, reason: &str, now: u64) {
        let peer = self.peer_of(id);
        tracing::warn!(conn = id.0, peer = ?peer.map(|p| addr_text(&p)), reason,
            "director protocol failure");
        if let Some(e) = peer.and_then(|p| self.dirs.get_mut(&p)) {
            e.last_protocol_failure = Some(now);
        }
        self.close(id, reason, now);
    }

    fn remove_conn(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if !c.incoming() && self.right != Some(id) {
            // An outgoing attempt that didn't become our right: look again.
            self.connect_right(now, false);
        }
        if self.left == Some(id) {
            self.left = None;
            self.promote_pending_left();
        }
        if self.right == Some(id) {
            self.right = None;
            self.connect_right(now, false);
        }
        if self.left.is_none() || self.right.is_none() {
            // As Dovecot: we aren't synced until we are connected to a ring again. A
            // director cut off from its neighbours that went on assigning new users by its
            // own host list would send users to other backends than the rest of the ring
            // does; until it is in a ring again (or has been alone for
            // RING_ALONE_GIVE_UP_SECS) its new users wait.
            self.sync_seq = self.sync_seq.wrapping_add(1);
            if self.synced {
                tracing::info!("Ring is unsynced: a neighbour connection is gone");
            }
            self.synced = false;
            self.alone_declared = false;
        }
    }

    /// After our left went away, the first handshaked incoming connection becomes left.
    fn promote_pending_left(&mut self) {
        let me = self.dirs.me;
        let next = self
            .conns
            .iter()
            .find(|(_, c)| {
                c.incoming()
                    && c.handshaked
                    && c.closing.is_none()
                    && c.peer.is_some_and(|p| p != me)
            })
            .map(|(id, _)| *id);
        if let Some(id) = next {
            self.left = Some(id);
            tracing::info!(left = ?self.peer_of(id).map(|p| addr_text(&p)), "new left neighbour");
            self.after_assignment();
        }
    }

    // ---- right neighbour ---------------------------------------------------------------------

    fn right_peer(&self) -> Option<DirectorAddr> {
        self.right.and_then(|c| self.peer_of(c))
    }

    /// Connects towards the preferred right neighbour unless we are already connected or
    /// connecting to it. `force`: replace a working non-preferred right (30 s retry).
    fn connect_right(&mut self, now: u64, force: bool) {
        if self.standalone || self.connecting.is_some() {
            return;
        }
        // An outgoing connection still in its handshake decides first.
        if self.conns.iter().any(|(id, c)| {
            !c.incoming() && !c.handshaked && c.closing.is_none() && Some(*id) != self.right
        }) {
            return;
        }
        let ignore_failures = self.alone_since.is_some() || force;
        let target = self
            .dirs
            .preferred_right(now, ignore_failures, &self.alone_tried);
        let best = self.dirs.preferred_right(now, true, &[]);
        match target {
            Some(t) => {
                if let Some(r) = self.right_peer() {
                    if r == t {
                        self.preferred_retry_at =
                            (Some(r) != best).then_some(now + PREFERRED_RIGHT_RETRY_SECS);
                        return;
                    }
                    if !force && !closer_right(&self.dirs.me, &t, &r) {
                        self.preferred_retry_at
                            .get_or_insert(now + PREFERRED_RIGHT_RETRY_SECS);
                        return;
                    }
                }
                tracing::debug!(director = %addr_text(&t), "Connecting to right");
                self.connecting = Some((t, now));
                self.outputs.push_back(Output::Connect { addr: t });
            }
            None => {
                if self.right.is_some() {
                    return;
                }
                if self.alone_since.is_none() {
                    tracing::info!("Alone in director ring - trying to connect to others");
                    self.alone_since = Some(now);
                }
                self.alone_tried.clear();
                self.next_retry = Some(now + RING_RETRY_SECS);
            }
        }
    }

    // ---- events: lines ------------------------------------------------------------------------

    /// One line from connection `id`, already framed and parsed (a per-connection
    /// [`director_proto::ring::RingDecoder`] tracks the handshake's `HOST` context).
    pub fn line(
        &mut self,
        id: ConnId,
        message: RingMessage,
        now: impl Into<RingTime>,
        dir: &mut Director,
    ) {
        let now = self.clock(now);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closing.is_some() {
            // Whatever a link on its way out says no longer counts (as Dovecot, which
            // reads and discards it).
            return;
        }
        c.last_input = now;
        c.input_since_ping = true;
        if let Err(reason) = self.handle_line(id, message, now, dir) {
            self.protocol_failure(id, &reason, now);
        }
        self.after_event(now, dir);
    }

    fn handle_line(
        &mut self,
        id: ConnId,
        msg: RingMessage,
        now: u64,
        dir: &mut Director,
    ) -> Handled {
        let Some(c) = self.conns.get(&id) else {
            return Ok(());
        };
        let (minor, me_at, host_hand) = (c.minor, c.me_at, c.host_hand);
        if minor.is_none() {
            return match msg {
                RingMessage::Version(v) if v.is_compatible() && v.minor < MIN_PEER_MINOR => {
                    Err(format!(
                        "Remote director speaks protocol 1.{}; consistent hashing needs 1.{MIN_PEER_MINOR}",
                        v.minor
                    ))
                }
                RingMessage::Version(v) if v.is_compatible() => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.minor = Some(v.minor);
                    }
                    Ok(())
                }
                RingMessage::Version(v) => Err(format!(
                    "Remote is not a compatible director (VERSION {} {}.{})",
                    lossy(&v.name),
                    v.major,
                    v.minor
                )),
                other => Err(format!(
                    "Invalid input: {} before VERSION",
                    lossy(other.command_name())
                )),
            };
        }
        if me_at.is_none() {
            return match msg {
                RingMessage::Me(me) => self.handle_me(id, me, now, dir),
                other => Err(format!(
                    "Invalid input: {} before ME",
                    lossy(other.command_name())
                )),
            };
        }
        let from = self.peer_of(id).ok_or("peer unknown")?;
        if let RingMessage::Host { host: h, .. } | RingMessage::HandshakeHost(h) = &msg {
            if !h.tag.is_empty() && minor.is_some_and(|m| m < MIN_TAG_MINOR) {
                return Err("Invalid input: host tag from a director older than 1.7".into());
            }
        }
        if let Some(ignore) = host_hand {
            return match msg {
                RingMessage::HandshakeHost(h) => {
                    if !ignore {
                        self.handshake_host(from, &h, now, dir);
                    }
                    Ok(())
                }
                RingMessage::HostHandEnd { .. } => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.host_hand = None;
                    }
                    Ok(())
                }
                other => Err(format!(
                    "Invalid input: {} inside the handshake host list",
                    lossy(other.command_name())
                )),
            };
        }
        match msg {
            RingMessage::Version(_) | RingMessage::Me(_) => Err(format!(
                "Invalid input: {} received twice",
                lossy(msg.command_name())
            )),
            RingMessage::HostHandStart { ring_handshaked } => {
                self.host_hand_start(id, ring_handshaked, now, dir)
            }
            RingMessage::HandshakeHost(_) | RingMessage::HostHandEnd { .. } => Err(format!(
                "Invalid input: {} outside the handshake host list",
                lossy(msg.command_name())
            )),
            RingMessage::HandshakeUser(u) => self.handshake_user(id, &u, now, dir),
            RingMessage::Options(opts) => {
                let c = self.conns.get_mut(&id).ok_or("gone")?;
                if !c.incoming() || c.handshaked {
                    return Err("Invalid input: OPTIONS outside the handshake".into());
                }
                if !opts.iter().any(|o| o == OPTION_CONSISTENT_HASHING) {
                    return Err("Remote director doesn't use consistent hashing".into());
                }
                c.options_ok = true;
                Ok(())
            }
            RingMessage::Done => self.handle_done(id, now),
            RingMessage::Director(a) => {
                self.handle_director(id, from, a, now);
                Ok(())
            }
            RingMessage::DirectorRemove(a) => {
                self.handle_director_remove(from, a, now);
                Ok(())
            }
            RingMessage::Connect(a) => {
                self.handle_connect(id, a, now);
                Ok(())
            }
            RingMessage::Sync { origin, seq, info } => {
                self.handle_sync(origin, seq, info, now, dir);
                Ok(())
            }
            RingMessage::Ping(info) => {
                if let Some(info) = info {
                    let secs = i128::from(now).saturating_sub(i128::from(info.timestamp));
                    if secs * 1000 + 500 > i128::from(PING_WARN_MSECS) {
                        tracing::warn!(peer = %addr_text(&from), secs,
                            send_buffer = info.buffered,
                            "PING response took {secs} secs to receive (send buffer was {} bytes)",
                            info.buffered);
                    }
                }
                let pong = RingMessage::Pong(Some(PingInfo {
                    timestamp: now32(now),
                    buffered: 0,
                }));
                self.send(id, pong, now);
                Ok(())
            }
            RingMessage::Pong(info) => {
                self.handle_pong(id, info, now);
                Ok(())
            }
            RingMessage::Quit { reason } => {
                tracing::info!(peer = %addr_text(&from), reason = %lossy(&reason),
                    "Director disconnected us with reason");
                // Dovecot answers a QUIT like any line it won't take, and closes.
                self.close(id, "Invalid input: QUIT", now);
                Ok(())
            }
            RingMessage::User {
                hash,
                ip,
                timestamp,
            } => {
                self.handle_user(from, hash, ip, timestamp, now, dir);
                Ok(())
            }
            RingMessage::UserKilled { hash } => {
                dir.ring_user_killed(hash, now);
                Ok(())
            }
            RingMessage::Unknown { command, .. } => {
                Err(format!("Unknown command {}", lossy(&command)))
            }
            other => {
                self.handle_tracked(id, from, other, now, dir);
                Ok(())
            }
        }
    }

    fn handle_me(&mut self, id: ConnId, me: Me, now: u64, dir: &Director) -> Handled {
        let c = self.conns.get(&id).ok_or("gone")?;
        let (incoming, remote_ip) = (c.incoming(), c.remote_ip);
        let peer = me.director;
        if let Some(ts) = me.timestamp {
            let skew = i128::from(ts).abs_diff(i128::from(now));
            if skew > 1 {
                tracing::warn!(peer = %addr_text(&peer), skew,
                    "Director clock differs from ours");
            }
        }
        if !incoming {
            if c.peer != Some(peer) {
                return Err(format!(
                    "Remote director thinks it is {}, not the director we connected to",
                    addr_text(&peer)
                ));
            }
            if let Some(c) = self.conns.get_mut(&id) {
                c.me_at = Some(now);
            }
            self.send_handshake(id, now, dir);
            return Ok(());
        }
        if peer == self.dirs.me {
            return Err("Connection from ourself".into());
        }
        if peer.ip != remote_ip {
            return Err(format!(
                "ME {} doesn't match the connection's address {remote_ip}",
                addr_text(&peer)
            ));
        }
        if self.dirs.get(&peer).is_some_and(|e| e.removed()) {
            return Err(format!("Director {} was removed", addr_text(&peer)));
        }
        if self.dirs.add(peer) {
            self.directors_changed = true;
        }
        if let Some(e) = self.dirs.get_mut(&peer) {
            e.reset_sequences();
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.peer = Some(peer);
            c.me_at = Some(now);
        }
        let me = self.dirs.me;
        match self.left.and_then(|l| Some((l, self.peer_of(l)?))) {
            None => self.connect_right(now, false),
            Some((old, lp)) if lp == peer => {
                // The same director again (it restarted): the old link is stale.
                self.close(
                    old,
                    "Replacing with a new connection from the same director",
                    now,
                );
            }
            Some((l, lp)) if closer_left(&me, &peer, &lp) => {
                tracing::info!(newcomer = %addr_text(&peer), left = %addr_text(&lp),
                    "telling our left to connect to the new director");
                self.send(l, RingMessage::Connect(peer), now);
            }
            Some((l, _)) => {
                self.ping(l, now);
                if let Some(c) = self.conns.get_mut(&l) {
                    c.verifying_left = true;
                }
            }
        }
        Ok(())
    }

    /// Our half of the handshake on an outgoing connection (§10.3): hosts, users (oldest
    /// first), options, DONE.
    fn send_handshake(&mut self, id: ConnId, now: u64, dir: &Director) {
        let flag = self.handshaked;
        self.send(
            id,
            RingMessage::HostHandStart {
                ring_handshaked: flag,
            },
            now,
        );
        for h in dir.ring_hosts() {
            self.send(id, RingMessage::HandshakeHost(host_record_of(&h)), now);
        }
        self.send(
            id,
            RingMessage::HostHandEnd {
                ring_handshaked: flag,
            },
            now,
        );
        // Users restored from a saved state are not offered before we met the ring: see
        // `Director::has_unconfirmed_restored_users`.
        let users: Vec<UserRef> = if dir.has_unconfirmed_restored_users() {
            Vec::new()
        } else {
            dir.users().refs().collect()
        };
        if let Some(c) = self.conns.get_mut(&id) {
            c.sending_users = Some(UserSend {
                left: users.into_iter(),
                deferred: Vec::new(),
            });
        }
        self.send_handshake_users(id, now, dir);
    }

    /// Sends the next round of our handshake's users, then asks to hear when they are
    /// written; after the last round, `OPTIONS`, `DONE` and whatever waited for them.
    fn send_handshake_users(&mut self, id: ConnId, now: u64, dir: &Director) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(sending) = &mut c.sending_users else {
            return;
        };
        let mut sent = 0;
        for user in sending.left.by_ref() {
            let Some(u) = dir.users().peek_ref(&user) else {
                // Expired or dropped since the handshake began.
                continue;
            };
            let Some(host) = dir.hosts().get(u.host) else {
                continue;
            };
            let message = RingMessage::HandshakeUser(HandshakeUser {
                hash: u.hash,
                ip: host.ip,
                timestamp: u.timestamp,
                weak: u.weak,
            });
            self.outputs.push_back(Output::Send { conn: id, message });
            sent += 1;
            if sent == self.config.handshake_users_per_round {
                break;
            }
        }
        c.users_sent += sent as u64;
        c.last_output = now;
        if sending.left.len() > 0 {
            self.outputs.push_back(Output::NotifyWritten { conn: id });
            return;
        }
        let deferred = c
            .sending_users
            .take()
            .map(|s| s.deferred)
            .unwrap_or_default();
        self.send(
            id,
            RingMessage::Options(vec![OPTION_CONSISTENT_HASHING.to_vec()]),
            now,
        );
        self.send(id, RingMessage::Done, now);
        for message in deferred {
            self.send(id, message, now);
        }
    }

    /// Everything queued for `conn` until its last [`Output::NotifyWritten`] was written.
    pub fn written(&mut self, conn: ConnId, now: impl Into<RingTime>, dir: &Director) {
        let now = self.clock(now);
        self.send_handshake_users(conn, now, dir);
    }

    fn host_hand_start(
        &mut self,
        id: ConnId,
        peer_handshaked: bool,
        now: u64,
        dir: &mut Director,
    ) -> Handled {
        let c = self.conns.get(&id).ok_or("gone")?;
        if !c.incoming() || c.handshaked || c.host_hand_seen {
            return Err("Invalid input: HOST-HAND-START out of place".into());
        }
        let ignore = !peer_handshaked && self.handshaked;
        if peer_handshaked && !self.handshaked {
            tracing::info!(
                "Host handshake: the peer's ring is handshaked and ours not: adopting its hosts"
            );
            dir.ring_clear_hosts(now);
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.host_hand = Some(ignore);
            c.host_hand_seen = true;
        }
        Ok(())
    }

    fn handshake_host(&mut self, from: DirectorAddr, h: &HostRecord, now: u64, dir: &mut Director) {
        match dir.ring_host(&ring_host_of(h), now) {
            RingHostOutcome::Unchanged | RingHostOutcome::Refused => {}
            RingHostOutcome::Applied => {
                if let Some(r) = dir.ring_host_record(&h.ip) {
                    let origin = self.originate();
                    self.broadcast(
                        Some(from),
                        RingMessage::Host {
                            origin,
                            host: host_record_of(&r),
                        },
                        now,
                    );
                }
                self.director_sync();
            }
            RingHostOutcome::Merged(m) => self.originate_host(&m, now),
        }
    }

    fn handshake_user(
        &mut self,
        id: ConnId,
        u: &HandshakeUser,
        now: u64,
        dir: &mut Director,
    ) -> Handled {
        let c = self.conns.get_mut(&id).ok_or("gone")?;
        if !c.incoming() || c.handshaked {
            return Err("Invalid input: U outside the handshake".into());
        }
        c.users_received += 1;
        let from = c.peer;
        match dir.ring_handshake_user(u.hash, &u.ip, u.timestamp, u.weak, now) {
            Ok(outcome) => {
                // Dovecot only merges handshake users, so a user whose every `USER` line was
                // lost (its director cut off from both neighbours at once) reached only
                // the right neighbour of that director when it reconnected, and the rest
                // of the ring never learnt it. A director already in the ring forwards
                // what a handshake taught it, as it would a `USER`: a joining director
                // (not handshaked yet) learns everything and forwards nothing, and what
                // the ring knows already goes no further. Weak users wait for their
                // `USER-WEAK` round.
                if self.handshaked && !u.weak {
                    if let Some(from) = from {
                        self.user_outcome(from, u.hash, outcome, now);
                    }
                }
            }
            Err(_) => {
                // A host we removed while the peer had not heard of it yet: the peer is not
                // broken, only behind. As Dovecot, the link goes without marking the peer
                // failed, so the ring reconnects at once and the new handshake (after the
                // removal reached the peer) carries the rest of its users; a failure mark
                // would keep the link down for 60 s.
                tracing::error!(peer = ?self.peer_of(id).map(|p| addr_text(&p)), host = %u.ip,
                "USER used unknown host in handshake");
                self.close(
                    id,
                    &format!("Invalid input: U used unknown host {}", u.ip),
                    now,
                );
            }
        }
        Ok(())
    }

    fn handle_done(&mut self, id: ConnId, now: u64) -> Handled {
        let c = self.conns.get_mut(&id).ok_or("gone")?;
        if c.done_received {
            return Err("Invalid input: DONE received twice".into());
        }
        c.done_received = true;
        let peer = c.peer.ok_or("peer unknown")?;
        let me = self.dirs.me;
        if c.incoming() {
            if !c.options_ok {
                return Err("Invalid input: DONE without OPTIONS consistent-hashing".into());
            }
            c.handshaked = true;
            log_handshake_finished(c, peer, self.now_ms);
            self.send(id, RingMessage::Done, now);
            let others: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(cid, c)| **cid != id && c.minor.is_some() && c.peer.is_some())
                .map(|(cid, _)| *cid)
                .collect();
            for o in others {
                self.send(o, RingMessage::Director(peer), now);
            }
            match self.left.and_then(|l| Some((l, self.peer_of(l)?))) {
                None => {
                    self.left = Some(id);
                    self.after_assignment();
                    self.disconnect_wrong_lefts(now);
                }
                Some((old, lp)) if lp == peer => {
                    self.left = Some(id);
                    self.close(
                        old,
                        "Replacing with a new connection from the same director",
                        now,
                    );
                    self.after_assignment();
                    self.disconnect_wrong_lefts(now);
                }
                Some((l, _)) if self.conns.get(&l).is_some_and(|c| c.verifying_left) => {
                    // Wait for the ping's answer (or its timeout) before deciding.
                }
                Some((_, lp)) if closer_left(&me, &lp, &peer) => {
                    self.send_connect(id, lp, now);
                }
                Some(_) => {
                    // The newcomer is the better left: it takes over when the old left
                    // goes (we told the old left to connect to it at ME).
                }
            }
        } else {
            c.handshaked = true;
            log_handshake_finished(c, peer, self.now_ms);
            match self.right.and_then(|r| Some((r, self.peer_of(r)?))) {
                Some((r, _)) if r == id => {}
                Some((_, rp)) if closer_right(&me, &rp, &peer) => {
                    self.close(id, "Aborting incorrect outgoing connection", now);
                    return Ok(());
                }
                Some((old, _)) => {
                    self.right = Some(id);
                    self.close(old, "Replacing right with a better one", now);
                }
                None => self.right = Some(id),
            }
            self.alone_since = None;
            self.alone_tried.clear();
            self.next_retry = None;
            // A right that isn't the first director upward (that one failed lately) is
            // kept, and the better one is tried again every 30 s.
            self.preferred_retry_at = (self.dirs.preferred_right(now, true, &[]) != Some(peer))
                .then_some(now + PREFERRED_RIGHT_RETRY_SECS);
            for s in std::mem::take(&mut self.delayed_syncs) {
                self.send(id, s, now);
            }
            self.after_assignment();
        }
        Ok(())
    }

    /// A left or right was assigned: with both in place the ring is re-synced.
    fn after_assignment(&mut self) {
        if self.left.is_some() && self.right.is_some() {
            self.director_sync();
        }
    }

    fn handle_director(&mut self, id: ConnId, from: DirectorAddr, a: DirectorAddr, now: u64) {
        let me = self.dirs.me;
        if a == me || self.dirs.get(&a).is_some_and(|e| e.removed()) {
            return;
        }
        let handshaked = self.conns.get(&id).is_some_and(|c| c.handshaked);
        match self.dirs.get_mut(&a) {
            Some(e) => {
                if handshaked {
                    e.last_network_failure = None;
                }
                e.reset_sequences();
            }
            None => {
                if !self.dirs.add(a) {
                    return;
                }
                tracing::info!(director = %addr_text(&a), "Adding director to ring");
                self.directors_changed = true;
            }
        }
        // It sorts between us and our right: we should be connected to it, so it is
        // probably dead; don't keep the announcement circling.
        if let Some(r) = self.right_peer() {
            if closer_right(&me, &a, &r) {
                return;
            }
        }
        self.broadcast(Some(from), RingMessage::Director(a), now);
        if self.right.is_none() || self.dirs.preferred_right(now, false, &[]) == Some(a) {
            self.connect_right(now, false);
        }
    }

    fn handle_director_remove(&mut self, from: DirectorAddr, a: DirectorAddr, now: u64) {
        if a == self.dirs.me {
            // The others disconnect us; nothing to do here.
            return;
        }
        match self.dirs.get(&a) {
            Some(e) if !e.removed() => {}
            _ => return,
        }
        self.remove_director(a, now);
        self.broadcast(Some(from), RingMessage::DirectorRemove(a), now);
    }

    fn remove_director(&mut self, a: DirectorAddr, now: u64) {
        tracing::info!(director = %addr_text(&a), "Removing director from ring");
        if let Some(e) = self.dirs.get_mut(&a) {
            e.removed_at = Some(now);
        }
        self.directors_changed = true;
        let to_close: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer == Some(a))
            .map(|(id, _)| *id)
            .collect();
        for id in to_close {
            self.close(id, "Director was removed", now);
        }
        if self.connecting.is_some_and(|(c, _)| c == a) {
            self.connecting = None;
        }
        self.connect_right(now, false);
        self.director_sync();
    }

    fn handle_connect(&mut self, id: ConnId, a: DirectorAddr, now: u64) {
        let me = self.dirs.me;
        if a == me {
            return;
        }
        if self.dirs.get(&a).is_some_and(|e| e.removed()) {
            tracing::debug!(target = %addr_text(&a), "Ignoring CONNECT: the director is removed");
            self.close_after_wrong_connect(id, now);
            return;
        }
        if self.dirs.add(a) {
            self.directors_changed = true;
        }
        if let Some(r) = self.right_peer() {
            if r == a || closer_right(&me, &r, &a) {
                tracing::info!(target = %addr_text(&a), right = %addr_text(&r),
                    "Ignoring CONNECT: our current right is the correct one");
                self.close_after_wrong_connect(id, now);
                return;
            }
        }
        if let Some(e) = self.dirs.get_mut(&a) {
            e.last_network_failure = None;
            e.last_protocol_failure = None;
        }
        // Followed a CONNECT to it already this second: doing it again would only bounce
        // between directors that disagree about the ring; the retry timers take over.
        if self.connect_followed == Some((a, now)) {
            tracing::info!(target = %addr_text(&a), "Ignoring repeated CONNECT");
            return;
        }
        self.connect_followed = Some((a, now));
        tracing::info!(target = %addr_text(&a), requested_by = ?self.peer_of(id).map(|p| addr_text(&p)),
            "Connecting to director as requested by CONNECT");
        if let Some(r) = self.right {
            self.close(r, "CONNECT requested", now);
        }
        // Handshakes we are still sending elsewhere would only be aborted when the new
        // right is in place: a million users sent for nothing, while the director we
        // were sent to waits for them.
        let elsewhere: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.incoming() && !c.handshaked && c.peer != Some(a))
            .map(|(cid, _)| *cid)
            .collect();
        for c in elsewhere {
            self.close(c, "CONNECT requested", now);
        }
        if self.connecting.is_some_and(|(c, _)| c != a) {
            self.connecting = None;
        }
        if self.connecting.is_none() {
            self.connecting = Some((a, now));
            self.outputs.push_back(Output::Connect { addr: a });
        }
    }

    /// Tells an incoming link to connect to `target` instead of us, then ignores it and
    /// gives it [`WAIT_DISCONNECT_AFTER_CONNECT_SECS`] to hang up (§10.9).
    fn send_connect(&mut self, id: ConnId, target: DirectorAddr, now: u64) {
        if self.conns.get(&id).is_none_or(|c| c.closing.is_some()) {
            return;
        }
        self.send(id, RingMessage::Connect(target), now);
        if let Some(c) = self.conns.get_mut(&id) {
            c.closing = Some(Closing {
                at: now + WAIT_DISCONNECT_AFTER_CONNECT_SECS,
                kind: ClosingKind::SentConnect(target),
            });
        }
    }

    /// A `CONNECT` we don't follow: the link it came on goes a second later (§10.9).
    fn close_after_wrong_connect(&mut self, id: ConnId, now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.closing.get_or_insert(Closing {
                at: now + WRONG_CONNECT_CLOSE_SECS,
                kind: ClosingKind::WrongConnect,
            });
        }
    }

    fn handle_pong(&mut self, id: ConnId, info: Option<PingInfo>, now: u64) {
        let now_ms = self.now_ms;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.ping_sent_at.take().is_none() {
            return;
        }
        let msecs = now_ms.saturating_sub(c.ping_sent_ms);
        if msecs > PING_WARN_MSECS {
            let peer = c.peer.map(|p| addr_text(&p));
            let remote = info.map_or_else(String::new, |i| {
                format!(
                    ", remote sent it {} secs ago, remote buffer size at PONG was {} bytes",
                    i128::from(now).saturating_sub(i128::from(i.timestamp)),
                    i.buffered
                )
            });
            tracing::warn!(peer = ?peer, msecs,
                "PONG response took {}.{:03} secs{remote}", msecs / 1000, msecs % 1000);
        }
        if !std::mem::take(&mut c.verifying_left) {
            return;
        }
        // Our left is alive: incoming connections that wanted to replace it are told to
        // connect to it instead.
        if self.left == Some(id) {
            self.disconnect_wrong_lefts(now);
        }
    }

    /// Tells every incoming link from a director farther on our left than our left to
    /// connect to our left instead (Dovecot's `director_disconnect_wrong_lefts`).
    fn disconnect_wrong_lefts(&mut self, now: u64) {
        let Some(lp) = self.left.and_then(|l| self.peer_of(l)) else {
            return;
        };
        let me = self.dirs.me;
        let wrong: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(cid, c)| {
                Some(**cid) != self.left
                    && c.incoming()
                    && c.me_at.is_some()
                    && c.closing.is_none()
                    && c.peer.is_some_and(|p| closer_left(&me, &lp, &p))
            })
            .map(|(cid, _)| *cid)
            .collect();
        for w in wrong {
            self.send_connect(w, lp, now);
        }
    }

    // ---- SYNC -------------------------------------------------------------------------------

    /// A state change: our SYNC goes round the ring (§10.8).
    fn director_sync(&mut self) {
        self.sync_seq = self.sync_seq.wrapping_add(1);
        self.directors_changed = false;
        if self.left.is_none() && self.right.is_none() {
            // Alone: if we were synced we stay synced.
            return;
        }
        self.synced = false;
        self.sync_pending = true;
    }

    fn send_own_sync(&mut self, now: u64, hosts_hash: u32) {
        self.sync_sent_at = Some(now);
        self.sync_sent_ms = self.now_ms;
        let Some(r) = self.right else {
            return;
        };
        let msg = RingMessage::Sync {
            origin: self.dirs.me,
            seq: self.sync_seq,
            info: Some(SyncInfo::new(
                PROTOCOL_MINOR,
                u32::try_from(now).unwrap_or(u32::MAX),
                hosts_hash,
            )),
        };
        self.send(r, msg, now);
        // Sending a SYNC also pings both neighbours.
        for c in [self.left, self.right].into_iter().flatten() {
            self.ping(c, now);
        }
    }

    fn ping(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.ping_sent_at.is_some() {
            return;
        }
        c.ping_sent_at = Some(now);
        c.ping_sent_ms = self.now_ms;
        c.input_since_ping = false;
        // The buffered count is the socket owner's to fill in (`stamp_buffered`).
        self.send(
            id,
            RingMessage::Ping(Some(PingInfo {
                timestamp: now32(now),
                buffered: 0,
            })),
            now,
        );
    }

    fn handle_sync(
        &mut self,
        origin: DirectorAddr,
        seq: u32,
        info: Option<SyncInfo>,
        now: u64,
        dir: &mut Director,
    ) {
        let minor = info.map_or(0, |i| i.minor).min(PROTOCOL_MINOR);
        let timestamp = info.and_then(|i| i.timestamp()).unwrap_or(0);
        let hash = info.and_then(|i| i.hosts_hash()).unwrap_or(0);
        let ours = dir.hosts_hash();
        if origin == self.dirs.me {
            if seq != self.sync_seq {
                return;
            }
            if hash != 0 && hash != ours {
                tracing::warn!(
                    sent = hash,
                    now = ours,
                    "our hosts changed while our SYNC travelled; resending"
                );
                self.send_own_sync(now, ours);
                return;
            }
            self.ring_min_version = minor;
            if self.handshaked && !self.synced {
                // As Dovecot, the round trip of the SYNC that synced a handshaked ring
                // (not the first one, nor a duplicate).
                self.last_sync_msecs = self.now_ms.saturating_sub(self.sync_sent_ms);
            }
            if !self.synced {
                tracing::info!(msecs = self.last_sync_msecs, "Ring is synced");
            }
            self.handshaked = true;
            self.synced = true;
            self.sync_sent_at = None;
            self.last_synced_at = now;
            self.dirs.purge_removed(None);
            return;
        }
        let Some(e) = self.dirs.get_mut(&origin) else {
            return;
        };
        if seq < e.last_sync_seq {
            if timestamp < e.last_sync_timestamp.saturating_add(SYNC_STALE_SECS) {
                return;
            }
            e.reset_sequences();
            e.last_sync_seq = seq;
            e.last_sync_timestamp = timestamp;
        } else if seq > e.last_sync_seq || timestamp > e.last_sync_timestamp {
            e.last_sync_seq = seq;
            e.last_sync_timestamp = timestamp;
            e.sync_duplicates = 0;
        } else {
            e.sync_duplicates += 1;
            if e.sync_duplicates >= SYNC_MAX_DUPLICATES {
                return;
            }
        }
        if hash != 0 && hash != ours {
            if e.last_bad_hosts_hash != Some(hash) {
                e.last_bad_hosts_hash = Some(hash);
                tracing::debug!(origin = %addr_text(&origin), theirs = hash, ours,
                    "SYNC with a different hosts_hash dropped");
                return;
            }
            tracing::warn!(origin = %addr_text(&origin), theirs = hash, ours,
                "hosts_hash differs again: resending our hosts");
            for h in dir.ring_hosts() {
                self.originate_host(&h, now);
            }
            return;
        }
        e.last_bad_hosts_hash = None;
        let fwd = RingMessage::Sync {
            origin,
            seq,
            info: info.map(|i| SyncInfo { minor, ..i }),
        };
        match self.right {
            Some(r) => self.send(r, fwd, now),
            None => {
                self.delayed_syncs
                    .retain(|m| !matches!(m, RingMessage::Sync { origin: o, .. } if *o == origin));
                if self.delayed_syncs.len() < MAX_DELAYED_SYNCS {
                    self.delayed_syncs.push(fwd);
                }
            }
        }
        if self.directors_changed && self.sync_sent_at != Some(now) {
            self.director_sync();
        }
    }

    // ---- users and hosts ----------------------------------------------------------------------

    fn originate(&mut self) -> Origin {
        self.last_seq = self.last_seq.wrapping_add(1);
        Origin {
            director: self.dirs.me,
            seq: self.last_seq,
        }
    }

    fn originate_host(&mut self, h: &RingHost, now: u64) {
        let origin = self.originate();
        self.broadcast(
            None,
            RingMessage::Host {
                origin,
                host: host_record_of(h),
            },
            now,
        );
        self.director_sync();
    }

    fn seen(&mut self, origin: &Origin) -> Seen {
        if origin.director == self.dirs.me {
            return Seen::Ours;
        }
        match self.dirs.get_mut(&origin.director) {
            Some(e) if !e.removed() => {
                if origin.seq <= e.last_seq {
                    Seen::Duplicate
                } else {
                    e.last_seq = origin.seq;
                    Seen::New
                }
            }
            _ => Seen::UnknownOrigin,
        }
    }

    fn send_user(
        &mut self,
        except: Option<DirectorAddr>,
        hash: u32,
        ip: IpAddr,
        ts: u32,
        now: u64,
    ) {
        self.broadcast_with(except, 0, now, |minor| RingMessage::User {
            hash,
            ip,
            timestamp: (minor >= 9).then_some(Timestamp::from(ts)),
        });
    }

    fn handle_user(
        &mut self,
        from: DirectorAddr,
        hash: u32,
        ip: IpAddr,
        timestamp: Option<Timestamp>,
        now: u64,
        dir: &mut Director,
    ) {
        // The wire allows any signed time; the user directory keeps 32-bit Unix seconds.
        let timestamp = timestamp.map(|t| u32::try_from(t.max(0)).unwrap_or(u32::MAX));
        let outcome = dir.ring_user(hash, &ip, timestamp, false, now);
        if outcome == RingUserOutcome::UnknownHost {
            tracing::debug!(user_hash = hash, host = %ip, "USER for an unknown host ignored");
        }
        self.user_outcome(from, hash, outcome, now);
    }

    /// Tells the ring what a `USER` from `from` changed here: the change goes on (back to
    /// the sender too when its host lost), and a conflict kicks the losing host's sessions
    /// everywhere.
    fn user_outcome(&mut self, from: DirectorAddr, hash: u32, outcome: RingUserOutcome, now: u64) {
        match outcome {
            RingUserOutcome::Changed {
                ip,
                timestamp,
                forced,
                kick_except,
            } => {
                let except = (!forced).then_some(from);
                self.send_user(except, hash, ip, timestamp, now);
                if let Some(except_ip) = kick_except {
                    let origin = self.originate();
                    self.broadcast(
                        None,
                        RingMessage::UserKickHash {
                            origin,
                            hash,
                            except_ip,
                        },
                        now,
                    );
                }
            }
            RingUserOutcome::UnknownHost
            | RingUserOutcome::Expired
            | RingUserOutcome::Unchanged => {}
        }
    }

    /// Seq-tracked messages (§10.4).
    fn handle_tracked(
        &mut self,
        id: ConnId,
        from: DirectorAddr,
        msg: RingMessage,
        now: u64,
        dir: &mut Director,
    ) {
        let Some(origin) = msg.origin().copied() else {
            return;
        };
        let seen = self.seen(&origin);
        // A message whose origin we don't know is taken as ours from here on.
        let (send_origin, except) = match seen {
            Seen::UnknownOrigin => (self.originate(), None),
            _ => (origin, Some(from)),
        };
        let first = matches!(seen, Seen::New | Seen::UnknownOrigin);
        match msg {
            RingMessage::UserWeak { hash, ip, .. } => match seen {
                Seen::Ours => dir.ring_user_weak_returned(hash, now),
                Seen::Duplicate => {
                    self.forward_weak(id, from, RingMessage::UserWeak { origin, hash, ip }, now)
                }
                _ => {
                    dir.ring_user(hash, &ip, None, true, now);
                    let m = RingMessage::UserWeak {
                        origin: send_origin,
                        hash,
                        ip,
                    };
                    self.forward_weak(id, from, m, now);
                }
            },
            RingMessage::UserMove { hash, ip, .. } if first => {
                if !dir.ring_user_move(hash, ip, now) {
                    return;
                }
                let m = RingMessage::UserMove {
                    origin: send_origin,
                    hash,
                    ip,
                };
                self.broadcast(except, m, now);
            }
            RingMessage::UserKilledEverywhere { hash, .. } if first => {
                if !dir.ring_user_killed_everywhere(hash, now) {
                    return;
                }
                let m = RingMessage::UserKilledEverywhere {
                    origin: send_origin,
                    hash,
                };
                self.broadcast(except, m, now);
            }
            RingMessage::UserKick { username, .. } if first => {
                dir.ring_user_kick(&username);
                let m = RingMessage::UserKick {
                    origin: send_origin,
                    username,
                };
                self.broadcast(except, m, now);
            }
            RingMessage::UserKickAlt { field, value, .. } if first => {
                dir.ring_user_kick_alt(&lossy(&field), &lossy(&value));
                let m = RingMessage::UserKickAlt {
                    origin: send_origin,
                    field,
                    value,
                };
                self.broadcast(except, m, now);
            }
            RingMessage::UserKickHash {
                hash, except_ip, ..
            } if first => {
                dir.ring_user_kick_hash(hash, except_ip);
                let m = RingMessage::UserKickHash {
                    origin: send_origin,
                    hash,
                    except_ip,
                };
                self.broadcast(except, m, now);
            }
            RingMessage::Host { host, .. } if first => {
                match dir.ring_host(&ring_host_of(&host), now) {
                    RingHostOutcome::Applied => {
                        let m = RingMessage::Host {
                            origin: send_origin,
                            host,
                        };
                        self.broadcast(except, m, now);
                        self.director_sync();
                    }
                    RingHostOutcome::Merged(m) => self.originate_host(&m, now),
                    RingHostOutcome::Unchanged | RingHostOutcome::Refused => {}
                }
            }
            RingMessage::HostRemove { ip, .. } if first => {
                if !dir.ring_host_remove(&ip, now) {
                    return;
                }
                let m = RingMessage::HostRemove {
                    origin: send_origin,
                    ip,
                };
                self.broadcast(except, m, now);
                self.director_sync();
            }
            RingMessage::HostFlush { ip, .. } if first => {
                if !dir.ring_host_flush(&ip, now) {
                    return;
                }
                let m = RingMessage::HostFlush {
                    origin: send_origin,
                    ip,
                };
                self.broadcast(except, m, now);
            }
            _ => {}
        }
    }

    /// USER-WEAK goes on until it reaches its origin; with exactly two directors the
    /// sender is also our only other neighbour, so it goes back out the other link.
    fn forward_weak(&mut self, id: ConnId, from: DirectorAddr, m: RingMessage, now: u64) {
        let other_peers = self
            .conns
            .values()
            .any(|c| c.minor.is_some() && c.peer.is_some_and(|p| p != from));
        if other_peers {
            self.broadcast(Some(from), m, now);
        } else if let Some(other) = [self.left, self.right]
            .into_iter()
            .flatten()
            .find(|c| *c != id)
        {
            self.send(other, m, now);
        }
    }

    /// A core effect: `Ring*` effects become ring messages; anything else is returned for
    /// the driver to perform.
    pub fn core_effect(&mut self, effect: Effect, now: impl Into<RingTime>) -> Option<Effect> {
        let now = self.clock(now);
        match effect {
            Effect::RingUser {
                hash,
                ip,
                timestamp,
            } => self.send_user(None, hash, ip, timestamp, now),
            Effect::RingUserWeak { hash, ip } => {
                let origin = self.originate();
                self.broadcast(None, RingMessage::UserWeak { origin, hash, ip }, now);
            }
            Effect::RingUserMove { hash, ip } => {
                let origin = self.originate();
                self.broadcast(None, RingMessage::UserMove { origin, hash, ip }, now);
            }
            Effect::RingUserKilled { hash } => {
                if let Some(r) = self.right {
                    self.send(r, RingMessage::UserKilled { hash }, now);
                }
            }
            Effect::RingUserKilledEverywhere { hash } => {
                let origin = self.originate();
                self.broadcast(
                    None,
                    RingMessage::UserKilledEverywhere { origin, hash },
                    now,
                );
            }
            Effect::RingUserKick { username } => {
                let origin = self.originate();
                self.broadcast(None, RingMessage::UserKick { origin, username }, now);
            }
            Effect::RingUserKickAlt { field, value } => {
                let origin = self.originate();
                self.broadcast(
                    None,
                    RingMessage::UserKickAlt {
                        origin,
                        field: field.into_bytes(),
                        value: value.into_bytes(),
                    },
                    now,
                );
            }
            other => return Some(other),
        }
        None
    }

    // ---- admin -------------------------------------------------------------------------------

    /// An admin `HOST-SET`/`HOST-UPDATE`/`HOST-UP`/`HOST-DOWN` of `ip` succeeded in the
    /// core: the host's new state goes round the ring as our `HOST` (§8.2: the `OK` waits
    /// for [`Ring::is_synced`]).
    pub fn host_changed(&mut self, ip: IpAddr, now: impl Into<RingTime>, dir: &mut Director) {
        let now = self.clock(now);
        match dir.ring_host_record(&ip) {
            Some(h) => self.originate_host(&h, now),
            None => self.send_host_remove(ip, now),
        }
        self.after_event(now, dir);
    }

    /// An admin `HOST-REMOVE ip` succeeded in the core.
    pub fn host_removed(&mut self, ip: IpAddr, now: impl Into<RingTime>, dir: &mut Director) {
        let now = self.clock(now);
        self.send_host_remove(ip, now);
        self.after_event(now, dir);
    }

    fn send_host_remove(&mut self, ip: IpAddr, now: u64) {
        let origin = self.originate();
        self.broadcast(None, RingMessage::HostRemove { origin, ip }, now);
        self.director_sync();
    }

    /// An admin `HOST-FLUSH [ip]` succeeded in the core; `hosts` are the flushed hosts
    /// (all of them for a flush without an IP).
    pub fn host_flushed(&mut self, hosts: &[IpAddr], now: impl Into<RingTime>, dir: &mut Director) {
        let now = self.clock(now);
        for ip in hosts {
            let origin = self.originate();
            self.broadcast(None, RingMessage::HostFlush { origin, ip: *ip }, now);
        }
        self.director_sync();
        self.after_event(now, dir);
    }

    /// Admin `DIRECTOR-ADD ip [port]` (port default: ours). Always `OK`.
    pub fn director_add(
        &mut self,
        ip: IpAddr,
        port: Option<u16>,
        now: impl Into<RingTime>,
        dir: &mut Director,
    ) {
        let now = self.clock(now);
        let a = DirectorAddr {
            ip,
            port: port.unwrap_or(self.dirs.me.port),
        };
        let revived = self.dirs.get_mut(&a).is_some_and(|e| {
            let was = e.removed();
            e.removed_at = None;
            was
        });
        if (self.dirs.add(a) || revived) && a != self.dirs.me {
            tracing::info!(director = %addr_text(&a), requested_by = %addr_text(&self.dirs.me),
                "Adding director to ring");
            // A standalone director (no director_servers, no ring listener) only lists
            // it, as Dovecot does.
            self.directors_changed = true;
            self.broadcast(None, RingMessage::Director(a), now);
            let force = self.dirs.preferred_right(now, false, &[]) == Some(a);
            self.connect_right(now, force);
            self.director_sync();
        }
        self.after_event(now, dir);
    }

    /// Admin `DIRECTOR-REMOVE ip [port]`; without a port the first director with that IP.
    /// False = `NOTFOUND`. Removing ourselves answers `OK` and changes nothing.
    pub fn director_remove(
        &mut self,
        ip: IpAddr,
        port: Option<u16>,
        now: impl Into<RingTime>,
        dir: &mut Director,
    ) -> bool {
        let now = self.clock(now);
        let found = self
            .dirs
            .list
            .iter()
            .find(|e| !e.removed() && e.addr.ip == ip && port.is_none_or(|p| p == e.addr.port))
            .map(|e| e.addr);
        let Some(a) = found else {
            return false;
        };
        if a != self.dirs.me {
            self.remove_director(a, now);
            self.broadcast(None, RingMessage::DirectorRemove(a), now);
        }
        self.after_event(now, dir);
        true
    }

    /// `DIRECTOR-LIST` rows (§8.4), in order: connections whose peer is not known yet,
    /// then every director by (ip, port) with a row per connection to it, or one row
    /// without a connection. The byte counters and ping times are the socket owner's:
    /// `counters` gives them per connection.
    pub fn status(
        &self,
        now: u64,
        counters: impl Fn(ConnId) -> ConnCounters,
    ) -> Vec<DirectorListEntry> {
        let mut rows = Vec::new();
        for (id, c) in &self.conns {
            if c.peer.is_none() {
                rows.push(DirectorListEntry {
                    fields: self.conn_status(c, counters(*id)),
                });
            }
        }
        let me = self.dirs.me;
        for e in &self.dirs.list {
            let head = |kind: &str| {
                vec![
                    director_core::host::inet_ntop(&e.addr.ip),
                    e.addr.port.to_string(),
                    kind.to_string(),
                    e.last_failed().to_string(),
                ]
            };
            let mut any = false;
            for (id, c) in &self.conns {
                if c.peer != Some(e.addr) {
                    continue;
                }
                any = true;
                let kind = if self.left == Some(*id) {
                    "left"
                } else if self.right == Some(*id) {
                    "right"
                } else if c.incoming() {
                    "in"
                } else {
                    "out"
                };
                let mut f = head(kind);
                f.extend(self.conn_status(c, counters(*id)));
                rows.push(DirectorListEntry { fields: f });
            }
            if any {
                continue;
            }
            if e.addr == me {
                let mut f = head("self");
                f.push(if !self.handshaked {
                    "ring handshaking".to_string()
                } else if self.synced {
                    "ring synced".to_string()
                } else {
                    format!(
                        "ring syncing - last sync {} secs ago",
                        now.saturating_sub(self.last_synced_at)
                    )
                });
                f.push(self.last_sync_msecs.to_string());
                rows.push(DirectorListEntry { fields: f });
            } else {
                let mut f = head(if e.removed() { "removed" } else { "" });
                f.push(String::new());
                rows.push(DirectorListEntry { fields: f });
            }
        }
        rows
    }

    fn conn_status(&self, c: &Conn, n: ConnCounters) -> Vec<String> {
        let state = if !c.handshaked {
            if c.incoming() {
                format!("handshaking - {} USERs received", c.users_received)
            } else {
                format!("handshaking - {} USERs sent", c.users_sent)
            }
        } else if self.synced {
            "synced".to_string()
        } else {
            "syncing".to_string()
        };
        vec![
            state,
            n.last_ping_msecs.to_string(),
            n.bytes_in.to_string(),
            n.bytes_out.to_string(),
            n.buffered.to_string(),
            n.peak_buffered.to_string(),
            c.last_input.to_string(),
            c.last_output.to_string(),
        ]
    }

    // ---- time --------------------------------------------------------------------------------

    fn ping_interval(&self) -> u64 {
        if self.synced {
            PING_IDLE_SECS
        } else {
            PING_UNSYNCED_SECS
        }
    }

    fn conn_deadline(&self, c: &Conn) -> u64 {
        if let Some(closing) = c.closing {
            return closing.at;
        }
        let mut t = match c.ping_sent_at {
            Some(p) if c.input_since_ping => p + self.config.ping_max_timeout_secs,
            Some(p) => {
                p + self
                    .config
                    .ping_idle_timeout_secs
                    .min(self.config.ping_max_timeout_secs)
            }
            None => c.last_input + self.ping_interval(),
        };
        match c.me_at {
            None => t = t.min(c.connected_at + ME_TIMEOUT_SECS),
            Some(m) if c.incoming() && !c.handshaked => t = t.min(m + DONE_TIMEOUT_SECS),
            _ => {}
        }
        t
    }

    /// When [`Ring::handle_timeout`] should run next.
    pub fn next_timeout(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut consider = |x: u64| t = Some(t.map_or(x, |c: u64| c.min(x)));
        if let Some((_, at)) = self.connecting {
            consider(at + CONNECT_TIMEOUT_SECS);
        }
        if let Some(r) = self.next_retry {
            consider(r);
        }
        if let (Some(a), false, None) = (self.alone_since, self.alone_declared, self.right) {
            consider(a + RING_ALONE_GIVE_UP_SECS);
        }
        if let Some(p) = self.preferred_retry_at {
            consider(p);
        }
        if let (false, Some(_), Some(s)) = (self.synced, self.right, self.sync_sent_at) {
            consider(s + SYNC_RESEND_SECS);
        }
        for e in &self.dirs.list {
            if let Some(r) = e.removed_at {
                consider(r + REMOVED_PURGE_SECS);
            }
        }
        for c in self.conns.values() {
            consider(self.conn_deadline(c));
        }
        t
    }

    /// Runs whatever is due at `now`: handshake and ping timeouts, idle pings, connect
    /// retries, the "alone" decision, SYNC resends.
    pub fn handle_timeout(&mut self, now: impl Into<RingTime>, dir: &mut Director) {
        let now = self.clock(now);
        if let Some((a, at)) = self.connecting {
            if now >= at + CONNECT_TIMEOUT_SECS {
                self.connecting = None;
                if let Some(e) = self.dirs.get_mut(&a) {
                    e.last_network_failure = Some(now);
                }
                if self.alone_since.is_some() {
                    self.alone_tried.push(a);
                }
                self.connect_right(now, false);
            }
        }
        if self.next_retry.is_some_and(|r| r <= now) {
            self.next_retry = None;
            self.alone_tried.clear();
            self.connect_right(now, false);
        }
        if let (Some(a), false, None) = (self.alone_since, self.alone_declared, self.right) {
            if now >= a + RING_ALONE_GIVE_UP_SECS {
                tracing::warn!("Couldn't connect to right side, we must be the only director left");
                if let Some(l) = self.left {
                    // We could not reach it either, so it must have failed lately.
                    tracing::warn!(left = ?self.peer_of(l).map(|p| addr_text(&p)),
                        "Assuming our left is dead, disconnecting");
                    self.close(l, "This connection is dead?", now);
                }
                self.alone_declared = true;
                self.handshaked = true;
                self.synced = true;
                self.last_synced_at = now;
                self.ring_min_version = PROTOCOL_MINOR;
                self.sync_sent_at = None;
            }
        }
        if self.preferred_retry_at.is_some_and(|p| p <= now) {
            self.preferred_retry_at = None;
            self.connect_right(now, true);
        }
        if let (false, Some(_), Some(s)) = (self.synced, self.right, self.sync_sent_at) {
            if now >= s + SYNC_RESEND_SECS {
                self.send_own_sync(now, dir.hosts_hash());
            }
        }
        self.dirs
            .purge_removed(Some(now.saturating_sub(REMOVED_PURGE_SECS)));
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            if now < self.conn_deadline(c) {
                continue;
            }
            if let Some(closing) = c.closing {
                match closing.kind {
                    ClosingKind::SentConnect(_) => {
                        self.close(id, "Timeout waiting for disconnect after CONNECT", now);
                    }
                    ClosingKind::WrongConnect => {
                        self.close(id, "Wrong CONNECT requested", now);
                        if self.right.is_none() {
                            self.connect_right(now, false);
                        }
                    }
                }
                continue;
            }
            let reason = if c.me_at.is_none() {
                "Handshake timed out (no ME)".to_string()
            } else if c.incoming()
                && !c.handshaked
                && c.me_at.is_some_and(|m| now >= m + DONE_TIMEOUT_SECS)
            {
                "Handshake timed out (no DONE)".to_string()
            } else if let Some(p) = c.ping_sent_at {
                let secs = now.saturating_sub(p);
                if c.input_since_ping {
                    format!("Pong timed out in {secs} secs")
                } else {
                    format!("Ping timed out in {secs} secs")
                }
            } else {
                self.ping(id, now);
                continue;
            };
            // A link that times out is a network failure: don't reconnect at once.
            if let Some(e) = c.peer.and_then(|p| self.dirs.get_mut(&p)) {
                e.last_network_failure = Some(now);
            }
            self.close(id, &reason, now);
        }
        self.after_event(now, dir);
    }

    /// End of every event: send a pending SYNC and tell the core about status changes.
    fn after_event(&mut self, now: u64, dir: &mut Director) {
        if std::mem::take(&mut self.sync_pending) {
            self.send_own_sync(now, dir.hosts_hash());
        }
        let st = self.ring_status();
        if self.reported != Some(st) {
            self.reported = Some(st);
            dir.set_ring_status(st, now);
        }
    }
}
