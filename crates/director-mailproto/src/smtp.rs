//! Submission (SMTP with AUTH): the pre-login side facing the client
//! ([`SubmissionLogin`], what `submission-login` does) and the login replay
//! facing the backend ([`SubmissionBackend`]). [`ReplyReader`] reads
//! multi-line SMTP replies and is shared with [`crate::lmtp`].
//!
//! Recorded from Dovecot 2.3.19's submission-login proxy: `EHLO <our name>`,
//! then (if the backend advertises it) `XCLIENT HELO=<client helo> PROTO=ESMTP
//! TTL=4 PORT=… ADDR=… SESSION=…`, which makes the backend greet again
//! (`220 …`), then `EHLO` again and `AUTH PLAIN <user\0user\0pass>`; the
//! backend's `235`/`535` line is relayed to the client.

use std::borrow::Cow;

use crate::action::{Action, BackendAction};
use crate::line::{split_word, LineBuffer, LineTooLong};
use crate::login::{reply, LineProtocol, PreLogin, Protocol, Replies};
use crate::sasl;
use crate::session::{ConnInfo, Credentials};

/// Longest command line. submission-login answered a 1107-byte `EHLO` with
/// `500 5.5.2 Line too long` and kept the connection; RFC 5321 allows 512,
/// we accept up to 1000 (exact Dovecot threshold not measured).
pub const MAX_LINE: usize = 1000;

/// Unknown commands tolerated; the next one gets
/// `421 4.7.0 <host> Too many invalid commands.` and the connection closes
/// (recorded: 10 × `500 5.5.1 Unknown command`, then 421).
pub const MAX_BAD_COMMANDS: u32 = 10;

/// Longest reply line from a backend.
pub const MAX_REPLY_LINE: usize = 8192;
/// Most lines in one multi-line reply (EHLO has about ten).
pub const MAX_REPLY_LINES: usize = 100;

/// EHLO keywords between `AUTH` and `STARTTLS`/`PIPELINING`, as Dovecot 2.3.19
/// lists them before login.
pub const DEFAULT_EXTENSIONS: &[&str] = &["BURL imap", "CHUNKING", "ENHANCEDSTATUSCODES", "SIZE"];

/// Settings of the Submission login side.
#[derive(Debug, Clone)]
pub struct SubmissionLoginConfig {
    /// Our host name (first word of the greeting and of EHLO replies;
    /// Dovecot `hostname`).
    pub hostname: String,
    /// Greeting text after the host name (Dovecot `login_greeting`).
    pub greeting: String,
    /// EHLO keywords after `8BITMIME` and `AUTH`.
    pub extensions: Vec<String>,
    /// TLS can be started on this listener.
    pub tls_available: bool,
    /// Dovecot `disable_plaintext_auth`.
    pub disable_plaintext_auth: bool,
}

impl Default for SubmissionLoginConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            greeting: "Dovecot ready.".into(),
            extensions: DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            tls_available: false,
            disable_plaintext_auth: true,
        }
    }
}

/// What the driver needs to replay a Submission login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionLoginRequest {
    /// The credentials.
    pub credentials: Credentials,
    /// The client's EHLO/HELO name, forwarded as `XCLIENT HELO=`.
    pub helo: Option<Vec<u8>>,
}

/// The Submission part of [`SubmissionLogin`]: its settings and the
/// client's EHLO/HELO name.
#[derive(Debug)]
pub struct Submission {
    cfg: SubmissionLoginConfig,
    helo: Option<Vec<u8>>,
}

type Out = Vec<Action<SubmissionLoginRequest>>;

/// The pre-login Submission state machine.
///
/// Events in: `start`, `feed`, `tls_established`, `login_failed`,
/// `login_succeeded`, `idle_timeout`. Actions out: [`Action`] with
/// [`SubmissionLoginRequest`].
pub type SubmissionLogin = PreLogin<Submission>;

impl Protocol for Submission {
    type Req = SubmissionLoginRequest;
    type Buf = LineBuffer;
    /// Submission's texts (recorded).
    const REPLIES: Replies = Replies {
        temporary: "454 4.7.0 Account is temporarily unavailable.",
        auth_failed: "535 5.7.8 Authentication failed.",
        aborted: "501 5.5.2 Authentication aborted by client.",
        invalid_base64: "535 5.7.8 Invalid base64 in response",
        invalid_initial_base64: "501 5.5.2 Invalid base64 data in initial response",
        unsupported_mechanism: "504 5.5.4 Unsupported authentication mechanism.",
        plaintext_disabled: "523 5.7.10 Plaintext authentication disabled.",
        input_full: "421 4.7.0 Input buffer full, aborting",
        tls_active: "502 5.5.1 TLS is already active.",
        tls_unavailable: "502 5.5.1 TLS support is not enabled.",
        tls_begin: "220 2.0.0 Begin TLS negotiation now.",
    };

    fn tls_available(&self) -> bool {
        self.cfg.tls_available
    }

    fn disable_plaintext_auth(&self) -> bool {
        self.cfg.disable_plaintext_auth
    }

    /// `421 4.4.2 <hostname> Disconnected for inactivity.` (recorded).
    fn idle_reply(&self) -> Cow<'static, str> {
        Cow::Owned(format!(
            "421 4.4.2 {} Disconnected for inactivity.",
            self.cfg.hostname
        ))
    }

    fn challenge(c: &str) -> String {
        format!("334 {c}")
    }

    fn request(m: &SubmissionLogin, credentials: Credentials) -> Option<SubmissionLoginRequest> {
        Some(SubmissionLoginRequest {
            credentials,
            helo: m.proto.helo.clone(),
        })
    }

    fn process(m: &mut SubmissionLogin) -> Out {
        m.process_lines()
    }

    /// The client must EHLO again.
    fn tls_established(m: &mut SubmissionLogin) -> Out {
        m.proto.helo = None;
        Vec::new()
    }
}

impl LineProtocol for Submission {
    const MAX_LINE: usize = MAX_LINE;

    fn command(m: &mut SubmissionLogin, line: &[u8], out: &mut Out) {
        m.command(line, out);
    }

    /// Drop the over-long line (the rest of it, when it is still arriving)
    /// and go on, as submission-login does.
    fn line_too_long(m: &mut SubmissionLogin, e: LineTooLong, out: &mut Out) -> bool {
        out.push(reply("500 5.5.2 Line too long"));
        if !e.complete {
            m.buf.skip_rest_of_line();
        }
        e.complete
    }
}

impl SubmissionLogin {
    /// A machine for a new connection (see [`crate::imap::ImapLogin::new`]).
    pub fn new(cfg: SubmissionLoginConfig, tls_active: bool, secured: bool) -> Self {
        let proto = Submission { cfg, helo: None };
        PreLogin::with(proto, LineBuffer::new(MAX_LINE), tls_active, secured)
    }

    /// The greeting: `220 <hostname> <greeting>`.
    pub fn start(&mut self) -> Out {
        let cfg = &self.proto.cfg;
        vec![reply(&format!("220 {} {}", cfg.hostname, cfg.greeting))]
    }

    /// The multi-line EHLO reply for the current state.
    pub fn ehlo_reply(&self) -> String {
        let cfg = &self.proto.cfg;
        let mut lines = vec![cfg.hostname.clone(), "8BITMIME".into()];
        if self.plaintext_allowed() {
            lines.push(format!("AUTH {}", sasl::MECHANISMS));
        } else {
            lines.push("AUTH ".into());
        }
        lines.extend(cfg.extensions.iter().cloned());
        if self.starttls_offered() {
            lines.push("STARTTLS".into());
        }
        lines.push("PIPELINING".into());
        let n = lines.len();
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i + 1 == n { ' ' } else { '-' }))
            .collect()
    }

    fn command(&mut self, line: &[u8], out: &mut Out) {
        let (cmd, arg) = split_word(line);
        match cmd.to_ascii_uppercase().as_slice() {
            b"EHLO" | b"HELO" if arg.is_empty() => out.push(reply("501 Missing hostname")),
            b"EHLO" => {
                self.proto.helo = Some(arg.to_vec());
                out.push(Action::Send(self.ehlo_reply().into_bytes()));
            }
            b"HELO" => {
                self.proto.helo = Some(arg.to_vec());
                out.push(reply(&format!("250 {}", self.proto.cfg.hostname)));
            }
            b"NOOP" | b"RSET" => out.push(reply("250 2.0.0 OK")),
            b"QUIT" => self.close(out, "221 2.0.0 Bye"),
            b"STARTTLS" => self.starttls(out),
            b"AUTH" => {
                let (mech, ir) = split_word(arg);
                if mech.is_empty() {
                    out.push(reply("501 5.5.4 Missing SASL mechanism parameter"));
                } else {
                    let ir = if ir.is_empty() { None } else { Some(ir) };
                    self.authenticate(mech, ir, out);
                }
            }
            b"MAIL" | b"RCPT" | b"DATA" | b"BDAT" | b"VRFY" | b"BURL" => {
                out.push(reply("530 5.7.0 Authentication required."))
            }
            _ => {
                self.bad_commands += 1;
                if self.bad_commands > MAX_BAD_COMMANDS {
                    let msg = format!(
                        "421 4.7.0 {} Too many invalid commands.",
                        self.proto.cfg.hostname
                    );
                    self.close(out, &msg);
                } else {
                    out.push(reply("500 5.5.1 Unknown command"));
                }
            }
        }
    }
}

/// A complete SMTP/LMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The raw lines, without CRLF.
    pub lines: Vec<Vec<u8>>,
}

impl Reply {
    /// The reply as wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for l in &self.lines {
            v.extend_from_slice(l);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    /// Text after the code of each line (`250-AUTH PLAIN` → `AUTH PLAIN`).
    pub fn texts(&self) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or(&[]))
    }
}

/// Why a reply could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line did not start with a three-digit code followed by SP/`-`/EOL.
    #[error("malformed SMTP reply line")]
    Malformed,
    /// Line or line-count limit exceeded.
    #[error("SMTP reply too long")]
    TooLong,
}

/// Reads multi-line SMTP replies (`250-…` continues, `250 …` ends).
#[derive(Debug, Default)]
pub struct ReplyReader {
    lines: Vec<Vec<u8>>,
}

impl ReplyReader {
    /// Takes the next complete reply out of `buf`, if there is one.
    pub fn next(&mut self, buf: &mut LineBuffer) -> Result<Option<Reply>, ReplyError> {
        loop {
            let Some(l) = buf.next_line().map_err(|_| ReplyError::TooLong)? else {
                return Ok(None);
            };
            if l.len() < 3 || !l[..3].iter().all(u8::is_ascii_digit) {
                return Err(ReplyError::Malformed);
            }
            let sep = l.get(3).copied();
            if !matches!(sep, None | Some(b' ') | Some(b'-')) {
                return Err(ReplyError::Malformed);
            }
            let code =
                u16::from(l[0] - b'0') * 100 + u16::from(l[1] - b'0') * 10 + u16::from(l[2] - b'0');
            if let Some(first) = self.lines.first() {
                if first[..3] != l[..3] {
                    return Err(ReplyError::Malformed);
                }
            }
            self.lines.push(l);
            if self.lines.len() > MAX_REPLY_LINES {
                return Err(ReplyError::TooLong);
            }
            if sep != Some(b'-') {
                return Ok(Some(Reply {
                    code,
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
    }
}

/// xtext encoding (RFC 3461) for XCLIENT attribute values.
pub fn xtext(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len());
    for &b in v {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("+{b:02X}"));
        }
    }
    s
}

/// The EHLO keywords of a reply, upper-cased first word → rest.
fn ehlo_keywords(r: &Reply) -> Vec<(Vec<u8>, Vec<u8>)> {
    r.texts()
        .skip(1)
        .map(|t| {
            let (k, v) = split_word(t);
            (k.to_ascii_uppercase(), v.to_vec())
        })
        .collect()
}

/// The XCLIENT command for the attributes a backend advertised, in the
/// order Dovecot's submission proxy sends them (`HELO`, `PROTO`, `TTL`,
/// `PORT`, `ADDR`, `SESSION`). `proto` is `ESMTP` or `LMTP`.
pub fn xclient_command(
    advertised: &[u8],
    conn: &ConnInfo,
    helo: Option<&[u8]>,
    proto: &str,
) -> String {
    let has = |name: &str| {
        advertised
            .split(|&b| b == b' ')
            .any(|a| a.eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut parts = vec!["XCLIENT".to_string()];
    if has("HELO") {
        parts.push(format!(
            "HELO={}",
            helo.map(xtext).unwrap_or_else(|| "[UNAVAILABLE]".into())
        ));
    }
    if has("PROTO") {
        parts.push(format!("PROTO={proto}"));
    }
    if has("TTL") {
        parts.push(format!("TTL={}", conn.proxy_ttl));
    }
    if has("PORT") {
        parts.push(format!("PORT={}", conn.client_port));
    }
    if has("ADDR") {
        parts.push(format!("ADDR={}", conn.client_ip));
    }
    if let (true, Some(s)) = (has("SESSION"), &conn.session_id) {
        parts.push(format!("SESSION={}", xtext(s.as_bytes())));
    }
    parts.join(" ")
}

/// Settings of the Submission backend side.
#[derive(Debug, Clone)]
pub struct SubmissionBackendConfig {
    /// Name we send in EHLO (Dovecot sends its `hostname`).
    pub ehlo_name: String,
    /// Issue STARTTLS before logging in.
    pub starttls: bool,
    /// Send XCLIENT when advertised.
    pub send_xclient: bool,
}

impl Default for SubmissionBackendConfig {
    fn default() -> Self {
        Self {
            ehlo_name: "localhost".into(),
            starttls: false,
            send_xclient: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    Greeting,
    Ehlo,
    StartTls,
    TlsHandshake,
    XclientGreeting,
    Auth,
    Done,
}

/// The Submission login replay towards a backend.
///
/// Events in: `feed`, `tls_established`. Actions out: [`BackendAction`].
#[derive(Debug)]
pub struct SubmissionBackend {
    cfg: SubmissionBackendConfig,
    conn: ConnInfo,
    req: SubmissionLoginRequest,
    state: BState,
    buf: LineBuffer,
    reader: ReplyReader,
    tls_done: bool,
    xclient_done: bool,
}

impl SubmissionBackend {
    /// A replay of `req` for the client `conn`.
    pub fn new(cfg: SubmissionBackendConfig, conn: ConnInfo, req: SubmissionLoginRequest) -> Self {
        Self {
            cfg,
            conn,
            req,
            state: BState::Greeting,
            buf: LineBuffer::new(MAX_REPLY_LINE),
            reader: ReplyReader::default(),
            tls_done: false,
            xclient_done: false,
        }
    }

    /// Backend bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<BackendAction> {
        self.buf.feed(data);
        let mut out = Vec::new();
        while !matches!(self.state, BState::Done | BState::TlsHandshake) {
            match self.reader.next(&mut self.buf) {
                Ok(Some(r)) => self.on_reply(r, &mut out),
                Ok(None) => break,
                Err(e) => self.fail(&mut out, &e.to_string()),
            }
        }
        out
    }

    /// The TLS handshake finished: EHLO again.
    pub fn tls_established(&mut self) -> Vec<BackendAction> {
        if self.state != BState::TlsHandshake {
            return Vec::new();
        }
        self.tls_done = true;
        self.buf.clear();
        self.state = BState::Ehlo;
        vec![self.ehlo()]
    }

    /// Backend bytes after the final reply.
    pub fn take_remaining(&mut self) -> Vec<u8> {
        self.buf.take_rest()
    }

    fn ehlo(&self) -> BackendAction {
        BackendAction::SendBackend(format!("EHLO {}\r\n", self.cfg.ehlo_name).into_bytes())
    }

    fn fail(&mut self, out: &mut Vec<BackendAction>, why: &str) {
        self.state = BState::Done;
        out.push(BackendAction::protocol_error("submission", why));
    }

    fn on_reply(&mut self, r: Reply, out: &mut Vec<BackendAction>) {
        match self.state {
            BState::Greeting | BState::XclientGreeting => {
                if r.code != 220 {
                    return self.fail(out, "backend greeting is not 220");
                }
                self.state = BState::Ehlo;
                out.push(self.ehlo());
            }
            BState::Ehlo => {
                if r.code != 250 {
                    return self.fail(out, "backend refused EHLO");
                }
                let kws = ehlo_keywords(&r);
                if self.cfg.starttls && !self.tls_done {
                    self.state = BState::StartTls;
                    out.push(BackendAction::SendBackend(b"STARTTLS\r\n".to_vec()));
                    return;
                }
                let xclient = kws.iter().find(|(k, _)| k == b"XCLIENT");
                if let (Some((_, attrs)), true, false) =
                    (xclient, self.cfg.send_xclient, self.xclient_done)
                {
                    self.xclient_done = true;
                    let cmd = xclient_command(attrs, &self.conn, self.req.helo.as_deref(), "ESMTP");
                    self.state = BState::XclientGreeting;
                    out.push(BackendAction::SendBackend(
                        format!("{cmd}\r\n").into_bytes(),
                    ));
                    return;
                }
                let b64 = sasl::encode_plain_as_user(&self.req.credentials);
                self.state = BState::Auth;
                out.push(BackendAction::SendBackend(
                    format!("AUTH PLAIN {b64}\r\n").into_bytes(),
                ));
            }
            BState::StartTls => {
                if r.code != 220 {
                    return self.fail(out, "backend refused STARTTLS");
                }
                self.state = BState::TlsHandshake;
                out.push(BackendAction::StartTls);
            }
            BState::Auth => {
                self.state = BState::Done;
                if r.code == 235 || (400..600).contains(&r.code) {
                    out.extend(BackendAction::verdict(r.to_bytes(), r.code == 235));
                } else {
                    self.fail(out, "unexpected reply to AUTH");
                }
            }
            BState::TlsHandshake | BState::Done => {}
        }
    }
}
