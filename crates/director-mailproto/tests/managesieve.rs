//! ManageSieve transcripts recorded from Dovecot 2.3.19 (Pigeonhole)
//! managesieve-login (tests/data/oracle/).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
use common::*;
use director_mailproto::managesieve::{
    SieveBackend, SieveBackendConfig, SieveLogin, SieveLoginConfig,
};
use director_mailproto::{Action, BackendAction, BackendFailure, LoginFailure};
use proptest::prelude::*;

const SIEVE: &str = "fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric relational regex imap4flags copy include variables body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext";

fn cfg() -> SieveLoginConfig {
    SieveLoginConfig {
        greeting: "mp-f ready.".into(),
        implementation: "Dovecot (Debian) Pigeonhole".into(),
        disable_plaintext_auth: false,
        ..SieveLoginConfig::default()
    }
}

fn caps(sasl: &str, starttls: bool) -> String {
    format!(
        "\"IMPLEMENTATION\" \"Dovecot (Debian) Pigeonhole\"\r\n\"SIEVE\" \"{SIEVE}\"\r\n\"NOTIFY\" \"mailto\"\r\n\"SASL\" \"{sasl}\"\r\n{}\"VERSION\" \"1.0\"\r\n",
        if starttls { "\"STARTTLS\"\r\n" } else { "" }
    )
}

#[test]
fn commands_recorded() {
    let mut m = SieveLogin::new(cfg(), false, false);
    assert_eq!(
        sent(&m.start()),
        format!("{}OK \"mp-f ready.\"\r\n", caps("PLAIN LOGIN", false))
    );
    let cap_reply = format!(
        "{}OK \"Capability completed.\"\r\n",
        caps("PLAIN LOGIN", false)
    );
    run(
        &mut m,
        &[
            ("CAPABILITY\r\n", &cap_reply),
            ("NOOP\r\n", "OK \"NOOP Completed\"\r\n"),
            ("NOOP \"tag\"\r\n", "OK (TAG \"tag\") \"Done\"\r\n"),
            (
                "FOO\r\n",
                "NO \"Error in MANAGESIEVE command received by server.\"\r\n",
            ),
            ("STARTTLS\r\n", "NO \"TLS support isn't enabled.\"\r\n"),
        ],
    );
    let req = login_of(&m.feed(b"AUTHENTICATE \"PLAIN\" \"AHVzZXIxAHBhc3M=\"\r\nLOGOUT\r\n"))
        .expect("login");
    assert_eq!(req.credentials.authcid, b"user1");
    assert_eq!(m.login_succeeded(), b"LOGOUT\r\n");
}

#[test]
fn authenticate_forms_recorded() {
    let mut m = SieveLogin::new(cfg(), false, false);
    run(&mut m, &[("AUTHENTICATE \"PLAIN\"\r\n", "\"\"\r\n")]);
    assert!(login_of(&m.feed(b"\"AHVzZXIxAHBhc3M=\"\r\n")).is_some());
    assert_eq!(
        sent(&m.login_failed(LoginFailure::Temporary)),
        "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n"
    );
    assert!(login_of(&m.feed(b"AUTHENTICATE \"PLAIN\" {16+}\r\nAHVzZXIxAHBhc3M=\r\n")).is_some());
    assert_eq!(
        sent(&m.login_failed(LoginFailure::AuthFailed)),
        "NO \"Authentication failed.\"\r\n"
    );
    run(
        &mut m,
        &[
            ("AUTHENTICATE \"PLAIN\"\r\n", "\"\"\r\n"),
            ("\"*\"\r\n", "NO \"Authentication aborted by client.\"\r\n"),
            (
                "AUTHENTICATE \"FOO\"\r\n",
                "NO \"Unsupported authentication mechanism.\"\r\n",
            ),
            (
                "AUTHENTICATE \"PLAIN\" \"!!!\"\r\n",
                "NO \"Invalid base64 data in initial response\"\r\n",
            ),
            ("AUTHENTICATE \"PLAIN\"\r\n", "\"\"\r\n"),
            ("\"!!!\"\r\n", "NO \"Invalid base64 in response\"\r\n"),
            ("AUTHENTICATE \"LOGIN\"\r\n", "\"VXNlcm5hbWU6\"\r\n"),
            ("{8+}\r\ndXNlcjE=\r\n", "\"UGFzc3dvcmQ6\"\r\n"),
        ],
    );
    assert!(login_of(&m.feed(b"\"cGFzcw==\"\r\n")).is_some());
}

#[test]
fn bad_commands_limits_plaintext() {
    let mut m = SieveLogin::new(cfg(), false, false);
    let last = run(
        &mut m,
        &[
            (
                "X\r\n",
                "NO \"Error in MANAGESIEVE command received by server.\"\r\n",
            ),
            (
                "Y\r\n",
                "NO \"Error in MANAGESIEVE command received by server.\"\r\n",
            ),
            (
                "Z\r\n",
                "BYE \"Too many invalid MANAGESIEVE commands.\"\r\n",
            ),
        ],
    );
    assert_eq!(last.last(), Some(&Action::Close));
    let mut m = SieveLogin::new(cfg(), false, false);
    let long = format!("NOOP {}\r\n", "x".repeat(1100));
    assert_eq!(
        run(
            &mut m,
            &[(&long, "BYE \"Input buffer full, aborting\"\r\n")]
        )
        .last(),
        Some(&Action::Close)
    );

    let c = SieveLoginConfig {
        greeting: "mp-f2 ready.".into(),
        implementation: "Dovecot (Debian) Pigeonhole".into(),
        tls_available: true,
        ..SieveLoginConfig::default()
    };
    let mut m = SieveLogin::new(c, false, false);
    assert_eq!(
        sent(&m.start()),
        format!("{}OK \"mp-f2 ready.\"\r\n", caps("", true))
    );
    run(
        &mut m,
        &[(
            "AUTHENTICATE \"PLAIN\" \"AHVzZXIxAHBhc3M=\"\r\n",
            "NO \"Plaintext authentication disabled.\"\r\n",
        )],
    );
    assert_eq!(
        m.feed(b"STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"AHVzZXIxAHBhc3M=\"\r\n"),
        vec![
            Action::Send(b"OK \"Begin TLS negotiation now.\"\r\n".to_vec()),
            Action::StartTls
        ]
    );
    assert_eq!(
        sent(&m.tls_established()),
        format!(
            "{}OK \"TLS negotiation successful.\"\r\n",
            caps("PLAIN LOGIN", false)
        )
    );
    run(&mut m, &[("LOGOUT\r\n", "OK \"Logout completed.\"\r\n")]);
}

const B_GREETING: &[u8] = b"\"IMPLEMENTATION\" \"Dovecot (Debian) Pigeonhole\"\r\n\"SIEVE\" \"fileinto\"\r\n\"NOTIFY\" \"mailto\"\r\n\"SASL\" \"PLAIN LOGIN\"\r\n\"VERSION\" \"1.0\"\r\n\"XCLIENT\"\r\nOK \"mp-b ready.\"\r\n";

#[test]
fn backend_recorded_flow() {
    let mut b = SieveBackend::new(
        SieveBackendConfig::default(),
        conn(47970, 4190, "B+U22lxhYrt/AAAB"),
        creds("user1", "pass"),
    );
    assert_eq!(
        b.feed(B_GREETING),
        vec![BackendAction::SendBackend(
            b"XCLIENT ADDR=127.0.0.1 PORT=47970 SESSION=B+U22lxhYrt/AAAB TTL=4\r\n".to_vec()
        )]
    );
    assert_eq!(
        b.feed(b"OK \"Updated\"\r\n"),
        vec![BackendAction::SendBackend(
            b"AUTHENTICATE \"PLAIN\" \"dXNlcjEAdXNlcjEAcGFzcw==\"\r\n".to_vec()
        )]
    );
    assert_eq!(
        b.feed(b"OK \"Logged in.\"\r\n"),
        vec![
            BackendAction::SendClient(b"OK \"Logged in.\"\r\n".to_vec()),
            BackendAction::LoggedIn
        ]
    );
    let mut b = SieveBackend::new(
        SieveBackendConfig::default(),
        conn(52304, 4190, "s"),
        creds("user1", "wrong"),
    );
    b.feed(B_GREETING);
    b.feed(b"OK \"Updated\"\r\n");
    assert_eq!(
        b.feed(b"NO \"Authentication failed.\"\r\n"),
        vec![
            BackendAction::SendClient(b"NO \"Authentication failed.\"\r\n".to_vec()),
            BackendAction::Failed(BackendFailure::AuthRejected)
        ]
    );
}

#[test]
fn backend_starttls() {
    let mut b = SieveBackend::new(
        SieveBackendConfig {
            starttls: true,
            send_xclient: false,
        },
        conn(1, 4190, "s"),
        creds("user1", "pass"),
    );
    assert_eq!(
        b.feed(B_GREETING),
        vec![BackendAction::SendBackend(b"STARTTLS\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"OK \"Begin TLS negotiation now.\"\r\n"),
        vec![BackendAction::StartTls]
    );
    assert!(b.tls_established().is_empty());
    assert_eq!(
        b.feed(B_GREETING),
        vec![BackendAction::SendBackend(
            b"AUTHENTICATE \"PLAIN\" \"dXNlcjEAdXNlcjEAcGFzcw==\"\r\n".to_vec()
        )]
    );
}

#[test]
fn idle_timeout_recorded() {
    let mut m = SieveLogin::new(cfg(), false, false);
    assert_idle_timeout(&mut m, "BYE \"Disconnected for inactivity.\"\r\n");
}

proptest! {
    #[test]
    fn login_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), plain in any::<bool>()) {
        let mut m = SieveLogin::new(SieveLoginConfig { disable_plaintext_auth: plain, tls_available: true, ..SieveLoginConfig::default() }, false, false);
        drive_login(&mut m, &chunks, Some(LoginFailure::Relayed));
    }

    #[test]
    fn backend_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut b = SieveBackend::new(SieveBackendConfig { starttls: true, send_xclient: true }, conn(1, 4190, "s"), creds("u", "p"));
        drive_backend(&mut b, &chunks);
    }
}
