//! The director facade: one deterministic state machine the daemon drives.
//!
//! One driver (`director-driver`) owns the [`Director`] (like Dovecot's single director
//! process), feeds it events with the current Unix time, and after every call drains
//! [`Effect`]s with [`Director::poll_effect`] and re-arms one timer from
//! [`Director::next_timeout`], calling [`Director::handle_timeout`] when it fires.
//!
//! # API
//!
//! Construction and state
//! * [`Director::new`]`(CoreSettings) -> Result<Director, SetupError>`
//! * [`Director::settings`], [`Director::hosts`], [`Director::rings`] (read-only views),
//!   [`Director::hosts_hash`], [`Director::counters`], [`Director::heap_bytes`]
//! * [`Director::set_ring_status`]`(RingStatus, now)` — standalone default: handshaked,
//!   synced, alone, no peers
//! * [`Director::reload_config_hosts`]`(Vec<ConfigHost>, now) -> Result<ReloadReport, SetupError>`
//! * saved state (`director/state.rs`): [`Director::snapshot`]`(now) -> Snapshot`,
//!   [`Director::restore`]`(&Snapshot, now) -> Result<RestoreReport, RestoreError>`,
//!   [`Director::state_changes`]
//!
//! Effects and time
//! * [`Director::poll_effect`]`() -> Option<Effect>`
//! * [`Director::next_timeout`]`() -> Option<u64>`, [`Director::handle_timeout`]`(now)`
//! * completions: [`Director::kick_finished`]`(Ticket, now)`,
//!   [`Director::flush_script_finished`]`(Ticket, success, now)`
//!
//! Logins (§6, §7)
//! * [`Director::request`]`(username, tag, now) -> RequestOutcome` (Ready / Queued / Failed;
//!   queued ones end in [`Effect::RequestDone`] within 30 s)
//! * [`Director::refresh_user`]`(username, now)` — proxy-notify (§3.4)
//!
//! Admin (§8.3)
//! * [`Director::host_list`], [`Director::host_list_removed`]
//! * [`Director::host_set`]`(ip, Option<&str>, Option<u32>, now)`,
//!   [`Director::host_update`]`(ip, Option<&str>, u32, now)`,
//!   [`Director::host_up`] / [`Director::host_down`]`(ip, now)`, [`Director::host_remove`]`(ip, now)`
//!   — all `Result<(), HostError>`
//! * [`Director::host_flush`]`(Option<IpAddr>, now) -> Result<(), HostError>`
//! * [`Director::reset_users`]`(Option<IpAddr>, Option<u32>, now) -> Result<Ticket, HostError>`
//!   — the `OK` arrives as [`Effect::AdminDone`] with that ticket
//! * [`Director::user_lookup`]`(&UserKey, tag, now) -> Result<UserLookup, HashError>`
//! * [`Director::user_list`]`(Option<IpAddr>, now) -> Vec<UserListEntry>`
//! * [`Director::user_move`]`(&UserKey, ip, now) -> Result<(), UserMoveError>`
//! * [`Director::user_kick`]`(username, nowait, now)`,
//!   [`Director::user_kick_alt`]`(field, value, nowait, now)` -> [`AdminOutcome`]
//!
//! Ring hooks (for the ring implementation; unused when standalone)
//! * [`Director::ring_user_move`], [`Director::ring_user_killed`],
//!   [`Director::ring_user_killed_everywhere`], [`Director::ring_user_weak_returned`]
//! * ring updates (`director/ring_updates.rs`): [`Director::ring_host`],
//!   [`Director::ring_host_remove`], [`Director::ring_host_flush`], [`Director::ring_clear_hosts`],
//!   [`Director::ring_user`], [`Director::ring_handshake_user`], [`Director::ring_user_kick`],
//!   [`Director::ring_user_kick_alt`], [`Director::ring_user_kick_hash`], [`Director::ring_hosts`]
//!
//! # Decisions that differ from Dovecot (documented on the methods)
//! * `USER-MOVE` with hash 0 answers `TRYAGAIN` instead of crashing (a hash-0 `USER-MOVE`
//!   on the ring would crash Dovecot peers, so we don't originate one).
//! * `HOST-RESET-USERS` for a user with no host left: forced kick, then the user record is
//!   dropped when the kick completes; no flush script (there is no new host to name).
//! * Config reload merges: see [`Director::reload_config_hosts`].
//! * `USER-LIST` order is expiry order across all tags (Dovecot: tag by tag); identical for
//!   untagged setups.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::effect::{AdminStatus, Effect, RequestError, RequestId, Route, Ticket, WaitReason};
use crate::hash::{HashError, HashFormat, UserKey};
use crate::host::{HostId, HostInfo, HostList, HostListError, TagId, VHOST_DEFAULT, VHOST_MAX};
use crate::hosts_hash::hosts_hash;
use crate::lookup::{ConfigHost, InitialConfig, UserLookup};
use crate::user_directory::{User, UserDirectory};
use crate::vhost_ring::{HashingMode, RingSet, VhashCache};
use kills::Kills;

mod kills;
mod moves;
mod requests;
mod ring_updates;
mod state;

pub use ring_updates::{RingHost, RingHostOutcome, RingUserOutcome, UnknownHostError};
pub use state::{RestoreError, RestoreReport, SavedUser, Snapshot};

/// Queued login requests fail after this many seconds (§6).
pub const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Most login requests waiting at once; more fail at once (Dovecot: unbounded).
pub const MAX_PENDING_REQUESTS: usize = 100_000;
/// Most admin kicks waiting for a slot.
pub const MAX_PENDING_KICKS: usize = 10_000;
/// `director_user_expire` default (15 min).
pub const DEFAULT_USER_EXPIRE_SECS: u32 = 900;
/// `director_user_kick_delay` default.
pub const DEFAULT_KICK_DELAY_SECS: u32 = 2;
/// `director_max_parallel_moves` / `_kicks` default.
pub const DEFAULT_MAX_PARALLEL: u32 = 100;

/// Settings the core needs (the daemon maps the config crate's values into this).
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// `director_user_expire` in seconds (≥ 10).
    pub user_expire_secs: u32,
    /// `director_username_hash`, parsed.
    pub username_hash: HashFormat,
    /// Consistent (2.3) or 2.2 modulo selection.
    pub hashing_mode: HashingMode,
    /// `director_user_kick_delay` in seconds.
    pub kick_delay_secs: u32,
    /// `director_max_parallel_moves` (default for HOST-RESET-USERS without a max).
    pub max_parallel_moves: u32,
    /// `director_max_parallel_kicks`.
    pub max_parallel_kicks: u32,
    /// `director_flush_socket` (empty/None = no flush script).
    pub flush_socket: Option<String>,
    /// `director_mail_servers`, expanded.
    pub config_hosts: Vec<ConfigHost>,
}

impl Default for CoreSettings {
    fn default() -> Self {
        Self {
            user_expire_secs: DEFAULT_USER_EXPIRE_SECS,
            username_hash: HashFormat::default(),
            hashing_mode: HashingMode::Consistent,
            kick_delay_secs: DEFAULT_KICK_DELAY_SECS,
            max_parallel_moves: DEFAULT_MAX_PARALLEL,
            max_parallel_kicks: DEFAULT_MAX_PARALLEL,
            flush_socket: None,
            config_hosts: Vec::new(),
        }
    }
}

/// Errors building a director from settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The config host list breaks a host list limit.
    #[error("director_mail_servers: {0}")]
    Hosts(#[from] HostListError),
}

/// Admin host command errors, each with Dovecot's reply text via [`HostError::reply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No such host (`NOTFOUND`).
    #[error("NOTFOUND")]
    NotFound,
    /// More than 1000 vhosts.
    #[error("vhost count too large")]
    VhostCountTooLarge,
    /// A tag differs from the existing host's tag.
    #[error("host tag can't be changed")]
    TagCantBeChanged,
    /// The host changed locally and the ring hasn't synced yet.
    #[error("host is already being updated - try again later")]
    AlreadyBeingUpdated,
    /// A host list limit was reached.
    #[error("{0}")]
    Limit(#[from] HostListError),
}

impl HostError {
    /// The admin protocol reply line (without LF).
    pub fn reply(&self) -> String {
        self.to_string()
    }
}

/// `USER-MOVE` failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserMoveError {
    /// No host with that IP (`NOTFOUND`).
    #[error("NOTFOUND")]
    NotFound,
    /// Hash failed, hash 0, or the user is already being moved (`TRYAGAIN`).
    #[error("TRYAGAIN")]
    TryAgain,
}

/// Outcome of an admin command that may have to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Reply now.
    Done(AdminStatus),
    /// Reply later with [`Effect::AdminDone`] for this ticket.
    Pending(Ticket),
}

/// Outcome of a login request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Go to this host.
    Ready(Route),
    /// Wait: the result comes as [`Effect::RequestDone`] with this id.
    Queued(RequestId, WaitReason),
    /// Fail now (temporary failure to the client).
    Failed(RequestError),
}

/// Ring state as far as the core's decisions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStatus {
    /// The first own SYNC came back (or we declared ourselves alone).
    pub handshaked: bool,
    /// Our latest SYNC came back.
    pub synced: bool,
    /// We have a right neighbour (not alone).
    pub has_right: bool,
    /// Any ring connection exists (otherwise no `Ring*` effects are produced).
    pub has_peers: bool,
}

impl RingStatus {
    /// A director without a ring.
    pub const STANDALONE: RingStatus = RingStatus {
        handshaked: true,
        synced: true,
        has_right: false,
        has_peers: false,
    };
}

/// One `USER-LIST` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserListEntry {
    /// User hash.
    pub hash: u32,
    /// Expiry time (`timestamp + E`).
    pub expire: u64,
    /// Host.
    pub ip: IpAddr,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Users in the directory.
    pub users: usize,
    /// Hosts.
    pub hosts: usize,
    /// Moves (kill contexts) in progress.
    pub moves_in_progress: u32,
    /// Local kicks in progress.
    pub kicks_in_progress: u32,
    /// Login requests waiting.
    pub pending_requests: usize,
    /// Admin kicks waiting for a slot.
    pub pending_kicks: usize,
    /// HOST-RESET-USERS jobs running.
    pub reset_jobs: usize,
}

/// What a config reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Config hosts that were not live and were added (100 vhosts, up).
    pub added: Vec<IpAddr>,
    /// Live hosts that the new config no longer lists (kept; remove them with doveadm).
    pub not_in_config: Vec<IpAddr>,
    /// Live hosts whose config tag differs (the live tag is kept).
    pub tag_conflicts: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
struct PendingRequest {
    id: RequestId,
    hash: u32,
    tag: String,
    deadline: u64,
    reason: WaitReason,
}

#[derive(Debug, Clone)]
enum KickKind {
    User(Vec<u8>),
    Alt(String, String),
}

#[derive(Debug, Clone)]
struct PendingKick {
    ticket: Ticket,
    kind: KickKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KickPurpose {
    Kill(TagId, u32),
    Admin,
}

#[derive(Debug, Clone)]
struct ResetJob {
    ticket: Ticket,
    /// Only users still on this host (by address: a removed host's id may be reused).
    host: Option<IpAddr>,
    users: VecDeque<(TagId, u32)>,
    max_moves: u32,
}

/// The director's whole decision state. See the module docs for the API.
#[derive(Debug)]
pub struct Director {
    settings: CoreSettings,
    hosts: HostList,
    rings: RingSet,
    vhash_cache: VhashCache,
    initial: InitialConfig,
    users: UserDirectory,
    kills: Kills,
    kick_tickets: HashMap<Ticket, KickPurpose>,
    flush_tickets: HashMap<Ticket, (TagId, u32)>,
    pending_requests: VecDeque<PendingRequest>,
    pending_kicks: VecDeque<PendingKick>,
    reset_jobs: VecDeque<ResetJob>,
    effects: VecDeque<Effect>,
    ring: RingStatus,
    next_ticket: u64,
    next_request: u64,
    /// See [`Director::has_unconfirmed_restored_users`].
    restored_unconfirmed: bool,
    /// A ring connection has existed: other directors may have been told about any user
    /// we have (a `USER` or a handshake), so none may be dropped here alone.
    ring_peers_seen: bool,
}

impl Director {
    /// Creates a director whose live hosts are the config hosts (100 vhosts each, up).
    pub fn new(settings: CoreSettings) -> Result<Self, SetupError> {
        let initial = InitialConfig::new(&settings.config_hosts, settings.hashing_mode)?;
        let mut hosts = HostList::new();
        for c in &settings.config_hosts {
            hosts.add(c.ip, &c.tag, VHOST_DEFAULT, c.hostname.clone())?;
        }
        let mut vhash_cache = VhashCache::default();
        let rings = RingSet::build(&hosts, settings.hashing_mode, &mut vhash_cache);
        let users = UserDirectory::new(settings.user_expire_secs);
        Ok(Self {
            settings,
            hosts,
            rings,
            vhash_cache,
            initial,
            users,
            kills: Kills::default(),
            kick_tickets: HashMap::new(),
            flush_tickets: HashMap::new(),
            pending_requests: VecDeque::new(),
            pending_kicks: VecDeque::new(),
            reset_jobs: VecDeque::new(),
            effects: VecDeque::new(),
            ring: RingStatus::STANDALONE,
            next_ticket: 1,
            next_request: 1,
            restored_unconfirmed: false,
            ring_peers_seen: false,
        })
    }

    // ---- views -------------------------------------------------------------------------

    /// Settings in use.
    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    /// The live host list.
    pub fn hosts(&self) -> &HostList {
        &self.hosts
    }

    /// The user directory (read-only).
    pub fn users(&self) -> &UserDirectory {
        &self.users
    }

    /// Current rings (rebuilt if hosts changed). Clone it to publish a snapshot.
    pub fn rings(&mut self) -> &RingSet {
        self.ensure_rings();
        &self.rings
    }

    /// `hosts_hash` of the live host list (§2.6).
    pub fn hosts_hash(&self) -> u32 {
        hosts_hash(&self.hosts)
    }

    /// Metrics counters.
    pub fn counters(&self) -> Counters {
        Counters {
            users: self.users.len(),
            hosts: self.hosts.len(),
            moves_in_progress: self.users_moving(),
            kicks_in_progress: self.users_kicking(),
            pending_requests: self.pending_requests.len(),
            pending_kicks: self.pending_kicks.len(),
            reset_jobs: self.reset_jobs.len(),
        }
    }

    /// Approximate heap bytes of the user directory and kill contexts.
    pub fn heap_bytes(&self) -> usize {
        self.users.heap_bytes() + self.kills.heap_bytes()
    }

    /// Current ring status.
    pub fn ring_status(&self) -> RingStatus {
        self.ring
    }

    /// Updates the ring status. Becoming synced clears host `desynced` marks and retries
    /// waiting requests.
    pub fn set_ring_status(&mut self, status: RingStatus, now: u64) {
        self.ring = status;
        self.ring_peers_seen |= status.has_peers;
        if status.handshaked {
            self.restored_unconfirmed = false;
        }
        if status.synced {
            let ids: Vec<HostId> = self.hosts.iter().map(|(id, _)| id).collect();
            for id in ids {
                if let Some(h) = self.hosts.get_mut(id) {
                    h.desynced = false;
                }
            }
        }
        // Dovecot re-runs waiting requests on every state change while synced.
        self.retry_pending(now);
    }

    // ---- effects and time --------------------------------------------------------------

    /// Next effect to perform, if any.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<u64> {
        let mut t = self.users.next_expiry();
        let mut consider = |x: u64| t = Some(t.map_or(x, |c: u64| c.min(x)));
        if let Some(d) = self.kills.next_deadline() {
            consider(d);
        }
        if let Some(r) = self.pending_requests.front() {
            consider(r.deadline);
        }
        t
    }

    /// Runs everything due at `now`: user expiry, move timeouts, kick delays, request
    /// timeouts.
    pub fn handle_timeout(&mut self, now: u64) {
        self.users.expire(now);
        for (key, timed_out) in self.kills.due(now) {
            if timed_out {
                tracing::warn!(hash = key.1, "user move timed out");
            }
            self.finish_kill(key, now);
        }
        // Request timeouts: oldest first (deadlines are in queue order for a monotonic clock).
        let mut kept = VecDeque::with_capacity(self.pending_requests.len());
        for r in std::mem::take(&mut self.pending_requests) {
            if r.deadline <= now {
                tracing::info!(
                    hash = r.hash,
                    reason = r.reason.as_str(),
                    "request timed out"
                );
                self.effects.push_back(Effect::RequestDone {
                    id: r.id,
                    result: Err(RequestError::Timeout(r.reason)),
                });
            } else {
                kept.push_back(r);
            }
        }
        self.pending_requests = kept;
    }

    /// Users being moved or killed: one kill context each (Dovecot's `users_moving_count`).
    /// Derived from `kills` rather than counted beside it, so the two can't drift.
    fn users_moving(&self) -> u32 {
        u32::try_from(self.kills.len()).unwrap_or(u32::MAX)
    }

    /// Kicks handed to the driver and not yet finished: one kick ticket each (Dovecot's
    /// `users_kicking_count`), derived from `kick_tickets` for the same reason.
    fn users_kicking(&self) -> u32 {
        u32::try_from(self.kick_tickets.len()).unwrap_or(u32::MAX)
    }

    fn ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        t
    }

    fn ensure_rings(&mut self) {
        if self.rings.generation() != self.hosts.generation() {
            self.rings = RingSet::build(
                &self.hosts,
                self.settings.hashing_mode,
                &mut self.vhash_cache,
            );
            let hosts = &self.hosts;
            self.vhash_cache.retain(|ip| hosts.lookup(ip).is_some());
        }
    }

    fn hashed_host(&mut self, tag: TagId, hash: u32) -> Option<HostId> {
        self.ensure_rings();
        self.rings.lookup(tag, hash)
    }

    fn host_ip(&self, id: HostId) -> Option<IpAddr> {
        self.hosts.get(id).map(|h| h.ip)
    }

    fn route(&self, id: HostId) -> Option<Route> {
        self.hosts.get(id).map(|h| Route {
            ip: h.ip,
            hostname: h.hostname.clone(),
            new_user: false,
        })
    }

    fn ring_effect(&mut self, e: Effect) {
        if self.ring.has_peers {
            self.effects.push_back(e);
        }
    }

    fn broadcast_user(&mut self, u: &User) {
        if let Some(ip) = self.host_ip(u.host) {
            self.ring_effect(Effect::RingUser {
                hash: u.hash,
                ip,
                timestamp: u.timestamp,
            });
        }
    }

    fn mark_changed(&mut self, id: HostId) {
        let alone = !self.ring.has_right;
        if let Some(h) = self.hosts.get_mut(id) {
            h.desynced = !alone;
        }
        self.hosts.touch();
    }

    // ---- hosts (§4) ---------------------------------------------------------------------

    /// `HOST-LIST`: hosts in IP order with their user counts.
    pub fn host_list(&self) -> Vec<HostInfo> {
        self.hosts
            .iter()
            .filter_map(|(id, _)| self.hosts.info(id, self.users.user_count(id)))
            .collect()
    }

    /// `HOST-LIST-REMOVED`: config hosts (IP order) that are no longer live hosts.
    pub fn host_list_removed(&self) -> Vec<IpAddr> {
        self.initial
            .hosts()
            .iter()
            .map(|(_, h)| h.ip)
            .filter(|ip| self.hosts.lookup(ip).is_none())
            .collect()
    }

    /// `HOST-SET ip[@tag] [vhosts]`: create the host (vhosts default 100) or change its
    /// vhost count. `tag = None` means no `@` was given (no tag check); `Some("")` is the
    /// empty tag. Existing users stay where they are.
    pub fn host_set(
        &mut self,
        ip: IpAddr,
        tag: Option<&str>,
        vhosts: Option<u32>,
        now: u64,
    ) -> Result<(), HostError> {
        if vhosts.is_some_and(|v| v > VHOST_MAX) {
            return Err(HostError::VhostCountTooLarge);
        }
        match self.hosts.lookup(&ip) {
            Some(id) => self.update_existing(id, tag, vhosts)?,
            None => {
                let vhosts = vhosts.unwrap_or(VHOST_DEFAULT);
                let id = self.hosts.add(ip, tag.unwrap_or(""), vhosts, None)?;
                tracing::info!(host = %ip, tag = tag.unwrap_or(""), vhosts, "host added");
                self.mark_changed(id);
            }
        }
        self.retry_pending(now);
        Ok(())
    }

    /// `HOST-UPDATE ip[@tag] vhosts`: like [`Self::host_set`] but the host must exist.
    pub fn host_update(
        &mut self,
        ip: IpAddr,
        tag: Option<&str>,
        vhosts: u32,
        now: u64,
    ) -> Result<(), HostError> {
        if vhosts > VHOST_MAX {
            return Err(HostError::VhostCountTooLarge);
        }
        let id = self.hosts.lookup(&ip).ok_or(HostError::NotFound)?;
        self.update_existing(id, tag, Some(vhosts))?;
        self.retry_pending(now);
        Ok(())
    }

    fn update_existing(
        &mut self,
        id: HostId,
        tag: Option<&str>,
        vhosts: Option<u32>,
    ) -> Result<(), HostError> {
        let (cur_tag, desynced, cur_vhosts) = match self.hosts.get(id) {
            Some(h) => (h.tag, h.desynced, h.vhost_count),
            None => return Err(HostError::NotFound),
        };
        if let Some(t) = tag {
            if self.hosts.tag_name(cur_tag) != t {
                return Err(HostError::TagCantBeChanged);
            }
        }
        if desynced {
            return Err(HostError::AlreadyBeingUpdated);
        }
        if let Some(v) = vhosts {
            if v != cur_vhosts {
                tracing::info!(host = %self.host_ip(id).map(|i| i.to_string()).unwrap_or_default(),
                    from = cur_vhosts, to = v, "vhost count changed");
                if let Some(h) = self.hosts.get_mut(id) {
                    h.vhost_count = v;
                }
                self.mark_changed(id);
            }
        }
        Ok(())
    }

    fn set_down(&mut self, ip: IpAddr, down: bool, now: u64) -> Result<(), HostError> {
        let id = self.hosts.lookup(&ip).ok_or(HostError::NotFound)?;
        let Some(h) = self.hosts.get_mut(id) else {
            return Err(HostError::NotFound);
        };
        if h.down == down {
            return Ok(());
        }
        if h.desynced {
            return Err(HostError::AlreadyBeingUpdated);
        }
        h.down = down;
        h.last_updown_change = now;
        tracing::info!(host = %ip, state = if down { "down" } else { "up" }, "host state changed");
        self.mark_changed(id);
        self.retry_pending(now);
        Ok(())
    }

    /// `HOST-UP ip`: new users may be assigned to it again. Stamps `last_updown_change`.
    pub fn host_up(&mut self, ip: IpAddr, now: u64) -> Result<(), HostError> {
        self.set_down(ip, false, now)
    }

    /// `HOST-DOWN ip`: no new users; existing assignments stay. Stamps `last_updown_change`.
    pub fn host_down(&mut self, ip: IpAddr, now: u64) -> Result<(), HostError> {
        self.set_down(ip, true, now)
    }

    fn drop_users_of(&mut self, id: HostId, now: u64) {
        self.forget_users_of(id);
        self.after_users_dropped(now);
    }

    /// Drops the users of host `id` and their kills, without starting anything, and asks
    /// for the host's proxied connections to be closed ([`Effect::KickBackend`]).
    fn forget_users_of(&mut self, id: HostId) {
        for u in self.users.remove_host(id) {
            self.kills.remove(&(u.tag, u.hash));
        }
        self.kills.shrink();
        if let Some(ip) = self.host_ip(id) {
            self.effects.push_back(Effect::KickBackend { ip });
        }
    }

    /// Waiting logins may be routed now, and the dropped kills free move slots a
    /// HOST-RESET-USERS job may be waiting for.
    fn after_users_dropped(&mut self, now: u64) {
        self.retry_pending(now);
        self.run_reset_jobs(now);
    }

    /// `HOST-REMOVE ip`: delete the host and drop its users (no kicking).
    pub fn host_remove(&mut self, ip: IpAddr, now: u64) -> Result<(), HostError> {
        let id = self.hosts.lookup(&ip).ok_or(HostError::NotFound)?;
        tracing::info!(host = %ip, users = self.users.user_count(id), "host removed");
        self.forget_users_of(id);
        // The host leaves the ring before anything is routed or moved again: a resumed
        // HOST-RESET-USERS job must not move a user onto the host being removed.
        self.hosts.remove(id);
        self.after_users_dropped(now);
        Ok(())
    }

    /// `HOST-FLUSH [ip]`: drop the users of one host, or of all hosts (no kicking, no
    /// flush script).
    pub fn host_flush(&mut self, ip: Option<IpAddr>, now: u64) -> Result<(), HostError> {
        match ip {
            Some(ip) => {
                let id = self.hosts.lookup(&ip).ok_or(HostError::NotFound)?;
                tracing::info!(host = %ip, users = self.users.user_count(id), "host flushed");
                self.drop_users_of(id, now);
            }
            None => {
                tracing::warn!("flushing users of all hosts");
                let ids: Vec<HostId> = self.hosts.iter().map(|(id, _)| id).collect();
                for id in ids {
                    self.drop_users_of(id, now);
                }
            }
        }
        Ok(())
    }

    /// `HOST-RESET-USERS [ip [max]]`: move every user of the host (or all hosts) whose hashed
    /// host differs to the hashed host, at most `max_parallel` moves in flight (default
    /// `director_max_parallel_moves`); users with no hashed host are kicked and dropped.
    /// Returns the ticket of the `OK` [`Effect::AdminDone`], sent once every user was
    /// processed.
    pub fn reset_users(
        &mut self,
        ip: Option<IpAddr>,
        max_parallel: Option<u32>,
        now: u64,
    ) -> Result<Ticket, HostError> {
        let host = match ip {
            Some(ip) => Some(self.hosts.lookup(&ip).ok_or(HostError::NotFound)?),
            None => None,
        };
        self.users.expire(now);
        let users = self
            .users
            .iter()
            .filter(|u| match host {
                Some(h) => u.host == h,
                None => true,
            })
            .map(|u| (u.tag, u.hash))
            .collect();
        let ticket = self.ticket();
        self.reset_jobs.push_back(ResetJob {
            ticket,
            host: ip,
            users,
            max_moves: max_parallel
                .unwrap_or(self.settings.max_parallel_moves)
                .max(1),
        });
        self.run_reset_jobs(now);
        Ok(ticket)
    }

    fn run_reset_jobs(&mut self, now: u64) {
        while let Some(mut job) = self.reset_jobs.pop_front() {
            while self.users_moving() < job.max_moves {
                let Some((tag, hash)) = job.users.pop_front() else {
                    break;
                };
                let Some(u) = self.users.get(tag, hash, now) else {
                    continue;
                };
                if job.host.is_some_and(|ip| self.host_ip(u.host) != Some(ip)) || u.killing {
                    continue;
                }
                match self.hashed_host(tag, hash) {
                    Some(h) if h == u.host => {}
                    Some(h) => self.start_move(tag, hash, h, true, now),
                    None => {
                        let old = self.old_host_of(u.host);
                        self.start_kill(tag, hash, old, None, true, true, now);
                    }
                }
            }
            if job.users.is_empty() {
                self.effects.push_back(Effect::AdminDone {
                    ticket: job.ticket,
                    status: AdminStatus::Ok,
                });
            } else {
                // Out of move slots: resume when a move finishes.
                self.reset_jobs.push_front(job);
                return;
            }
        }
    }

    // ---- users (admin) ------------------------------------------------------------------

    /// `USER-LOOKUP user|hash [tag]` (§3.5). `Err` = hash failed → `TRYAGAIN`.
    pub fn user_lookup(
        &mut self,
        key: &UserKey,
        tag: &str,
        now: u64,
    ) -> Result<UserLookup, HashError> {
        let hash = key.hash(&self.settings.username_hash)?;
        let tag_id = self.hosts.tag_id(tag);
        let current = tag_id
            .and_then(|t| self.users.get(t, hash, now))
            .and_then(|u| Some((self.host_ip(u.host)?, self.users.expire_time(&u))));
        let hashed = tag_id
            .and_then(|t| self.hashed_host(t, hash))
            .and_then(|id| self.host_ip(id));
        let initial = self.initial.lookup(tag, hash);
        Ok(UserLookup {
            current,
            hashed,
            initial,
        })
    }

    /// `USER-LIST [ip]`: every live user (all tags), optionally only those on `ip`.
    pub fn user_list(&mut self, ip: Option<IpAddr>, now: u64) -> Vec<UserListEntry> {
        self.users.expire(now);
        let filter = ip.map(|ip| self.hosts.lookup(&ip));
        if let Some(None) = filter {
            return Vec::new();
        }
        let filter = filter.flatten();
        self.users
            .iter()
            .filter(|u| match filter {
                Some(h) => u.host == h,
                None => true,
            })
            .filter_map(|u| {
                Some(UserListEntry {
                    hash: u.hash,
                    expire: self.users.expire_time(&u),
                    ip: self.host_ip(u.host)?,
                })
            })
            .collect()
    }

    /// `USER-MOVE user|hash ip`.
    ///
    /// * host unknown → `NotFound`; hash failed or user being moved → `TryAgain`;
    /// * already on that host → refresh + `USER` broadcast;
    /// * otherwise start a move (§11.1).
    ///
    /// Hash 0 answers `TryAgain`: Dovecot 2.3.19 crashes on it (assertion), and a hash-0
    /// `USER-MOVE` sent on the ring would crash Dovecot peers too. No username hashes to 0
    /// (0 maps to 1), so only a hand-typed hash can hit this.
    pub fn user_move(&mut self, key: &UserKey, ip: IpAddr, now: u64) -> Result<(), UserMoveError> {
        let hash = key
            .hash(&self.settings.username_hash)
            .map_err(|_| UserMoveError::TryAgain)?;
        let host = self.hosts.lookup(&ip).ok_or(UserMoveError::NotFound)?;
        if hash == 0 {
            tracing::warn!(host = %ip, "refusing USER-MOVE of hash 0");
            return Err(UserMoveError::TryAgain);
        }
        let tag = self
            .hosts
            .get(host)
            .map(|h| h.tag)
            .unwrap_or(TagId::UNTAGGED);
        match self.users.get(tag, hash, now) {
            Some(u) if u.killing => Err(UserMoveError::TryAgain),
            Some(u) if u.host == host => {
                if let Some(u) = self.users.refresh(tag, hash, now, now) {
                    self.broadcast_user(&u);
                }
                Ok(())
            }
            _ => {
                tracing::info!(user_hash = hash, host = %ip, "user moved");
                self.start_move(tag, hash, host, true, now);
                Ok(())
            }
        }
    }

    /// `USER-KICK username [nowait]`.
    pub fn user_kick(&mut self, username: &[u8], nowait: bool, now: u64) -> AdminOutcome {
        self.admin_kick(KickKind::User(username.to_vec()), nowait, now)
    }

    /// `USER-KICK-ALT field value [nowait]`.
    pub fn user_kick_alt(
        &mut self,
        field: &str,
        value: &str,
        nowait: bool,
        now: u64,
    ) -> AdminOutcome {
        self.admin_kick(
            KickKind::Alt(field.to_string(), value.to_string()),
            nowait,
            now,
        )
    }

    fn admin_kick(&mut self, kind: KickKind, nowait: bool, _now: u64) -> AdminOutcome {
        if self.users_kicking() < self.settings.max_parallel_kicks && self.pending_kicks.is_empty()
        {
            self.do_admin_kick(kind);
            return AdminOutcome::Done(AdminStatus::Ok);
        }
        if nowait || self.pending_kicks.len() >= MAX_PENDING_KICKS {
            return AdminOutcome::Done(AdminStatus::TryAgain);
        }
        let ticket = self.ticket();
        self.pending_kicks.push_back(PendingKick { ticket, kind });
        AdminOutcome::Pending(ticket)
    }

    fn do_admin_kick(&mut self, kind: KickKind) {
        let ticket = self.ticket();
        self.kick_tickets.insert(ticket, KickPurpose::Admin);
        match kind {
            KickKind::User(username) => {
                self.effects.push_back(Effect::Kick {
                    ticket,
                    username: username.clone(),
                });
                self.ring_effect(Effect::RingUserKick { username });
            }
            KickKind::Alt(field, value) => {
                self.effects.push_back(Effect::KickAlt {
                    ticket,
                    field: field.clone(),
                    value: value.clone(),
                });
                self.ring_effect(Effect::RingUserKickAlt { field, value });
            }
        }
    }

    fn run_pending_kicks(&mut self) {
        while self.users_kicking() < self.settings.max_parallel_kicks {
            let Some(p) = self.pending_kicks.pop_front() else {
                return;
            };
            self.do_admin_kick(p.kind);
            self.effects.push_back(Effect::AdminDone {
                ticket: p.ticket,
                status: AdminStatus::Ok,
            });
        }
    }

    // ---- config reload ---------------------------------------------------------------------

    /// SIGHUP: a new `director_mail_servers`.
    ///
    /// Dovecot re-reads the config on reload, but its running director process keeps its
    /// in-memory host list (runtime `doveadm director` changes survive). We do the same and
    /// merge: the new list becomes the "Initial config" / HOST-LIST-REMOVED baseline; config
    /// hosts that aren't live are added (100 vhosts, up); live hosts missing from the new
    /// config stay (an operator removes them with `doveadm director remove`, so a reload never
    /// silently drops users); a live host whose config tag differs keeps its live tag
    /// (reported).
    pub fn reload_config_hosts(
        &mut self,
        config_hosts: Vec<ConfigHost>,
        now: u64,
    ) -> Result<ReloadReport, SetupError> {
        let initial = InitialConfig::new(&config_hosts, self.settings.hashing_mode)?;
        let mut report = ReloadReport::default();
        for c in &config_hosts {
            match self.hosts.lookup(&c.ip) {
                Some(id) => {
                    let live_tag = self.hosts.get(id).map(|h| h.tag);
                    if live_tag.map(|t| self.hosts.tag_name(t)) != Some(c.tag.as_str())
                        && !report.tag_conflicts.contains(&c.ip)
                    {
                        report.tag_conflicts.push(c.ip);
                    }
                }
                None => {
                    let id = self
                        .hosts
                        .add(c.ip, &c.tag, VHOST_DEFAULT, c.hostname.clone())?;
                    self.mark_changed(id);
                    report.added.push(c.ip);
                }
            }
        }
        report.not_in_config = self
            .hosts
            .iter()
            .map(|(_, h)| h.ip)
            .filter(|ip| initial.hosts().lookup(ip).is_none())
            .collect();
        self.initial = initial;
        self.settings.config_hosts = config_hosts;
        self.retry_pending(now);
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
