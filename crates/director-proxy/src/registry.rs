//! [`SessionRegistry`]: every live proxied session, indexed by user name, user hash and
//! backend, with the kill primitives the director's kick effects need (§7.4, §7.5.3).
//!
//! A session registers as soon as the client's login name is known, *before* the core is
//! asked for a route. A move's `KICK-DIRECTOR-HASH` therefore also stops a login that is
//! still on its way to the old backend, so no user is served by two backends at once.
//! Dropping the [`SessionGuard`] deregisters.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use director_core::{user_hash, HashFormat};
use director_driver::{KickFuture, LocalSessions};
use director_proto::log_text::LogText;
use tokio::sync::watch;

use crate::settings::Protocol;

/// Why a session was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Admin `USER-KICK` / `KICK-ALT`.
    Kicked,
    /// The user is being moved (`KICK-DIRECTOR-HASH`).
    Moved,
    /// The proxy is shutting down after the drain time.
    Shutdown,
}

/// One registered session, as listed by [`SessionRegistry::sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Registry id.
    pub id: u64,
    /// The routing user name.
    pub username: Vec<u8>,
    /// Its `director_username_hash` hash.
    pub hash: u32,
    /// The backend, once routed.
    pub backend: Option<IpAddr>,
    /// Protocol.
    pub protocol: Protocol,
    /// Client address.
    pub client: SocketAddr,
}

struct Entry {
    info: SessionInfo,
    kill: watch::Sender<Option<KillReason>>,
    /// `Inner::backend_kicks` when the session registered.
    registered_at_kick: u64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<u64, Entry>,
    by_user: HashMap<Vec<u8>, HashSet<u64>>,
    by_hash: HashMap<u32, HashSet<u64>>,
    /// How many [`SessionRegistry::kick_backend`] calls there have been.
    backend_kicks: u64,
    /// Per backend, the value of `backend_kicks` at its latest kick. A session routed there
    /// before that kick but not yet attached to it ([`SessionGuard::set_backend`]) was
    /// missed by the kick and stops when it attaches. One entry per kicked backend.
    last_backend_kick: HashMap<IpAddr, u64>,
}

impl Inner {
    /// The sessions of exactly this routing user name.
    fn user_ids(&self, username: &[u8]) -> Vec<u64> {
        self.by_user
            .get(username)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The sessions whose user hashes to `hash`, but for those proxied to `except_ip`
    /// (sessions still logging in have no backend yet and are included).
    fn hash_ids(&self, hash: u32, except_ip: Option<IpAddr>) -> Vec<u64> {
        self.by_hash
            .get(&hash)
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|id| {
                        let backend = self.sessions.get(id).and_then(|e| e.info.backend);
                        except_ip.is_none() || backend != except_ip
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn kill_ids(&mut self, ids: &[u64], reason: KillReason) -> usize {
        let mut n = 0;
        for id in ids {
            if let Some(e) = self.sessions.get(id) {
                if e.kill.borrow().is_none() {
                    n += 1;
                }
                e.kill.send_replace(Some(reason));
            }
        }
        n
    }
}

/// Live sessions of this proxy. Cheap to share (`Arc`); all methods are synchronous and
/// hold the lock only briefly.
pub struct SessionRegistry {
    inner: Mutex<Inner>,
    hash_format: HashFormat,
    /// Bumped each time a session leaves the registry: what a kick waits on.
    left: watch::Sender<u64>,
    /// Ourselves, for the kick futures (which must not keep the registry alive).
    me: Weak<SessionRegistry>,
}

impl std::fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("sessions", &self.count())
            .finish()
    }
}

/// Deregisters its session when dropped; carries the session's kill signal.
#[derive(Debug)]
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    id: u64,
    kill: watch::Receiver<Option<KillReason>>,
}

impl SessionGuard {
    /// The session id the backend gets (`x-session-id`, `SESSION=`) and our logs show:
    /// 12 bytes in base64, the shape of Dovecot's, derived from [`Self::id`] with a key drawn
    /// at start, so one session's id tells nothing about another's.
    pub fn session_id(&self) -> String {
        session_id(self.id)
    }

    /// The registry's own number of the session (a sequence number: never shown outside).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records the backend the session was routed to (for `except_ip` and host kills). If
    /// that backend was kicked after this session registered (a `remove` between the route
    /// decision and this call), the session is told to stop now instead. A login routed to
    /// the same host again after a `flush -F` of it stops too: the client reconnects, which
    /// is the safe side of a race that is a few microseconds wide.
    pub fn set_backend(&self, ip: IpAddr) {
        let mut inner = self.registry.lock();
        let kicked_at = inner.last_backend_kick.get(&ip).copied();
        if let Some(e) = inner.sessions.get_mut(&self.id) {
            e.info.backend = Some(ip);
            if kicked_at.is_some_and(|k| k > e.registered_at_kick) {
                e.kill.send_replace(Some(KillReason::Kicked));
            }
        }
    }

    /// The kill reason, if the session was told to stop.
    pub fn killed(&self) -> Option<KillReason> {
        *self.kill.borrow()
    }

    /// Resolves when the session is told to stop.
    pub async fn wait_killed(&self) -> KillReason {
        let mut rx = self.kill.clone();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The sender lives in the registry entry, which we own until drop; a
                // closed channel can only mean teardown: treat it as a shutdown.
                return KillReason::Shutdown;
            }
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.deregister();
        self.registry.left.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl SessionGuard {
    fn deregister(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(e) = inner.sessions.remove(&self.id) {
            if let Some(set) = inner.by_user.get_mut(&e.info.username) {
                set.remove(&self.id);
                if set.is_empty() {
                    inner.by_user.remove(&e.info.username);
                }
            }
            if let Some(set) = inner.by_hash.get_mut(&e.info.hash) {
                set.remove(&self.id);
                if set.is_empty() {
                    inner.by_hash.remove(&e.info.hash);
                }
            }
        }
    }
}

/// See [`SessionGuard::session_id`]. SipHash with a random key (the standard library's
/// `RandomState`) is a pseudo-random function of the sequence number.
fn session_id(id: u64) -> String {
    use base64::Engine;
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let key = KEY.get_or_init(std::collections::hash_map::RandomState::new);
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&key.hash_one((id, 0u8)).to_le_bytes());
    bytes[8..].copy_from_slice(&key.hash_one((id, 1u8)).to_le_bytes()[..4]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The driver kicks and refreshes the proxy's sessions through the registry. Kicks take
/// effect at once (the sessions are signalled and close on their own), so each future is
/// ready immediately with the number of sessions told to stop.
impl LocalSessions for SessionRegistry {
    fn kick_user_hash(&self, user_hash: u32, except_ip: Option<IpAddr>) -> KickFuture {
        let (ids, n) = {
            let mut inner = self.lock();
            let ids = inner.hash_ids(user_hash, except_ip);
            let n = inner.kill_ids(&ids, KillReason::Moved);
            (ids, n)
        };
        tracing::info!(user_hash, except = ?except_ip, kicked = n, "KICK-DIRECTOR-HASH");
        self.until_gone(ids, n)
    }

    fn kick_user(&self, user: Vec<u8>) -> KickFuture {
        let (ids, n) = {
            let mut inner = self.lock();
            let ids = inner.user_ids(&user);
            let n = inner.kill_ids(&ids, KillReason::Kicked);
            (ids, n)
        };
        tracing::info!(user = %LogText(&user), kicked = n, "KICK");
        self.until_gone(ids, n)
    }

    fn kick_user_alt(&self, field: String, value: String) -> KickFuture {
        let ids = self.alt_ids(&field, &value);
        let n = self.lock().kill_ids(&ids, KillReason::Kicked);
        tracing::info!(field = %LogText(field.as_bytes()), value = %LogText(value.as_bytes()), kicked = n, "KICK-ALT");
        self.until_gone(ids, n)
    }

    fn kick_backend(&self, ip: IpAddr) -> usize {
        SessionRegistry::kick_backend(self, ip)
    }

    fn users_with_sessions(&self) -> Vec<Vec<u8>> {
        self.active_users()
    }
}

impl SessionRegistry {
    /// An empty registry hashing user names with `director_username_hash`.
    pub fn new(hash_format: HashFormat) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            inner: Mutex::new(Inner::default()),
            hash_format,
            left: watch::Sender::new(0),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters more than losing every session, so keep going with the data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user hash of `username` (0 when the format cannot expand it, which the core
    /// would also refuse to route).
    pub fn hash_of(&self, username: &[u8]) -> u32 {
        user_hash(username, &self.hash_format).unwrap_or(0)
    }

    /// Registers a session of `username`.
    pub fn register(
        self: &Arc<Self>,
        username: &[u8],
        protocol: Protocol,
        client: SocketAddr,
    ) -> SessionGuard {
        let hash = self.hash_of(username);
        let (tx, rx) = watch::channel(None);
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let registered_at_kick = inner.backend_kicks;
        inner.sessions.insert(
            id,
            Entry {
                info: SessionInfo {
                    id,
                    username: username.to_vec(),
                    hash,
                    backend: None,
                    protocol,
                    client,
                },
                kill: tx,
                registered_at_kick,
            },
        );
        inner
            .by_user
            .entry(username.to_vec())
            .or_default()
            .insert(id);
        inner.by_hash.entry(hash).or_default().insert(id);
        drop(inner);
        SessionGuard {
            registry: Arc::clone(self),
            id,
            kill: rx,
        }
    }

    /// `KICK <username>`: stops every session of exactly this routing user name. Returns how
    /// many were told to stop.
    pub fn kick_user(&self, username: &[u8]) -> usize {
        let mut inner = self.lock();
        let ids = inner.user_ids(username);
        inner.kill_ids(&ids, KillReason::Kicked)
    }

    /// `KICK-ALT <field> <value>`: Dovecot matches a passdb `user_<field>` alternative name.
    /// The proxy has no passdb, so the only field it knows is `user` (the login name, same
    /// as [`kick_user`](Self::kick_user)); any other field matches nothing and returns 0.
    pub fn kick_alt(&self, field: &str, value: &str) -> usize {
        let ids = self.alt_ids(field, value);
        self.lock().kill_ids(&ids, KillReason::Kicked)
    }

    fn alt_ids(&self, field: &str, value: &str) -> Vec<u64> {
        if field == "user" {
            return self.lock().user_ids(value.as_bytes());
        }
        Vec::new()
    }

    /// Resolves to `kicked` once none of the sessions `ids` is registered any more. A
    /// session leaves the registry only after it closed its client and backend
    /// connections, so a kick reported done (to the core, and by it round the ring) means
    /// that those sessions no longer serve anyone: the user's next login, routed to another
    /// backend, cannot overlap them.
    fn until_gone(&self, ids: Vec<u64>, kicked: usize) -> KickFuture {
        // Subscribed before the first look: a session that leaves in between is seen.
        let mut left = self.left.subscribe();
        let me = self.me.clone();
        Box::pin(async move {
            loop {
                let open = me.upgrade().is_some_and(|r| {
                    let inner = r.lock();
                    ids.iter().any(|id| inner.sessions.contains_key(id))
                });
                if !open || left.changed().await.is_err() {
                    return kicked;
                }
            }
        })
    }

    /// `KICK-DIRECTOR-HASH <hash> [<except_ip>]`: stops every session whose user hashes to
    /// `hash`, except sessions already proxied to `except_ip` (sessions still logging in
    /// have no backend yet and are stopped too).
    pub fn kick_user_hash(&self, hash: u32, except_ip: Option<IpAddr>) -> usize {
        let mut inner = self.lock();
        let ids = inner.hash_ids(hash, except_ip);
        inner.kill_ids(&ids, KillReason::Moved)
    }

    /// Stops every session proxied to `ip` (`remove` and `flush -F` of that host), and
    /// every session already routed there that attaches later.
    pub fn kick_backend(&self, ip: IpAddr) -> usize {
        let mut inner = self.lock();
        inner.backend_kicks += 1;
        let seq = inner.backend_kicks;
        inner.last_backend_kick.insert(ip, seq);
        let ids: Vec<u64> = inner
            .sessions
            .values()
            .filter(|e| e.info.backend == Some(ip))
            .map(|e| e.info.id)
            .collect();
        inner.kill_ids(&ids, KillReason::Kicked)
    }

    /// Stops every session (end of the shutdown drain).
    pub fn kill_all(&self) -> usize {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner.sessions.keys().copied().collect();
        inner.kill_ids(&ids, KillReason::Shutdown)
    }

    /// Number of registered sessions.
    pub fn count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Number of sessions of `username`.
    pub fn count_user(&self, username: &[u8]) -> usize {
        self.lock().by_user.get(username).map_or(0, HashSet::len)
    }

    /// The user names that have at least one routed session (what the driver keeps alive
    /// every `director_user_expire / 2`).
    pub fn active_users(&self) -> Vec<Vec<u8>> {
        let inner = self.lock();
        inner
            .by_user
            .iter()
            .filter(|(_, ids)| {
                ids.iter().any(|id| {
                    inner
                        .sessions
                        .get(id)
                        .is_some_and(|e| e.info.backend.is_some())
                })
            })
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Sessions routed to a backend, by backend and protocol, sorted (sessions still waiting
    /// for their route are not counted). One pass under the lock, nothing cloned: the
    /// metrics listener calls it at every scrape.
    pub fn routed_counts(&self) -> Vec<(IpAddr, Protocol, u64)> {
        let mut counts: HashMap<(IpAddr, Protocol), u64> = HashMap::new();
        for e in self.lock().sessions.values() {
            if let Some(ip) = e.info.backend {
                *counts.entry((ip, e.info.protocol)).or_default() += 1;
            }
        }
        let mut v: Vec<(IpAddr, Protocol, u64)> =
            counts.into_iter().map(|((ip, p), n)| (ip, p, n)).collect();
        v.sort_by_key(|(ip, p, _)| (*ip, p.name()));
        v
    }

    /// A snapshot of every session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .lock()
            .sessions
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    /// A `remove` that lands between a login's route decision and its `set_backend` still
    /// stops that login; logins that registered after the kick are not affected.
    #[test]
    fn a_backend_kick_catches_sessions_that_attach_later() {
        let r = SessionRegistry::new(HashFormat::default());
        let host: IpAddr = "127.0.1.1".parse().unwrap();
        let other: IpAddr = "127.0.1.2".parse().unwrap();
        let attached = r.register(b"alice", Protocol::Imap, addr());
        attached.set_backend(host);
        let in_flight = r.register(b"bob", Protocol::Imap, addr());
        let elsewhere = r.register(b"carol", Protocol::Imap, addr());
        assert_eq!(
            r.kick_backend(host),
            1,
            "only the attached session is counted"
        );
        assert_eq!(attached.killed(), Some(KillReason::Kicked));
        in_flight.set_backend(host);
        assert_eq!(in_flight.killed(), Some(KillReason::Kicked));
        elsewhere.set_backend(other);
        assert_eq!(elsewhere.killed(), None);
        let later = r.register(b"dave", Protocol::Imap, addr());
        later.set_backend(host);
        assert_eq!(
            later.killed(),
            None,
            "registered after the kick: a new route"
        );
    }

    /// Session ids are not sequence numbers: consecutive sessions share no visible pattern,
    /// and ids do not repeat.
    #[test]
    fn session_ids_are_not_guessable_from_each_other() {
        let ids: Vec<String> = (0..1000).map(super::session_id).collect();
        assert!(ids.iter().all(|s| s.len() == 16), "{:?}", &ids[..3]);
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        // Neighbouring ids differ in about half of their bits, as unrelated values do.
        let bits = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).unwrap()
        };
        let differing: u32 = ids
            .windows(2)
            .map(|w| {
                bits(&w[0])
                    .iter()
                    .zip(bits(&w[1]))
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum::<u32>()
            })
            .sum();
        let mean = f64::from(differing) / 999.0;
        assert!((40.0..56.0).contains(&mean), "mean differing bits {mean}");
    }

    /// A kick is done only once the kicked sessions left the registry, which they do after
    /// closing their connections: the move it belongs to (and so the user's next login on
    /// another backend) waits for that.
    #[tokio::test]
    async fn a_kick_is_done_when_the_kicked_sessions_are_gone() {
        let r = SessionRegistry::new(HashFormat::default());
        let a1 = r.register(b"alice", Protocol::Imap, addr());
        let a2 = r.register(b"alice", Protocol::Imap, addr());
        let bob = r.register(b"bob", Protocol::Imap, addr());
        let mut kick = LocalSessions::kick_user_hash(&*r, r.hash_of(b"alice"), None);
        let pending = |kick: &mut KickFuture| {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            kick.as_mut().poll(&mut cx).is_pending()
        };
        assert!(pending(&mut kick), "both sessions still open");
        assert_eq!(a1.wait_killed().await, KillReason::Moved);
        drop(a1);
        assert!(pending(&mut kick), "one session still open");
        drop(bob);
        assert!(
            pending(&mut kick),
            "an unrelated session does not end the kick"
        );
        drop(a2);
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(5), kick)
                .await
                .expect("the kick ends once both are gone"),
            2
        );
        // Nothing to kick: done at once.
        let none = LocalSessions::kick_user(&*r, b"nobody".to_vec());
        assert_eq!(none.await, 0);
    }

    #[test]
    fn kicks_count_and_deregister() {
        let r = SessionRegistry::new(HashFormat::default());
        let a1 = r.register(b"alice", Protocol::Imap, addr());
        let a2 = r.register(b"alice", Protocol::Pop3, addr());
        let b = r.register(b"bob", Protocol::Imap, addr());
        a1.set_backend("127.0.1.1".parse().unwrap());
        a2.set_backend("127.0.1.2".parse().unwrap());
        b.set_backend("127.0.1.1".parse().unwrap());
        assert_eq!(r.count(), 3);
        let h = r.hash_of(b"alice");
        assert_eq!(r.kick_user_hash(h, Some("127.0.1.2".parse().unwrap())), 1);
        assert_eq!(a1.killed(), Some(KillReason::Moved));
        assert_eq!(a2.killed(), None);
        assert_eq!(
            r.kick_user(b"alice"),
            1,
            "a1 already killed is not counted twice"
        );
        assert_eq!(r.kick_alt("foo", "bob"), 0);
        assert_eq!(r.kick_alt("user", "bob"), 1);
        drop(a1);
        assert_eq!(r.count_user(b"alice"), 1);
        drop(a2);
        drop(b);
        assert_eq!(r.count(), 0);
        assert!(r.active_users().is_empty());
    }
}
