//! The director actor: one task owns the core's timers and its inbox, like Dovecot's single
//! director process.
//!
//! The core state sits behind a mutex that is never held across an `await`. Admin
//! connections live on the director thread and run their requests on the state directly: an
//! unpipelined `USER-LOOKUP` then costs no task switch, no channel and no timer re-arm
//! (docs/BENCHMARKS.md §2). Proxy logins come from the proxy's worker threads and take the
//! state only if it is free (`try_lock`), so the common login is decided on the worker without
//! waking the director thread, and a worker never blocks behind a long `USER-LIST`; a busy
//! state sends the login through the actor's bounded channel instead. The channel also
//! carries SIGHUP, session refreshes and finished kicks and flush scripts, and the actor
//! sleeps until the core's next deadline, woken early when a request made it earlier.
//! Effects (kicks, flush scripts) run in spawned tasks that report back through the channel.
//! Replies are encoded to bytes here, so connection tasks only write them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use director_core::kill::{Effect, RequestError, RequestId, Route, Ticket};
use director_core::lookup::ConfigHost;
use director_core::RequestOutcome;
use director_proto::admin::AdminRequest;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::clock::Clock;
use crate::core_glue::{core_reply, AdminStart, CoreError, CoreState};
use crate::effects::flush;
use crate::effects::kick::{KickFuture, SessionKiller};
use crate::limits::ACTOR_QUEUE_CAPACITY;
use crate::ring_view::RingView;

/// Messages into the actor.
pub enum ActorMsg {
    /// Replace the configured mail servers (SIGHUP).
    Reload {
        /// The new `director_mail_servers`.
        hosts: Vec<ConfigHost>,
        /// Outcome: a summary of what changed, or why nothing did.
        reply: oneshot::Sender<Result<String, CoreError>>,
    },
    /// A proxy login needs the user's backend (§6).
    Login {
        /// Routing user name.
        username: Vec<u8>,
        /// The route, or why not (answered when the core decides, at most 30 s later).
        reply: oneshot::Sender<Result<Route, RequestError>>,
    },
    /// A proxied session of this user is still open: refresh the assignment.
    Refresh {
        /// Routing user name.
        username: Vec<u8>,
    },
    /// A kick finished.
    KickDone {
        /// From the effect.
        ticket: Ticket,
    },
    /// A flush script finished.
    FlushDone {
        /// From the effect.
        ticket: Ticket,
        /// Whether it succeeded.
        success: bool,
    },
}

/// A cheap, clonable way to talk to the actor.
#[derive(Clone)]
pub struct DirectorHandle {
    tx: mpsc::Sender<ActorMsg>,
    shared: Arc<Shared>,
}

/// What [`DirectorHandle::try_login_here`] managed.
enum FastLogin {
    /// The core took the request; the answer comes on this receiver (at once unless queued).
    Answered(oneshot::Receiver<Result<Route, RequestError>>),
    /// The state is in use: go through the actor.
    Busy,
    /// The actor has stopped.
    Stopped,
}

/// The state and what tells the actor that its next deadline moved.
struct Shared {
    state: Mutex<State>,
    /// Notified when a request run outside the actor made the core's next deadline earlier.
    deadline_moved: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the state is a bug, but the state itself stays consistent
        // between requests: keep serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on `state` at the current time, then the effects it caused, and wakes the
    /// actor if the core's next deadline moved earlier than the one it sleeps towards.
    fn run<R>(&self, state: &mut State, f: impl FnOnce(&mut State, std::time::Duration) -> R) -> R {
        let before = state.core.next_deadline();
        let now = state.clock.now();
        let r = f(state, now);
        state.run_effects();
        if earlier(state.core.next_deadline(), before) {
            self.deadline_moved.notify_one();
        }
        r
    }
}

impl DirectorHandle {
    /// Runs one admin request; `None` when the actor has stopped.
    #[cfg(test)]
    pub async fn admin(&self, request: AdminRequest) -> Option<Vec<u8>> {
        self.admin_batch(vec![request]).await
    }

    /// Runs pipelined admin requests in order; `None` when the actor has stopped. Requests
    /// that finish at once are answered here without waking the actor; one that has to wait
    /// (a move's kick, a flush) parks the rest of the batch until the core answers it.
    /// Called on the director thread (see the module comment).
    pub async fn admin_batch(&self, requests: Vec<AdminRequest>) -> Option<Vec<u8>> {
        let held = HeldBatch {
            out: Vec::with_capacity(requests.len() * 48),
            rest: requests.into(),
        };
        let rx = {
            let mut state = self.shared.lock();
            if state.stopped {
                return None;
            }
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

    /// Routes a proxy login; `None` when the actor has stopped. Called from the proxy's
    /// worker threads: when the state is free (nearly always), the core decides right here,
    /// without waking the director thread; when it is busy (a long `USER-LIST`, say), the
    /// login goes through the actor's channel rather than blocking a worker.
    pub async fn login(&self, username: Vec<u8>) -> Option<Result<Route, RequestError>> {
        let rx = match self.try_login_here(&username) {
            FastLogin::Answered(rx) => rx,
            FastLogin::Stopped => return None,
            FastLogin::Busy => {
                let (reply, rx) = oneshot::channel();
                self.tx
                    .send(ActorMsg::Login { username, reply })
                    .await
                    .ok()?;
                rx
            }
        };
        rx.await.ok()
    }

    /// The login fast path; synchronous, so the guard is never held across an `await`.
    fn try_login_here(&self, username: &[u8]) -> FastLogin {
        let mut state = match self.shared.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return FastLogin::Busy,
        };
        if state.stopped {
            return FastLogin::Stopped;
        }
        let (tx, rx) = oneshot::channel();
        self.shared
            .run(&mut state, |st, now| st.answer_login(username, tx, now));
        FastLogin::Answered(rx)
    }

    /// Refreshes a user with open sessions. Never waits: a full queue drops the refresh
    /// (the next one comes `director_user_expire / 2` later).
    pub fn refresh(&self, username: Vec<u8>) {
        let _ = self.tx.try_send(ActorMsg::Refresh { username });
    }

    /// Reloads the configured mail servers; `None` when the actor has stopped.
    pub async fn reload(&self, hosts: Vec<ConfigHost>) -> Option<Result<String, CoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ActorMsg::Reload { hosts, reply }).await.ok()?;
        rx.await.ok()
    }
}

/// Everything the actor is built from.
pub struct ActorConfig {
    /// The core.
    pub core: CoreState,
    /// The standalone director list.
    pub ring: RingView,
    /// Who kicks local sessions.
    pub killer: Arc<dyn SessionKiller>,
    /// Time source.
    pub clock: Clock,
}

/// An admin batch being run: the replies so far and the requests still to run.
struct HeldBatch {
    out: Vec<u8>,
    rest: std::collections::VecDeque<AdminRequest>,
}

/// What became of a batch: all answered, or parked behind a request that has to wait.
enum BatchOutcome {
    Done(Vec<u8>),
    Parked(oneshot::Receiver<Vec<u8>>),
}

/// True when `after` is a deadline the actor would not have been sleeping towards.
fn earlier(after: Option<u64>, before: Option<u64>) -> bool {
    match (after, before) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The director's state, shared by the actor and the admin connections.
struct State {
    core: CoreState,
    ring: RingView,
    killer: Arc<dyn SessionKiller>,
    clock: Clock,
    /// Batches held back by an unfinished request, keyed by that request's ticket.
    batches: HashMap<Ticket, (HeldBatch, oneshot::Sender<Vec<u8>>)>,
    logins: HashMap<RequestId, oneshot::Sender<Result<Route, RequestError>>>,
    tx: mpsc::WeakSender<ActorMsg>,
    /// After a timeout fired at second `s`, the next one fires no earlier than `s + 1`: the
    /// core works in whole seconds, and this rules out a busy loop on a deadline that is
    /// still "now".
    not_before: u64,
    /// Set when the actor ends; later admin requests get `None`, as through the channel.
    stopped: bool,
}

/// Starts the actor task; it ends when every [`DirectorHandle`] is dropped.
pub fn spawn(config: ActorConfig) -> (DirectorHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACTOR_QUEUE_CAPACITY);
    let state = State {
        core: config.core,
        ring: config.ring,
        killer: config.killer,
        clock: config.clock,
        batches: HashMap::new(),
        logins: HashMap::new(),
        tx: tx.downgrade(),
        not_before: 0,
        stopped: false,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        deadline_moved: Notify::new(),
    });
    let task = tokio::spawn(run(Arc::clone(&shared), rx));
    (DirectorHandle { tx, shared }, task)
}

/// The actor: serves the channel and the core's timers until every handle is gone.
async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<ActorMsg>) {
    loop {
        let deadline = {
            let state = shared.lock();
            state.core.next_deadline().map(|d| {
                state
                    .clock
                    .instant_at(std::time::Duration::from_secs(d.max(state.not_before)))
            })
        };
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => {
                    let mut state = shared.lock();
                    state.handle(msg);
                    state.run_effects();
                }
                None => break,
            },
            _ = sleep_until_opt(deadline) => {
                let mut state = shared.lock();
                let now = state.clock.now();
                state.not_before = now.as_secs() + 1;
                state.core.on_timeout(now);
                state.run_effects();
            }
            // Re-read the deadline.
            _ = shared.deadline_moved.notified() => {}
        }
    }
    let mut state = shared.lock();
    state.stopped = true;
    // Parked batches and logins get `None`, as if the channel had closed under them.
    state.batches.clear();
    state.logins.clear();
    tracing::debug!("director actor stopped");
}

impl State {
    fn handle(&mut self, msg: ActorMsg) {
        let now = self.clock.now();
        match msg {
            ActorMsg::Reload { hosts, reply } => {
                let _ = reply.send(self.core.reload_hosts(hosts, now));
            }
            ActorMsg::Login { username, reply } => self.answer_login(&username, reply, now),
            ActorMsg::Refresh { username } => self.core.refresh_user(&username, now),
            ActorMsg::KickDone { ticket } => self.core.kick_done(ticket, now),
            ActorMsg::FlushDone { ticket, success } => self.core.flush_done(ticket, success, now),
        }
    }

    /// Answers a login now, or keeps `reply` until the core finishes the queued request.
    fn answer_login(
        &mut self,
        username: &[u8],
        reply: oneshot::Sender<Result<Route, RequestError>>,
        now: std::time::Duration,
    ) {
        match self.core.request(username, now) {
            RequestOutcome::Ready(route) => {
                let _ = reply.send(Ok(route));
            }
            RequestOutcome::Failed(e) => {
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

    fn start_admin(&mut self, request: AdminRequest, now: std::time::Duration) -> AdminStart {
        match request {
            AdminRequest::DirectorList => AdminStart::Done(self.ring.list()),
            AdminRequest::DirectorAdd { ip, port } => AdminStart::Done(self.ring.add(ip, port)),
            AdminRequest::DirectorRemove { ip, port } => {
                AdminStart::Done(self.ring.remove(ip, port))
            }
            other => self.core.admin(other, now),
        }
    }

    /// Runs a batch's requests until one has to wait; then parks the rest on its ticket.
    /// With `reply`, the finished batch goes there; without, it is returned, or a new
    /// receiver is when the batch had to park.
    fn continue_batch(
        &mut self,
        mut held: HeldBatch,
        reply: Option<oneshot::Sender<Vec<u8>>>,
        now: std::time::Duration,
    ) -> BatchOutcome {
        while let Some(request) = held.rest.pop_front() {
            match self.start_admin(request, now) {
                AdminStart::Done(r) => r.encode_into(&mut held.out),
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

    fn run_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::AdminReply { ticket, reply } => {
                    if let Some((mut held, tx)) = self.batches.remove(&ticket) {
                        core_reply(reply).encode_into(&mut held.out);
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
                    let fut = self.killer.kick_user_hash(hash, except_ip);
                    self.finish_kick(ticket, fut);
                }
                Effect::Kick { ticket, username } => {
                    let fut = self.killer.kick_user(username);
                    self.finish_kick(ticket, fut);
                }
                Effect::KickAlt {
                    ticket,
                    field,
                    value,
                } => {
                    let fut = self.killer.kick_user_alt(field, value);
                    self.finish_kick(ticket, fut);
                }
                Effect::KickBackend { ip } => {
                    // Synchronous: the sessions are told to stop before any reply that
                    // follows this effect is written, so doveadm returns after the kick.
                    self.killer.kick_backend(ip);
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
                other => {
                    // Ring messages: a standalone director has no peers to send them to.
                    tracing::debug!(effect = ?other, "ring effect without a ring, dropped");
                }
            }
        }
    }

    fn finish_kick(&self, ticket: Ticket, fut: KickFuture) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let kicked = fut.await;
            tracing::debug!(ticket = ticket.0, kicked, "kick finished");
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(ActorMsg::KickDone { ticket }).await;
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
                let _ = tx.send(ActorMsg::FlushDone { ticket, success }).await;
            }
        });
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use director_core::CoreSettings;
    use director_proto::admin::UserRef;

    use super::*;
    use crate::effects::kick::NoLocalSessions;
    use crate::settings::STANDALONE_SELF;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn start(kick_delay_secs: u32) -> DirectorHandle {
        let settings = CoreSettings {
            kick_delay_secs,
            config_hosts: ["127.0.1.1", "127.0.1.2"]
                .iter()
                .map(|a| ConfigHost {
                    ip: ip(a),
                    tag: String::new(),
                    hostname: None,
                })
                .collect(),
            ..CoreSettings::default()
        };
        let (handle, _task) = spawn(ActorConfig {
            core: CoreState::new(settings).unwrap(),
            ring: RingView::new(STANDALONE_SELF.0, STANDALONE_SELF.1),
            killer: Arc::new(NoLocalSessions),
            clock: Clock::new(),
        });
        handle
    }

    fn user_move(to: &str) -> AdminRequest {
        AdminRequest::UserMove {
            user: UserRef::Name(b"user9".to_vec()),
            ip: ip(to),
        }
    }

    /// The actor's timers run on tokio's clock: with time paused, the kick delay elapses as
    /// soon as every task is idle, without any real waiting.
    #[tokio::test(start_paused = true)]
    async fn move_completes_after_the_kick_delay_on_tokio_time() {
        let d = start(2);
        assert_eq!(d.admin(user_move("127.0.1.2")).await.unwrap(), b"OK\n");
        assert_eq!(
            d.admin(user_move("127.0.1.1")).await.unwrap(),
            b"TRYAGAIN\n"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(d.admin(user_move("127.0.1.1")).await.unwrap(), b"OK\n");
    }

    /// Both login paths give the core's answer: on the worker when the state is free, and
    /// through the actor when it is busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // Holding the state across the sleep is the point: it makes the state busy.
    #[allow(clippy::await_holding_lock)]
    async fn logins_are_routed_whether_the_state_is_free_or_busy() {
        let d = start(2);
        let fast = d.login(b"user9".to_vec()).await.unwrap().unwrap();
        let held = d.shared.lock();
        assert!(matches!(d.try_login_here(b"user9"), FastLogin::Busy));
        let slow = tokio::spawn({
            let d = d.clone();
            async move { d.login(b"user9".to_vec()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!slow.is_finished(), "waits for the state");
        drop(held);
        let slow = slow.await.unwrap().unwrap().unwrap();
        assert_eq!(slow.ip, fast.ip, "same user, same backend");
    }

    #[tokio::test(start_paused = true)]
    async fn users_expire_on_tokio_time() {
        let d = start(2);
        assert_eq!(d.admin(user_move("127.0.1.2")).await.unwrap(), b"OK\n");
        let list = d.admin(AdminRequest::UserList { ip: None }).await.unwrap();
        assert_eq!(
            list.iter().filter(|b| **b == b'\n').count(),
            2,
            "one user + end"
        );
        // director_user_expire defaults to 15 min.
        tokio::time::sleep(Duration::from_secs(16 * 60)).await;
        assert_eq!(
            d.admin(AdminRequest::UserList { ip: None }).await.unwrap(),
            b"\n"
        );
    }
}
