//! The driver: the one piece of code that owns the director core, its clock and timers, and
//! carries out its effects, like Dovecot's single director process.
//!
//! Who touches the state, and how:
//! * The state (the core, the ring view, the parked admin batches and logins) sits behind a
//!   mutex that is never held across an `await`.
//! * Admin connections run their requests on it directly ([`DirectorHandle::admin_batch`]):
//!   an unpipelined `USER-LOOKUP` then costs no task switch and no channel. The daemon runs
//!   them on the thread of the driver task, so the lock is uncontended.
//! * Proxy logins ([`DirectorHandle::login`]) come from the proxy's worker threads. They take
//!   the state only if it is free (`try_lock`), so the common login is decided on the worker
//!   without waking the driver's thread, and a worker never blocks behind a long `USER-LIST`;
//!   a busy state sends the login through the driver task's bounded channel instead.
//! * The driver task ([`spawn`]) serves that channel (logins, SIGHUP reloads, finished kicks
//!   and flush scripts) and the timers: the core's next deadline and the refresh of users with
//!   open local sessions every `director_user_expire / 2`. It is woken early when a request
//!   made the deadline earlier or the clock was advanced.
//! * Effects: admin replies and login answers are delivered while the state is held; kicks and
//!   flush scripts run in tasks of their own and report back through the channel.
//! * The saved state (`state_store.rs`): restored before anything is served; saved every
//!   `director_state_save_interval` when something changed, the snapshot taken under the
//!   state lock and encoded and written in a blocking task; [`DirectorHandle::save_state`]
//!   saves at shutdown.
//!
//! A panic while the state is held is a bug that may have left the state half-changed, so
//! the state is never used again: the driver stops, every later request gets `None` (admin
//! connections close, logins get the protocol's temporary failure), and
//! [`DirectorHandle::stopped`] reports [`DriverExit::Crashed`], on which the daemon exits
//! with an error for its supervisor to restart it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};

use director_core::effect::{Effect, RequestError, RequestId, Route, Ticket};
use director_core::lookup::ConfigHost;
use director_core::{CoreSettings, RequestOutcome};
use director_proto::admin::{AdminReply, AdminRequest};
use director_ring::{Direction, Ring, RingConfig};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::clock::Clock;
use crate::core_api::{status_reply, AdminStart, CoreError, CoreState};
use crate::effects::flush;
use crate::effects::sessions::{KickFuture, LocalSessions};
use crate::limits::{
    DRIVER_QUEUE_CAPACITY, MIN_REFRESH_PERIOD, RING_EVENTS_PER_LOCK, RING_EVENT_QUEUE_CAPACITY,
    RING_SYNC_WAIT,
};
use crate::metrics::{DriverCounters, DriverMetrics, HostMetrics, RingMetrics};
use crate::ring_net::{Executed, RingDialer, RingEvent, RingNet};
use crate::ring_view::RingView;
use crate::state_store::{ReadOutcome, StateStore};

/// Messages into the driver task.
enum DriverMsg {
    /// Replace the configured mail servers (SIGHUP).
    Reload {
        hosts: Vec<ConfigHost>,
        reply: oneshot::Sender<Result<String, CoreError>>,
    },
    /// A proxy login that found the state busy.
    Login {
        username: Vec<u8>,
        reply: oneshot::Sender<Result<Route, RequestError>>,
    },
    /// A kick finished.
    KickDone { ticket: Ticket },
    /// A flush script finished.
    FlushDone { ticket: Ticket, success: bool },
    /// A periodic save finished.
    Saved { result: Result<SaveReport, String> },
}

/// How the driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverExit {
    /// Every handle was dropped.
    Stopped,
    /// Code panicked while holding the state; the state was abandoned.
    Crashed,
}

/// Who the other directors are.
pub enum Directors {
    /// A standalone director: the director list as one shows it (`DIRECTOR-LIST`).
    Standalone(RingView),
    /// A ring of directors (`director_servers`).
    Ring {
        /// Our identity, the list and the ring's timeouts.
        config: RingConfig,
        /// `director_output_buffer_size`: most bytes queued for one peer.
        output_buffer_size: usize,
        /// Where each director is dialed: [`RingDialer::listed`] but in tests.
        dialer: RingDialer,
    },
}

/// Everything the driver is built from.
pub struct DriverConfig {
    /// The core's settings.
    pub core: CoreSettings,
    /// The other directors.
    pub directors: Directors,
    /// The sessions kicks act on and refreshes keep alive.
    pub sessions: Arc<dyn LocalSessions>,
    /// Time source; keep a clone to advance it in tests.
    pub clock: Clock,
    /// Where the state is saved and restored from; `None`: it lives in memory only.
    pub state: Option<StateConfig>,
}

/// The saved state: where, and how often.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The state file.
    pub store: Arc<StateStore>,
    /// `director_state_save_interval`: at most one save per interval, only after a change.
    pub save_interval: Duration,
}

/// What a save wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveReport {
    /// Hosts saved.
    pub hosts: usize,
    /// Users saved.
    pub users: usize,
    /// Bytes written.
    pub bytes: usize,
    /// Time taken to encode and write, fsyncs included.
    pub elapsed: Duration,
    /// `false`: a newer snapshot had been written already, this one was dropped.
    pub written: bool,
}

/// What [`DirectorHandle::save_state`] did.
#[derive(Debug)]
pub enum SaveOutcome {
    /// Saved.
    Saved(SaveReport),
    /// No `state_dir` configured (or saving turned off).
    Disabled,
    /// The driver has stopped: there is no state to save.
    Stopped,
    /// The write failed (the reason).
    Failed(String),
}

/// A cheap, clonable way to reach the driver.
#[derive(Clone)]
pub struct DirectorHandle {
    tx: mpsc::Sender<DriverMsg>,
    ring_tx: mpsc::Sender<RingEvent>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DirectorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorHandle").finish_non_exhaustive()
    }
}

/// What [`DirectorHandle::try_login_here`] managed.
enum FastLogin {
    /// The core took the request; the answer comes on this receiver (at once unless queued).
    Answered(oneshot::Receiver<Result<Route, RequestError>>),
    /// The state is in use: go through the driver task.
    Busy,
    /// The driver has stopped.
    Stopped,
}

/// The state and what wakes the driver task.
struct Shared {
    state: Mutex<State>,
    /// Wakes the driver task to look at its deadline again: a request made it earlier, the
    /// clock was advanced, or the state was abandoned after a panic.
    wake: Notify,
    /// `None` while running.
    exit: watch::Sender<Option<DriverExit>>,
    /// Logins that found the state busy and went through the driver task's queue.
    queued_logins: AtomicU64,
}

/// The locked state. Dropped during a panic, it marks the driver crashed (the mutex is
/// poisoned by then too) and wakes the driver task so that it stops.
struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    shared: &'a Shared,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl StateGuard<'_> {
    /// When the driver task must wake next; releases the state.
    fn next_wake(self) -> tokio::time::Instant {
        self.guard.next_wake()
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.crashed();
        }
    }
}

impl Shared {
    /// The state, unless the driver stopped or a panic abandoned it.
    fn lock(&self) -> Option<StateGuard<'_>> {
        match self.state.lock() {
            Ok(guard) if !guard.stopped => Some(StateGuard {
                guard,
                shared: self,
            }),
            Ok(_) => None,
            Err(_) => {
                self.crashed();
                None
            }
        }
    }

    /// Like [`Shared::lock`], but gives up at once when someone else holds the state.
    fn try_lock(&self) -> Result<StateGuard<'_>, FastLogin> {
        match self.state.try_lock() {
            Ok(guard) if !guard.stopped => Ok(StateGuard {
                guard,
                shared: self,
            }),
            Ok(_) => Err(FastLogin::Stopped),
            Err(TryLockError::WouldBlock) => Err(FastLogin::Busy),
            Err(TryLockError::Poisoned(_)) => {
                self.crashed();
                Err(FastLogin::Stopped)
            }
        }
    }

    fn crashed(&self) {
        let first = self.exit.send_if_modified(|exit| match exit {
            None => {
                *exit = Some(DriverExit::Crashed);
                true
            }
            Some(_) => false,
        });
        if first {
            tracing::error!(
                "a panic left the director state half-changed: the director stops serving"
            );
        }
        self.wake.notify_one();
    }

    /// Runs `f` on `state` at the current time, then the effects it caused, and wakes the
    /// driver task if the core's next deadline moved earlier than the one it sleeps towards.
    fn run<R>(&self, state: &mut State, f: impl FnOnce(&mut State, Duration) -> R) -> R {
        let before = state.core.next_deadline();
        let save_before = state.save_due_at();
        let now = state.clock.now();
        let r = f(state, now);
        state.settle();
        if earlier(state.core.next_deadline(), before) || earlier(state.save_due_at(), save_before)
        {
            self.wake.notify_one();
        }
        r
    }
}

impl DirectorHandle {
    /// Runs one admin request; the encoded reply, or `None` when the driver has stopped.
    pub async fn admin(&self, request: AdminRequest) -> Option<Vec<u8>> {
        self.admin_batch(vec![request]).await
    }

    /// Runs pipelined admin requests in order; `None` when the driver has stopped. Requests
    /// that finish at once are answered here without waking the driver task; one that has to
    /// wait (a move's kick, a flush) parks the rest of the batch until the core answers it.
    pub async fn admin_batch(&self, requests: Vec<AdminRequest>) -> Option<Vec<u8>> {
        let held = HeldBatch {
            out: Vec::with_capacity(requests.len() * 48),
            rest: requests.into(),
        };
        let rx = {
            let mut state = self.shared.lock()?;
            state.counters.admin_requests += held.rest.len() as u64;
            let outcome = self
                .shared
                .run(&mut state, |st, now| st.continue_batch(held, None, now));
            match outcome {
                BatchOutcome::Done(out) => return Some(out),
                BatchOutcome::Parked(rx) => rx,
            }
        };
        rx.await.ok()
    }

    /// Routes a proxy login (§6); `None` when the driver has stopped. When the state is free
    /// (nearly always), the core decides right here, on the caller's thread; when it is busy,
    /// the login goes through the driver task's channel rather than blocking the caller.
    /// A login the core queues (a user being moved, a ring not synced) is answered when the
    /// core decides, at most its 30 s request timeout later.
    pub async fn login(&self, username: Vec<u8>) -> Option<Result<Route, RequestError>> {
        let rx = match self.try_login_here(&username) {
            FastLogin::Answered(rx) => rx,
            FastLogin::Stopped => return None,
            FastLogin::Busy => {
                self.shared.queued_logins.fetch_add(1, Ordering::Relaxed);
                let (reply, rx) = oneshot::channel();
                self.tx
                    .send(DriverMsg::Login { username, reply })
                    .await
                    .ok()?;
                rx
            }
        };
        rx.await.ok()
    }

    /// The login fast path; synchronous, so the guard is never held across an `await`.
    fn try_login_here(&self, username: &[u8]) -> FastLogin {
        let mut state = match self.shared.try_lock() {
            Ok(state) => state,
            Err(other) => return other,
        };
        let (tx, rx) = oneshot::channel();
        self.shared
            .run(&mut state, |st, now| st.answer_login(username, tx, now));
        FastLogin::Answered(rx)
    }

    /// The backend refused a login whose request created the user's assignment
    /// ([`Route::new_user`]), and no other session of the user is open or logging in: drop
    /// the assignment, so that made-up names cost nothing (only while the director has never
    /// had a ring peer: see `Director::discard_new_user`). Returns whether it was dropped.
    pub fn discard_new_user(&self, username: &[u8], route: &Route) -> bool {
        if !route.new_user {
            return false;
        }
        match self.shared.lock() {
            Some(mut state) => {
                let now = state.clock.now();
                let dropped = state.core.discard_new_user(username, route.ip, now);
                drop(state);
                // The saved state must learn it.
                self.shared.wake.notify_one();
                dropped
            }
            None => false,
        }
    }

    /// proxy-notify (§3.4, §7.3): a proxy outside this process (a Dovecot login process)
    /// still has a session of `username` open. Its assignment, if it has one, is refreshed
    /// as the built-in proxy's open sessions are; none is created. `false` when the driver
    /// has stopped.
    pub fn refresh_user(&self, username: &[u8]) -> bool {
        let Some(mut state) = self.shared.lock() else {
            return false;
        };
        let now = state.clock.now();
        state.core.refresh_user(username, now);
        state.run_effects();
        drop(state);
        self.shared.wake.notify_one();
        true
    }

    /// Merges a new `director_mail_servers` (SIGHUP); a summary of what changed, or why
    /// nothing did; `None` when the driver has stopped.
    pub async fn reload(&self, hosts: Vec<ConfigHost>) -> Option<Result<String, CoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::Reload { hosts, reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Moves the driver's clock forward by `by` and runs every timer that is then due
    /// (expiry, kick delays, move timeouts, the session refresh) before returning. For tests
    /// and simulations that need time to pass without waiting for it; `false` when the
    /// driver has stopped.
    pub fn advance_clock(&self, by: Duration) -> bool {
        let Some(mut state) = self.shared.lock() else {
            return false;
        };
        state.clock.advance(by);
        state.on_timer();
        drop(state);
        self.shared.wake.notify_one();
        true
    }

    /// A peer connected to our ring listener; the ring decides whether it may stay. A
    /// standalone director closes it.
    pub async fn ring_accept(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = self
            .ring_tx
            .send(RingEvent::Accepted { stream, peer })
            .await;
    }

    /// Whether the ring is synced (a standalone director always is).
    pub fn ring_synced(&self) -> bool {
        self.shared.lock().is_some_and(|st| match &st.directors {
            DirectorsState::Standalone(_) => true,
            DirectorsState::Ring(net) => net.ring.is_synced(),
        })
    }

    /// Whether this director makes the ring's health-check decisions: standalone, always;
    /// in a ring, while it is the lowest-addressed live director of the synced ring
    /// ([`Ring::is_lowest_live`]).
    pub fn health_check_leader(&self) -> bool {
        self.shared.lock().is_some_and(|st| match &st.directors {
            DirectorsState::Standalone(_) => true,
            DirectorsState::Ring(net) => net.ring.is_lowest_live(),
        })
    }

    /// The names hosts were given by (a `director_mail_servers` host name), by address; a
    /// host given by address has none. TLS to a backend verifies this name, else the address.
    pub fn host_names(&self) -> std::collections::HashMap<IpAddr, String> {
        let Some(state) = self.shared.lock() else {
            return std::collections::HashMap::new();
        };
        state
            .core
            .director()
            .host_list()
            .into_iter()
            .filter_map(|h| Some((h.ip, h.hostname?)))
            .collect()
    }

    /// The state and counters a metrics scrape shows; `None` when the driver has stopped.
    pub fn metrics(&self) -> Option<DriverMetrics> {
        let state = self.shared.lock()?;
        let director = state.core.director();
        let hosts = director
            .host_list()
            .into_iter()
            .map(|h| HostMetrics {
                ip: h.ip,
                up: !h.down,
                vhosts: h.vhost_count,
                users: h.user_count,
            })
            .collect();
        let ring = match &state.directors {
            DirectorsState::Standalone(_) => None,
            DirectorsState::Ring(net) => {
                let o = net.ring.overview();
                Some(RingMetrics {
                    peers: o.connections,
                    synced: o.synced,
                })
            }
        };
        Some(DriverMetrics {
            hosts,
            users: director.users().len(),
            ring,
            counters: state.counters,
            queued_logins: self.queued_logins(),
        })
    }

    /// How many logins wait for the core (a user being moved, a ring not synced); 0 when the
    /// driver has stopped.
    pub fn waiting_logins(&self) -> usize {
        self.shared.lock().map_or(0, |st| st.logins.len())
    }

    /// Saves the state now (at shutdown): the snapshot is taken under the state lock, the
    /// file is written in a blocking task.
    pub async fn save_state(&self) -> SaveOutcome {
        let job = {
            let Some(mut state) = self.shared.lock() else {
                return SaveOutcome::Stopped;
            };
            match state.save_job() {
                Some(job) => job,
                None => return SaveOutcome::Disabled,
            }
        };
        match tokio::task::spawn_blocking(move || job.run()).await {
            Ok(Ok(report)) => SaveOutcome::Saved(report),
            Ok(Err(e)) => SaveOutcome::Failed(e),
            Err(e) => SaveOutcome::Failed(format!("the save task failed: {e}")),
        }
    }

    /// How many logins so far found the state busy and were queued for the driver task
    /// instead of being decided on the caller's thread.
    pub fn queued_logins(&self) -> u64 {
        self.shared.queued_logins.load(Ordering::Relaxed)
    }

    /// Waits until the driver has ended, and says how.
    pub async fn stopped(&self) -> DriverExit {
        let mut rx = self.shared.exit.subscribe();
        // The sender lives in `shared`, which we hold: waiting cannot fail.
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(exit) => *exit,
            Err(_) => None,
        };
        exit.unwrap_or(DriverExit::Stopped)
    }
}

/// Dovecot's reply to a ring-gated admin command that waited 30 s for the ring.
const RING_SYNC_TIMED_OUT: &str = "Ring sync timed out";

/// How an admin command waits for the ring (§8.2): `[G]` commands run only once the ring
/// is synced, `[S]` commands answer `OK` only once their change went round.
#[derive(Debug, Clone, Copy, Default)]
struct SyncGate {
    waits_before: bool,
    replies_after: bool,
}

impl SyncGate {
    fn of(request: &AdminRequest) -> SyncGate {
        let (waits_before, replies_after) = match request {
            AdminRequest::DirectorAdd { .. } => (true, false),
            AdminRequest::DirectorRemove { .. }
            | AdminRequest::HostSet { .. }
            | AdminRequest::HostUpdate { .. }
            | AdminRequest::HostUp { .. }
            | AdminRequest::HostDown { .. }
            | AdminRequest::HostRemove { .. }
            | AdminRequest::HostFlush { ip: Some(_) } => (true, true),
            // Flushing every host answers right after it ran.
            AdminRequest::HostFlush { ip: None } => (true, false),
            _ => (false, false),
        };
        SyncGate {
            waits_before,
            replies_after,
        }
    }
}

/// What the ring must be told after an admin host command succeeded in the core.
#[derive(Debug, Clone, Copy)]
enum RingNotice {
    Changed(IpAddr),
    Removed(IpAddr),
    /// One host, or every host.
    Flushed(Option<IpAddr>),
}

impl RingNotice {
    fn of(request: &AdminRequest) -> Option<RingNotice> {
        match request {
            AdminRequest::HostSet { ip, .. }
            | AdminRequest::HostUpdate { ip, .. }
            | AdminRequest::HostUp { ip }
            | AdminRequest::HostDown { ip } => Some(RingNotice::Changed(*ip)),
            AdminRequest::HostRemove { ip } => Some(RingNotice::Removed(*ip)),
            AdminRequest::HostFlush { ip } => Some(RingNotice::Flushed(*ip)),
            _ => None,
        }
    }
}

/// An admin batch being run: the replies so far and the requests still to run.
struct HeldBatch {
    out: Vec<u8>,
    rest: VecDeque<AdminRequest>,
}

/// What became of a batch: all answered, or parked behind a request that has to wait.
enum BatchOutcome {
    Done(Vec<u8>),
    Parked(oneshot::Receiver<Vec<u8>>),
}

/// True when `after` is a deadline the driver task would not have been sleeping towards.
fn earlier<T: PartialOrd>(after: Option<T>, before: Option<T>) -> bool {
    match (after, before) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The other directors, as the state holds them.
enum DirectorsState {
    Standalone(RingView),
    Ring(Box<RingNet>),
}

/// An admin batch that waits for the ring to be synced (§8.2).
struct SyncWaiter {
    held: HeldBatch,
    reply: oneshot::Sender<Vec<u8>>,
    /// Unix time after which the batch gets `Ring sync timed out`.
    deadline: Duration,
    /// The reply of the request that already ran (`[S]`: sent once the change went round);
    /// `None`: the first request of `held` runs once synced (`[G]`).
    done: Option<AdminReply>,
}

/// The director's state.
struct State {
    core: CoreState,
    directors: DirectorsState,
    sync_waiters: Vec<SyncWaiter>,
    sessions: Arc<dyn LocalSessions>,
    clock: Clock,
    /// Batches held back by an unfinished request, keyed by that request's ticket.
    batches: HashMap<Ticket, (HeldBatch, oneshot::Sender<Vec<u8>>)>,
    logins: HashMap<RequestId, oneshot::Sender<Result<Route, RequestError>>>,
    tx: mpsc::WeakSender<DriverMsg>,
    /// After a timeout fired at second `s`, the next one fires no earlier than `s + 1`: the
    /// core works in whole seconds, and this rules out a busy loop on a deadline that is
    /// still "now".
    not_before: u64,
    /// Unix time of the next refresh of users with open local sessions.
    next_refresh: Duration,
    refresh_period: Duration,
    /// The saved state, when configured.
    persist: Option<Persist>,
    /// Set when the driver ends; later requests get `None`.
    stopped: bool,
    /// What the driver carried out, for the metrics.
    counters: DriverCounters,
}

/// The periodic save's bookkeeping.
struct Persist {
    config: StateConfig,
    /// Unix time before which no periodic save starts.
    next_save: Duration,
    /// [`director_core::Director::state_changes`] at the last snapshot that was (or is
    /// being) written; `None`: nothing saved yet, or the last save failed.
    saved_changes: Option<u64>,
    /// A periodic save is being written.
    in_flight: bool,
    /// Sequence number of the last snapshot taken (newer snapshots win in the store).
    seq: u64,
    /// The last save failed (its error was logged; repeats go to debug).
    failing: bool,
}

/// A snapshot on its way to the disk.
struct SaveJob {
    snapshot: director_core::Snapshot,
    seq: u64,
    store: Arc<StateStore>,
}

impl SaveJob {
    /// Encodes and writes; blocking.
    fn run(self) -> Result<SaveReport, String> {
        let started = std::time::Instant::now();
        let bytes = director_proto::state_file::encode(&self.snapshot);
        let written = self
            .store
            .write(self.seq, &bytes)
            .map_err(|e| e.to_string())?;
        Ok(SaveReport {
            hosts: self.snapshot.hosts.len(),
            users: self.snapshot.users.len(),
            bytes: bytes.len(),
            elapsed: started.elapsed(),
            written,
        })
    }
}

/// Restores the saved state into a freshly built core, or says why it starts from the
/// config. A file that does not decode, or whose content the core refuses, is kept aside.
fn restore_saved_state(core: &mut CoreState, store: &StateStore, now: u64) {
    let path = store.path().display().to_string();
    let refused = |reason: String| match store.keep_aside(now) {
        Ok(aside) => tracing::error!(
            path = %path,
            kept_as = %aside.display(),
            reason = %reason,
            "the saved state is unusable ({reason}): kept as {}, starting from the config",
            aside.display()
        ),
        Err(e) => tracing::error!(
            path = %path,
            reason = %reason,
            error = %e,
            "the saved state is unusable ({reason}) and could not be kept aside; starting from the config"
        ),
    };
    match store.read() {
        ReadOutcome::Missing => {
            tracing::info!(path = %path, "no saved state: starting from the config")
        }
        ReadOutcome::Unreadable(e) => tracing::error!(
            path = %path,
            error = %e,
            "the saved state cannot be read: starting from the config"
        ),
        ReadOutcome::Corrupt(reason) => refused(reason),
        ReadOutcome::Read(snapshot) => match core.director_mut().restore(&snapshot, now) {
            Ok(r) => tracing::info!(
                path = %path,
                saved_at = snapshot.saved_at,
                hosts = r.hosts,
                users = r.users,
                expired = r.expired,
                added_from_config = ?r.added_from_config,
                not_in_config = ?r.not_in_config,
                "restored the saved state"
            ),
            Err(e) => refused(e.to_string()),
        },
    }
}

/// Builds the core and starts the driver task on the current tokio runtime; the task ends
/// when every [`DirectorHandle`] is dropped, or after a panic abandoned the state.
pub fn spawn(
    config: DriverConfig,
) -> Result<(DirectorHandle, tokio::task::JoinHandle<DriverExit>), CoreError> {
    let refresh_period =
        Duration::from_secs(u64::from(config.core.user_expire_secs / 2)).max(MIN_REFRESH_PERIOD);
    let mut core = CoreState::new(config.core)?;
    let (tx, rx) = mpsc::channel(DRIVER_QUEUE_CAPACITY);
    let (ring_tx, ring_rx) = mpsc::channel(RING_EVENT_QUEUE_CAPACITY);
    let now = config.clock.now();
    // Before the ring starts: it offers (or holds back) what was restored.
    if let Some(state) = &config.state {
        restore_saved_state(&mut core, &state.store, now.as_secs());
    }
    let persist = config.state.map(|config| Persist {
        config,
        next_save: now,
        saved_changes: None,
        in_flight: false,
        seq: 0,
        failing: false,
    });
    let next_refresh = now + refresh_period;
    let directors = match config.directors {
        Directors::Standalone(view) => DirectorsState::Standalone(view),
        Directors::Ring {
            mut config,
            output_buffer_size,
            dialer,
        } => {
            // A handshake round must fit the buffer this driver enforces.
            config.fit_output_buffer(output_buffer_size);
            let mut ring = Ring::new(config);
            ring.start(now, core.director_mut());
            DirectorsState::Ring(Box::new(RingNet::new(
                ring,
                output_buffer_size,
                ring_tx.clone(),
                dialer,
            )))
        }
    };
    let state = State {
        core,
        directors,
        sync_waiters: Vec::new(),
        sessions: config.sessions,
        clock: config.clock,
        batches: HashMap::new(),
        logins: HashMap::new(),
        tx: tx.downgrade(),
        not_before: 0,
        next_refresh,
        refresh_period,
        persist,
        stopped: false,
        counters: DriverCounters::default(),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        wake: Notify::new(),
        exit: watch::Sender::new(None),
        queued_logins: AtomicU64::new(0),
    });
    if let Some(mut state) = shared.lock() {
        // The ring's first connection attempts.
        state.settle();
    }
    let task = tokio::spawn(run(Arc::clone(&shared), rx, ring_rx));
    Ok((
        DirectorHandle {
            tx,
            ring_tx,
            shared,
        },
        task,
    ))
}

/// The driver task: serves the channel and the timers until every handle is gone.
async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<DriverMsg>,
    mut ring_rx: mpsc::Receiver<RingEvent>,
) -> DriverExit {
    // `next_wake` takes the guard by value: the state is not held while the task waits.
    while let Some(deadline) = shared.lock().map(StateGuard::next_wake) {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => {
                    let Some(mut state) = shared.lock() else { break };
                    state.handle(msg);
                    state.settle();
                }
                None => break,
            },
            Some(event) = ring_rx.recv() => {
                let Some(mut state) = shared.lock() else { break };
                state.ring_event(event);
                // Events that are already queued are handled under the same lock: a
                // handshake brings a million lines.
                for _ in 1..RING_EVENTS_PER_LOCK {
                    match ring_rx.try_recv() {
                        Ok(event) => state.ring_event(event),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let Some(mut state) = shared.lock() else { break };
                state.on_timer();
            }
            // Re-read the deadline (or find the state abandoned).
            _ = shared.wake.notified() => {}
        }
    }
    if let Ok(mut state) = shared.state.lock() {
        state.stopped = true;
        // Parked batches and logins get `None`, as if the channel had closed under them.
        state.batches.clear();
        state.logins.clear();
    }
    shared.exit.send_if_modified(|exit| match exit {
        None => {
            *exit = Some(DriverExit::Stopped);
            true
        }
        Some(_) => false,
    });
    let exit = shared.exit.borrow().unwrap_or(DriverExit::Stopped);
    tracing::debug!(?exit, "director driver stopped");
    exit
}

impl State {
    /// When the driver task must wake next: the core's deadline or the next refresh.
    fn next_wake(&self) -> tokio::time::Instant {
        let mut wake = self.next_refresh;
        if let Some(d) = self.core.next_deadline() {
            wake = wake.min(Duration::from_secs(d.max(self.not_before)));
        }
        if let Some(d) = self.ring_deadline() {
            wake = wake.min(Duration::from_secs(d.max(self.not_before)));
        }
        if let Some(d) = self.sync_waiters.iter().map(|w| w.deadline).min() {
            wake = wake.min(d);
        }
        if let Some(d) = self.save_due_at() {
            wake = wake.min(d);
        }
        self.clock.instant_at(wake)
    }

    /// When the next periodic save may start: only once something changed since the last
    /// one, none is being written, and the ring (if any) was joined: before that the state
    /// is the restored one, about to be replaced by the ring's.
    fn save_due_at(&self) -> Option<Duration> {
        let p = self.persist.as_ref()?;
        let changes = self.core.director().state_changes();
        let handshaked = self.core.director().ring_status().handshaked;
        (!p.in_flight && handshaked && p.saved_changes != Some(changes)).then_some(p.next_save)
    }

    /// Takes a snapshot for a save (under the state lock); `None` when nothing is saved.
    fn save_job(&mut self) -> Option<SaveJob> {
        let now = self.clock.now();
        let changes = self.core.director().state_changes();
        let snapshot = self.core.director().snapshot(now.as_secs());
        let p = self.persist.as_mut()?;
        p.seq += 1;
        p.saved_changes = Some(changes);
        Some(SaveJob {
            snapshot,
            seq: p.seq,
            store: Arc::clone(&p.config.store),
        })
    }

    /// Starts a periodic save if one is due: written in a blocking task, reported back
    /// through the channel.
    fn save_if_due(&mut self, now: Duration) {
        match self.save_due_at() {
            Some(at) if at <= now => {}
            _ => return,
        }
        let Some(job) = self.save_job() else { return };
        if let Some(p) = self.persist.as_mut() {
            p.in_flight = true;
            p.next_save = now + p.config.save_interval;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = match tokio::task::spawn_blocking(move || job.run()).await {
                Ok(r) => r,
                Err(e) => Err(format!("the save task failed: {e}")),
            };
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(DriverMsg::Saved { result }).await;
            }
        });
    }

    /// A periodic save finished.
    fn saved(&mut self, result: Result<SaveReport, String>) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        p.in_flight = false;
        let path = p.config.store.path().display().to_string();
        match result {
            Ok(r) => {
                if std::mem::take(&mut p.failing) {
                    tracing::info!(path = %path, "the state is saved again");
                }
                tracing::debug!(
                    path = %path,
                    hosts = r.hosts,
                    users = r.users,
                    bytes = r.bytes,
                    elapsed_ms = r.elapsed.as_millis() as u64,
                    written = r.written,
                    "state saved"
                );
            }
            Err(e) => {
                // Retried at the next interval.
                p.saved_changes = None;
                if std::mem::replace(&mut p.failing, true) {
                    tracing::debug!(path = %path, error = %e, "saving the state failed again");
                } else {
                    tracing::error!(path = %path, error = %e, "saving the state failed");
                }
            }
        }
    }

    fn ring_deadline(&self) -> Option<u64> {
        match &self.directors {
            DirectorsState::Ring(net) => net.ring.next_timeout(),
            DirectorsState::Standalone(_) => None,
        }
    }

    /// Runs whatever is due: the core's timers, the session refresh, and their effects.
    fn on_timer(&mut self) {
        let now = self.clock.now();
        let due = |d: Option<u64>| d.is_some_and(|d| d.max(self.not_before) <= now.as_secs());
        let (core_due, ring_due) = (due(self.core.next_deadline()), due(self.ring_deadline()));
        if core_due || ring_due {
            self.not_before = now.as_secs() + 1;
        }
        if core_due {
            self.core.on_timeout(now);
        }
        if ring_due {
            if let DirectorsState::Ring(net) = &mut self.directors {
                net.ring.handle_timeout(now, self.core.director_mut());
            }
        }
        self.expire_sync_waiters(now);
        self.save_if_due(now);
        if self.next_refresh <= now {
            self.next_refresh = now + self.refresh_period;
            let users = self.sessions.users_with_sessions();
            tracing::debug!(users = users.len(), "refreshing users with open sessions");
            for user in users {
                self.core.refresh_user(&user, now);
            }
        }
        self.settle();
    }

    /// Runs the effects of what just happened until nothing more follows: the core's
    /// effects (which may become ring messages), the ring's outputs (which may drop a peer),
    /// and admin batches that were waiting for the ring to be synced.
    fn settle(&mut self) {
        loop {
            self.run_effects();
            let executed = match &mut self.directors {
                DirectorsState::Ring(net) => net.execute(),
                DirectorsState::Standalone(_) => Executed::default(),
            };
            if !executed.overflowed.is_empty() || !executed.written.is_empty() {
                // The ring times its round trips to the millisecond.
                let now = self.clock.now();
                if let DirectorsState::Ring(net) = &mut self.directors {
                    for conn in executed.overflowed {
                        net.ring.closed(conn, now, self.core.director_mut());
                    }
                    for conn in executed.written {
                        net.ring.written(conn, now, self.core.director_mut());
                    }
                }
                continue;
            }
            // A resumed batch runs more requests, whose effects and ring messages must go
            // out now, not with the next event.
            if !self.resume_sync_waiters() {
                break;
            }
        }
    }

    /// Something happened on a ring connection.
    fn ring_event(&mut self, event: RingEvent) {
        let now = self.clock.now();
        let DirectorsState::Ring(net) = &mut self.directors else {
            // A standalone director has no ring: a peer that connects anyway is dropped.
            return;
        };
        let dir = self.core.director_mut();
        match event {
            RingEvent::Connected { addr, stream } => {
                let conn = net.attach(stream);
                net.ring
                    .connected(conn, addr.ip, Direction::Outgoing(addr), now, dir);
            }
            RingEvent::ConnectFailed { addr } => net.ring.connect_failed(addr, now, dir),
            RingEvent::Accepted { stream, peer } => {
                let conn = net.attach(stream);
                net.ring
                    .connected(conn, peer.ip(), Direction::Incoming, now, dir);
            }
            RingEvent::Lines { conn, messages } => {
                for message in messages {
                    // A line may close its own connection: the rest is not for the ring.
                    if !net.knows(conn) {
                        break;
                    }
                    net.observe(conn, &message);
                    net.ring.line(conn, message, now, dir);
                }
            }
            RingEvent::DecodeError { conn, error } => {
                if net.knows(conn) {
                    net.ring.decode_error(conn, &error, now, dir);
                }
            }
            RingEvent::Written { conn } => {
                if net.knows(conn) {
                    net.ring.written(conn, now, dir);
                }
            }
            RingEvent::Closed { conn } => {
                if net.forget(conn) {
                    net.ring.closed(conn, now, dir);
                }
            }
        }
        self.settle();
    }

    /// Whether the ring is synced (a standalone director always is).
    fn synced(&self) -> bool {
        match &self.directors {
            DirectorsState::Standalone(_) => true,
            DirectorsState::Ring(net) => net.ring.is_synced(),
        }
    }

    /// Resumes the admin batches that waited for the ring, once it is synced; whether any
    /// was resumed.
    fn resume_sync_waiters(&mut self) -> bool {
        if self.sync_waiters.is_empty() || !self.synced() {
            return false;
        }
        let now = self.clock.now();
        for w in std::mem::take(&mut self.sync_waiters) {
            let mut held = w.held;
            if let Some(reply) = w.done {
                reply.encode_into(&mut held.out);
            }
            self.continue_batch(held, Some(w.reply), now);
        }
        true
    }

    /// Batches that waited for the ring longer than Dovecot's 30 s get its answer.
    fn expire_sync_waiters(&mut self, now: Duration) {
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sync_waiters)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.sync_waiters = waiting;
        for w in expired {
            let mut held = w.held;
            if w.done.is_none() {
                // The request never ran.
                held.rest.pop_front();
            }
            AdminReply::text(RING_SYNC_TIMED_OUT).encode_into(&mut held.out);
            self.continue_batch(held, Some(w.reply), now);
        }
    }

    fn handle(&mut self, msg: DriverMsg) {
        let now = self.clock.now();
        match msg {
            DriverMsg::Reload { hosts, reply } => {
                let _ = reply.send(self.core.reload_hosts(hosts, now));
            }
            DriverMsg::Login { username, reply } => self.answer_login(&username, reply, now),
            DriverMsg::KickDone { ticket } => self.core.kick_done(ticket, now),
            DriverMsg::FlushDone { ticket, success } => self.core.flush_done(ticket, success, now),
            DriverMsg::Saved { result } => self.saved(result),
        }
    }

    /// Answers a login now, or keeps `reply` until the core finishes the queued request.
    fn answer_login(
        &mut self,
        username: &[u8],
        reply: oneshot::Sender<Result<Route, RequestError>>,
        now: Duration,
    ) {
        match self.core.request(username, now) {
            RequestOutcome::Ready(route) => {
                tracing::debug!(
                    user = %director_proto::log_text::LogText(username),
                    host = %route.ip,
                    new_user = route.new_user,
                    "login routed"
                );
                let _ = reply.send(Ok(route));
            }
            RequestOutcome::Failed(e) => {
                tracing::debug!(
                    user = %director_proto::log_text::LogText(username),
                    error = %e,
                    "login not routed"
                );
                let _ = reply.send(Err(e));
            }
            RequestOutcome::Queued(id, reason) => {
                tracing::debug!(
                    request = id.0,
                    reason = reason.as_str(),
                    "login request queued"
                );
                self.logins.insert(id, reply);
            }
        }
    }

    fn start_admin(&mut self, request: AdminRequest, now: Duration) -> AdminStart {
        let secs = now.as_secs();
        let net = match &mut self.directors {
            DirectorsState::Standalone(view) => {
                return match request {
                    AdminRequest::DirectorList => AdminStart::Done(view.list()),
                    AdminRequest::DirectorAdd { ip, port } => AdminStart::Done(view.add(ip, port)),
                    AdminRequest::DirectorRemove { ip, port } => {
                        AdminStart::Done(view.remove(ip, port))
                    }
                    other => self.core.admin(other, now),
                };
            }
            DirectorsState::Ring(net) => net,
        };
        let notice = RingNotice::of(&request);
        match request {
            AdminRequest::DirectorList => AdminStart::Done(AdminReply::DirectorList(
                net.ring.status(secs, |c| net.counters(c)),
            )),
            AdminRequest::DirectorAdd { ip, port } => {
                net.ring
                    .director_add(ip, port, secs, self.core.director_mut());
                AdminStart::Done(AdminReply::OK)
            }
            AdminRequest::DirectorRemove { ip, port } => {
                let found = net
                    .ring
                    .director_remove(ip, port, secs, self.core.director_mut());
                AdminStart::Done(if found {
                    AdminReply::OK
                } else {
                    AdminReply::NOT_FOUND
                })
            }
            other => {
                let start = self.core.admin(other, now);
                if matches!(&start, AdminStart::Done(r) if *r == AdminReply::OK) {
                    // The change is ours: it goes round the ring.
                    let hosts = match notice {
                        Some(RingNotice::Flushed(None)) => self.core.host_ips(),
                        _ => Vec::new(),
                    };
                    let dir = self.core.director_mut();
                    match notice {
                        Some(RingNotice::Changed(ip)) => net.ring.host_changed(ip, now, dir),
                        Some(RingNotice::Removed(ip)) => net.ring.host_removed(ip, now, dir),
                        Some(RingNotice::Flushed(Some(ip))) => {
                            net.ring.host_flushed(&[ip], now, dir)
                        }
                        Some(RingNotice::Flushed(None)) => net.ring.host_flushed(&hosts, now, dir),
                        None => {}
                    }
                }
                start
            }
        }
    }

    /// Runs a batch's requests until one has to wait (for the core or for the ring); then
    /// parks the rest. With `reply`, the finished batch goes there; without, it is returned,
    /// or a new receiver is when the batch had to park.
    fn continue_batch(
        &mut self,
        mut held: HeldBatch,
        reply: Option<oneshot::Sender<Vec<u8>>>,
        now: Duration,
    ) -> BatchOutcome {
        while let Some(request) = held.rest.pop_front() {
            let gate = SyncGate::of(&request);
            if gate.waits_before && !self.synced() {
                held.rest.push_front(request);
                return self.park_for_sync(held, reply, None, now);
            }
            match self.start_admin(request, now) {
                AdminStart::Done(r) => {
                    if gate.replies_after && r == AdminReply::OK && !self.synced() {
                        return self.park_for_sync(held, reply, Some(r), now);
                    }
                    r.encode_into(&mut held.out)
                }
                AdminStart::Pending(ticket) => {
                    let (tx, rx) = match reply {
                        Some(tx) => (tx, None),
                        None => {
                            let (tx, rx) = oneshot::channel();
                            (tx, Some(rx))
                        }
                    };
                    self.batches.insert(ticket, (held, tx));
                    return match rx {
                        Some(rx) => BatchOutcome::Parked(rx),
                        // The caller already holds the receiver.
                        None => BatchOutcome::Done(Vec::new()),
                    };
                }
            }
        }
        match reply {
            Some(tx) => {
                let _ = tx.send(held.out);
                BatchOutcome::Done(Vec::new())
            }
            None => BatchOutcome::Done(held.out),
        }
    }

    /// Parks a batch until the ring is synced (at most [`RING_SYNC_WAIT`]).
    fn park_for_sync(
        &mut self,
        held: HeldBatch,
        reply: Option<oneshot::Sender<Vec<u8>>>,
        done: Option<AdminReply>,
        now: Duration,
    ) -> BatchOutcome {
        let (tx, rx) = match reply {
            Some(tx) => (tx, None),
            None => {
                let (tx, rx) = oneshot::channel();
                (tx, Some(rx))
            }
        };
        self.sync_waiters.push(SyncWaiter {
            held,
            reply: tx,
            deadline: now + RING_SYNC_WAIT,
            done,
        });
        match rx {
            Some(rx) => BatchOutcome::Parked(rx),
            None => BatchOutcome::Done(Vec::new()),
        }
    }

    fn run_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::AdminDone { ticket, status } => {
                    if let Some((mut held, tx)) = self.batches.remove(&ticket) {
                        status_reply(status).encode_into(&mut held.out);
                        let now = self.clock.now();
                        self.continue_batch(held, Some(tx), now);
                    } else {
                        tracing::warn!(ticket = ticket.0, "reply for an unknown admin request");
                    }
                }
                Effect::KickDirectorHash {
                    ticket,
                    hash,
                    except_ip,
                } => {
                    tracing::debug!(user_hash = hash, except = ?except_ip, "kicking user hash");
                    self.counters.user_moves += 1;
                    let fut = self.sessions.kick_user_hash(hash, except_ip);
                    self.finish_kick(ticket, fut);
                }
                Effect::Kick { ticket, username } => {
                    self.counters.user_kicks += 1;
                    let fut = self.sessions.kick_user(username);
                    self.finish_kick(ticket, fut);
                }
                Effect::KickAlt {
                    ticket,
                    field,
                    value,
                } => {
                    self.counters.user_kicks_alt += 1;
                    let fut = self.sessions.kick_user_alt(field, value);
                    self.finish_kick(ticket, fut);
                }
                Effect::KickBackend { ip } => {
                    // Synchronous: the sessions are told to stop before any reply that
                    // follows this effect is written, so doveadm returns after the kick.
                    self.counters.backend_kicks += 1;
                    let kicked = self.sessions.kick_backend(ip);
                    tracing::info!(host = %ip, kicked, "closed the sessions of a removed or flushed host");
                }
                Effect::RunFlushScript {
                    ticket,
                    socket,
                    args,
                } => self.start_flush(ticket, socket, args.to_args()),
                Effect::RequestDone { id, result } => match self.logins.remove(&id) {
                    // The login may have given up (client gone); nothing to do then.
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => {
                        tracing::debug!(request = id.0, "login request finished, nobody waiting")
                    }
                },
                other => match &mut self.directors {
                    DirectorsState::Ring(net) => {
                        let now = self.clock.now();
                        if let Some(left) = net.ring.core_effect(other, now) {
                            tracing::debug!(effect = ?left, "core effect nobody carries out");
                        }
                    }
                    DirectorsState::Standalone(_) => {
                        // A standalone director has no peers to send ring messages to.
                        tracing::debug!(effect = ?other, "ring effect without a ring, dropped");
                    }
                },
            }
        }
    }

    fn finish_kick(&self, ticket: Ticket, fut: KickFuture) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let kicked = fut.await;
            tracing::debug!(ticket = ticket.0, kicked, "kick finished");
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(DriverMsg::KickDone { ticket }).await;
            }
        });
    }

    fn start_flush(&self, ticket: Ticket, socket: String, argv: Vec<String>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let success = match flush::run_uri(&socket, &argv).await {
                Ok(()) => {
                    tracing::debug!(socket = %socket, args = ?argv, "flush script succeeded");
                    true
                }
                Err(e) => {
                    tracing::error!(socket = %socket, args = ?argv, error = %e, "flush script failed");
                    false
                }
            };
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(DriverMsg::FlushDone { ticket, success }).await;
            }
        });
    }
}

#[cfg(test)]
mod tests;
