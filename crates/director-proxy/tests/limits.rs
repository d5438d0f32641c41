//! Bad input and limits: garbage, over-long lines, slowloris, truncated TLS, connection
//! floods, plaintext refusal, PROXY v2 to backends and the SIGTERM drain. Other users'
//! sessions must stay untouched throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{init_tracing, raw_imap_login, run_python, Lab, LabOptions, Raw};

async fn noop_ok(c: &mut Raw) {
    c.send("n NOOP\r\n").await;
    let r = c.until("n ").await;
    assert!(r.last().unwrap().starts_with("n OK"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_long_lines_slowloris_and_truncated_tls_are_closed() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["director_proxy_login_timeout = 3 s".into()],
        ..LabOptions::default()
    })
    .await;
    let addr = lab.addr(lab.imap_port);
    let (mut bystander, _) = raw_imap_login(addr, "calm@example.com", "pass").await;

    // Garbage: three bad commands, then BYE and close.
    let mut g = Raw::connect(addr).await;
    g.until("* OK").await;
    g.send_bytes(b"\x00\x01\x02 garbage\r\n\xff\xfe junk\r\n)))(((\r\n")
        .await
        .unwrap();
    let mut lines = Vec::new();
    while let Some(l) = g.line().await {
        lines.push(l);
    }
    assert!(lines.iter().any(|l| l.contains("BAD")), "{lines:?}");
    assert!(lines.last().unwrap().starts_with("* BYE"), "{lines:?}");

    // An over-long line: refused and closed, never buffered without bound.
    let mut long = Raw::connect(addr).await;
    long.until("* OK").await;
    let big = vec![b'a'; 256 * 1024];
    let _ = long.send_bytes(&big).await;
    let mut lines = Vec::new();
    while let Some(l) = long.line().await {
        lines.push(l);
    }
    assert!(lines.iter().any(|l| l.starts_with("* BYE")), "{lines:?}");

    // Slowloris: a partial command, then nothing: the login timeout closes it.
    let mut slow = Raw::connect(addr).await;
    slow.until("* OK").await;
    slow.send("a LOGIN slow").await;
    assert!(
        slow.closed().await,
        "slowloris connection closed by the login timeout"
    );

    // Truncated TLS on the implicit-TLS port: a partial ClientHello, then silence.
    let mut t = Raw::connect(lab.addr(lab.imaps_port)).await;
    t.send_bytes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert!(t.closed().await, "truncated TLS handshake closed");
    // Not TLS at all on the TLS port.
    let mut t2 = Raw::connect(lab.addr(lab.imaps_port)).await;
    t2.send("a LOGIN x y\r\n").await;
    assert!(t2.closed().await, "plaintext on the TLS port closed");

    noop_ok(&mut bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_hit_the_per_ip_limit() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["director_proxy_max_connections_per_ip = 4".into()],
        ..LabOptions::default()
    })
    .await;
    let addr = lab.addr(lab.imap_port);
    let (mut s, _) = raw_imap_login(addr, "flood@example.com", "pass").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(addr).await;
        c.until("* OK").await;
        held.push(c);
    }
    // The fifth connection from 127.0.0.1 is refused with a BYE.
    let mut over = Raw::connect(addr).await;
    let l = over.line().await.unwrap();
    assert_eq!(l, "* BYE Too many connections from your IP");
    assert!(over.closed().await);
    noop_ok(&mut s).await;
    drop(held);
    // Room again once they are gone. The proxy frees a slot when it sees the close, so
    // poll (bounded) instead of assuming how fast that is.
    let mut admitted = false;
    for _ in 0..200 {
        let mut c = Raw::connect(addr).await;
        let greeting = c.line().await.unwrap_or_default();
        if greeting.starts_with("* OK") {
            admitted = true;
            break;
        }
        assert_eq!(greeting, "* BYE Too many connections from your IP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "room again after the held connections closed");
    let (_again, _) = raw_imap_login(addr, "flood2@example.com", "pass").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_hit_the_total_limit_on_every_listener() {
    init_tracing();
    // The per-IP limit stays at its default (100): only the total limit can refuse here.
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["director_proxy_max_connections = 4".into()],
        ..LabOptions::default()
    })
    .await;
    let imap = lab.addr(lab.imap_port);
    let pop3 = lab.addr(lab.pop3_port);
    // One proxied session and three connections still before login, spread over two
    // listeners: the limit counts client connections of the whole proxy.
    let (mut s, _) = raw_imap_login(imap, "total@example.com", "pass").await;
    let mut held = Vec::new();
    for addr in [imap, pop3, pop3] {
        let mut c = Raw::connect(addr).await;
        let greeting = c.line().await.unwrap();
        assert!(
            greeting.starts_with("* OK") || greeting.starts_with("+OK"),
            "{greeting}"
        );
        held.push(c);
    }
    // The fifth connection is refused on every listener with the protocol's own "later".
    let mut over = Raw::connect(imap).await;
    assert_eq!(over.line().await.unwrap(), "* BYE Too many connections");
    assert!(over.closed().await);
    let mut over = Raw::connect(pop3).await;
    assert_eq!(
        over.line().await.unwrap(),
        "-ERR [SYS/TEMP] Too many connections"
    );
    assert!(over.closed().await);
    let mut over = Raw::connect(lab.addr(lab.lmtp_port)).await;
    assert_eq!(over.line().await.unwrap(), "421 4.7.0 Too many connections");
    assert!(over.closed().await);
    // The proxied session is untouched by the flood.
    noop_ok(&mut s).await;

    // Room again once the held connections are gone. The proxy frees a slot when it sees
    // the close, so poll (bounded) instead of assuming how fast that is.
    drop(held);
    let mut admitted = None;
    for _ in 0..200 {
        let mut c = Raw::connect(imap).await;
        let greeting = c.line().await.unwrap_or_default();
        if greeting.starts_with("* OK") {
            admitted = Some(c);
            break;
        }
        assert_eq!(greeting, "* BYE Too many connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = admitted.expect("a slot is free again after the held connections closed");
    c.send("a LOGIN total2@example.com pass\r\n").await;
    let r = c.until("a ").await;
    assert!(r.last().unwrap().starts_with("a OK"), "{r:?}");
    noop_ok(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_login_is_refused_before_tls() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["disable_plaintext_auth = yes".into()],
        ..LabOptions::default()
    })
    .await;
    // The client comes from 127.0.0.1, the proxy listens on another address: not secured.
    let mut c = Raw::connect(lab.addr(lab.imap_port)).await;
    let greeting = c.line().await.unwrap();
    assert!(
        greeting.contains("LOGINDISABLED") && greeting.contains("STARTTLS"),
        "{greeting}"
    );
    c.send("a LOGIN user@example.com pass\r\n").await;
    let r = c.until("a ").await;
    assert!(
        r.last().unwrap().starts_with("a NO [PRIVACYREQUIRED]"),
        "{r:?}"
    );
    // With STARTTLS the same login works (imaplib).
    let out = run_python(vec![
        "--tls".to_string(),
        "starttls".into(),
        lab.ca_file.display().to_string(),
        "imap".into(),
        lab.proxy_ip.to_string(),
        lab.imap_port.to_string(),
        "pass".into(),
        "user@example.com".into(),
    ])
    .await;
    assert!(out[0].contains("\tOK\t"), "{out:?}");
    // POP3 too.
    let mut p = Raw::connect(lab.addr(lab.pop3_port)).await;
    p.line().await.unwrap();
    p.send("USER user@example.com\r\n").await;
    let l = p.line().await.unwrap();
    assert!(l.starts_with("-ERR"), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_tells_the_backend_the_client_address() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        backend_haproxy: true,
        proxy_extra: vec!["director_proxy_protocol = yes".into()],
        ..LabOptions::default()
    })
    .await;
    let user = "haproxied@example.com";
    let (_s, ip) = raw_imap_login(lab.addr(lab.imap_port), user, "pass").await;
    assert_eq!(ip, lab.expected_backend(user).await.to_string());
    let log = lab
        .log_with(ip.parse().unwrap(), "Login: user=<haproxied@example.com>")
        .await;
    let line = log
        .lines()
        .find(|l| l.contains("Login: user=<haproxied@example.com>"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("rip=127.0.0.1"), "{line}");
    assert!(
        line.contains(&format!("lip={}", lab.proxy_ip)),
        "PROXY header carries our address: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_drains() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let addr = lab.addr(lab.imap_port);
    let (mut s, _) = raw_imap_login(addr, "drain@example.com", "pass").await;
    let mut pre = Raw::connect(addr).await;
    pre.until("* OK").await;
    let Lab {
        proxy,
        backends,
        dir,
        ..
    } = lab;
    let task = tokio::spawn(proxy.shutdown(Some(Duration::from_secs(3))));
    // The pre-login connection is told to go away.
    let l = pre.line().await;
    assert_eq!(l.as_deref(), Some("* BYE Server shutting down."));
    // The listener is gone (the BYE above may come first: poll, bounded).
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "no longer accepting");
    // The proxied session keeps working during the drain...
    noop_ok(&mut s).await;
    // ...and is closed when the drain time is over.
    task.await.unwrap();
    assert!(s.closed().await);
    drop((backends, dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_and_lmtp_bad_input_gets_an_error_or_a_close() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let (mut bystander, _) =
        raw_imap_login(lab.addr(lab.imap_port), "steady@example.com", "pass").await;

    // POP3: unknown commands get -ERR; an over-long line ends the connection.
    let mut p = Raw::connect(lab.addr(lab.pop3_port)).await;
    assert!(p.line().await.unwrap().starts_with("+OK"));
    p.send("BOGUS\r\n").await;
    assert!(p.line().await.unwrap().starts_with("-ERR"));
    let _ = p.send_bytes(&vec![b'x'; 64 * 1024]).await;
    let mut lines = Vec::new();
    while let Some(l) = p.line().await {
        lines.push(l);
    }
    assert!(lines.iter().any(|l| l.starts_with("-ERR")), "{lines:?}");

    // LMTP: commands out of order and garbage get 5xx replies; an over-long line closes
    // or is refused; the session never hangs.
    let mut l = Raw::connect(lab.addr(lab.lmtp_port)).await;
    assert!(l.line().await.unwrap().starts_with("220"));
    l.send("RCPT TO:<x@example.com>\r\n").await;
    let r = l.line().await.unwrap();
    assert!(r.starts_with('5'), "RCPT before MAIL: {r}");
    l.send("\x01\x02garbage\r\n").await;
    let r = l.line().await.unwrap();
    assert!(r.starts_with('5'), "garbage: {r}");
    let _ = l.send_bytes(&vec![b'y'; 64 * 1024]).await;
    let _ = l.send_bytes(b"\r\n").await;
    let r = l.line().await;
    assert!(
        !matches!(r.as_deref(), Some(x) if !x.starts_with('5')),
        "{r:?}"
    );

    noop_ok(&mut bystander).await;
}
