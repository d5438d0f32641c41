//! Interop with real Dovecot 2.3 (the oracle), on private loopback addresses.
//!
//! * End to end: the same client bytes go (a) through Dovecot's own login
//!   proxy ("front", `proxy=y nopassword=y host=<back>`) and (b) through our
//!   login machine + backend machine driven by a small blocking driver here,
//!   both to the same real Dovecot backend ("back"). The client must see the
//!   same bytes from both.
//! * Our backend machines forward the client address (IMAP ID, XCLIENT) and
//!   the backend logs it; our PROXY v2 header is understood by Dovecot.
//! * LMTP: our server + fan-out deliver to the real backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
mod dovecot;

use common::{BackendSide, LoginSide};

use director_mailproto::imap::{
    ImapBackend, ImapBackendConfig, ImapLogin, ImapLoginConfig, ImapLoginRequest,
};
use director_mailproto::lmtp::{
    merge_replies, plan_fanout, LmtpAction, LmtpBackendAction, LmtpBackendConfig,
    LmtpBackendSession, LmtpServer, LmtpServerConfig,
};
use director_mailproto::managesieve::{
    SieveBackend, SieveBackendConfig, SieveLogin, SieveLoginConfig,
};
use director_mailproto::pop3::{Pop3Backend, Pop3BackendConfig, Pop3Login, Pop3LoginConfig};
use director_mailproto::submission::{
    SubmissionBackend, SubmissionBackendConfig, SubmissionLogin, SubmissionLoginConfig,
};
use director_mailproto::{proxy_v2, Action, BackendAction, BackendFailure, ConnInfo, LoginFailure};
use dovecot::{fresh_ip, Conn, Dovecot};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Our side of one client connection: login machine, then (after a login)
/// the backend connection.
struct OurProxy<L: LoginSide, B, F: Fn(L::Req) -> B> {
    login: L,
    make_backend: F,
    backend_addr: SocketAddr,
    spliced: Option<Conn>,
}

fn sends<R>(acts: &[Action<R>], out: &mut Vec<u8>) -> bool {
    let mut closed = false;
    for a in acts {
        match a {
            Action::Send(b) => out.extend_from_slice(b),
            Action::Close => closed = true,
            Action::StartTls => panic!("no TLS in these tests"),
            Action::Login(_) => {}
        }
    }
    closed
}

impl<L: LoginSide, B: BackendSide, F: Fn(L::Req) -> B> OurProxy<L, B, F>
where
    L::Req: Clone,
{
    fn greeting(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        sends(&self.login.start(), &mut out);
        out
    }

    /// Client sends `input`; returns what the client gets back.
    fn step(&mut self, input: &[u8]) -> Vec<u8> {
        if let Some(b) = &mut self.spliced {
            b.send(input);
            return b.read_quiet(Duration::from_millis(300));
        }
        let mut out = Vec::new();
        let mut acts = self.login.feed(input);
        loop {
            sends(&acts, &mut out);
            let Some(req) = acts.iter().find_map(|a| match a {
                Action::Login(r) => Some(r.clone()),
                _ => None,
            }) else {
                return out;
            };
            let mut backend = (self.make_backend)(req);
            // A backend that refuses the connection is a temporary failure, as in the proxy.
            let Ok(mut conn) = Conn::try_connect(self.backend_addr) else {
                acts = self.login.failed(LoginFailure::Temporary);
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let outcome = 'replay: loop {
                assert!(Instant::now() < deadline, "backend replay timed out");
                let got = conn.read_until(|b| !b.is_empty());
                assert!(!got.is_empty(), "backend closed during replay");
                for a in backend.feed(&got) {
                    match a {
                        BackendAction::SendBackend(b) => conn.send(&b),
                        BackendAction::SendClient(b) => out.extend_from_slice(&b),
                        BackendAction::StartTls => panic!("no TLS here"),
                        BackendAction::LoggedIn => break 'replay None,
                        BackendAction::Failed(BackendFailure::AuthRejected) => {
                            break 'replay Some(LoginFailure::Relayed)
                        }
                        BackendAction::Failed(BackendFailure::Protocol(e)) => {
                            eprintln!("backend protocol error: {e}");
                            break 'replay Some(LoginFailure::Temporary);
                        }
                    }
                }
            };
            match outcome {
                None => {
                    out.extend_from_slice(&backend.take_remaining());
                    let rest = self.login.succeeded();
                    if !rest.is_empty() {
                        conn.send(&rest);
                    }
                    self.spliced = Some(conn);
                    return out;
                }
                Some(f) => acts = self.login.failed(f),
            }
        }
    }
}

/// Sends each step to the real front and to our proxy (`login`, and
/// `make_backend` for the replay to the lab's backend); the client must see
/// the same bytes.
fn compare<L: LoginSide, B: BackendSide, F: Fn(L::Req) -> B>(
    lab: &Lab,
    port: u16,
    login: L,
    make_backend: F,
    steps: &[&[u8]],
) where
    L::Req: Clone,
{
    compare_with(
        &lab.front,
        lab.back.addr(port),
        port,
        login,
        make_backend,
        steps,
    );
}

/// [`compare`] with any real front and any backend address (ours connects
/// there; the front's own passdb says where it proxies).
fn compare_with<L: LoginSide, B: BackendSide, F: Fn(L::Req) -> B>(
    front: &Dovecot,
    backend_addr: SocketAddr,
    port: u16,
    login: L,
    make_backend: F,
    steps: &[&[u8]],
) where
    L::Req: Clone,
{
    let mut ours = OurProxy {
        login,
        make_backend,
        backend_addr,
        spliced: None,
    };
    let mut real = Conn::connect(front.addr(port));
    let g = ours.greeting();
    let rg = real.read_until(|b| b.len() >= g.len() && b.ends_with(b"\n"));
    assert_eq!(
        String::from_utf8_lossy(&rg),
        String::from_utf8_lossy(&g),
        "greeting"
    );
    for step in steps {
        let mine = ours.step(step);
        real.send(step);
        // As many lines as ours: the backend's timing texts may differ in length.
        let lines = |b: &[u8]| b.iter().filter(|c| **c == b'\n').count();
        let theirs =
            real.read_until(|b| lines(b) >= lines(&mine) && (b.is_empty() || b.ends_with(b"\n")));
        assert_eq!(
            mask_timings(&String::from_utf8_lossy(&theirs)),
            mask_timings(&String::from_utf8_lossy(&mine)),
            "after client sent {:?}; front log:\n{}",
            String::from_utf8_lossy(step),
            front.log()
        );
    }
}

/// Masks Dovecot's command timings, `(0.001 + 0.000 secs)` or `(0.001 + 0.000 + 0.001
/// secs)`: the backend writes them, so two sessions differ there by chance.
fn mask_timings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('(') {
        let after = &rest[start + 1..];
        match after.find(" secs)") {
            Some(end)
                if end > 0
                    && after[..end]
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | ' ')) =>
            {
                out.push_str(&rest[..start]);
                out.push_str("(TIMING secs)");
                rest = &after[end + " secs)".len()..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn timings_are_masked() {
    assert_eq!(
        mask_timings("l OK Logout completed (0.001 + 0.000 + 0.001 secs).\r\n(x) (1 secs)"),
        "l OK Logout completed (TIMING secs).\r\n(x) (TIMING secs)"
    );
}

/// Our backend machine forwarded the client's address (IMAP ID, XCLIENT):
/// the backend logged it.
fn assert_backend_saw_client(lab: &Lab) {
    assert!(
        lab.back.log().contains("rip=192.0.2.7"),
        "{}",
        lab.back.log()
    );
}

struct Lab {
    back: Dovecot,
    front: Dovecot,
}

fn lab() -> Lab {
    let back_ip = fresh_ip();
    let back = Dovecot::start(
        "back",
        back_ip,
        "password=pass",
        &format!("login_trusted_networks = 127.0.0.0/8\nauth_master_user_separator = *\nsubmission_relay_host = {back_ip}\nsubmission_relay_port = 587\n"),
    );
    let front_ip = fresh_ip();
    let front = Dovecot::start(
        "front",
        front_ip,
        &format!("proxy=y nopassword=y host={back_ip}"),
        "lmtp_proxy = yes\n",
    );
    Lab { back, front }
}

fn conn_info(local_port: u16) -> ConnInfo {
    ConnInfo {
        client_ip: "192.0.2.7".parse().unwrap(),
        client_port: 40007,
        local_ip: "192.0.2.1".parse().unwrap(),
        local_port,
        session_id: None,
        proxy_ttl: ConnInfo::DEFAULT_TTL,
    }
}

/// The IMAP front the IMAP comparisons use: our greeting, plaintext logins allowed.
fn imap_front() -> ImapLoginConfig {
    ImapLoginConfig {
        greeting: "front ready.".into(),
        disable_plaintext_auth: false,
        ..ImapLoginConfig::default()
    }
}

/// The backend side of an IMAP comparison, for `req`.
fn imap_backend(req: ImapLoginRequest) -> ImapBackend {
    ImapBackend::new(ImapBackendConfig::default(), conn_info(143), req)
}

#[test]
fn imap_end_to_end_matches_dovecot() {
    let lab = lab();
    let (cfg, mk) = (imap_front(), imap_backend);
    compare(
        &lab,
        143,
        ImapLogin::new(cfg.clone(), false, false),
        mk,
        &[
            b"a CAPABILITY\r\n",
            b"b NOOP\r\n",
            b"c ID (\"name\" \"t\")\r\n",
            b"d ENABLE x\r\n",
            b"e STARTTLS\r\n",
            b"f FOO\r\n",
            b"g AUTHENTICATE PLAIN\r\n",
            b"*\r\n",
            b"h AUTHENTICATE PLAIN !!!\r\n",
            b"i AUTHENTICATE FOO\r\n",
            b"j LOGIN user1 wrong\r\n",
            b"k LOGIN {5}\r\n",
            b"user1 {4+}\r\npass\r\n",
            b"l LOGOUT\r\n",
        ],
    );
    compare(
        &lab,
        143,
        ImapLogin::new(cfg, false, false),
        mk,
        &[
            b"a AUTHENTICATE PLAIN AHVzZXIxAHBhc3M=\r\n",
            b"b LOGOUT\r\n",
        ],
    );
    // Our ID forwarding reached the backend: it logged the client's address.
    assert_backend_saw_client(&lab);
}

#[test]
fn imap_command_errors_match_dovecot() {
    let lab = lab();
    let (cfg, mk) = (imap_front(), imap_backend);
    // A quoted string in an atom's place.
    compare(
        &lab,
        143,
        ImapLogin::new(cfg.clone(), false, false),
        mk,
        &[b"a LOGIN \"us\\\"er\" \"pass\"\r\n", b"b LOGOUT\r\n"],
    );
    // The third bad command in a row ends the session.
    compare(
        &lab,
        143,
        ImapLogin::new(cfg, false, false),
        mk,
        &[b"c FOO\r\n", b"d LOGIN\r\n", b"e LOGIN a\r\n"],
    );
}

#[test]
fn imap_plaintext_refusals_match_dovecot() {
    // A loopback client is not secured (only rip == lip is): with
    // `disable_plaintext_auth = yes` and no TLS, both ways of sending a
    // password are refused.
    let front = Dovecot::start(
        "strict",
        fresh_ip(),
        "password=pass",
        "disable_plaintext_auth = yes\n",
    );
    let cfg = ImapLoginConfig {
        greeting: "strict ready.".into(),
        disable_plaintext_auth: true,
        ..ImapLoginConfig::default()
    };
    let unused = SocketAddr::from((fresh_ip(), 143));
    compare_with(
        &front,
        unused,
        143,
        ImapLogin::new(cfg, false, false),
        |req| ImapBackend::new(ImapBackendConfig::default(), conn_info(143), req),
        &[
            b"a CAPABILITY\r\n",
            b"b LOGIN user1 pass\r\n",
            b"c AUTHENTICATE PLAIN\r\n",
            b"d LOGOUT\r\n",
        ],
    );
}

#[test]
fn imap_unreachable_backend_matches_dovecot() {
    // Nothing listens on `dead`: the real front's proxy connection is
    // refused, and so is ours.
    let dead = fresh_ip();
    let front = Dovecot::start(
        "unreach",
        fresh_ip(),
        &format!("proxy=y nopassword=y host={dead}"),
        "",
    );
    let cfg = ImapLoginConfig {
        greeting: "unreach ready.".into(),
        disable_plaintext_auth: false,
        ..ImapLoginConfig::default()
    };
    compare_with(
        &front,
        SocketAddr::from((dead, 143)),
        143,
        ImapLogin::new(cfg, false, false),
        |req| ImapBackend::new(ImapBackendConfig::default(), conn_info(143), req),
        &[b"b LOGIN user1 pass\r\n", b"c NOOP\r\n"],
    );
}

#[test]
fn pop3_end_to_end_matches_dovecot() {
    let lab = lab();
    let cfg = Pop3LoginConfig {
        greeting: "front ready.".into(),
        disable_plaintext_auth: false,
        ..Pop3LoginConfig::default()
    };
    let mk = |req: director_mailproto::pop3::Pop3LoginRequest| {
        Pop3Backend::new(
            Pop3BackendConfig::default(),
            conn_info(110),
            req.credentials,
        )
    };
    compare(
        &lab,
        110,
        Pop3Login::new(cfg.clone(), false, false),
        mk,
        &[
            b"CAPA\r\n",
            b"NOOP\r\n",
            b"STLS\r\n",
            b"PASS x\r\n",
            b"AUTH\r\n",
            b"AUTH PLAIN\r\n",
            b"*\r\n",
            b"USER user1\r\n",
            b"PASS wrong\r\n",
            b"AUTH PLAIN AHVzZXIxAHBhc3M=\r\n",
            b"STAT\r\n",
            b"QUIT\r\n",
        ],
    );
    assert_backend_saw_client(&lab);
}

#[test]
fn submission_end_to_end_matches_dovecot() {
    let lab = lab();
    let cfg = SubmissionLoginConfig {
        hostname: "front.test.invalid".into(),
        greeting: "front ready.".into(),
        disable_plaintext_auth: false,
        ..SubmissionLoginConfig::default()
    };
    let mk = |req| {
        SubmissionBackend::new(
            SubmissionBackendConfig {
                ehlo_name: "front.test.invalid".into(),
                ..SubmissionBackendConfig::default()
            },
            conn_info(587),
            req,
        )
    };
    compare(
        &lab,
        587,
        SubmissionLogin::new(cfg, false, false),
        mk,
        &[
            b"EHLO client.example\r\n",
            b"NOOP\r\n",
            b"RSET\r\n",
            b"FOO\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"STARTTLS\r\n",
            b"AUTH PLAIN\r\n",
            b"*\r\n",
            b"AUTH FOO\r\n",
            b"AUTH\r\n",
            b"AUTH PLAIN AHVzZXIxAHdyb25n\r\n",
            b"AUTH LOGIN\r\n",
            b"dXNlcjE=\r\n",
            b"cGFzcw==\r\n",
            b"QUIT\r\n",
        ],
    );
    assert_backend_saw_client(&lab);
}

#[test]
fn managesieve_end_to_end_matches_dovecot() {
    let lab = lab();
    let cfg = SieveLoginConfig {
        greeting: "front ready.".into(),
        implementation: "Dovecot (Debian) Pigeonhole".into(),
        disable_plaintext_auth: false,
        ..SieveLoginConfig::default()
    };
    let mk = |req: director_mailproto::managesieve::SieveLoginRequest| {
        SieveBackend::new(
            SieveBackendConfig::default(),
            conn_info(4190),
            req.credentials,
        )
    };
    compare(
        &lab,
        4190,
        SieveLogin::new(cfg, false, false),
        mk,
        &[
            b"CAPABILITY\r\n",
            b"NOOP\r\n",
            b"NOOP \"tag\"\r\n",
            b"FOO\r\n",
            b"STARTTLS\r\n",
            b"AUTHENTICATE \"PLAIN\"\r\n",
            b"\"*\"\r\n",
            b"AUTHENTICATE \"PLAIN\" \"AHVzZXIxAHdyb25n\"\r\n",
            b"AUTHENTICATE \"PLAIN\" {16+}\r\nAHVzZXIxAHBhc3M=\r\n",
            b"LOGOUT\r\n",
        ],
    );
    assert_backend_saw_client(&lab);
}

#[test]
fn lmtp_fanout_delivers_to_real_backend() {
    let lab = lab();
    let mut server: LmtpServer<SocketAddr> = LmtpServer::new(LmtpServerConfig::default());
    let mut acts = server.start();
    acts.extend(server.feed(b"LHLO mta.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<ghost@nowhere>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot line\r\n.\r\n"));
    let mut client_saw = Vec::new();
    let mut delivered = false;
    for _ in 0..20 {
        let mut next = Vec::new();
        for a in acts {
            match a {
                LmtpAction::Send(b) => client_saw.extend_from_slice(&b),
                LmtpAction::Resolve { user, .. } => {
                    // "The core": ghost has no backend.
                    let backend = (!user.starts_with(b"ghost")).then(|| lab.back.addr(24));
                    next.extend(server.recipient_resolved(backend));
                }
                LmtpAction::Deliver(tx) => {
                    let plans = plan_fanout(&tx.recipients);
                    let mut results = Vec::new();
                    for plan in &plans {
                        let mut s = LmtpBackendSession::new(
                            LmtpBackendConfig::default(),
                            conn_info(24),
                            server.helo(),
                            &tx,
                            plan,
                        );
                        let mut c = Conn::connect(plan.backend);
                        let replies = 'sess: loop {
                            let got = c.read_until(|b| !b.is_empty());
                            let acts = if got.is_empty() {
                                s.failed()
                            } else {
                                s.feed(&got)
                            };
                            for a in acts {
                                match a {
                                    LmtpBackendAction::Send(b) => c.send(&b),
                                    LmtpBackendAction::Done(r) => break 'sess r,
                                    LmtpBackendAction::SendBody => panic!("not streaming"),
                                }
                            }
                        };
                        results.push(replies);
                    }
                    next.extend(server.delivered(merge_replies(
                        tx.recipients.len(),
                        &plans,
                        &results,
                    )));
                    delivered = true;
                }
                LmtpAction::BodyChunk(_) | LmtpAction::OpenData(_) | LmtpAction::Close => {}
            }
        }
        if next.is_empty() {
            break;
        }
        acts = next;
    }
    assert!(delivered);
    let text = String::from_utf8_lossy(&client_saw).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "220 localhost Dovecot ready.");
    assert_eq!(lines[4], "250 PIPELINING");
    assert_eq!(lines[5], "250 2.1.0 OK");
    assert_eq!(lines[6], "250 2.1.5 OK");
    assert_eq!(
        lines[7],
        "451 4.3.0 <ghost@nowhere> Temporary internal error"
    );
    assert_eq!(lines[8], "250 2.1.5 OK");
    assert_eq!(lines[9], "354 OK");
    assert!(
        lines[10].starts_with("250 2.0.0 <alice@example.org> ") && lines[10].ends_with(" Saved"),
        "{text}"
    );
    assert!(
        lines[11].starts_with("250 2.0.0 <bob@example.org> ") && lines[11].ends_with(" Saved"),
        "{text}"
    );
    for user in ["alice@example.org", "bob@example.org"] {
        let new = lab.back.mail_dir().join(user).join("Maildir/new");
        let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
        assert_eq!(files.len(), 1, "{user}");
        let body = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(body.contains("\n.dot line"), "{body}");
        // XCLIENT reached the backend: its Received header names our client.
        assert!(body.contains("([192.0.2.7])"), "{body}");
    }
}

#[test]
fn proxy_v2_header_understood_by_dovecot() {
    let back = Dovecot::start("ha", fresh_ip(), "password=pass", "");
    let mut c = Conn::connect(back.addr(10143));
    c.send(&proxy_v2::encode(
        "10.9.8.7:40000".parse().unwrap(),
        "10.9.8.1:143".parse().unwrap(),
    ));
    let g = c.read_until(|b| b.ends_with(b"\n"));
    assert!(g.starts_with(b"* OK "), "{}", String::from_utf8_lossy(&g));
    c.send(b"a LOGIN user1 pass\r\n");
    let r = c.read_until(|b| b.windows(4).any(|w| w == b"a OK"));
    assert!(
        r.windows(4).any(|w| w == b"a OK"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    c.send(b"b LOGOUT\r\n");
    c.read_until(|b| b.windows(4).any(|w| w == b"b OK"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !back.log().contains("rip=10.9.8.7, lip=10.9.8.1") {
        assert!(Instant::now() < deadline, "{}", back.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
