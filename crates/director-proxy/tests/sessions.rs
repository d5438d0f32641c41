//! Kicks, moves, flushes, refresh and backend TLS through the proxy, with the real core
//! deciding and real Dovecot backends serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{init_tracing, raw_imap_login, Lab, LabOptions, Raw};
use director_proto::admin::AdminRequest;
use director_proxy::{BackendFailureHook, BackendFailureKind};

/// Whether an established TCP socket bound to `ip:port` has received bytes its process has
/// not read (`/proc/net/tcp`'s rx_queue).
fn unread_bytes_at(ip: IpAddr, port: u16) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    // /proc/net/tcp shows an IPv4 address as the hex of its bytes in host (little-endian) order.
    let want = format!("{:08X}:{:04X}", u32::from_le_bytes(v4.octets()), port);
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 4
            && f[1] == want
            && f[3] == "01"
            && f[4]
                .split_once(':')
                .and_then(|(_, rx)| u32::from_str_radix(rx, 16).ok())
                .is_some_and(|rx| rx > 0)
    })
}

fn user_kick(user: &str) -> AdminRequest {
    AdminRequest::UserKick {
        user: user.as_bytes().to_vec(),
        nowait: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_closes_the_users_sessions_only() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let addr = lab.addr(lab.imap_port);
    let (mut k1, _) = raw_imap_login(addr, "kickme@example.com", "pass").await;
    let (mut k2, _) = raw_imap_login(addr, "kickme@example.com", "pass").await;
    let (mut other, _) = raw_imap_login(addr, "bystander@example.com", "pass").await;
    assert_eq!(lab.proxy.registry().count_user(b"kickme@example.com"), 2);
    let out = lab.admin(user_kick("kickme@example.com")).await;
    assert_eq!(out, "OK\n");
    assert!(k1.closed().await, "kicked session 1 closed");
    assert!(k2.closed().await, "kicked session 2 closed");
    other.send("n NOOP\r\n").await;
    let r = other.until("n ").await;
    assert!(
        r.last().unwrap().starts_with("n OK"),
        "bystander untouched: {r:?}"
    );
    // Kicks don't touch the assignment (§11.4).
    let ip = lab.expected_backend("kickme@example.com").await;
    let (_again, ip2) = raw_imap_login(addr, "kickme@example.com", "pass").await;
    assert_eq!(ip.to_string(), ip2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_routing_sessions_and_kicks() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["director_proxy_workers = 4".into()],
        ..LabOptions::default()
    })
    .await;
    let addr = lab.addr(lab.imap_port);
    // Two sessions for each of 12 users at once: the kernel spreads the connections over
    // the workers, and a user's sessions usually end up on different ones.
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..24 {
        logins.spawn(async move {
            let user = format!("w{}@example.com", i % 12);
            let (c, ip) = raw_imap_login(addr, &user, "pass").await;
            (user, c, ip)
        });
    }
    let mut sessions = Vec::new();
    while let Some(r) = logins.join_next().await {
        let (user, c, ip) = r.unwrap();
        assert_eq!(ip, lab.expected_backend(&user).await.to_string(), "{user}");
        sessions.push((user, c));
    }
    let registry = lab.proxy.registry();
    for i in 0..12 {
        assert_eq!(
            registry.count_user(format!("w{i}@example.com").as_bytes()),
            2
        );
    }
    // A kick reaches the user's sessions whichever worker holds them.
    let out = lab.admin(user_kick("w3@example.com")).await;
    assert_eq!(out, "OK\n");
    for (user, c) in &mut sessions {
        if user == "w3@example.com" {
            assert!(c.closed().await, "kicked session closed");
        } else {
            c.send("n NOOP\r\n").await;
            let r = c.until("n ").await;
            assert!(r.last().unwrap().starts_with("n OK"), "{user}: {r:?}");
        }
    }
    assert_eq!(registry.count_user(b"w3@example.com"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_kills_old_sessions_and_new_logins_go_to_the_new_host() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let addr = lab.addr(lab.imap_port);
    let user = "mover@example.com";
    let (mut old, old_ip) = raw_imap_login(addr, user, "pass").await;
    let old_ip: IpAddr = old_ip.parse().unwrap();
    assert_eq!(old_ip, lab.expected_backend(user).await);
    let new_ip = lab
        .backends
        .iter()
        .map(|b| IpAddr::V4(b.ip()))
        .find(|ip| *ip != old_ip)
        .unwrap();
    assert_eq!(lab.user_move(user, new_ip).await, "OK\n");
    assert!(
        old.closed().await,
        "session on the old host is killed by the move"
    );
    // The new login waits for the kick delay, then lands on the new host.
    let (_new, ip) = raw_imap_login(addr, user, "pass").await;
    assert_eq!(ip, new_ip.to_string());
    let sessions = lab.proxy.registry().sessions();
    assert!(
        sessions.iter().all(|s| s.backend == Some(new_ip)),
        "no session of the user left on the old host: {sessions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_moves_users_back_to_their_hashed_host() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let addr = lab.addr(lab.imap_port);
    let user = "flushme@example.com";
    let hashed = lab.expected_backend(user).await;
    let other = lab
        .backends
        .iter()
        .map(|b| IpAddr::V4(b.ip()))
        .find(|ip| *ip != hashed)
        .unwrap();
    assert_eq!(lab.user_move(user, other).await, "OK\n");
    let (mut s, ip) = raw_imap_login(addr, user, "pass").await;
    assert_eq!(ip, other.to_string());
    // HOST-RESET-USERS on the host: the user goes back to its hashed host.
    let reset = AdminRequest::HostResetUsers {
        ip: Some(other),
        max_moving_users: None,
    };
    assert_eq!(lab.admin(reset).await, "OK\n");
    assert!(s.closed().await, "flush kills the session on the old host");
    let (_s2, ip) = raw_imap_login(addr, user, "pass").await;
    assert_eq!(ip, hashed.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_down_sends_new_users_elsewhere_and_backend_failure_is_temporary() {
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(IpAddr, String, BackendFailureKind)>>);
    impl BackendFailureHook for Recorder {
        fn backend_failed(&self, ip: IpAddr, user: &[u8], kind: BackendFailureKind, _d: &str) {
            self.0
                .lock()
                .unwrap()
                .push((ip, String::from_utf8_lossy(user).into_owned(), kind));
        }
    }
    init_tracing();
    let rec = Arc::new(Recorder::default());
    let mut lab = Lab::start(LabOptions {
        hook: Some(rec.clone()),
        ..LabOptions::default()
    })
    .await;
    let addr = lab.addr(lab.imap_port);
    // A user whose backend we stop: the login gets a temporary failure, the hook hears it.
    let user = "stranded@example.com";
    let dead = lab.expected_backend(user).await;
    let idx = lab
        .backends
        .iter()
        .position(|b| IpAddr::V4(b.ip()) == dead)
        .unwrap();
    lab.backends[idx].stop().unwrap();
    let mut c = Raw::connect(addr).await;
    c.until("* OK").await;
    c.send(&format!("a LOGIN {user} pass\r\n")).await;
    let r = c.until("a ").await;
    assert_eq!(
        r.last().unwrap(),
        "a NO [UNAVAILABLE] Account is temporarily unavailable."
    );
    {
        let got = rec.0.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].0, got[0].1.as_str(), got[0].2.clone()),
            (dead, user, BackendFailureKind::Connect)
        );
    }
    // After `director down`, new users avoid the host; the assigned user stays (§4).
    assert_eq!(lab.admin(AdminRequest::HostDown { ip: dead }).await, "OK\n");
    for i in 0..30 {
        let u = format!("fresh{i}@example.com");
        let (_s, ip) = raw_imap_login(addr, &u, "pass").await;
        assert_ne!(ip, dead.to_string(), "{u} must not go to the down host");
    }
    // `director remove` + login: the stranded user gets a new, live host.
    assert_eq!(
        lab.admin(AdminRequest::HostRemove { ip: dead }).await,
        "OK\n"
    );
    let (_s, ip) = raw_imap_login(addr, user, "pass").await;
    assert_ne!(ip, dead.to_string());
    c.send("x LOGOUT\r\n").await;
}

/// `login_proxy_max_reconnects`: a backend that refuses connections while it restarts costs
/// the client a wait, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_restarting_during_a_login_is_reconnected_to() {
    init_tracing();
    let mut lab = Lab::start(LabOptions {
        // Generous, so that a slow Dovecot start still falls within the retries.
        proxy_extra: vec![
            "login_proxy_max_reconnects = 20".into(),
            "login_proxy_timeout = 30 s".into(),
        ],
        ..LabOptions::default()
    })
    .await;
    let addr = lab.addr(lab.imap_port);
    let user = "patient@example.com";
    let home = lab.expected_backend(user).await;
    let idx = lab
        .backends
        .iter()
        .position(|b| IpAddr::V4(b.ip()) == home)
        .unwrap();
    let IpAddr::V4(ip) = home else { unreachable!() };
    let mut opts = testkit::BackendOptions::new(ip);
    opts.imap_port = Some(lab.backends[idx].imap_addr().port());
    opts.pop3_port = Some(lab.backends[idx].pop3_addr().port());
    opts.lmtp_port = Some(lab.backends[idx].lmtp_addr().port());
    lab.backends[idx].stop().unwrap();

    let login = tokio::spawn(async move { raw_imap_login(addr, user, "pass").await });
    // Once the login is registered it has been routed and its first connect is refused;
    // only then does the backend come back.
    for _ in 0..500 {
        if lab.proxy.registry().count_user(user.as_bytes()) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lab.proxy.registry().count_user(user.as_bytes()), 1);
    assert!(!login.is_finished(), "the login waits for the backend");
    let restarted = tokio::task::spawn_blocking(move || testkit::DovecotBackend::start_with(opts))
        .await
        .unwrap()
        .expect("backend restarts on the same address and port");
    let (mut c, got) = tokio::time::timeout(Duration::from_secs(60), login)
        .await
        .expect("login finishes once the backend is back")
        .unwrap();
    assert_eq!(
        got,
        home.to_string(),
        "the login reached the user's own backend"
    );
    c.send("z LOGOUT\r\n").await;
    lab.backends[idx] = restarted;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_keep_the_assignment_alive() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["director_user_expire = 10 s".into()],
        ..LabOptions::default()
    })
    .await;
    let addr = lab.addr(lab.imap_port);
    let user = "sticky@example.com";
    let (mut s, _) = raw_imap_login(addr, user, "pass").await;
    let (first, _) = lab.lookup(user).await;
    let (_, first) = first.expect("assigned at login");
    // Past the expiry: the driver refreshes users with open sessions every E/2 = 5 s.
    for _ in 0..2 {
        assert!(lab.director.advance_clock(Duration::from_secs(6)));
    }
    let (later, _) = lab.lookup(user).await;
    let (_, expire) = later.expect("assignment still there while the session is open");
    assert!(expire > first, "expiry moved forward: {first} -> {expire}");
    s.send("z LOGOUT\r\n").await;
    assert!(s.closed().await);
}

async fn backend_tls_login(mode: &str) {
    let mut opts = LabOptions {
        backend_tls: true,
        ..LabOptions::default()
    };
    if mode == "yes" {
        opts.backend_implicit_tls = true;
    } else {
        opts.proxy_extra
            .push(format!("director_backend_ssl = {mode}"));
    }
    let lab = Lab::start(opts).await;
    let user = "secure@example.com";
    let (_s, ip) = raw_imap_login(lab.addr(lab.imap_port), user, "pass").await;
    assert_eq!(ip, lab.expected_backend(user).await.to_string());
    let log = lab
        .log_with(
            ip.parse().unwrap(),
            "imap-login: Info: Login: user=<secure@example.com>",
        )
        .await;
    assert!(
        log.lines().any(
            |l| l.contains("imap-login: Info: Login: user=<secure@example.com>")
                && l.contains("TLS")
        ),
        "backend saw a TLS login:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_starttls_is_verified_and_used() {
    init_tracing();
    backend_tls_login("starttls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_implicit_tls_is_verified_and_used() {
    init_tracing();
    backend_tls_login("yes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_with_an_untrusted_certificate_is_a_temporary_failure() {
    init_tracing();
    // Trust a different CA than the one that signed the backends' certificates.
    let other_ca = common::make_ca().1;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, other_ca).unwrap();
    let lab = Lab::start(LabOptions {
        backend_tls: true,
        proxy_extra: vec![
            "director_backend_ssl = starttls".into(),
            format!("ssl_client_ca_file = <{}", ca.display()),
        ],
        ..LabOptions::default()
    })
    .await;
    let mut c = Raw::connect(lab.addr(lab.imap_port)).await;
    c.until("* OK").await;
    c.send("a LOGIN someone@example.com pass\r\n").await;
    let r = c.until("a ").await;
    assert_eq!(
        r.last().unwrap(),
        "a NO [UNAVAILABLE] Account is temporarily unavailable."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_waits_30_s_gets_a_temporary_failure() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["director_user_kick_delay = 1 hour".into()],
        ..LabOptions::default()
    })
    .await;
    for user in ["waiting@example.com", "waiting2@example.com"] {
        let expected = lab.expected_backend(user).await;
        let elsewhere = lab
            .backends
            .iter()
            .map(|b| IpAddr::V4(b.ip()))
            .find(|ip| *ip != expected)
            .unwrap();
        assert_eq!(lab.user_move(user, elsewhere).await, "OK\n");
    }
    // Logins of a user being moved wait for the move (§6); with a kick delay of an hour the
    // move outlasts the 30 s request timeout, and the client gets the protocol's temporary
    // failure then.
    let mut imap = Raw::connect(lab.addr(lab.imap_port)).await;
    imap.until("* OK").await;
    imap.send("a LOGIN waiting@example.com pass\r\n").await;
    let mut pop = Raw::connect(lab.addr(lab.pop3_port)).await;
    pop.line().await.unwrap();
    pop.send("USER waiting2@example.com\r\nPASS pass\r\n").await;
    // Both logins wait in the core; 31 s later their requests have timed out.
    for _ in 0..1000 {
        if lab.director.waiting_logins() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        lab.director.waiting_logins(),
        2,
        "both logins wait for the moves"
    );
    assert!(lab.director.advance_clock(Duration::from_secs(31)));
    let r = imap.until("a ").await;
    assert_eq!(
        r.last().unwrap(),
        "a NO [UNAVAILABLE] Account is temporarily unavailable."
    );
    let mut last = String::new();
    while let Some(l) = pop.line().await {
        last = l;
        if last.starts_with("-ERR") {
            break;
        }
    }
    assert!(last.starts_with("-ERR [SYS/TEMP]"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_sasl_ir_and_master_users_route_by_the_real_user() {
    use base64::Engine;
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["auth_master_user_separator = *".into()],
        ..LabOptions::default()
    })
    .await;
    let addr = lab.addr(lab.imap_port);
    let user = "literal@example.com";
    let expected = lab.expected_backend(user).await.to_string();
    // LOGIN with a synchronising and a non-synchronising literal.
    let mut c = Raw::connect(addr).await;
    c.until("* OK").await;
    c.send(&format!("a LOGIN {{{}}}\r\n", user.len())).await;
    assert!(c.line().await.unwrap().starts_with('+'));
    c.send(&format!("{user} {{4+}}\r\npass\r\n")).await;
    let r = c.until("a ").await;
    assert!(r.last().unwrap().starts_with("a OK"), "{r:?}");
    c.send("b ID NIL\r\n").await;
    let r = c.until("b ").await;
    assert!(r.iter().any(|l| l.contains(&expected)), "{r:?}");
    // AUTHENTICATE PLAIN with SASL-IR.
    let mut c = Raw::connect(addr).await;
    c.until("* OK").await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pass"));
    c.send(&format!("a AUTHENTICATE PLAIN {b64}\r\n")).await;
    let r = c.until("a ").await;
    assert!(r.last().unwrap().starts_with("a OK"), "{r:?}");
    // A master-user login routes by the part before the separator: the backend refuses
    // it (no master passdb there), but the attempt went to the user's backend.
    let mut c = Raw::connect(addr).await;
    c.until("* OK").await;
    c.send(&format!("a LOGIN {user}*admin pass\r\n")).await;
    let r = c.until("a ").await;
    assert!(r.last().unwrap().starts_with("a NO"), "{r:?}");
    // Dovecot's log process writes asynchronously: poll (bounded) for the line.
    let backend = lab.backend_by_ip(expected.parse().unwrap());
    let mut log = String::new();
    for _ in 0..100 {
        log = backend.log();
        if log.contains("literal@example.com*admin") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.contains("literal@example.com*admin"),
        "master-user attempt reached {expected}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failing_mid_session_gives_a_clear_temporary_error() {
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(IpAddr, BackendFailureKind)>>);
    impl BackendFailureHook for Recorder {
        fn backend_failed(&self, ip: IpAddr, _u: &[u8], kind: BackendFailureKind, _d: &str) {
            self.0.lock().unwrap().push((ip, kind));
        }
    }
    init_tracing();
    let rec = Arc::new(Recorder::default());
    let lab = Lab::start(LabOptions {
        hook: Some(rec.clone()),
        ..LabOptions::default()
    })
    .await;
    let user = "crashy@example.com";
    let (mut c, ip) = raw_imap_login(lab.addr(lab.imap_port), user, "pass").await;
    let ip: IpAddr = ip.parse().unwrap();
    // The backend's imap process for this session (mpid= in its login line). It is a child
    // of the backend master this test started.
    let log = lab.log_with(ip, &format!("Login: user=<{user}>")).await;
    let mpid: i32 = log
        .lines()
        .find(|l| l.contains(&format!("Login: user=<{user}>")))
        .and_then(|l| l.split("mpid=").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mpid in {log}"));
    let pid = nix::unistd::Pid::from_raw(mpid);
    // Freeze it, leave a command unread in its socket, then kill it: the kernel resets the
    // connection (unread data), which is a failure, not a clean close.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    c.send("n NOOP\r\n").await;
    // Wait until the NOOP sits unread in the frozen backend's socket.
    let backend_port = lab.backend_by_ip(ip).imap_addr().port();
    let mut unread = false;
    for _ in 0..500 {
        if unread_bytes_at(ip, backend_port) {
            unread = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(unread, "the NOOP reached the backend's socket");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let mut lines = Vec::new();
    while let Some(l) = c.line().await {
        lines.push(l);
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("* BYE [UNAVAILABLE] Lost connection to the mail server."),
        "{lines:?}"
    );
    assert_eq!(
        rec.0.lock().unwrap().clone(),
        vec![(ip, BackendFailureKind::MidSession)]
    );
}
