//! POP3 transcripts recorded from Dovecot 2.3.19's pop3-login (tests/data/oracle/).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
use common::*;
use director_mailproto::pop3::{
    Pop3Backend, Pop3BackendConfig, Pop3BackendLogin, Pop3Login, Pop3LoginConfig,
};
use director_mailproto::{Action, BackendAction, BackendFailure, LoginFailure};
use proptest::prelude::*;

fn cfg() -> Pop3LoginConfig {
    Pop3LoginConfig {
        greeting: "mp-f ready.".into(),
        disable_plaintext_auth: false,
        ..Pop3LoginConfig::default()
    }
}

#[test]
fn session_recorded() {
    let mut m = Pop3Login::new(cfg(), false, false);
    assert_eq!(sent(&m.start()), "+OK mp-f ready.\r\n");
    run(
        &mut m,
        &[
            ("CAPA\r\n", "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"),
            ("NOOP\r\n", "-ERR Unknown command.\r\n"),
            ("STLS\r\n", "-ERR TLS support isn't enabled.\r\n"),
            ("PASS x\r\n", "-ERR No username given.\r\n"),
            ("USER user1\r\n", "+OK\r\n"),
        ],
    );
    let acts = m.feed(b"PASS pass\r\nSTAT\r\n");
    assert_eq!(sent(&acts), "");
    let req = login_of(&acts).expect("login");
    assert_eq!(req.credentials.authcid, b"user1");
    assert_eq!(req.credentials.password, b"pass");
    assert_eq!(m.login_succeeded(), b"STAT\r\n");
}

#[test]
fn auth_variants_recorded() {
    let mut m = Pop3Login::new(cfg(), false, false);
    run(&mut m, &[("AUTH\r\n", "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n")]);
    assert!(login_of(&m.feed(b"AUTH PLAIN AHVzZXIxAHBhc3M=\r\n")).is_some());
    assert_eq!(
        sent(&m.login_failed(LoginFailure::Temporary)),
        "-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n"
    );
    run(
        &mut m,
        &[
            ("AUTH PLAIN\r\n", "+ \r\n"),
            ("*\r\n", "-ERR Authentication aborted by client.\r\n"),
            (
                "AUTH FOO\r\n",
                "-ERR [AUTH] Unsupported authentication mechanism.\r\n",
            ),
            (
                "AUTH PLAIN !!!\r\n",
                "-ERR [AUTH] Invalid base64 data in initial response\r\n",
            ),
            ("AUTH PLAIN\r\n", "+ \r\n"),
            ("!!!\r\n", "-ERR [AUTH] Invalid base64 in response\r\n"),
            ("user user1\r\n", "+OK\r\n"),
        ],
    );
    let last = run(&mut m, &[("QUIT\r\n", "+OK Logging out\r\n")]);
    assert_eq!(last.last(), Some(&Action::Close));
}

#[test]
fn bad_commands_and_limits() {
    let mut m = Pop3Login::new(cfg(), false, false);
    let last = run(
        &mut m,
        &[
            ("\r\n", "-ERR Unknown command.\r\n"),
            ("X\r\n", "-ERR Unknown command.\r\n"),
            (
                "Y\r\n",
                "-ERR Unknown command.\r\n-ERR Too many invalid bad commands.\r\n",
            ),
        ],
    );
    assert_eq!(last.last(), Some(&Action::Close));
    let mut m = Pop3Login::new(cfg(), false, false);
    let long = format!("USER {}\r\n", "x".repeat(1100));
    let last = run(&mut m, &[(&long, "-ERR Input buffer full, aborting\r\n")]);
    assert_eq!(last.last(), Some(&Action::Close));
}

#[test]
fn plaintext_disabled_recorded() {
    let c = Pop3LoginConfig {
        greeting: "mp-f2 ready.".into(),
        tls_available: true,
        ..Pop3LoginConfig::default()
    };
    let mut m = Pop3Login::new(c, false, false);
    assert_eq!(sent(&m.start()), "+OK mp-f2 ready.\r\n");
    run(
        &mut m,
        &[
            ("CAPA\r\n", "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nSASL\r\n.\r\n"),
            ("USER user1\r\n", "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"),
            ("PASS pass\r\n", "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"),
            ("AUTH PLAIN\r\n", "-ERR [AUTH] Plaintext authentication disabled.\r\n"),
            ("AUTH\r\n", "+OK\r\n.\r\n"),
        ],
    );
    let acts = m.feed(b"STLS\r\nUSER injected\r\n");
    assert_eq!(
        acts,
        vec![
            Action::Send(b"+OK Begin TLS negotiation now.\r\n".to_vec()),
            Action::StartTls
        ]
    );
    m.tls_established();
    // Recorded over TLS (python ssl client against pop3-login).
    run(
        &mut m,
        &[
            ("CAPA\r\n", "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"),
            ("STLS\r\n", "-ERR TLS is already active.\r\n"),
            ("AUTH\r\n", "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
            ("USER user1\r\n", "+OK\r\n"),
        ],
    );
    assert!(login_of(&m.feed(b"PASS pass\r\n")).is_some());
}

#[test]
fn backend_recorded_flow() {
    // pop3-login → backend, as recorded in tests/data/lab/login-flow.log.
    let log = include_str!("data/lab/login-flow.log");
    for line in [
        "127.0.1.1:110 > 127.0.0.1:52334 | +OK [XCLIENT] lab-b1 ready.",
        "127.0.0.1:52334 > 127.0.1.1:110 | XCLIENT ADDR=127.0.0.1 PORT=43482 SESSION=H7+h31th2ql/AAAB TTL=4",
        "127.0.1.1:110 > 127.0.0.1:52334 | +OK Updated",
        "127.0.0.1:52334 > 127.0.1.1:110 | USER user8",
        "127.0.0.1:52334 > 127.0.1.1:110 | PASS pass",
        "127.0.1.1:110 > 127.0.0.1:52334 | +OK Logged in.",
    ] {
        assert!(log.contains(line), "not in the recording: {line}");
    }
    let mut b = Pop3Backend::new(
        Pop3BackendConfig::default(),
        conn(43482, 110, "H7+h31th2ql/AAAB"),
        creds("user8", "pass"),
    );
    assert_eq!(
        b.feed(b"+OK [XCLIENT] lab-b1 ready.\r\n"),
        vec![BackendAction::SendBackend(
            b"XCLIENT ADDR=127.0.0.1 PORT=43482 SESSION=H7+h31th2ql/AAAB TTL=4\r\nUSER user8\r\n"
                .to_vec()
        )]
    );
    assert_eq!(b.feed(b"+OK Updated\r\n"), vec![]);
    assert_eq!(
        b.feed(b"+OK\r\n"),
        vec![BackendAction::SendBackend(b"PASS pass\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"+OK Logged in.\r\n+OK 0 0\r\n"),
        vec![
            BackendAction::SendClient(b"+OK Logged in.\r\n".to_vec()),
            BackendAction::LoggedIn
        ]
    );
    assert_eq!(b.take_remaining(), b"+OK 0 0\r\n");
}

#[test]
fn backend_failures() {
    let mut b = Pop3Backend::new(
        Pop3BackendConfig::default(),
        conn(1, 110, "s"),
        creds("user1", "wrong"),
    );
    b.feed(b"+OK [XCLIENT] mp-b ready.\r\n");
    b.feed(b"+OK Updated\r\n+OK\r\n");
    assert_eq!(
        b.feed(b"-ERR [AUTH] Authentication failed.\r\n"),
        vec![
            BackendAction::SendClient(b"-ERR [AUTH] Authentication failed.\r\n".to_vec()),
            BackendAction::Failed(BackendFailure::AuthRejected)
        ]
    );
    let mut b = Pop3Backend::new(
        Pop3BackendConfig::default(),
        conn(1, 110, "s"),
        creds("u", "p"),
    );
    assert!(matches!(
        b.feed(b"-ERR no\r\n").as_slice(),
        [BackendAction::Failed(BackendFailure::Protocol(_))]
    ));
}

#[test]
fn backend_stls_auth_plain_no_xclient() {
    let cfg = Pop3BackendConfig {
        starttls: true,
        send_xclient: true,
        login: Pop3BackendLogin::AuthPlain,
    };
    let mut b = Pop3Backend::new(cfg, conn(1, 110, "s"), creds("user1", "pass"));
    assert_eq!(
        b.feed(b"+OK ready.\r\n"),
        vec![BackendAction::SendBackend(b"STLS\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"+OK Begin TLS negotiation now.\r\n"),
        vec![BackendAction::StartTls]
    );
    assert_eq!(
        b.tls_established(),
        vec![BackendAction::SendBackend(
            b"AUTH PLAIN AHVzZXIxAHBhc3M=\r\n".to_vec()
        )]
    );
    assert_eq!(
        b.feed(b"+OK Logged in.\r\n").last(),
        Some(&BackendAction::LoggedIn)
    );
}

#[test]
fn idle_timeout_recorded() {
    let mut m = Pop3Login::new(cfg(), false, false);
    assert_idle_timeout(&mut m, "-ERR Disconnected for inactivity.\r\n");
}

proptest! {
    #[test]
    fn login_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), plain in any::<bool>()) {
        let mut m = Pop3Login::new(Pop3LoginConfig { disable_plaintext_auth: plain, tls_available: true, ..Pop3LoginConfig::default() }, false, false);
        drive_login(&mut m, &chunks, Some(LoginFailure::Relayed));
    }

    #[test]
    fn backend_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut b = Pop3Backend::new(Pop3BackendConfig::default(), conn(1, 110, "s"), creds("u", "p"));
        drive_backend(&mut b, &chunks);
    }
}
