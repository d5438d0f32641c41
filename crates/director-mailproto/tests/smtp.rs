//! Submission transcripts recorded from Dovecot 2.3.19's submission-login
//! (tests/data/oracle/).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
use common::*;
use director_mailproto::smtp::xtext;
use director_mailproto::submission::{
    SubmissionBackend, SubmissionBackendConfig, SubmissionLogin, SubmissionLoginConfig,
    SubmissionLoginRequest,
};
use director_mailproto::{Action, BackendAction, BackendFailure, LoginFailure};
use proptest::prelude::*;

const EHLO_F: &str = "250-f.lab.invalid\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250 PIPELINING\r\n";

fn cfg() -> SubmissionLoginConfig {
    SubmissionLoginConfig {
        hostname: "f.lab.invalid".into(),
        greeting: "mp-f ready.".into(),
        disable_plaintext_auth: false,
        ..SubmissionLoginConfig::default()
    }
}

#[test]
fn pre_login_commands_recorded() {
    let mut m = SubmissionLogin::new(cfg(), false, false);
    assert_eq!(sent(&m.start()), "220 f.lab.invalid mp-f ready.\r\n");
    let last = run(
        &mut m,
        &[
            ("EHLO client.example\r\n", EHLO_F),
            ("HELO x\r\n", "250 f.lab.invalid\r\n"),
            ("EHLO\r\n", "501 Missing hostname\r\n"),
            ("HELO\r\n", "501 Missing hostname\r\n"),
            ("NOOP\r\n", "250 2.0.0 OK\r\n"),
            ("RSET\r\n", "250 2.0.0 OK\r\n"),
            ("FOO\r\n", "500 5.5.1 Unknown command\r\n"),
            (
                "MAIL FROM:<a@b>\r\n",
                "530 5.7.0 Authentication required.\r\n",
            ),
            ("STARTTLS\r\n", "502 5.5.1 TLS support is not enabled.\r\n"),
            ("VRFY x\r\n", "530 5.7.0 Authentication required.\r\n"),
            ("QUIT\r\n", "221 2.0.0 Bye\r\n"),
        ],
    );
    assert_eq!(last.last(), Some(&Action::Close));
}

#[test]
fn auth_exchanges_recorded() {
    let mut m = SubmissionLogin::new(cfg(), false, false);
    run(&mut m, &[("EHLO c\r\n", EHLO_F)]);
    let req = login_of(&m.feed(b"AUTH PLAIN AHVzZXIxAHBhc3M=\r\n")).expect("login");
    assert_eq!(req.helo.as_deref(), Some(&b"c"[..]));
    assert_eq!(
        sent(&m.login_failed(LoginFailure::Temporary)),
        "454 4.7.0 Account is temporarily unavailable.\r\n"
    );
    run(
        &mut m,
        &[
            ("AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n"),
            ("dXNlcjE=\r\n", "334 UGFzc3dvcmQ6\r\n"),
        ],
    );
    assert_eq!(
        login_of(&m.feed(b"cGFzcw==\r\n"))
            .expect("login")
            .credentials
            .authcid,
        b"user1"
    );
    m.login_failed(LoginFailure::Relayed);
    run(
        &mut m,
        &[("AUTH LOGIN dXNlcjE=\r\n", "334 UGFzc3dvcmQ6\r\n")],
    );
    assert!(login_of(&m.feed(b"cGFzcw==\r\n")).is_some());
    m.login_failed(LoginFailure::AuthFailed);
    run(
        &mut m,
        &[
            ("AUTH PLAIN\r\n", "334 \r\n"),
            ("*\r\n", "501 5.5.2 Authentication aborted by client.\r\n"),
            (
                "AUTH FOO\r\n",
                "504 5.5.4 Unsupported authentication mechanism.\r\n",
            ),
            (
                "AUTH PLAIN !!!\r\n",
                "501 5.5.2 Invalid base64 data in initial response\r\n",
            ),
            ("AUTH\r\n", "501 5.5.4 Missing SASL mechanism parameter\r\n"),
            ("AUTH PLAIN\r\n", "334 \r\n"),
            ("!!!\r\n", "535 5.7.8 Invalid base64 in response\r\n"),
        ],
    );
    let acts = m.feed(b"AUTH PLAIN AHVzZXIxAHBhc3M=\r\nMAIL FROM:<a@b>\r\n");
    assert!(login_of(&acts).is_some());
    assert_eq!(m.login_succeeded(), b"MAIL FROM:<a@b>\r\n");
}

#[test]
fn plaintext_disabled_and_tls_recorded() {
    let c = SubmissionLoginConfig {
        hostname: "f2.lab.invalid".into(),
        greeting: "mp-f2 ready.".into(),
        tls_available: true,
        ..SubmissionLoginConfig::default()
    };
    let mut m = SubmissionLogin::new(c, false, false);
    run(
        &mut m,
        &[
            ("EHLO x\r\n", "250-f2.lab.invalid\r\n250-8BITMIME\r\n250-AUTH \r\n250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250-STARTTLS\r\n250 PIPELINING\r\n"),
            ("AUTH PLAIN AHVzZXIxAHBhc3M=\r\n", "523 5.7.10 Plaintext authentication disabled.\r\n"),
        ],
    );
    assert_eq!(
        m.feed(b"STARTTLS\r\nAUTH PLAIN AHVzZXIxAHBhc3M=\r\n"),
        vec![
            Action::Send(b"220 2.0.0 Begin TLS negotiation now.\r\n".to_vec()),
            Action::StartTls
        ]
    );
    m.tls_established();
    // Recorded over TLS (python ssl client against submission-login).
    run(
        &mut m,
        &[
            ("EHLO y\r\n", "250-f2.lab.invalid\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250 PIPELINING\r\n"),
            ("STARTTLS\r\n", "502 5.5.1 TLS is already active.\r\n"),
            ("MAIL FROM:<a>\r\n", "530 5.7.0 Authentication required.\r\n"),
        ],
    );
    let req = login_of(&m.feed(b"EHLO again\r\nAUTH PLAIN AHVzZXIxAHBhc3M=\r\n")).expect("login");
    assert_eq!(req.helo.as_deref(), Some(&b"again"[..]));
}

#[test]
fn bad_commands_and_long_lines() {
    let mut m = SubmissionLogin::new(cfg(), false, false);
    for _ in 0..10 {
        run(&mut m, &[("X\r\n", "500 5.5.1 Unknown command\r\n")]);
    }
    let last = run(
        &mut m,
        &[(
            "Q\r\n",
            "421 4.7.0 f.lab.invalid Too many invalid commands.\r\n",
        )],
    );
    assert_eq!(last.last(), Some(&Action::Close));

    let mut m = SubmissionLogin::new(cfg(), false, false);
    let long = format!("EHLO {}", "x".repeat(1100));
    run(
        &mut m,
        &[
            (&long, "500 5.5.2 Line too long\r\n"),
            ("more\r\nNOOP\r\n", "250 2.0.0 OK\r\n"),
        ],
    );
    run(
        &mut m,
        &[(
            &format!("{long}\r\nQUIT\r\n"),
            "500 5.5.2 Line too long\r\n221 2.0.0 Bye\r\n",
        )],
    );
}

const B_EHLO: &[u8] = b"250-b.lab.invalid\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250-PIPELINING\r\n250 XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT FORWARD\r\n";

fn req(helo: Option<&str>, pass: &str) -> SubmissionLoginRequest {
    SubmissionLoginRequest {
        credentials: creds("user1", pass),
        helo: helo.map(|h| h.as_bytes().to_vec()),
        proxy_ttl: director_mailproto::connection::LOGIN_PROXY_TTL,
    }
}

#[test]
fn backend_recorded_flow() {
    let cfg = SubmissionBackendConfig {
        ehlo_name: "f.lab.invalid".into(),
        ..SubmissionBackendConfig::default()
    };
    let mut b = SubmissionBackend::new(
        cfg,
        conn(54782, 587, "BA+j1lxh/tV/AAAB"),
        req(Some("c"), "pass"),
    );
    assert_eq!(
        b.feed(b"220 b.lab.invalid mp-b ready.\r\n"),
        vec![BackendAction::SendBackend(
            b"EHLO f.lab.invalid\r\n".to_vec()
        )]
    );
    // Session ids are xtext-encoded: Dovecot sent `SESSION=BA+2Bj1lxh/tV/AAAB`.
    assert_eq!(
        b.feed(B_EHLO),
        vec![BackendAction::SendBackend(b"XCLIENT HELO=c PROTO=ESMTP TTL=4 PORT=54782 ADDR=127.0.0.1 SESSION=BA+2Bj1lxh/tV/AAAB\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"220 b.lab.invalid mp-b ready.\r\n"),
        vec![BackendAction::SendBackend(
            b"EHLO f.lab.invalid\r\n".to_vec()
        )]
    );
    assert_eq!(
        b.feed(B_EHLO),
        vec![BackendAction::SendBackend(
            b"AUTH PLAIN dXNlcjEAdXNlcjEAcGFzcw==\r\n".to_vec()
        )]
    );
    assert_eq!(
        b.feed(b"235 2.7.0 Logged in.\r\n"),
        vec![
            BackendAction::SendClient(b"235 2.7.0 Logged in.\r\n".to_vec()),
            BackendAction::LoggedIn
        ]
    );
}

#[test]
fn backend_auth_failure_and_no_helo() {
    let mut b = SubmissionBackend::new(
        SubmissionBackendConfig::default(),
        conn(49654, 587, "s"),
        req(None, "wrong"),
    );
    b.feed(b"220 b ready.\r\n");
    let acts = b.feed(B_EHLO);
    let BackendAction::SendBackend(x) = &acts[0] else {
        panic!()
    };
    assert!(x.starts_with(b"XCLIENT HELO=[UNAVAILABLE] PROTO=ESMTP TTL=4 PORT=49654"));
    b.feed(b"220 b ready.\r\n");
    b.feed(B_EHLO);
    assert_eq!(
        b.feed(b"535 5.7.8 Authentication failed.\r\n"),
        vec![
            BackendAction::SendClient(b"535 5.7.8 Authentication failed.\r\n".to_vec()),
            BackendAction::Failed(BackendFailure::AuthRejected)
        ]
    );
}

#[test]
fn backend_starttls_without_xclient() {
    let cfg = SubmissionBackendConfig {
        starttls: true,
        ..SubmissionBackendConfig::default()
    };
    let mut b = SubmissionBackend::new(cfg, conn(1, 587, "s"), req(Some("c"), "pass"));
    b.feed(b"220-b ready\r\n220 more\r\n");
    assert_eq!(
        b.feed(b"250-b\r\n250 STARTTLS\r\n"),
        vec![BackendAction::SendBackend(b"STARTTLS\r\n".to_vec())]
    );
    assert_eq!(b.feed(b"220 2.0.0 go\r\n"), vec![BackendAction::StartTls]);
    assert_eq!(
        b.tls_established(),
        vec![BackendAction::SendBackend(b"EHLO localhost\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"250 b\r\n"),
        vec![BackendAction::SendBackend(
            b"AUTH PLAIN dXNlcjEAdXNlcjEAcGFzcw==\r\n".to_vec()
        )]
    );
    assert!(matches!(
        b.feed(b"334 \r\n").as_slice(),
        [BackendAction::Failed(BackendFailure::Protocol(_))]
    ));
}

#[test]
fn xtext_encoding() {
    assert_eq!(xtext(b"a+b=c d"), "a+2Bb+3Dc+20d");
}

#[test]
fn idle_timeout_recorded() {
    let mut m = SubmissionLogin::new(cfg(), false, false);
    assert_idle_timeout(
        &mut m,
        "421 4.4.2 f.lab.invalid Disconnected for inactivity.\r\n",
    );
}

proptest! {
    #[test]
    fn login_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), plain in any::<bool>()) {
        let mut m = SubmissionLogin::new(SubmissionLoginConfig { disable_plaintext_auth: plain, tls_available: true, ..SubmissionLoginConfig::default() }, false, false);
        drive_login(&mut m, &chunks, Some(LoginFailure::Temporary));
    }

    #[test]
    fn backend_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut b = SubmissionBackend::new(SubmissionBackendConfig { starttls: true, ..SubmissionBackendConfig::default() }, conn(1, 587, "s"), req(None, "p"));
        drive_backend(&mut b, &chunks);
    }
}
