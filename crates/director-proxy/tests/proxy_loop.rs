//! Proxy loops through other proxies, and the proxy TTL that ends them, against the real
//! proxy and real Dovecot backends. A proxy in `login_trusted_networks` forwards the hops a
//! login may still take (IMAP `ID "x-proxy-ttl"`, POP3 `XCLIENT TTL=`); every hop sends one
//! less, and a login that arrives with one left is refused, as Dovecot's login processes do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{init_tracing, start_director_proxy, Lab, LabOptions, Raw};
use director_proto::admin::AdminRequest;
use director_proxy::{LoginResult, NoBackendHook, Proxy};
use testkit::LoopbackAllocator;

/// Logins a proxy has finished, in all, and those refused.
fn logins(proxy: &Proxy) -> (u64, u64) {
    let all = proxy.metrics().logins();
    let total = all.iter().map(|(_, _, n)| n).sum();
    let refused = all
        .iter()
        .filter(|(_, r, _)| *r == LoginResult::Refused)
        .map(|(_, _, n)| n)
        .sum();
    (total, refused)
}

/// Proxy A (the lab's) whose only host is proxy B, and B, whose only mail server is A: a
/// login or delivery goes round. Each trusts the other (`login_trusted_networks`), so the TTL
/// travels with it. B listens where A expects a mail server: a fresh address, the backends'
/// IMAP and LMTP ports.
async fn proxies_in_a_loop() -> (Lab, Proxy) {
    let lab = Lab::start(LabOptions {
        backends: 1,
        proxy_extra: vec!["login_trusted_networks = 127.0.0.0/8".into()],
        ..LabOptions::default()
    })
    .await;
    let b_ip = LoopbackAllocator::new().next_ip();
    let b_imap = lab.backends[0].imap_addr().port();
    let b_lmtp = lab.backends[0].lmtp_addr().port();
    let conf = lab.dir.path().join("proxy-b.conf");
    std::fs::write(
        &conf,
        format!(
            "director_mail_servers = {a}\n\
             director_backend_port_imap = {a_imap}\n\
             director_backend_port_lmtp = {a_lmtp}\n\
             login_trusted_networks = 127.0.0.0/8\n\
             disable_plaintext_auth = no\n\
             auth_failure_delay = 0\n\
             login_proxy_timeout = 10 s\n\
             service imap-login {{\n inet_listener imap {{\n address = {b_ip}\n port = {b_imap}\n }}\n}}\n\
             service lmtp {{\n inet_listener lmtp {{\n address = {b_ip}\n port = {b_lmtp}\n }}\n}}\n",
            a = lab.proxy_ip,
            a_imap = lab.imap_port,
            a_lmtp = lab.lmtp_port,
        ),
    )
    .unwrap();
    let a_ip = IpAddr::V4(lab.proxy_ip);
    let (_b_director, b) =
        start_director_proxy(&conf, b_ip, &[a_ip], Arc::new(NoBackendHook)).await;
    let set = AdminRequest::HostSet {
        ip: IpAddr::V4(b_ip),
        tag: String::new(),
        vhost_count: None,
    };
    assert_eq!(lab.admin(set).await, "OK\n");
    let remove = AdminRequest::HostRemove {
        ip: IpAddr::V4(lab.backends[0].ip()),
    };
    assert_eq!(lab.admin(remove).await, "OK\n");
    (lab, b)
}

/// Waits (bounded) until neither proxy has a connection open: then every hop has finished
/// and counted its login.
async fn all_hops_closed(a: &Proxy, b: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.open_connections() + b.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the hops' connections stay open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A login goes round A and B: the fifth hop is refused, and the client gets imap-login's
/// reply for a misconfigured remote after five logins in all (A, B, A, B, A), not after a
/// hundred (the per-IP connection limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_through_another_proxy_ends_after_five_hops() {
    init_tracing();
    let (lab, b) = proxies_in_a_loop().await;

    let mut c = Raw::connect(lab.addr(lab.imap_port)).await;
    c.until("* OK").await;
    c.send("a LOGIN loop@example.com pass\r\n").await;
    let reply = tokio::time::timeout(Duration::from_secs(20), c.until("a "))
        .await
        .expect("the login ends");
    assert_eq!(
        reply.last().unwrap(),
        "a NO [SERVERBUG] Account is temporarily unavailable."
    );
    // Once every hop's connection is gone, every hop has counted its login: A three, B two;
    // only the last (A's third) was refused for the TTL.
    c.send("b LOGOUT\r\n").await;
    assert!(c.closed().await);
    all_hops_closed(&lab.proxy, &b).await;
    assert_eq!(logins(&lab.proxy), (3, 1), "A's logins");
    assert_eq!(logins(&b), (2, 0), "B's logins");
}

/// A delivery goes round A and B over LMTP: each hop sends `XCLIENT TTL=` one less, from
/// Dovecot's 5, and the hop that gets TTL 0 refuses the recipient; the MTA gets that reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lmtp_loop_through_another_proxy_ends_with_the_ttl() {
    init_tracing();
    let (lab, b) = proxies_in_a_loop().await;
    let mut c = Raw::connect(lab.addr(lab.lmtp_port)).await;
    c.until("220 ").await;
    c.send("LHLO mta\r\n").await;
    c.until("250 ").await;
    c.send("MAIL FROM:<s@example.com>\r\n").await;
    assert_eq!(c.line().await.unwrap(), "250 2.1.0 OK");
    c.send("RCPT TO:<loop@example.com>\r\n").await;
    assert_eq!(c.line().await.unwrap(), "250 2.1.5 OK");
    c.send("DATA\r\n").await;
    assert_eq!(c.line().await.unwrap(), "354 OK");
    c.send("Subject: loop\r\n\r\nround\r\n.\r\n").await;
    let reply = tokio::time::timeout(Duration::from_secs(20), c.line())
        .await
        .expect("the delivery ends")
        .unwrap();
    assert!(
        reply.starts_with("554 5.4.6") && reply.ends_with("Proxying appears to be looping (TTL=0)"),
        "{reply}"
    );
    c.send("QUIT\r\n").await;
    assert!(c.closed().await);
    all_hops_closed(&lab.proxy, &b).await;
}

/// A trusted client's `x-proxy-ttl` goes on one less to the real Dovecot backend (its
/// `imap_id_log` shows what it got); an untrusted client's is ignored, so the backend gets
/// Dovecot's default of 4; a trusted client with one hop left is refused before any backend
/// is asked, over IMAP, POP3, ManageSieve and Submission alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_clients_ttl_is_decremented_and_an_untrusted_ones_ignored() {
    init_tracing();
    let mut clients = LoopbackAllocator::new();
    let trusted = IpAddr::V4(clients.next_ip());
    let untrusted = IpAddr::V4(clients.next_ip());
    let lab = Lab::start(LabOptions {
        backends: 1,
        proxy_extra: vec![format!("login_trusted_networks = {trusted}/32")],
        backend_extra: vec!["imap_id_log = *".into()],
        ..LabOptions::default()
    })
    .await;
    let imap = lab.addr(lab.imap_port);
    let backend = IpAddr::V4(lab.backends[0].ip());

    let login = |from: IpAddr, user: &'static str, ttl: &'static str| async move {
        let mut c = Raw::connect_from(imap, from).await;
        c.until("* OK").await;
        c.send(&format!("i ID (\"x-proxy-ttl\" \"{ttl}\")\r\n"))
            .await;
        c.until("i ").await;
        c.send(&format!("a LOGIN {user} pass\r\n")).await;
        c.until("a ").await.pop().unwrap()
    };
    assert!(login(trusted, "ttl3@example.com", "3")
        .await
        .starts_with("a OK"));
    let log = lab.log_with(backend, "ttl3@example.com").await;
    let id_line = |log: &str, port_of: IpAddr| {
        log.lines()
            .find(|l| l.contains("ID sent:") && l.contains(&format!("x-originating-ip={port_of}")))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no ID log line for {port_of} in {log}"))
    };
    assert!(id_line(&log, trusted).contains("x-proxy-ttl=2"), "{log}");

    assert!(login(untrusted, "ttl1@example.com", "1")
        .await
        .starts_with("a OK"));
    let log = lab.log_with(backend, "ttl1@example.com").await;
    assert!(id_line(&log, untrusted).contains("x-proxy-ttl=4"), "{log}");

    assert_eq!(
        login(trusted, "looped@example.com", "1").await,
        "a NO [SERVERBUG] Account is temporarily unavailable."
    );
    let mut c = Raw::connect_from(lab.addr(lab.pop3_port), trusted).await;
    assert!(c.line().await.unwrap().starts_with("+OK [XCLIENT] "));
    c.send("XCLIENT TTL=1\r\nUSER looped@example.com\r\nPASS pass\r\n")
        .await;
    assert_eq!(c.line().await.unwrap(), "+OK Updated");
    assert_eq!(c.line().await.unwrap(), "+OK");
    assert_eq!(
        c.line().await.unwrap(),
        "-ERR Account is temporarily unavailable."
    );
    assert_eq!(
        lab.lookup("looped@example.com").await.0,
        None,
        "a refused loop makes no assignment"
    );

    // ManageSieve and Submission take it through XCLIENT too.
    let mut c = Raw::connect_from(lab.addr(lab.sieve_port), trusted).await;
    let greeting = c.until("OK ").await;
    assert!(
        greeting.contains(&"\"XCLIENT\"".to_string()),
        "{greeting:?}"
    );
    c.send("XCLIENT TTL=1\r\nAUTHENTICATE \"PLAIN\" \"AGxvb3BlZEBleGFtcGxlLmNvbQBwYXNz\"\r\n")
        .await;
    assert_eq!(c.line().await.unwrap(), "OK \"Updated\"");
    assert_eq!(
        c.line().await.unwrap(),
        "NO \"Account is temporarily unavailable.\""
    );
    let mut c = Raw::connect_from(lab.addr(lab.submission_port), trusted).await;
    c.until("220 ").await;
    c.send("EHLO up\r\n").await;
    let ehlo = c.until("250 ").await;
    assert!(ehlo.last().unwrap().starts_with("250 XCLIENT "), "{ehlo:?}");
    c.send("XCLIENT TTL=1\r\n").await;
    c.until("220 ").await;
    c.send("EHLO up\r\nAUTH PLAIN AGxvb3BlZEBleGFtcGxlLmNvbQBwYXNz\r\n")
        .await;
    c.until("250 ").await;
    assert_eq!(
        c.line().await.unwrap(),
        "454 4.7.0 Account is temporarily unavailable."
    );

    // An untrusted POP3 client's XCLIENT changes nothing.
    let mut c = Raw::connect_from(lab.addr(lab.pop3_port), untrusted).await;
    assert!(!c.line().await.unwrap().contains("[XCLIENT]"));
    c.send("XCLIENT TTL=1\r\n").await;
    assert_eq!(
        c.line().await.unwrap(),
        "+OK You are not from trusted IP - ignoring"
    );
}
