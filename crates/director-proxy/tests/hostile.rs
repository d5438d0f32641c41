//! What a stranger can make the proxy do, each shown against the real proxy with real
//! Dovecot backends: made-up names cost no assignment, names with NUL never reach the core,
//! and a backend that trickles its login cannot hold a login past `login_proxy_timeout`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{init_tracing, raw_imap_login, Lab, LabOptions, Raw};
use director_proto::admin::{AdminRequest, UserRef};
use tokio::io::AsyncWriteExt;

/// A backend of the test's own: a listener on a new loopback address at the backends' IMAP
/// port, added as a host, with `user` moved to it.
async fn fake_host(lab: &Lab, user: &str) -> tokio::net::TcpListener {
    fake_host_on(lab, user, lab.backends[0].imap_addr().port()).await
}

/// [`fake_host`] on the backends' `port`.
async fn fake_host_on(lab: &Lab, user: &str, port: u16) -> tokio::net::TcpListener {
    let ip = testkit::LoopbackAllocator::new().next_ip();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip.into(), port))
        .await
        .expect("bind the test's backend");
    let ip = IpAddr::V4(ip);
    let set = AdminRequest::HostSet {
        ip,
        tag: String::new(),
        vhost_count: None,
    };
    assert_eq!(lab.admin(set).await, "OK\n");
    let moved = AdminRequest::UserMove {
        user: UserRef::Name(user.as_bytes().to_vec()),
        ip,
    };
    assert_eq!(lab.admin(moved).await, "OK\n");
    listener
}

async fn user_count(lab: &Lab) -> usize {
    let list = lab.admin(AdminRequest::UserList { ip: None }).await;
    list.lines().filter(|l| !l.is_empty()).count()
}

/// Guessing names with wrong passwords used to leave one assignment per name. Now a login
/// that the backend refuses takes back the assignment it created; a user that logs in keeps
/// theirs, and so does a real user whose password was mistyped once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_of_made_up_names_leave_no_assignment() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["auth_failure_delay = 0".into()],
        ..LabOptions::default()
    })
    .await;
    let imap = lab.addr(lab.imap_port);
    let pop3 = lab.addr(lab.pop3_port);
    // Each guess from its own client address, all at once: the backends delay failures per
    // address, and the point is the count of names, not the backends' patience.
    let mut clients = testkit::LoopbackAllocator::new();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..24 {
        let from = IpAddr::V4(clients.next_ip());
        guesses.spawn(async move {
            if i % 4 == 3 {
                let mut c = Raw::connect_from(pop3, from).await;
                c.line().await.unwrap();
                c.send(&format!("USER pop{i}@example.com\r\nPASS wrong\r\n"))
                    .await;
                let mut last = String::new();
                while let Some(l) = c.line().await {
                    last = l;
                    if last.starts_with("-ERR") {
                        break;
                    }
                }
                assert!(last.starts_with("-ERR"), "{last}");
            } else {
                let mut c = Raw::connect_from(imap, from).await;
                c.until("* OK").await;
                c.send(&format!("a LOGIN guess{i}@example.com wrong\r\n"))
                    .await;
                let r = c.until("a ").await;
                assert!(r.last().unwrap().starts_with("a NO"), "{r:?}");
            }
        });
    }
    while let Some(done) = guesses.join_next().await {
        done.unwrap();
    }
    assert_eq!(user_count(&lab).await, 0, "no assignment for refused names");

    let (_s, _) = raw_imap_login(imap, "real@example.com", "pass").await;
    assert_eq!(user_count(&lab).await, 1);
    // A wrong password of a user who already has an assignment does not take it away.
    let mut c = Raw::connect(imap).await;
    c.until("* OK").await;
    c.send("a LOGIN real@example.com wrong\r\n").await;
    assert!(c.until("a ").await.last().unwrap().starts_with("a NO"));
    assert_eq!(user_count(&lab).await, 1);
}

/// A user name with NUL is refused before routing, through LOGIN, SASL LOGIN and SASL PLAIN's
/// authorization identity alike: the client gets the authentication failure and the core
/// never sees the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_nul_are_refused_before_routing() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["auth_failure_delay = 0".into()],
        ..LabOptions::default()
    })
    .await;
    let imap = lab.addr(lab.imap_port);
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);

    // SASL LOGIN: the user name is base64, so it can carry any byte.
    let mut c = Raw::connect(imap).await;
    c.until("* OK").await;
    c.send("a AUTHENTICATE LOGIN\r\n").await;
    assert!(c.line().await.unwrap().starts_with('+'));
    c.send(&format!("{}\r\n", b64(b"victim@example.com\0x")))
        .await;
    assert!(c.line().await.unwrap().starts_with('+'));
    c.send(&format!("{}\r\n", b64(b"pass"))).await;
    let r = c.until("a ").await;
    assert_eq!(
        r.last().unwrap(),
        "a NO [AUTHENTICATIONFAILED] Authentication failed."
    );

    // SASL PLAIN with an authorization identity (the name that is routed) holding a NUL is
    // malformed PLAIN already; an authentication identity with a NUL cannot be expressed.
    let mut c = Raw::connect(imap).await;
    c.until("* OK").await;
    c.send(&format!(
        "b AUTHENTICATE PLAIN {}\r\n",
        b64(b"victim@example.com\0\0x\0pass")
    ))
    .await;
    let r = c.until("b ").await;
    assert!(r.last().unwrap().starts_with("b NO"), "{r:?}");

    let lookup = lab.lookup("victim@example.com").await;
    assert_eq!(lookup.0, None, "no assignment for the name");
    assert_eq!(user_count(&lab).await, 0);
}

/// A backend that accepts the connection and then trickles its greeting one byte at a time
/// used to hold the login (and the client's connection slot) for minutes. The whole backend
/// login now has one deadline, `login_proxy_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_trickles_its_login_is_given_up_after_login_proxy_timeout() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["login_proxy_timeout = 2 s".into()],
        ..LabOptions::default()
    })
    .await;
    let listener = fake_host(&lab, "slow@example.com").await;
    let trickler = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // One byte every 200 ms of a greeting that never ends, until the proxy gives up
        // (bounded: 60 s of bytes at most).
        for b in b"* OK trickling".iter().cycle().take(300) {
            if s.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    let mut c = Raw::connect(lab.addr(lab.imap_port)).await;
    c.until("* OK").await;
    let started = Instant::now();
    c.send("a LOGIN slow@example.com pass\r\n").await;
    let r = c.until("a ").await;
    let waited = started.elapsed();
    assert_eq!(
        r.last().unwrap(),
        "a NO [UNAVAILABLE] Account is temporarily unavailable."
    );
    assert!(
        waited < Duration::from_secs(20),
        "the login ended at the deadline, not when the backend stopped ({waited:?})"
    );
    assert!(
        trickler.await.unwrap(),
        "the proxy closed the backend connection"
    );
}

/// Answers the proxy's login replay (`I ID …`, `L LOGIN …`) with `OK`, as a backend that
/// accepts any password; returns once the login is answered.
async fn accept_login(s: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncBufReadExt;
    s.write_all(b"* OK [CAPABILITY IMAP4rev1 ID] test backend ready\r\n")
        .await
        .unwrap();
    let mut reader = tokio::io::BufReader::new(s);
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).await.unwrap() > 0,
            "login replay"
        );
        let tag = line.split(' ').next().unwrap().to_string();
        let login = line[tag.len()..].trim_start().to_ascii_uppercase();
        let s = reader.get_mut();
        s.write_all(format!("{tag} OK done\r\n").as_bytes())
            .await
            .unwrap();
        if login.starts_with("LOGIN") || login.starts_with("AUTHENTICATE") {
            assert!(
                reader.buffer().is_empty(),
                "nothing pipelined after the login"
            );
            return;
        }
    }
}

/// A client that stops reading a large response (say a `FETCH` of big mails) used to stop
/// its own traffic to the backend as well: the splice waited to write to the client before it
/// read anything more from it. Each direction now runs on its own, and once a burst is over
/// its buffer is small again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_still_reaches_the_backend() {
    use tokio::io::AsyncReadExt;
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    // More than the socket buffers on the way can hold, in each direction.
    const BYTES: usize = 32 << 20;
    let listener = fake_host(&lab, "bulk@example.com").await;
    let (up_done, up_received) = tokio::sync::oneshot::channel::<usize>();
    let backend = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        accept_login(&mut s).await;
        let (mut rd, mut wr) = s.into_split();
        let flood = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..BYTES / chunk.len() {
                wr.write_all(&chunk).await.unwrap();
            }
            wr
        });
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < BYTES {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed the backend connection");
            got += n;
        }
        up_done.send(got).unwrap();
        // Keep the connection until the client has read the flood.
        let wr = flood.await.unwrap();
        (rd, wr)
    });

    let mut c = tokio::net::TcpStream::connect(lab.addr(lab.imap_port))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&seen).contains("a OK") {
        if seen.is_empty() {
            // The greeting first, then the login.
            let n = c.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
            c.write_all(b"a LOGIN bulk@example.com secret\r\n")
                .await
                .unwrap();
            continue;
        }
        let n = c.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed during login: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let login_end = String::from_utf8_lossy(&seen).find("a OK").unwrap();
    let early_flood = seen[login_end..].iter().filter(|&&b| b == b'x').count();
    let (mut rd, mut wr) = c.into_split();
    // The client writes its bulk while reading nothing of the backend's.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..BYTES / chunk.len() {
            wr.write_all(&chunk).await.unwrap();
        }
        wr
    });
    let got = tokio::time::timeout(Duration::from_secs(60), up_received)
        .await
        .expect("the client's bytes reached the backend while the client read nothing")
        .unwrap();
    assert_eq!(got, BYTES);
    let _wr = writer.await.unwrap();
    let budget = lab.proxy.buffer_budget();
    assert!(
        budget.peak() > 0,
        "the bulk directions grew their buffers from the budget"
    );

    // Now the client reads the flood; afterwards both directions are idle.
    let mut flood = early_flood;
    while flood < BYTES {
        let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf))
            .await
            .expect("the flood keeps coming")
            .unwrap();
        assert!(n > 0, "the proxy closed the client connection");
        flood += buf[..n].iter().filter(|&&b| b == b'x').count();
    }
    let _backend = backend.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while budget.used() != 0 {
        assert!(
            Instant::now() < deadline,
            "an idle session gives its buffers back ({} bytes still taken)",
            budget.used()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client that left while its backend login ran used to leave the login going until
/// `login_proxy_timeout` (30 s here), holding the backend connection and the client's slot.
/// The proxy watches the client meanwhile, and its leaving ends the login at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_the_backend_login_ends_it_at_once() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let listener = fake_host(&lab, "gone@example.com").await;
    let (login_seen, login_arrived) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"* OK [CAPABILITY IMAP4rev1 ID] silent backend\r\n")
            .await
            .unwrap();
        let mut reader = tokio::io::BufReader::new(s);
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).await.unwrap() > 0);
            if line.contains("LOGIN") {
                break;
            }
        }
        login_seen.send(()).unwrap();
        // Never answer; wait for the proxy to close.
        let seen = Instant::now();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest).await;
        seen.elapsed()
    });
    let mut c = Raw::connect(lab.addr(lab.imap_port)).await;
    c.until("* OK").await;
    c.send("a LOGIN gone@example.com secret\r\n").await;
    login_arrived.await.unwrap();
    drop(c);
    let held = tokio::time::timeout(Duration::from_secs(25), backend)
        .await
        .expect("the proxy closed the backend connection before login_proxy_timeout")
        .unwrap();
    assert!(
        held < Duration::from_secs(10),
        "the backend login ended when the client left, not at the deadline ({held:?})"
    );
}

/// LMTP recipients made up by a stranger used to leave one assignment each, even when the
/// backend refused them: 200,000 made-up names in one second added 200,000 users. A
/// recipient whose new assignment only a refusal used is dropped again; a real recipient in
/// the same transaction keeps theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_recipients_the_backend_refuses_leave_no_assignment() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        backend_users: Some(vec!["real@example.com".into()]),
        ..LabOptions::default()
    })
    .await;
    let mut c = Raw::connect(lab.addr(lab.lmtp_port)).await;
    c.until("220 ").await;
    let ghosts: Vec<String> = (0..20).map(|i| format!("ghost{i}@example.com")).collect();
    let mut envelope = "LHLO mta\r\nMAIL FROM:<s@example.com>\r\n".to_string();
    for r in ghosts
        .iter()
        .chain(std::iter::once(&"real@example.com".to_string()))
    {
        envelope.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    envelope.push_str("DATA\r\n");
    c.send(&envelope).await;
    c.until("354 ").await;
    c.send("Subject: hi\r\n\r\nbody\r\n.\r\n").await;
    let mut finals = Vec::new();
    while finals.len() < ghosts.len() + 1 {
        let l = c.line().await.expect("a final reply per recipient");
        if l.starts_with("250 2.0.0 <") || l.starts_with("550 ") {
            finals.push(l);
        }
    }
    for (reply, ghost) in finals.iter().zip(&ghosts) {
        assert!(
            reply.starts_with("550 5.1.1 <") && reply.contains(ghost.as_str()),
            "{reply}"
        );
    }
    assert!(finals[ghosts.len()].starts_with("250 2.0.0 <real@example.com>"));
    for ghost in &ghosts {
        assert_eq!(lab.lookup(ghost).await.0, None, "no assignment for {ghost}");
    }
    assert!(lab.lookup("real@example.com").await.0.is_some());
    assert_eq!(user_count(&lab).await, 1);
}

/// An LMTP envelope beyond its small fixed share comes from the buffer budget: with the
/// budget spent, further recipients get a temporary failure (the MTA sends them again in
/// another transaction) instead of growing the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_recipients_beyond_the_budget_are_deferred() {
    init_tracing();
    let lab = Lab::start(LabOptions {
        proxy_extra: vec!["director_proxy_buffer_memory = 0".into()],
        ..LabOptions::default()
    })
    .await;
    let mut c = Raw::connect(lab.addr(lab.lmtp_port)).await;
    c.until("220 ").await;
    c.send("LHLO mta\r\nMAIL FROM:<s@example.com>\r\n").await;
    c.until("250 2.1.0").await;
    // Long, but short enough for the backend's maildir directory names.
    let long = "l".repeat(200);
    let mut replies = Vec::new();
    for i in 0..150 {
        c.send(&format!("RCPT TO:<{long}{i}@example.com>\r\n"))
            .await;
        replies.push(c.line().await.expect("a RCPT reply"));
    }
    let accepted = replies.iter().take_while(|r| r.starts_with("250 ")).count();
    assert!(
        (30..100).contains(&accepted),
        "about 16 KiB of recipients accepted, then deferred: {accepted}"
    );
    assert!(
        replies[accepted..]
            .iter()
            .all(|r| r.starts_with("451 4.3.0 <")),
        "{:?}",
        &replies[accepted..]
    );
    // The accepted ones are delivered as usual.
    c.send("DATA\r\n").await;
    c.until("354 ").await;
    c.send("Subject: hi\r\n\r\nbody\r\n.\r\n").await;
    for _ in 0..accepted {
        let l = c.line().await.expect("final reply");
        assert!(l.starts_with("250 2.0.0 <"), "{l}");
    }
}

/// An MTA that leaves while the backends deliver its message ends the delivery at once: the
/// proxy watches the client while it waits for the final replies, as it does during a
/// backend login, instead of holding the backend connection until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lmtp_client_that_leaves_during_the_delivery_ends_it_at_once() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let listener = fake_host_on(
        &lab,
        "slowrcpt@example.com",
        lab.backends[0].lmtp_addr().port(),
    )
    .await;
    let (body_seen, body_arrived) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut r = tokio::io::BufReader::new(s);
        r.get_mut().write_all(b"220 slow LMTP\r\n").await.unwrap();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).await.unwrap() > 0,
                "the proxy left first"
            );
            let reply: &[u8] = match line.trim_end() {
                "." if in_data => break,
                _ if in_data => continue,
                l if l.starts_with("LHLO") => b"250-slow\r\n250 PIPELINING\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go\r\n"
                }
                _ => b"250 OK\r\n",
            };
            r.get_mut().write_all(reply).await.unwrap();
        }
        body_seen.send(()).unwrap();
        // The message is in; the final reply never comes. Wait for the proxy to close.
        let seen = Instant::now();
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest).await;
        seen.elapsed()
    });
    let mut c = Raw::connect(lab.addr(lab.lmtp_port)).await;
    c.until("220 ").await;
    c.send("LHLO mta\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<slowrcpt@example.com>\r\nDATA\r\n")
        .await;
    c.until("354 ").await;
    c.send("Subject: hi\r\n\r\nbody\r\n.\r\n").await;
    body_arrived.await.unwrap();
    drop(c);
    let held = tokio::time::timeout(Duration::from_secs(25), backend)
        .await
        .expect("the proxy closed the backend connection before its timeout")
        .unwrap();
    assert!(
        held < Duration::from_secs(10),
        "the delivery ended when the client left, not at the timeout ({held:?})"
    );
}
