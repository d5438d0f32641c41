//! The driver's own behaviour: timers on an injected clock, both login paths, the refresh
//! of open sessions, and what a panic while the state is held does.

use std::net::IpAddr;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use director_core::CoreSettings;
use director_proto::admin::UserRef;

use super::*;
use crate::effects::sessions::NoLocalSessions;
use crate::ring_view::RingView;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings(kick_delay_secs: u32) -> CoreSettings {
    CoreSettings {
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
    }
}

fn start_with(
    settings: CoreSettings,
    sessions: Arc<dyn LocalSessions>,
) -> (DirectorHandle, tokio::task::JoinHandle<DriverExit>) {
    spawn(DriverConfig {
        core: settings,
        directors: Directors::Standalone(RingView::new(ip("127.0.0.1"), 0)),
        sessions,
        clock: Clock::new(),
        state: None,
    })
    .unwrap()
}

fn start(kick_delay_secs: u32) -> DirectorHandle {
    start_with(settings(kick_delay_secs), Arc::new(NoLocalSessions)).0
}

fn user_move(to: &str) -> AdminRequest {
    AdminRequest::UserMove {
        user: UserRef::Name(b"user9".to_vec()),
        ip: ip(to),
    }
}

fn user_lines(list: &[u8]) -> usize {
    list.iter().filter(|b| **b == b'\n').count() - 1
}

/// The driver's timers run on tokio's clock: with time paused, the kick delay elapses as
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

/// On a running clock (as in tests with real sockets), advancing the clock runs what fell
/// due before `advance_clock` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_the_clock_completes_the_kick_delay_at_once() {
    let d = start(2);
    assert_eq!(d.admin(user_move("127.0.1.2")).await.unwrap(), b"OK\n");
    assert_eq!(
        d.admin(user_move("127.0.1.1")).await.unwrap(),
        b"TRYAGAIN\n"
    );
    // The kick itself completes through the driver task; then only the delay is left.
    let mut tries = 0;
    loop {
        assert!(d.advance_clock(Duration::from_secs(3)));
        if d.admin(user_move("127.0.1.1")).await.unwrap() == b"OK\n" {
            break;
        }
        tries += 1;
        assert!(tries < 100, "the move never finished");
        tokio::task::yield_now().await;
    }
}

/// Both login paths give the core's answer: on the caller when the state is free, and
/// through the driver task when it is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Holding the state across the wait is the point: it makes the state busy.
#[allow(clippy::await_holding_lock)]
async fn logins_are_routed_whether_the_state_is_free_or_busy() {
    let d = start(2);
    let fast = d.login(b"user9".to_vec()).await.unwrap().unwrap();
    let held = d.shared.state.lock().unwrap();
    assert!(matches!(d.try_login_here(b"user9"), FastLogin::Busy));
    let slow = tokio::spawn({
        let d = d.clone();
        async move { d.login(b"user9".to_vec()).await }
    });
    // The slow login can only finish once the state is released: release it only after
    // the login took the queue. (The driver task may already have dequeued it and be
    // blocked on the state, so the channel's fill level says nothing.)
    while d.queued_logins() == 0 {
        tokio::task::yield_now().await;
    }
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
    assert_eq!(user_lines(&list), 1);
    // director_user_expire defaults to 15 min.
    tokio::time::sleep(Duration::from_secs(16 * 60)).await;
    assert_eq!(
        d.admin(AdminRequest::UserList { ip: None }).await.unwrap(),
        b"\n"
    );
}

/// Sessions that report one open session of `user9`, and record kicks of backends.
#[derive(Default)]
struct OneOpenSession {
    backend_kicks: StdMutex<Vec<IpAddr>>,
    panic_on_backend_kick: bool,
}

impl LocalSessions for OneOpenSession {
    fn kick_user_hash(&self, _: u32, _: Option<IpAddr>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user(&self, _: Vec<u8>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user_alt(&self, _: String, _: String) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_backend(&self, ip: IpAddr) -> usize {
        assert!(!self.panic_on_backend_kick, "a bug while the state is held");
        self.backend_kicks.lock().unwrap().push(ip);
        1
    }
    fn users_with_sessions(&self) -> Vec<Vec<u8>> {
        vec![b"user9".to_vec()]
    }
}

/// A user with an open session keeps its assignment past `director_user_expire`: the
/// driver refreshes it every half expiry; one without a session expires.
#[tokio::test(start_paused = true)]
async fn open_sessions_are_refreshed_every_half_expiry() {
    let (d, _task) = start_with(settings(2), Arc::new(OneOpenSession::default()));
    assert!(d.login(b"user9".to_vec()).await.unwrap().is_ok());
    assert!(d.login(b"nosession".to_vec()).await.unwrap().is_ok());
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(8 * 60)).await;
    }
    let list = d.admin(AdminRequest::UserList { ip: None }).await.unwrap();
    assert_eq!(user_lines(&list), 1, "only the user with a session is left");
}

/// `HOST-REMOVE` closes the host's local sessions before its `OK` is written.
#[tokio::test]
async fn removing_a_host_closes_its_sessions_before_the_reply() {
    let sessions = Arc::new(OneOpenSession::default());
    let (d, _task) = start_with(settings(2), sessions.clone());
    let reply = d
        .admin(AdminRequest::HostRemove {
            ip: ip("127.0.1.2"),
        })
        .await
        .unwrap();
    assert_eq!(reply, b"OK\n");
    assert_eq!(
        *sessions.backend_kicks.lock().unwrap(),
        vec![ip("127.0.1.2")]
    );
}

/// A panic while the state is held abandons the state: nothing is served from it again,
/// and the driver reports the crash so that the daemon exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_the_state_is_held_stops_the_driver() {
    let sessions = Arc::new(OneOpenSession {
        panic_on_backend_kick: true,
        ..OneOpenSession::default()
    });
    let (d, task) = start_with(settings(2), sessions);
    assert!(d.login(b"user9".to_vec()).await.unwrap().is_ok());
    let crashed = tokio::spawn({
        let d = d.clone();
        async move {
            d.admin(AdminRequest::HostRemove {
                ip: ip("127.0.1.2"),
            })
            .await
        }
    })
    .await;
    assert!(crashed.unwrap_err().is_panic());
    assert_eq!(d.stopped().await, DriverExit::Crashed);
    assert_eq!(task.await.unwrap(), DriverExit::Crashed);
    assert_eq!(d.admin(AdminRequest::HostList).await, None);
    assert_eq!(d.login(b"user9".to_vec()).await, None);
    assert!(!d.advance_clock(Duration::from_secs(1)));
}

/// Dropping every handle ends the driver normally.
#[tokio::test]
async fn dropping_every_handle_stops_the_driver() {
    let (d, task) = start_with(settings(2), Arc::new(NoLocalSessions));
    drop(d);
    assert_eq!(task.await.unwrap(), DriverExit::Stopped);
}

fn start_saving(store: Arc<StateStore>, clock: Clock) -> DirectorHandle {
    spawn(DriverConfig {
        core: settings(2),
        directors: Directors::Standalone(RingView::new(ip("127.0.0.1"), 0)),
        sessions: Arc::new(NoLocalSessions),
        clock,
        state: Some(StateConfig {
            store,
            save_interval: Duration::from_secs(3600),
        }),
    })
    .unwrap()
    .0
}

/// Polls the state file until `ok` holds for what it decodes to (bounded).
async fn wait_for_saved(store: &StateStore, ok: impl Fn(&director_core::Snapshot) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let ReadOutcome::Read(s) = store.read() {
            if ok(&s) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never saved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn users_of(d: &DirectorHandle) -> usize {
    d.shared.lock().unwrap().core.director().counters().users
}

/// The first change is saved at once, later ones once per interval and at shutdown; a new
/// driver restores the hosts and the users, and drops users that expired meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_saved_and_a_new_driver_restores_it_with_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(StateStore::open(dir.path()).unwrap());
    let t0 = Duration::from_secs(1_700_000_000);
    let a = start_saving(Arc::clone(&store), Clock::starting_at(t0));
    let alice = a.login(b"alice".to_vec()).await.unwrap().unwrap();
    wait_for_saved(&store, |s| s.users.len() == 1).await;
    // Within the interval nothing more is written; the shutdown save writes the rest.
    let bob = a.login(b"bob".to_vec()).await.unwrap().unwrap();
    let down = AdminRequest::HostDown {
        ip: ip("127.0.1.2"),
    };
    assert_eq!(a.admin(down).await.unwrap(), b"OK\n");
    match store.read() {
        ReadOutcome::Read(s) => assert_eq!(s.users.len(), 1),
        other => panic!("{other:?}"),
    }
    match a.save_state().await {
        SaveOutcome::Saved(r) => assert_eq!((r.hosts, r.users, r.written), (2, 2, true)),
        other => panic!("{other:?}"),
    }
    drop(a);

    let b = start_saving(
        Arc::clone(&store),
        Clock::starting_at(t0 + Duration::from_secs(60)),
    );
    assert_eq!(users_of(&b), 2);
    assert_eq!(
        b.login(b"alice".to_vec()).await.unwrap().unwrap().ip,
        alice.ip
    );
    assert_eq!(b.login(b"bob".to_vec()).await.unwrap().unwrap().ip, bob.ip);
    let hosts = b.admin(AdminRequest::HostList).await.unwrap();
    let hosts = String::from_utf8(hosts).unwrap();
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("127.0.1.2\t") && l.contains("\tD\t")),
        "{hosts}"
    );
    assert!(matches!(b.save_state().await, SaveOutcome::Saved(_)));
    drop(b);

    // 15 minutes after the last refresh (director_user_expire) both have expired.
    let later = t0 + Duration::from_secs(60 + 900);
    let c = start_saving(store, Clock::starting_at(later));
    assert_eq!(users_of(&c), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_kept_aside_and_the_config_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(StateStore::open(dir.path()).unwrap());
    std::fs::write(store.path(), b"director-state\t1\nsaved\t17").unwrap();
    let t0 = Duration::from_secs(1_700_000_000);
    let d = start_saving(Arc::clone(&store), Clock::starting_at(t0));
    assert_eq!(users_of(&d), 0);
    let aside = dir.path().join("director-state.corrupt-1700000000");
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        b"director-state\t1\nsaved\t17"
    );
    // And the director saves a good state again.
    d.login(b"alice".to_vec()).await.unwrap().unwrap();
    wait_for_saved(&store, |s| s.users.len() == 1 && s.hosts.len() == 2).await;
}
