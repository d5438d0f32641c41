//! The director actor: one task owns the core state, like Dovecot's single director process.
//!
//! Connection tasks send requests through a bounded channel and await the reply on a
//! oneshot. The actor never awaits a client or any I/O: it applies the message to the core,
//! hands effects (kicks, flush scripts) to spawned tasks that report back through the same
//! channel, and sleeps until the core's next deadline. Replies are encoded to bytes here, so
//! connection tasks only write them.

use std::collections::HashMap;
use std::sync::Arc;

use director_core::kill::{Effect, RequestError, RequestId, Route, Ticket};
use director_core::lookup::ConfigHost;
use director_core::RequestOutcome;
use director_proto::admin::AdminRequest;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::core_glue::{core_reply, AdminStart, CoreError, CoreState};
use crate::effects::flush;
use crate::effects::kick::{KickFuture, SessionKiller};
use crate::limits::ACTOR_QUEUE_CAPACITY;
use crate::ring_view::RingView;

/// Messages into the actor.
pub enum ActorMsg {
    /// Several pipelined admin requests of one connection, run in order; the encoded
    /// replies come back together. A request that finishes later (a ticket) holds back the
    /// ones after it, exactly as if they had been sent one by one.
    AdminBatch {
        /// The parsed requests, in arrival order.
        requests: Vec<AdminRequest>,
        /// Where the concatenated encoded replies go.
        reply: oneshot::Sender<Vec<u8>>,
    },
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
}

impl DirectorHandle {
    /// Runs one admin request; `None` when the actor has stopped.
    #[cfg(test)]
    pub async fn admin(&self, request: AdminRequest) -> Option<Vec<u8>> {
        self.admin_batch(vec![request]).await
    }

    /// Runs pipelined admin requests in order with one round trip to the actor; `None` when
    /// the actor has stopped.
    pub async fn admin_batch(&self, requests: Vec<AdminRequest>) -> Option<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ActorMsg::AdminBatch { requests, reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Routes a proxy login; `None` when the actor has stopped.
    pub async fn login(&self, username: Vec<u8>) -> Option<Result<Route, RequestError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ActorMsg::Login { username, reply })
            .await
            .ok()?;
        rx.await.ok()
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

/// The rest of an admin batch waiting for one of its requests to finish.
struct HeldBatch {
    out: Vec<u8>,
    rest: std::collections::VecDeque<AdminRequest>,
    reply: oneshot::Sender<Vec<u8>>,
}

struct Actor {
    core: CoreState,
    ring: RingView,
    killer: Arc<dyn SessionKiller>,
    clock: Clock,
    /// Batches held back by an unfinished request, keyed by that request's ticket.
    batches: HashMap<Ticket, HeldBatch>,
    logins: HashMap<RequestId, oneshot::Sender<Result<Route, RequestError>>>,
    tx: mpsc::WeakSender<ActorMsg>,
    /// After a timeout fired at second `s`, the next one fires no earlier than `s + 1`: the
    /// core works in whole seconds, and this rules out a busy loop on a deadline that is
    /// still "now".
    not_before: u64,
}

/// Starts the actor task; it ends when every [`DirectorHandle`] is dropped.
pub fn spawn(config: ActorConfig) -> (DirectorHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACTOR_QUEUE_CAPACITY);
    let actor = Actor {
        core: config.core,
        ring: config.ring,
        killer: config.killer,
        clock: config.clock,
        batches: HashMap::new(),
        logins: HashMap::new(),
        tx: tx.downgrade(),
        not_before: 0,
    };
    let task = tokio::spawn(actor.run(rx));
    (DirectorHandle { tx }, task)
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<ActorMsg>) {
        loop {
            let deadline = self.core.next_deadline().map(|d| {
                self.clock
                    .instant_at(std::time::Duration::from_secs(d.max(self.not_before)))
            });
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = sleep_until_opt(deadline) => {
                    let now = self.clock.now();
                    self.not_before = now.as_secs() + 1;
                    self.core.on_timeout(now);
                }
            }
            self.run_effects();
        }
        tracing::debug!("director actor stopped");
    }

    fn handle(&mut self, msg: ActorMsg) {
        let now = self.clock.now();
        match msg {
            ActorMsg::AdminBatch { requests, reply } => {
                let held = HeldBatch {
                    out: Vec::with_capacity(requests.len() * 48),
                    rest: requests.into(),
                    reply,
                };
                self.continue_batch(held, now);
            }
            ActorMsg::Reload { hosts, reply } => {
                let _ = reply.send(self.core.reload_hosts(hosts, now));
            }
            ActorMsg::Login { username, reply } => match self.core.request(&username, now) {
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
            },
            ActorMsg::Refresh { username } => self.core.refresh_user(&username, now),
            ActorMsg::KickDone { ticket } => self.core.kick_done(ticket, now),
            ActorMsg::FlushDone { ticket, success } => self.core.flush_done(ticket, success, now),
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
    fn continue_batch(&mut self, mut held: HeldBatch, now: std::time::Duration) {
        while let Some(request) = held.rest.pop_front() {
            match self.start_admin(request, now) {
                AdminStart::Done(r) => r.encode_into(&mut held.out),
                AdminStart::Pending(ticket) => {
                    self.batches.insert(ticket, held);
                    return;
                }
            }
        }
        let _ = held.reply.send(held.out);
    }

    fn run_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::AdminReply { ticket, reply } => {
                    if let Some(mut held) = self.batches.remove(&ticket) {
                        core_reply(reply).encode_into(&mut held.out);
                        let now = self.clock.now();
                        self.continue_batch(held, now);
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
