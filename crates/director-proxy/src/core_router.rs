//! [`CoreRouter`]: a [`Router`] over a real [`Director`] behind a mutex, with a small task
//! that drains the core's effects (queued request results, kicks) and runs its timers.
//!
//! It makes the proxy usable without the daemon's actor (a standalone proxy, and the
//! integration tests). The daemon implements [`Router`] over its own actor instead; the
//! behaviour is the same: kicks go to the [`SessionRegistry`] and are reported back to the
//! core with `kick_finished`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use director_core::{Director, Effect, RequestError, RequestId, RequestOutcome, Route};
use tokio::sync::{oneshot, Notify};

use crate::registry::SessionRegistry;
use crate::router::{BoxFuture, RouteError, RouteRequest, Router};

/// Effects are drained at least this often (timers of the core have 1 s resolution).
const PUMP_INTERVAL: Duration = Duration::from_millis(100);
/// Safety net above the core's own 30 s request timeout.
const ROUTE_WAIT_LIMIT: Duration = Duration::from_secs(35);

type Waiter = oneshot::Sender<Result<Route, RequestError>>;

struct State {
    director: Director,
    waiters: HashMap<RequestId, Waiter>,
}

/// A [`Router`] owning a [`Director`].
pub struct CoreRouter {
    state: Mutex<State>,
    registry: Arc<SessionRegistry>,
    wake: Notify,
}

impl std::fmt::Debug for CoreRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreRouter").finish_non_exhaustive()
    }
}

/// Current Unix time in seconds (the core's clock).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CoreRouter {
    /// Wraps `director`; kicks act on `registry`. Spawns the effect pump on the current
    /// tokio runtime (it stops when the router is dropped).
    pub fn start(director: Director, registry: Arc<SessionRegistry>) -> Arc<Self> {
        let router = Arc::new(Self {
            state: Mutex::new(State {
                director,
                waiters: HashMap::new(),
            }),
            registry,
            wake: Notify::new(),
        });
        let weak = Arc::downgrade(&router);
        tokio::spawn(async move {
            loop {
                let Some(r) = weak.upgrade() else { break };
                r.pump();
                // Holding `r` for at most one interval; the task ends once the router is gone.
                tokio::select! {
                    _ = r.wake.notified() => {}
                    _ = tokio::time::sleep(PUMP_INTERVAL) => {}
                }
            }
        });
        router
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the director (admin operations in tests: move, kick, host down...), then
    /// processes the effects it produced.
    pub fn with_director<T>(&self, f: impl FnOnce(&mut Director, u64) -> T) -> T {
        let out = {
            let mut st = self.lock();
            f(&mut st.director, unix_now())
        };
        self.pump();
        out
    }

    /// Runs due timers and carries out queued effects.
    fn pump(&self) {
        let mut st = self.lock();
        let now = unix_now();
        if st.director.next_timeout().is_some_and(|t| t <= now) {
            st.director.handle_timeout(now);
        }
        // Kicks complete synchronously (the registry signals the sessions), so their
        // completion may produce more effects: loop until the queue is empty.
        while let Some(effect) = st.director.poll_effect() {
            match effect {
                Effect::RequestDone { id, result } => {
                    if let Some(w) = st.waiters.remove(&id) {
                        let _ = w.send(result);
                    }
                }
                Effect::KickDirectorHash {
                    ticket,
                    hash,
                    except_ip,
                } => {
                    let n = self.registry.kick_user_hash(hash, except_ip);
                    tracing::info!(hash, ?except_ip, kicked = n, "kick-director-hash");
                    st.director.kick_finished(ticket, now);
                }
                Effect::Kick { ticket, username } => {
                    let n = self.registry.kick_user(&username);
                    tracing::info!(user = %String::from_utf8_lossy(&username), kicked = n, "kick");
                    st.director.kick_finished(ticket, now);
                }
                Effect::KickAlt {
                    ticket,
                    field,
                    value,
                } => {
                    let n = self.registry.kick_alt(&field, &value);
                    tracing::info!(%field, %value, kicked = n, "kick-alt");
                    st.director.kick_finished(ticket, now);
                }
                Effect::KickBackend { ip } => {
                    let n = self.registry.kick_backend(ip);
                    tracing::info!(host = %ip, kicked = n, "kick-backend");
                }
                Effect::RunFlushScript { ticket, .. } => {
                    // No flush script support here: report failure, the core then waits
                    // the kick delay as Dovecot does after a failed script.
                    st.director.flush_script_finished(ticket, false, now);
                }
                _ => {}
            }
        }
    }
}

impl Router for CoreRouter {
    fn route<'a>(&'a self, req: RouteRequest<'a>) -> BoxFuture<'a, Result<Route, RouteError>> {
        Box::pin(async move {
            let rx = {
                let mut st = self.lock();
                match st.director.request(req.username, "", unix_now()) {
                    RequestOutcome::Ready(route) => {
                        drop(st);
                        self.wake.notify_one();
                        return Ok(route);
                    }
                    RequestOutcome::Failed(e) => {
                        return Err(match e {
                            RequestError::HashFailed(h) => RouteError::Failed(h.to_string()),
                            other => RouteError::Temporary(other.to_string()),
                        })
                    }
                    RequestOutcome::Queued(id, reason) => {
                        tracing::debug!(reason = reason.as_str(), "login request queued");
                        let (tx, rx) = oneshot::channel();
                        st.waiters.insert(id, tx);
                        rx
                    }
                }
            };
            match tokio::time::timeout(ROUTE_WAIT_LIMIT, rx).await {
                Ok(Ok(Ok(route))) => Ok(route),
                Ok(Ok(Err(e))) => Err(RouteError::Temporary(e.to_string())),
                Ok(Err(_)) => Err(RouteError::Temporary("director went away".into())),
                Err(_) => Err(RouteError::Temporary("request timed out".into())),
            }
        })
    }

    fn refresh_user(&self, username: &[u8]) {
        self.lock().director.refresh_user(username, unix_now());
        self.wake.notify_one();
    }
}
