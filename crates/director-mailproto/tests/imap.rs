//! IMAP transcripts recorded from Dovecot 2.3.19's imap-login (oracle runs on
//! loopback, see tests/data/oracle/) replayed through our machines. The few
//! texts below that are not in those recordings are compared live with a
//! real imap-login in `dovecot_interop.rs` (each place says which test).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
use common::{assert_idle_timeout, drive_backend, drive_login};
use director_mailproto::imap::{
    BackendLoginMethod, ImapBackend, ImapBackendConfig, ImapLogin, ImapLoginConfig,
    ImapLoginRequest,
};
use director_mailproto::{Action, BackendAction, BackendFailure, ConnInfo, LoginFailure};
use proptest::prelude::*;

const CAPS: &str =
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN";

fn cfg() -> ImapLoginConfig {
    ImapLoginConfig {
        greeting: "mp-f ready.".into(),
        disable_plaintext_auth: false,
        ..ImapLoginConfig::default()
    }
}

fn sent(actions: &[Action<ImapLoginRequest>]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(b.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .concat()
}

fn login_of(actions: &[Action<ImapLoginRequest>]) -> Option<ImapLoginRequest> {
    actions.iter().find_map(|a| match a {
        Action::Login(r) => Some(r.clone()),
        _ => None,
    })
}

/// Feeds each client chunk and checks the exact bytes we answer.
fn transcript(m: &mut ImapLogin, steps: &[(&[u8], &[u8])]) -> Vec<Action<ImapLoginRequest>> {
    let mut last = Vec::new();
    for (input, want) in steps {
        last = m.feed(input);
        assert_eq!(
            String::from_utf8_lossy(&sent(&last)),
            String::from_utf8_lossy(want),
            "after {:?}",
            String::from_utf8_lossy(input)
        );
    }
    last
}

#[test]
fn greeting_and_basic_commands() {
    let mut m = ImapLogin::new(cfg(), false, false);
    assert_eq!(
        sent(&m.start()),
        format!("* OK [CAPABILITY {CAPS}] mp-f ready.\r\n").as_bytes()
    );
    let caps_reply = format!("* CAPABILITY {CAPS}\r\na OK Pre-login capabilities listed, post-login capabilities have more.\r\n");
    transcript(
        &mut m,
        &[
            (b"a CAPABILITY\r\n", caps_reply.as_bytes()),
            (b"b NOOP\r\n", b"b OK NOOP completed.\r\n"),
            (
                b"\r\n",
                b"* BAD Error in IMAP command received by server.\r\n",
            ),
            (
                b"f ID (\"name\" \"x\" \"version\" \"1\")\r\n",
                b"* ID (\"name\" \"Dovecot\")\r\nf OK ID completed.\r\n",
            ),
            (
                b"g ID NIL\r\n",
                b"* ID (\"name\" \"Dovecot\")\r\ng OK ID completed.\r\n",
            ),
            // This and the ENABLE reply: live in `imap_end_to_end_matches_dovecot`.
            (b"s STARTTLS\r\n", b"s BAD TLS support isn't enabled.\r\n"),
            (
                b"x ENABLE foo\r\n",
                b"* ENABLED\r\nx OK ENABLE ignored in non-authenticated state.\r\n",
            ),
        ],
    );
    let last = transcript(
        &mut m,
        &[(
            b"h LOGOUT\r\n",
            b"* BYE Logging out\r\nh OK Logout completed.\r\n",
        )],
    );
    assert_eq!(last.last(), Some(&Action::Close));
}

/// Live in `imap_command_errors_match_dovecot`.
#[test]
fn three_bad_commands_close() {
    let mut m = ImapLogin::new(cfg(), false, false);
    let last = transcript(
        &mut m,
        &[
            (
                b"c FOO\r\n",
                b"c BAD Error in IMAP command received by server.\r\n",
            ),
            (
                b"d LOGIN\r\n",
                b"d BAD Error in IMAP command received by server.\r\n",
            ),
            (
                b"e LOGIN a\r\n",
                b"* BYE Too many invalid IMAP commands.\r\n",
            ),
        ],
    );
    assert_eq!(last.last(), Some(&Action::Close));
    assert!(m.feed(b"x NOOP\r\n").is_empty());
}

#[test]
fn login_with_literals_and_relay() {
    let mut m = ImapLogin::new(cfg(), false, false);
    transcript(&mut m, &[(b"a LOGIN {5}\r\n", b"+ OK\r\n")]);
    let acts = m.feed(b"user1 {4+}\r\npass\r\nb SELECT INBOX\r\n");
    assert_eq!(sent(&acts), b"");
    let req = login_of(&acts).expect("login requested");
    assert_eq!(req.tag, b"a");
    assert_eq!(req.credentials.authcid, b"user1");
    assert_eq!(req.credentials.password, b"pass");
    // While the backend works, input is only buffered.
    assert!(m.feed(b"c NOOP\r\n").is_empty());
    assert_eq!(m.login_succeeded(), b"b SELECT INBOX\r\nc NOOP\r\n");
}

/// The refusal is live in `imap_command_errors_match_dovecot`.
#[test]
fn quoted_escapes_and_invalid_atom() {
    let mut m = ImapLogin::new(cfg(), false, false);
    transcript(
        &mut m,
        &[(
            b"a LOGIN \"us\\\\\"er\" \"pass\"\r\n",
            b"a BAD Invalid characters in atom\r\n",
        )],
    );
    let acts = m.feed(b"a login \"us\\\\er1\" \"p\\\"ss\"\r\n");
    let req = login_of(&acts).expect("login");
    assert_eq!(req.credentials.authcid, b"us\\er1");
    assert_eq!(req.credentials.password, b"p\"ss");
}

#[test]
fn authenticate_plain_variants() {
    let mut m = ImapLogin::new(cfg(), false, false);
    transcript(&mut m, &[(b"a AUTHENTICATE PLAIN\r\n", b"+ \r\n")]);
    let acts = m.feed(b"AHVzZXIxAHBhc3M=\r\n");
    assert_eq!(
        login_of(&acts).expect("login").credentials.authcid,
        b"user1"
    );

    let mut m = ImapLogin::new(cfg(), false, false);
    let acts = m.feed(b"a AUTHENTICATE PLAIN AHVzZXIxAHBhc3M=\r\n");
    assert_eq!(
        login_of(&acts).expect("login").credentials.password,
        b"pass"
    );

    let mut m = ImapLogin::new(cfg(), false, false);
    transcript(
        &mut m,
        &[
            (
                b"a AUTHENTICATE PLAIN =\r\n",
                b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            ),
            (b"b NOOP\r\n", b"b OK NOOP completed.\r\n"),
            (b"a AUTHENTICATE PLAIN\r\n", b"+ \r\n"),
            (b"*\r\n", b"a BAD Authentication aborted by client.\r\n"),
            (
                b"a AUTHENTICATE PLAIN !!!\r\n",
                b"a BAD Invalid base64 data in initial response\r\n",
            ),
            (
                b"a AUTHENTICATE FOO\r\n",
                b"a NO [ALERT] Unsupported authentication mechanism.\r\n",
            ),
            (b"a AUTHENTICATE LOGIN\r\n", b"+ VXNlcm5hbWU6\r\n"),
            (b"dXNlcjE=\r\n", b"+ UGFzc3dvcmQ6\r\n"),
        ],
    );
    let acts = m.feed(b"cGFzcw==\r\n");
    assert_eq!(
        login_of(&acts).expect("login").credentials.authcid,
        b"user1"
    );
}

#[test]
fn failures_reported_by_driver() {
    let mut m = ImapLogin::new(cfg(), false, false);
    assert!(login_of(&m.feed(b"b LOGIN user1 pass\r\nc NOOP\r\n")).is_some());
    // Backend unreachable: live in `imap_unreachable_backend_matches_dovecot`
    // (imap-login proxying to an address where nothing listens).
    let acts = m.login_failed(LoginFailure::Temporary);
    assert_eq!(
        sent(&acts),
        b"b NO [UNAVAILABLE] Account is temporarily unavailable.\r\nc OK NOOP completed.\r\n"
    );
    assert!(login_of(&m.feed(b"d LOGIN user1 wrong\r\n")).is_some());
    assert_eq!(sent(&m.login_failed(LoginFailure::Relayed)), b"");
    assert_eq!(sent(&m.feed(b"e NOOP\r\n")), b"e OK NOOP completed.\r\n");
}

#[test]
fn plaintext_disallowed_and_starttls() {
    let c = ImapLoginConfig {
        greeting: "mp-f2 ready.".into(),
        tls_available: true,
        disable_plaintext_auth: true,
        ..ImapLoginConfig::default()
    };
    let mut m = ImapLogin::new(c, false, false);
    // The greeting was recorded with ssl=yes via a PROXY v2 header claiming a
    // remote client (transcripts/tls-probes.txt). The two refusals are compared
    // live, without TLS, in `imap_plaintext_refusals_match_dovecot`.
    assert_eq!(
        sent(&m.start()),
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] mp-f2 ready.\r\n"
    );
    transcript(
        &mut m,
        &[
            (b"b LOGIN user1 pass\r\n", b"* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. If anyone was listening, the password was exposed.\r\nb NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"),
            (b"c AUTHENTICATE PLAIN\r\n", b"c NO [PRIVACYREQUIRED] Plaintext authentication disabled.\r\n"),
        ],
    );
    let acts = m.feed(b"b STARTTLS\r\nx LOGIN injected pass\r\n");
    assert_eq!(
        acts,
        vec![
            Action::Send(b"b OK Begin TLS negotiation now.\r\n".to_vec()),
            Action::StartTls
        ]
    );
    assert!(m.tls_established().is_empty());
    assert_eq!(
        m.capability(),
        "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"
    );
    // The injected LOGIN was dropped; a fresh one over TLS works.
    assert_eq!(
        sent(&m.feed(b"t STARTTLS\r\n")),
        b"t BAD TLS is already active.\r\n"
    );
    assert!(login_of(&m.feed(b"y LOGIN user1 pass\r\n")).is_some());
}

#[test]
fn limits() {
    let mut m = ImapLogin::new(cfg(), false, false);
    let mut long = b"a NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 1100));
    long.extend_from_slice(b"\r\n");
    let acts = m.feed(&long);
    assert_eq!(sent(&acts), b"* BYE Input buffer full, aborting\r\n");
    assert_eq!(acts.last(), Some(&Action::Close));

    let mut m = ImapLogin::new(cfg(), false, false);
    let acts = m.feed(b"a LOGIN {70000}\r\n");
    assert_eq!(sent(&acts), b"* BYE Literal size too large\r\n");

    let mut m = ImapLogin::new(cfg(), false, false);
    m.feed(b"a AUTHENTICATE PLAIN\r\n");
    let acts = m.feed(&vec![b'A'; 9000]);
    assert_eq!(acts, vec![Action::Close]);
}

fn conn() -> ConnInfo {
    ConnInfo {
        client_ip: "127.0.0.1".parse().unwrap(),
        client_port: 48952,
        local_ip: "127.0.77.1".parse().unwrap(),
        local_port: 143,
        session_id: Some("b2gTyVxhOL9/AAAB".into()),
        proxy_ttl: ConnInfo::DEFAULT_TTL,
    }
}

fn request(tag: &[u8], user: &[u8], pass: &[u8], cap: bool) -> ImapLoginRequest {
    ImapLoginRequest {
        tag: tag.to_vec(),
        credentials: director_mailproto::Credentials {
            authzid: Vec::new(),
            authcid: user.to_vec(),
            password: pass.to_vec(),
            mechanism: director_mailproto::Mechanism::Login,
        },
        client_id: vec![(b"name".to_vec(), Some(b"cli".to_vec()))],
        capability_requested: cap,
        proxy_ttl: director_mailproto::connection::LOGIN_PROXY_TTL,
    }
}

const B_GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] mp-b ready.\r\n";
const POST_CAPS: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY";

#[test]
fn backend_replay_without_capability() {
    // The form recorded between imap-login and the backend
    // (transcripts/relay-143.log), with this test's session values: the
    // client sent only LOGIN.
    let mut b = ImapBackend::new(
        ImapBackendConfig::default(),
        conn(),
        request(b"a", b"user1", b"pass", false),
    );
    let acts = b.feed(B_GREETING);
    assert_eq!(
        acts,
        vec![BackendAction::SendBackend(
            b"I ID (\"x-session-id\" \"b2gTyVxhOL9/AAAB\" \"x-originating-ip\" \"127.0.0.1\" \"x-originating-port\" \"48952\" \"x-connected-ip\" \"127.0.77.1\" \"x-connected-port\" \"143\" \"x-proxy-ttl\" \"4\")\r\nL LOGIN \"user1\" \"pass\"\r\n".to_vec()
        )]
    );
    assert!(b
        .feed(b"* ID (\"name\" \"Dovecot\")\r\nI OK ID completed.\r\n")
        .is_empty());
    let ok = format!("L OK [CAPABILITY {POST_CAPS}] Logged in\r\n* 1 EXISTS\r\n");
    let acts = b.feed(ok.as_bytes());
    assert_eq!(
        acts,
        vec![
            BackendAction::SendClient(
                format!("a OK [CAPABILITY {POST_CAPS}] Logged in\r\n").into_bytes()
            ),
            BackendAction::LoggedIn
        ]
    );
    assert_eq!(b.take_remaining(), b"* 1 EXISTS\r\n");
}

#[test]
fn backend_replay_with_capability() {
    // Recorded: client had sent CAPABILITY, so the proxy adds `C CAPABILITY`
    // and relays the untagged post-login capability line.
    let mut b = ImapBackend::new(
        ImapBackendConfig::default(),
        conn(),
        request(b"a", b"user1", b"pass", true),
    );
    let acts = b.feed(B_GREETING);
    let BackendAction::SendBackend(sent) = &acts[0] else {
        panic!()
    };
    assert!(
        sent.ends_with(b"\"x-proxy-ttl\" \"4\")\r\nC CAPABILITY\r\nL LOGIN \"user1\" \"pass\"\r\n")
    );
    let mut acts = b.feed(b"* ID (\"name\" \"Dovecot\")\r\nI OK ID completed.\r\n* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN\r\nC OK Pre-login capabilities listed, post-login capabilities have more.\r\n");
    acts.extend(b.feed(format!("* CAPABILITY {POST_CAPS}\r\nL OK Logged in\r\n").as_bytes()));
    assert_eq!(
        acts,
        vec![
            BackendAction::SendClient(format!("* CAPABILITY {POST_CAPS}\r\n").into_bytes()),
            BackendAction::SendClient(b"a OK Logged in\r\n".to_vec()),
            BackendAction::LoggedIn
        ]
    );
}

#[test]
fn backend_login_is_pipelined_ahead_of_the_greeting() {
    let mut b = ImapBackend::new(
        ImapBackendConfig::default(),
        conn(),
        request(b"a", b"user1", b"pass", false),
    );
    // The same bytes the greeting would have released, sent at once.
    assert_eq!(
        b.start(),
        vec![BackendAction::SendBackend(
            b"I ID (\"x-session-id\" \"b2gTyVxhOL9/AAAB\" \"x-originating-ip\" \"127.0.0.1\" \"x-originating-port\" \"48952\" \"x-connected-ip\" \"127.0.77.1\" \"x-connected-port\" \"143\" \"x-proxy-ttl\" \"4\")\r\nL LOGIN \"user1\" \"pass\"\r\n".to_vec()
        )]
    );
    // Greeting, ID reply and login verdict in one read, as Dovecot sends them.
    let mut input = B_GREETING.to_vec();
    input.extend_from_slice(b"* ID NIL\r\nI OK ID completed.\r\nL OK Logged in\r\n");
    assert_eq!(
        b.feed(&input),
        vec![
            BackendAction::SendClient(b"a OK Logged in\r\n".to_vec()),
            BackendAction::LoggedIn
        ]
    );

    // A backend that refuses the connection still fails the login.
    let mut b = ImapBackend::new(
        ImapBackendConfig::default(),
        conn(),
        request(b"a", b"u", b"p", false),
    );
    assert_eq!(b.start().len(), 1);
    assert!(matches!(
        b.feed(b"* BYE Too many connections\r\n").as_slice(),
        [BackendAction::Failed(BackendFailure::Protocol(_))]
    ));
}

#[test]
fn backend_waits_for_the_greeting_when_the_login_depends_on_it() {
    let starttls = ImapBackendConfig {
        starttls: true,
        ..ImapBackendConfig::default()
    };
    let sasl = ImapBackendConfig {
        login_method: BackendLoginMethod::AuthenticatePlain,
        ..ImapBackendConfig::default()
    };
    let mut master = request(b"a", b"user1", b"pass", false);
    master.credentials.authzid = b"master".to_vec();
    for (cfg, req) in [
        (starttls, request(b"a", b"user1", b"pass", false)),
        (sasl, request(b"a", b"user1", b"pass", false)),
        (ImapBackendConfig::default(), master),
        // Not quotable: AUTHENTICATE, with SASL-IR only if the greeting offers it.
        (
            ImapBackendConfig::default(),
            request(b"a", b"user1", "pässword".as_bytes(), false),
        ),
    ] {
        let mut b = ImapBackend::new(cfg, conn(), req);
        assert!(b.start().is_empty());
        assert!(!b.feed(B_GREETING).is_empty());
    }
}

#[test]
fn backend_rejects_and_errors() {
    let mut b = ImapBackend::new(
        ImapBackendConfig::default(),
        conn(),
        request(b"MCJH1", b"user7", b"wrong", false),
    );
    b.feed(B_GREETING);
    let acts = b.feed(
        b"* ID NIL\r\nI OK ID completed.\r\nL NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
    );
    assert_eq!(
        acts,
        vec![
            BackendAction::SendClient(
                b"MCJH1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".to_vec()
            ),
            BackendAction::Failed(BackendFailure::AuthRejected)
        ]
    );
    let mut b = ImapBackend::new(
        ImapBackendConfig::default(),
        conn(),
        request(b"a", b"u", b"p", false),
    );
    assert!(matches!(
        b.feed(b"* BYE go away\r\n").as_slice(),
        [BackendAction::Failed(BackendFailure::Protocol(_))]
    ));
}

#[test]
fn backend_starttls_and_authenticate() {
    let cfg = ImapBackendConfig {
        starttls: true,
        send_id: false,
        login_method: BackendLoginMethod::AuthenticatePlain,
        ..ImapBackendConfig::default()
    };
    let mut b = ImapBackend::new(cfg, conn(), request(b"a", b"user1", b"pass", false));
    assert_eq!(
        b.feed(B_GREETING),
        vec![BackendAction::SendBackend(b"S STARTTLS\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"S OK Begin TLS negotiation now.\r\n"),
        vec![BackendAction::StartTls]
    );
    assert_eq!(
        b.tls_established(),
        vec![BackendAction::SendBackend(
            b"C CAPABILITY\r\nL AUTHENTICATE PLAIN\r\n".to_vec()
        )]
    );
    assert_eq!(
        b.feed(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nC OK done\r\n+ \r\n"),
        vec![BackendAction::SendBackend(b"AHVzZXIxAHBhc3M=\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"L OK Logged in\r\n").last(),
        Some(&BackendAction::LoggedIn)
    );
}

#[test]
fn backend_unquotable_password_uses_sasl_ir() {
    let mut b = ImapBackend::new(
        ImapBackendConfig {
            send_id: false,
            ..ImapBackendConfig::default()
        },
        conn(),
        request(b"a", b"user1", "pässword".as_bytes(), false),
    );
    let acts = b.feed(B_GREETING);
    let BackendAction::SendBackend(s) = &acts[0] else {
        panic!()
    };
    assert!(
        s.starts_with(b"L AUTHENTICATE PLAIN AHVzZXIx"),
        "{}",
        String::from_utf8_lossy(s)
    );
}

#[test]
fn forward_client_id_option() {
    let cfg = ImapBackendConfig {
        forward_client_id: true,
        ..ImapBackendConfig::default()
    };
    let mut req = request(b"a", b"u", b"p", false);
    req.client_id
        .push((b"x-originating-ip".to_vec(), Some(b"6.6.6.6".to_vec())));
    req.client_id.push((b"os".to_vec(), None));
    let b = ImapBackend::new(cfg, conn(), req);
    let id = String::from_utf8(b.id_command()).unwrap();
    assert!(
        id.ends_with("\"x-proxy-ttl\" \"4\" \"name\" \"cli\" \"os\" NIL)"),
        "{id}"
    );
    assert!(!id.contains("6.6.6.6"));
}

#[test]
fn idle_timeout_recorded() {
    let mut m = ImapLogin::new(cfg(), false, false);
    assert_idle_timeout(&mut m, "* BYE Disconnected for inactivity.\r\n");
}

proptest! {
    #[test]
    fn login_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
                          plaintext in any::<bool>(), fail in any::<bool>()) {
        let mut m = ImapLogin::new(ImapLoginConfig { disable_plaintext_auth: plaintext, tls_available: true, ..ImapLoginConfig::default() }, false, false);
        drive_login(&mut m, &chunks, fail.then_some(LoginFailure::Temporary));
    }

    #[test]
    fn login_never_panics_on_command_like_input(lines in proptest::collection::vec("[a-zA-Z0-9 {}+\"\\\\()*=]{0,40}", 0..10)) {
        let mut m = ImapLogin::new(ImapLoginConfig::default(), false, true);
        for l in lines {
            let acts = m.feed(format!("{l}\r\n").as_bytes());
            if acts.iter().any(|a| matches!(a, Action::Login(_))) { m.login_failed(LoginFailure::AuthFailed); }
        }
    }

    #[test]
    fn backend_never_panics(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
        pipelined in any::<bool>(),
    ) {
        let cfg = ImapBackendConfig { starttls: !pipelined, ..ImapBackendConfig::default() };
        let mut b = ImapBackend::new(cfg, conn(), request(b"a", b"u", b"p", true));
        if pipelined {
            prop_assert_eq!(b.start().len(), 1);
        }
        drive_backend(&mut b, &chunks);
    }
}

#[test]
fn continuation_errors_and_empty_login_recorded() {
    let mut m = ImapLogin::new(cfg(), false, false);
    transcript(
        &mut m,
        &[
            (b"a AUTHENTICATE PLAIN\r\n", b"+ \r\n"),
            (b"!!!\r\n", b"a NO [ALERT] Invalid base64 in response\r\n"),
            (b"b NOOP\r\n", b"b OK NOOP completed.\r\n"),
            (
                b"c LOGIN \"\" \"\"\r\n",
                b"c NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            ),
        ],
    );
}

#[test]
fn pending_input_is_bounded() {
    let mut m = ImapLogin::new(cfg(), false, false);
    assert!(m.wants_input());
    assert!(login_of(&m.feed(b"a LOGIN u p\r\n")).is_some());
    assert!(!m.wants_input());
    let acts = m.feed(&vec![
        b'x';
        director_mailproto::action::MAX_PENDING_INPUT + 1
    ]);
    assert_eq!(acts.last(), Some(&Action::Close));
}
