//! The director actor: one task owns the core state, like Dovecot's single director process.
//!
//! Connection tasks send requests through a bounded channel and await the reply on a
//! oneshot. The actor never awaits a client or any I/O: it applies the message to the core,
//! hands effects (kicks, flush scripts) to spawned tasks that report back through the same
//! channel, and sleeps until the core's next deadline. Replies are encoded to bytes here, so
//! connection tasks only write them.

use std::collections::HashMap;
use std::sync::Arc;

use director_core::kill::{Effect, Ticket};
use director_core::lookup::ConfigHost;
use director_proto::admin::AdminRequest;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::core_glue::{pending_reply, AdminStart, CoreError, CoreState};
use crate::effects::flush;
use crate::effects::kick::{KickFuture, SessionKiller};
use crate::limits::ACTOR_QUEUE_CAPACITY;
use crate::ring_view::RingView;

/// Messages into the actor.
pub enum ActorMsg {
    /// An admin request; the encoded reply goes back on `reply`.
    Admin {
        /// The parsed request.
        request: AdminRequest,
        /// Where the encoded reply goes.
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// Replace the configured mail servers (SIGHUP).
    Reload {
        /// The new `director_mail_servers`.
        hosts: Vec<ConfigHost>,
        /// Outcome: a summary of what changed, or why nothing did.
        reply: oneshot::Sender<Result<String, CoreError>>,
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
    /// Runs an admin request; `None` when the actor has stopped.
    pub async fn admin(&self, request: AdminRequest) -> Option<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ActorMsg::Admin { request, reply })
            .await
            .ok()?;
        rx.await.ok()
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

struct Actor {
    core: CoreState,
    ring: RingView,
    killer: Arc<dyn SessionKiller>,
    clock: Clock,
    pending: HashMap<Ticket, oneshot::Sender<Vec<u8>>>,
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
        pending: HashMap::new(),
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
            ActorMsg::Admin { request, reply } => {
                let start = match request {
                    AdminRequest::DirectorList => AdminStart::Done(self.ring.list()),
                    AdminRequest::DirectorAdd { ip, port } => {
                        AdminStart::Done(self.ring.add(ip, port))
                    }
                    AdminRequest::DirectorRemove { ip, port } => {
                        AdminStart::Done(self.ring.remove(ip, port))
                    }
                    other => self.core.admin(other, now),
                };
                match start {
                    AdminStart::Done(r) => {
                        // The client may have gone; nothing to do then.
                        let _ = reply.send(r.encode());
                    }
                    AdminStart::Pending(token) => {
                        self.pending.insert(token, reply);
                    }
                }
            }
            ActorMsg::Reload { hosts, reply } => {
                let _ = reply.send(self.core.reload_hosts(hosts, now));
            }
            ActorMsg::KickDone { ticket } => self.core.kick_done(ticket, now),
            ActorMsg::FlushDone { ticket, success } => self.core.flush_done(ticket, success, now),
        }
    }

    fn run_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::AdminReply { ticket, reply } => match self.pending.remove(&ticket) {
                    Some(tx) => {
                        let _ = tx.send(pending_reply(reply).encode());
                    }
                    None => tracing::warn!(ticket = ticket.0, "reply for an unknown admin request"),
                },
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
                Effect::RequestDone { id, .. } => {
                    // Logins are not served yet; nothing waits for this.
                    tracing::debug!(request = id.0, "login request finished");
                }
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
            let result = match flush::parse_target(&socket) {
                Ok(target) => flush::run(&target, &argv).await,
                Err(e) => Err(e),
            };
            let success = match result {
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
