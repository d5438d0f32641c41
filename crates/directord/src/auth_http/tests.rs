//! The answers, with the real driver (the end-to-end tests with nginx are in
//! `tests/nginx_auth_http.rs`).

use std::net::IpAddr;
use std::sync::Arc;

use director_core::lookup::ConfigHost;
use director_core::CoreSettings;
use director_driver::{
    Clock, DirectorHandle, Directors, DriverConfig, DriverExit, KickFuture, LocalSessions,
    NoLocalSessions, RingView,
};
use director_proto::admin::AdminRequest;
use director_proto::auth_http::RequestReader;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn core(hosts: &[&str]) -> CoreSettings {
    CoreSettings {
        config_hosts: hosts
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

fn start(core: CoreSettings, sessions: Arc<dyn LocalSessions>) -> DirectorHandle {
    director_driver::spawn(DriverConfig {
        core,
        directors: Directors::Standalone(RingView::new(ip("127.0.0.1"), 0)),
        sessions,
        clock: Clock::new(),
        state: None,
    })
    .unwrap()
    .0
}

fn settings() -> AuthHttpSettings {
    AuthHttpSettings {
        listeners: Vec::new(),
        allow_nets: Vec::new(),
        max_connections: 10,
        request_timeout: Duration::from_secs(10),
        login_timeout: Duration::from_secs(5),
        wait_secs: 3,
        ports: BackendPorts {
            imap: 10143,
            pop3: 10110,
            smtp: 10587,
        },
        master_user_separator: "*".into(),
    }
}

fn request(text: &str) -> Request {
    RequestReader::new()
        .feed(text.as_bytes())
        .unwrap()
        .expect("a whole request")
}

fn login(user: &str, protocol: &str) -> Request {
    request(&format!(
        "GET /auth HTTP/1.0\r\nHost: x\r\nAuth-Method: plain\r\nAuth-User: {user}\r\n\
         Auth-Pass: pw\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: 1\r\n\
         Client-IP: 127.0.0.9\r\n\r\n"
    ))
}

async fn ask(req: &Request, director: &DirectorHandle) -> String {
    let peer = PeerName::Tcp("127.0.0.2:1".parse().unwrap());
    String::from_utf8(answer(req, &settings(), director, &peer).await).unwrap()
}

const TRY_LATER: &str =
    "HTTP/1.0 200 OK\r\nAuth-Status: Temporary server problem, try again later\r\nAuth-Wait: 3\r\n";

#[tokio::test]
async fn a_login_gets_the_directors_backend_and_the_protocols_port() {
    let d = start(core(&["127.0.1.1", "127.0.1.2"]), Arc::new(NoLocalSessions));
    let route = d.login(b"user1".to_vec()).await.unwrap().unwrap();
    for (protocol, port) in [("imap", 10143), ("pop3", 10110), ("smtp", 10587)] {
        // The master user is cut as the proxy cuts it; `%2A` is nginx's escape of `*`.
        for user in ["user1", "user1%2Amaster"] {
            assert_eq!(
                ask(&login(user, protocol), &d).await,
                format!(
                    "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: {}\r\nAuth-Port: {port}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n",
                    route.ip
                )
            );
        }
    }
}

#[tokio::test]
async fn a_request_that_is_not_a_login_is_refused_with_its_reason() {
    let d = start(core(&["127.0.1.1"]), Arc::new(NoLocalSessions));
    let cases = [
        (
            login("user1", "lmtp"),
            "unknown Auth-Protocol (imap, pop3 and smtp are routed)",
        ),
        (
            request("GET /auth HTTP/1.0\r\nAuth-Protocol: imap\r\n\r\n"),
            "missing header Auth-User",
        ),
        (
            request("GET /auth HTTP/1.0\r\nAuth-User: u\r\n\r\n"),
            "missing header Auth-Protocol",
        ),
        (
            login("bad%00name", "imap"),
            "the user name cannot be routed",
        ),
        (login("%2Amaster", "imap"), "the user name cannot be routed"),
    ];
    for (req, why) in cases {
        let got = ask(&req, &d).await;
        assert_eq!(
            got,
            format!(
                "HTTP/1.0 200 OK\r\nAuth-Status: {why}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            "no Auth-Wait: nginx closes the client's connection"
        );
    }
}

/// No host is up: the core queues the login; we answer `Auth-Wait` after
/// `director_auth_http_login_timeout` (tokio's paused clock: no real waiting).
#[tokio::test(start_paused = true)]
async fn a_queued_login_gets_a_temporary_failure_after_the_login_timeout() {
    let d = start(core(&[]), Arc::new(NoLocalSessions));
    let started = tokio::time::Instant::now();
    let got = ask(&login("user1", "imap"), &d).await;
    assert!(got.starts_with(TRY_LATER), "{got}");
    assert_eq!(started.elapsed(), settings().login_timeout);
    // After MAX_RETRY_ATTEMPTS nginx is no longer told to retry: it closes the connection.
    let last = request(&format!(
        "GET /auth HTTP/1.0\r\nAuth-User: user1\r\nAuth-Protocol: imap\r\n\
         Auth-Login-Attempt: {MAX_RETRY_ATTEMPTS}\r\n\r\n"
    ));
    assert_eq!(
        ask(&last, &d).await,
        "HTTP/1.0 200 OK\r\nAuth-Status: Temporary server problem, try again later\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let smtp = ask(&login("user1", "smtp"), &d).await;
    assert!(
        smtp.contains("\r\nAuth-Error-Code: 451 4.3.0\r\nAuth-Wait: 3\r\n"),
        "{smtp}"
    );
}

/// Panics in `kick_backend`: a bug while the driver holds the state, which stops it.
struct PanicOnKick;

impl LocalSessions for PanicOnKick {
    fn kick_user_hash(&self, _: u32, _: Option<IpAddr>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user(&self, _: Vec<u8>) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_user_alt(&self, _: String, _: String) -> KickFuture {
        Box::pin(std::future::ready(0))
    }
    fn kick_backend(&self, _: IpAddr) -> usize {
        panic!("a bug while the state is held");
    }
    fn users_with_sessions(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

#[tokio::test]
async fn a_stopped_driver_gets_a_temporary_failure_at_once() {
    let d = start(core(&["127.0.1.1"]), Arc::new(PanicOnKick));
    let crashed = tokio::spawn({
        let d = d.clone();
        async move {
            d.admin(AdminRequest::HostRemove {
                ip: ip("127.0.1.1"),
            })
            .await
        }
    })
    .await;
    assert!(crashed.is_err_and(|e| e.is_panic()));
    assert_eq!(d.stopped().await, DriverExit::Crashed);
    let got = ask(&login("user1", "pop3"), &d).await;
    assert!(got.starts_with(TRY_LATER), "{got}");
}
