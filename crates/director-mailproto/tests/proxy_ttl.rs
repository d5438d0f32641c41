//! The proxy TTL an upstream proxy forwards, as Dovecot 2.3.19's login processes read it
//! (from its source: `imap-login-cmd-id.c`, `pop3-login/client.c`, `login-proxy.c`): only a
//! client in `login_trusted_networks` may set it, IMAP through its first `ID`
//! (`"x-proxy-ttl"`), POP3 through `XCLIENT TTL=`; the login request carries it, the backend
//! gets one less, and a login with no hop left gets Dovecot's "misconfigured remote" reply.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
use common::*;
use director_mailproto::connection::{next_hop_ttl, LOGIN_PROXY_TTL};
use director_mailproto::imap::{ImapBackend, ImapBackendConfig, ImapLogin, ImapLoginConfig};
use director_mailproto::lmtp::{
    LmtpAction, LmtpServer, LmtpServerConfig, LMTP_PROXY_DEFAULT_TTL, REPLY_LOOPING,
};
use director_mailproto::managesieve::{SieveLogin, SieveLoginConfig};
use director_mailproto::pop3::{xclient_line, Pop3Login, Pop3LoginConfig};
use director_mailproto::submission::{SubmissionLogin, SubmissionLoginConfig};
use director_mailproto::LoginFailure;

fn imap(trusted: bool) -> ImapLogin {
    let cfg = ImapLoginConfig {
        disable_plaintext_auth: false,
        ..ImapLoginConfig::default()
    };
    ImapLogin::new(cfg, false, false).with_trusted(trusted)
}

/// The TTL the login request of `m` carries after `input` (ending in a LOGIN).
fn imap_ttl(m: &mut ImapLogin, input: &str) -> u32 {
    login_of(&m.feed(input.as_bytes()))
        .expect("a login request")
        .proxy_ttl
}

#[test]
fn imap_a_trusted_clients_first_id_sets_the_ttl() {
    let mut m = imap(true);
    let acts = m.feed(b"i ID (\"name\" \"proxy\" \"X-Proxy-TTL\" \"3\")\r\n");
    assert_eq!(
        sent(&acts),
        "* ID (\"name\" \"Dovecot\")\r\ni OK ID completed.\r\n"
    );
    assert_eq!(m.proxy_ttl(), 3);
    // A second ID no longer changes it (imap-login takes the first one only).
    m.feed(b"j ID (\"x-proxy-ttl\" \"9\")\r\n");
    assert_eq!(imap_ttl(&mut m, "a LOGIN u p\r\n"), 3);
}

#[test]
fn imap_an_untrusted_clients_ttl_is_ignored() {
    let mut m = imap(false);
    m.feed(b"i ID (\"x-proxy-ttl\" \"1\")\r\n");
    assert_eq!(imap_ttl(&mut m, "a LOGIN u p\r\n"), LOGIN_PROXY_TTL);
}

#[test]
fn imap_a_malformed_ttl_leaves_the_default() {
    for value in ["\"-1\"", "\"1x\"", "\"\"", "\"4294967296\"", "NIL"] {
        let mut m = imap(true);
        m.feed(format!("i ID (\"x-proxy-ttl\" {value})\r\n").as_bytes());
        assert_eq!(
            imap_ttl(&mut m, "a LOGIN u p\r\n"),
            LOGIN_PROXY_TTL,
            "{value}"
        );
    }
    // Without any ID the default holds too; and ID NIL counts as the first ID.
    let mut m = imap(true);
    m.feed(b"i ID NIL\r\nj ID (\"x-proxy-ttl\" \"2\")\r\n");
    assert_eq!(imap_ttl(&mut m, "a LOGIN u p\r\n"), LOGIN_PROXY_TTL);
}

/// The backend's ID says one hop less than the client had.
#[test]
fn imap_the_backend_gets_one_hop_less() {
    let mut m = imap(true);
    m.feed(b"i ID (\"x-proxy-ttl\" \"3\")\r\n");
    let req = login_of(&m.feed(b"a LOGIN u p\r\n")).unwrap();
    let mut c = conn(1, 143, "s");
    c.proxy_ttl = next_hop_ttl(req.proxy_ttl).unwrap();
    let b = ImapBackend::new(ImapBackendConfig::default(), c, req);
    let id = String::from_utf8(b.id_command()).unwrap();
    assert!(id.ends_with("\"x-proxy-ttl\" \"2\")"), "{id}");
}

#[test]
fn imap_no_hop_left_gets_the_misconfigured_remote_reply() {
    let mut m = imap(true);
    m.feed(b"i ID (\"x-proxy-ttl\" \"1\")\r\n");
    let req = login_of(&m.feed(b"a LOGIN u p\r\n")).unwrap();
    assert_eq!(next_hop_ttl(req.proxy_ttl), None);
    let acts = m.login_failed(LoginFailure::Looping);
    assert_eq!(
        sent(&acts),
        "a NO [SERVERBUG] Account is temporarily unavailable.\r\n"
    );
    // The client may go on (Dovecot keeps the connection).
    assert!(m.wants_input());
}

fn pop3(trusted: bool) -> Pop3Login {
    let cfg = Pop3LoginConfig {
        greeting: "ready.".into(),
        disable_plaintext_auth: false,
        ..Pop3LoginConfig::default()
    };
    Pop3Login::new(cfg, false, false).with_trusted(trusted)
}

fn pop3_ttl(m: &mut Pop3Login) -> u32 {
    login_of(&m.feed(b"USER u\r\nPASS p\r\n"))
        .expect("a login request")
        .proxy_ttl
}

/// A trusted client is told `[XCLIENT]` in the greeting and its `XCLIENT TTL=` is taken.
#[test]
fn pop3_a_trusted_clients_xclient_sets_the_ttl() {
    let mut m = pop3(true);
    assert_eq!(sent(&m.start()), "+OK [XCLIENT] ready.\r\n");
    let acts = m.feed(b"XCLIENT ADDR=192.0.2.1 PORT=4711 SESSION=abc ttl=2\r\n");
    assert_eq!(sent(&acts), "+OK Updated\r\n");
    assert_eq!(pop3_ttl(&mut m), 2);
}

#[test]
fn pop3_an_untrusted_clients_xclient_is_ignored() {
    let mut m = pop3(false);
    assert_eq!(sent(&m.start()), "+OK ready.\r\n");
    let acts = m.feed(b"XCLIENT TTL=1\r\n");
    assert_eq!(
        sent(&acts),
        "+OK You are not from trusted IP - ignoring\r\n"
    );
    assert_eq!(pop3_ttl(&mut m), LOGIN_PROXY_TTL);
}

/// A malformed attribute is refused; a TTL before it was still taken (as in pop3-login).
#[test]
fn pop3_malformed_xclient_attributes_are_refused() {
    for (line, ttl) in [
        ("XCLIENT TTL=x\r\n", LOGIN_PROXY_TTL),
        ("XCLIENT TTL=-1\r\n", LOGIN_PROXY_TTL),
        ("XCLIENT ADDR=nowhere\r\n", LOGIN_PROXY_TTL),
        ("XCLIENT PORT=0\r\n", LOGIN_PROXY_TTL),
        ("XCLIENT PORT=65536\r\n", LOGIN_PROXY_TTL),
        ("XCLIENT TTL=3 PORT=x\r\n", 3),
    ] {
        let mut m = pop3(true);
        assert_eq!(
            sent(&m.feed(line.as_bytes())),
            "-ERR Invalid parameters\r\n"
        );
        assert_eq!(pop3_ttl(&mut m), ttl, "{line}");
    }
    // Brackets around an IPv6 address, unknown attributes and words without `=` are fine.
    let mut m = pop3(true);
    let acts = m.feed(b"XCLIENT ADDR=[::1] HELO=x LOGIN TTL=4\r\n");
    assert_eq!(sent(&acts), "+OK Updated\r\n");
}

#[test]
fn pop3_the_backend_gets_one_hop_less_and_no_hop_left_is_refused() {
    let mut m = pop3(true);
    m.feed(b"XCLIENT TTL=3\r\n");
    let mut c = conn(1, 110, "s");
    c.proxy_ttl = next_hop_ttl(pop3_ttl(&mut m)).unwrap();
    assert_eq!(
        xclient_line(&c),
        "XCLIENT ADDR=127.0.0.1 PORT=1 SESSION=s TTL=2"
    );
    m.login_failed(LoginFailure::Temporary);

    m.feed(b"XCLIENT TTL=1\r\n");
    assert_eq!(next_hop_ttl(pop3_ttl(&mut m)), None);
    assert_eq!(
        sent(&m.login_failed(LoginFailure::Looping)),
        "-ERR Account is temporarily unavailable.\r\n"
    );
}

fn sieve(trusted: bool) -> SieveLogin {
    let cfg = SieveLoginConfig {
        disable_plaintext_auth: false,
        ..SieveLoginConfig::default()
    };
    SieveLogin::new(cfg, false, false).with_trusted(trusted)
}

fn sieve_ttl(m: &mut SieveLogin) -> u32 {
    login_of(&m.feed(b"AUTHENTICATE \"PLAIN\" \"AHUAcA==\"\r\n"))
        .expect("a login request")
        .proxy_ttl
}

/// managesieve-login lists `"XCLIENT"` to a trusted client only and obeys only its XCLIENT.
#[test]
fn managesieve_xclient_from_trusted_and_untrusted_clients() {
    let mut m = sieve(true);
    assert!(sent(&m.start()).contains("\"VERSION\" \"1.0\"\r\n\"XCLIENT\"\r\nOK "));
    let acts = m.feed(b"XCLIENT ADDR=192.0.2.1 PORT=1 SESSION=s TTL=2\r\n");
    assert_eq!(sent(&acts), "OK \"Updated\"\r\n");
    assert_eq!(sieve_ttl(&mut m), 2);
    assert_eq!(
        sent(&m.login_failed(LoginFailure::Looping)),
        "NO \"Account is temporarily unavailable.\"\r\n"
    );

    let mut m = sieve(false);
    assert!(!sent(&m.start()).contains("XCLIENT"));
    let acts = m.feed(b"XCLIENT TTL=1\r\n");
    assert_eq!(sent(&acts), "NO \"You are not from trusted IP\"\r\n");
    assert_eq!(sieve_ttl(&mut m), LOGIN_PROXY_TTL);

    // A bad value, or an argument that is not an atom, is a bad command.
    for line in ["XCLIENT TTL=x\r\n", "XCLIENT TTL=2 \"ADDR=1\"\r\n"] {
        let mut m = sieve(true);
        assert_eq!(
            sent(&m.feed(line.as_bytes())),
            "NO \"Error in MANAGESIEVE command received by server.\"\r\n",
            "{line}"
        );
    }
}

fn submission(trusted: bool) -> SubmissionLogin {
    let cfg = SubmissionLoginConfig {
        disable_plaintext_auth: false,
        ..SubmissionLoginConfig::default()
    };
    SubmissionLogin::new(cfg, false, false).with_trusted(trusted)
}

fn submission_ttl(m: &mut SubmissionLogin) -> u32 {
    login_of(&m.feed(b"AUTH PLAIN AHUAcA==\r\n"))
        .expect("a login request")
        .proxy_ttl
}

/// submission-login offers XCLIENT in EHLO to a trusted client; an accepted XCLIENT resets
/// the connection with a new greeting (lib-smtp).
#[test]
fn submission_xclient_from_trusted_and_untrusted_clients() {
    let mut m = submission(true);
    m.start();
    let ehlo = sent(&m.feed(b"EHLO up\r\n"));
    assert!(
        ehlo.ends_with("250-PIPELINING\r\n250 XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT FORWARD\r\n"),
        "{ehlo}"
    );
    let acts = m.feed(b"XCLIENT HELO=up PROTO=ESMTP TTL=2 PORT=4711 ADDR=192.0.2.1\r\n");
    assert_eq!(sent(&acts), "220 localhost Dovecot ready.\r\n");
    m.feed(b"EHLO up\r\n");
    assert_eq!(submission_ttl(&mut m), 2);
    assert_eq!(
        sent(&m.login_failed(LoginFailure::Looping)),
        "454 4.7.0 Account is temporarily unavailable.\r\n"
    );
    let acts = m.feed(b"XCLIENT TTL=x\r\n");
    assert_eq!(sent(&acts), "501 5.5.4 Invalid TTL parameter\r\n");

    let mut m = submission(false);
    assert!(!sent(&m.feed(b"EHLO up\r\n")).contains("XCLIENT"));
    let acts = m.feed(b"XCLIENT TTL=1\r\n");
    assert_eq!(sent(&acts), "550 5.7.14 You are not from trusted IP\r\n");
    assert_eq!(submission_ttl(&mut m), LOGIN_PROXY_TTL);
}

fn lmtp(trusted: bool) -> LmtpServer<u8> {
    LmtpServer::new(LmtpServerConfig::default()).with_trusted(trusted)
}

fn lmtp_sent(acts: &[LmtpAction<u8>]) -> String {
    acts.iter()
        .filter_map(|a| match a {
            LmtpAction::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

/// The TTL the backends get for one delivery to one recipient, after `setup`.
fn lmtp_outbound_ttl(s: &mut LmtpServer<u8>, setup: &[u8]) -> u32 {
    s.feed(setup);
    s.feed(b"MAIL FROM:<a@x>\r\nRCPT TO:<u@x>\r\n");
    s.recipient_resolved(Some(1));
    s.feed(b"DATA\r\n");
    s.feed(b"x\r\n.\r\n")
        .into_iter()
        .find_map(|a| match a {
            LmtpAction::Deliver(t) => Some(t.proxy_ttl),
            _ => None,
        })
        .expect("a delivery")
}

#[test]
fn lmtp_the_backends_get_5_or_one_less_than_a_trusted_client_said() {
    assert_eq!(
        lmtp_outbound_ttl(&mut lmtp(false), b"LHLO c\r\n"),
        LMTP_PROXY_DEFAULT_TTL
    );
    let mut s = lmtp(true);
    let lhlo = lmtp_sent(&s.feed(b"LHLO c\r\n"));
    assert!(
        lhlo.ends_with(
            "250-PIPELINING\r\n250 XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT\r\n"
        ),
        "{lhlo}"
    );
    let acts = s.feed(b"XCLIENT HELO=c PROTO=LMTP TTL=3 PORT=1 ADDR=192.0.2.1\r\n");
    assert_eq!(lmtp_sent(&acts), "220 localhost Dovecot ready.\r\n");
    assert_eq!(lmtp_outbound_ttl(&mut s, b"LHLO c\r\n"), 2);
    // TTL=1 still goes on, with 0.
    let mut s = lmtp(true);
    assert_eq!(lmtp_outbound_ttl(&mut s, b"XCLIENT TTL=1\r\nLHLO c\r\n"), 0);
}

#[test]
fn lmtp_a_recipient_arriving_with_ttl_0_is_refused() {
    let mut s = lmtp(true);
    s.feed(b"XCLIENT TTL=0\r\nLHLO c\r\nMAIL FROM:<a@x>\r\n");
    let acts = s.feed(b"RCPT TO:<u@x>\r\n");
    assert!(!acts.iter().any(|a| matches!(a, LmtpAction::Resolve { .. })));
    assert_eq!(lmtp_sent(&acts), format!("{REPLY_LOOPING}\r\n"));
    // Not during a transaction, and not from an untrusted client.
    assert_eq!(
        lmtp_sent(&s.feed(b"XCLIENT TTL=5\r\n")),
        "503 5.5.0 XCLIENT not permitted during a mail transaction\r\n"
    );
    let mut s = lmtp(false);
    assert!(!lmtp_sent(&s.feed(b"LHLO c\r\n")).contains("XCLIENT"));
    assert_eq!(
        lmtp_sent(&s.feed(b"XCLIENT TTL=0\r\n")),
        "550 5.7.14 You are not from trusted IP\r\n"
    );
    assert_eq!(lmtp_outbound_ttl(&mut s, b""), LMTP_PROXY_DEFAULT_TTL);
}
