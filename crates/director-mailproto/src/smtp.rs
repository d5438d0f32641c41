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

use crate::action::{Action, BackendAction, BackendFailure, LoginFailure};
use crate::line::{split_word, LineBuffer};
use crate::login::{sasl_respond, Replies, SaslOutcome, State};
use crate::sasl::{self, SaslError, SaslExchange, SaslMech, SaslStep, MAX_AUTH_RESPONSE};
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

/// Submission's texts for the shared pre-login outcomes (recorded).
const REPLIES: Replies = Replies {
    temporary: "454 4.7.0 Account is temporarily unavailable.",
    auth_failed: "535 5.7.8 Authentication failed.",
    aborted: "501 5.5.2 Authentication aborted by client.",
    invalid_base64: "535 5.7.8 Invalid base64 in response",
};

type Out = Vec<Action<SubmissionLoginRequest>>;

fn reply(text: &str) -> Action<SubmissionLoginRequest> {
    Action::Send(format!("{text}\r\n").into_bytes())
}

/// The pre-login Submission state machine.
///
/// Events in: `start`, `feed`, `tls_established`, `login_failed`,
/// `login_succeeded`. Actions out: [`Action`] with [`SubmissionLoginRequest`].
#[derive(Debug)]
pub struct SubmissionLogin {
    cfg: SubmissionLoginConfig,
    tls_active: bool,
    secured: bool,
    state: State,
    buf: LineBuffer,
    skipping: bool,
    helo: Option<Vec<u8>>,
    bad_commands: u32,
}

impl SubmissionLogin {
    /// A machine for a new connection (see [`crate::imap::ImapLogin::new`]).
    pub fn new(cfg: SubmissionLoginConfig, tls_active: bool, secured: bool) -> Self {
        Self {
            cfg,
            tls_active,
            secured: secured || tls_active,
            state: State::Commands,
            buf: LineBuffer::new(MAX_LINE),
            skipping: false,
            helo: None,
            bad_commands: 0,
        }
    }

    fn plaintext_allowed(&self) -> bool {
        self.secured || !self.cfg.disable_plaintext_auth
    }

    /// The greeting: `220 <hostname> <greeting>`.
    pub fn start(&mut self) -> Out {
        vec![reply(&format!(
            "220 {} {}",
            self.cfg.hostname, self.cfg.greeting
        ))]
    }

    /// The multi-line EHLO reply for the current state.
    pub fn ehlo_reply(&self) -> String {
        let mut lines = vec![self.cfg.hostname.clone(), "8BITMIME".into()];
        if self.plaintext_allowed() {
            lines.push(format!("AUTH {}", sasl::MECHANISMS));
        } else {
            lines.push("AUTH ".into());
        }
        lines.extend(self.cfg.extensions.iter().cloned());
        if self.cfg.tls_available && !self.tls_active {
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

    /// The client stayed silent for [`crate::action::LOGIN_IDLE_TIMEOUT`]
    /// before logging in: `421 4.4.2 <hostname> Disconnected for inactivity.` (recorded), then close.
    pub fn idle_timeout(&mut self) -> Out {
        let mut out = Vec::new();
        if self.state.past_login() {
            return out;
        }
        let msg = format!(
            "421 4.4.2 {} Disconnected for inactivity.",
            self.cfg.hostname
        );
        self.close(&mut out, &msg);
        out
    }

    /// False while the machine waits for the driver (login in progress):
    /// stop reading from the client until it turns true again.
    pub fn wants_input(&self) -> bool {
        self.state.wants_input()
    }

    /// Client bytes arrived. Ignored once closed, during a TLS handshake and
    /// after `login_succeeded` (the driver splices from then on).
    pub fn feed(&mut self, data: &[u8]) -> Out {
        if self.state.ignores_input() {
            return Vec::new();
        }
        let mut data = data;
        if self.skipping {
            match data.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    self.skipping = false;
                    data = &data[p + 1..];
                }
                None => return Vec::new(),
            }
        }
        if self.state.pending_overflow(self.buf.len(), data.len()) {
            let mut out = Vec::new();
            self.close(&mut out, "421 4.7.0 Input buffer full, aborting");
            return out;
        }
        self.buf.feed(data);
        self.process()
    }

    /// The TLS handshake finished (the client must EHLO again).
    pub fn tls_established(&mut self) -> Out {
        if let State::TlsHandshake = self.state {
            self.tls_active = true;
            self.secured = true;
            self.helo = None;
            self.state = State::Commands;
        }
        Vec::new()
    }

    /// The login failed; the client may try again.
    pub fn login_failed(&mut self, why: LoginFailure) -> Out {
        if !matches!(self.state, State::LoginPending) {
            return Vec::new();
        }
        self.state = State::Commands;
        let mut out = Vec::new();
        if let Some(text) = REPLIES.login_failed(&why) {
            out.push(reply(text));
        }
        out.extend(self.process());
        out
    }

    /// The backend accepted; returns client bytes that followed the login.
    pub fn login_succeeded(&mut self) -> Vec<u8> {
        self.state = State::Proxying;
        self.buf.take_rest()
    }

    fn close(&mut self, out: &mut Out, text: &str) {
        out.push(reply(text));
        out.push(Action::Close);
        self.state = State::Closed;
        self.buf.clear();
    }

    fn process(&mut self) -> Out {
        let mut out = Vec::new();
        while self.state.parses() {
            let sasl = self.state.is_sasl();
            self.buf
                .set_max(if sasl { MAX_AUTH_RESPONSE } else { MAX_LINE });
            let line = match self.buf.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(_) if sasl => {
                    self.state = State::Closed;
                    self.buf.clear();
                    out.push(Action::Close);
                    break;
                }
                Err(e) => {
                    // Drop the over-long line (the rest of it, when it is
                    // still arriving) and go on, as submission-login does.
                    out.push(reply("500 5.5.2 Line too long"));
                    if !e.complete {
                        self.skipping = true;
                        break;
                    }
                    continue;
                }
            };
            match std::mem::replace(&mut self.state, State::Commands) {
                State::Sasl(ex) => self.sasl_response(ex, &line, &mut out),
                _ => self.command(&line, &mut out),
            }
        }
        out
    }

    fn command(&mut self, line: &[u8], out: &mut Out) {
        let (cmd, arg) = split_word(line);
        match cmd.to_ascii_uppercase().as_slice() {
            b"EHLO" | b"HELO" if arg.is_empty() => out.push(reply("501 Missing hostname")),
            b"EHLO" => {
                self.helo = Some(arg.to_vec());
                out.push(Action::Send(self.ehlo_reply().into_bytes()));
            }
            b"HELO" => {
                self.helo = Some(arg.to_vec());
                out.push(reply(&format!("250 {}", self.cfg.hostname)));
            }
            b"NOOP" | b"RSET" => out.push(reply("250 2.0.0 OK")),
            b"QUIT" => self.close(out, "221 2.0.0 Bye"),
            b"STARTTLS" => {
                if self.tls_active {
                    out.push(reply("502 5.5.1 TLS is already active."));
                } else if !self.cfg.tls_available {
                    out.push(reply("502 5.5.1 TLS support is not enabled."));
                } else {
                    out.push(reply("220 2.0.0 Begin TLS negotiation now."));
                    out.push(Action::StartTls);
                    self.buf.clear();
                    self.state = State::TlsHandshake;
                }
            }
            b"AUTH" => self.auth(arg, out),
            b"MAIL" | b"RCPT" | b"DATA" | b"BDAT" | b"VRFY" | b"BURL" => {
                out.push(reply("530 5.7.0 Authentication required."))
            }
            _ => {
                self.bad_commands += 1;
                if self.bad_commands > MAX_BAD_COMMANDS {
                    let msg = format!("421 4.7.0 {} Too many invalid commands.", self.cfg.hostname);
                    self.close(out, &msg);
                } else {
                    out.push(reply("500 5.5.1 Unknown command"));
                }
            }
        }
    }

    fn auth(&mut self, arg: &[u8], out: &mut Out) {
        let (mech, ir) = split_word(arg);
        if mech.is_empty() {
            out.push(reply("501 5.5.4 Missing SASL mechanism parameter"));
            return;
        }
        let Some(mech) = SaslMech::parse(mech) else {
            out.push(reply("504 5.5.4 Unsupported authentication mechanism."));
            return;
        };
        if !self.plaintext_allowed() {
            out.push(reply("523 5.7.10 Plaintext authentication disabled."));
            return;
        }
        let ir = if ir.is_empty() { None } else { Some(ir) };
        match SaslExchange::start(mech, ir) {
            Ok((ex, step)) => self.step(ex, step, out),
            Err(SaslError::InvalidBase64) => {
                out.push(reply("501 5.5.2 Invalid base64 data in initial response"))
            }
            Err(_) => out.push(reply(REPLIES.auth_failed)),
        }
    }

    fn step(&mut self, ex: SaslExchange, step: SaslStep, out: &mut Out) {
        match step {
            SaslStep::Challenge(c) => {
                out.push(reply(&format!("334 {c}")));
                self.state = State::Sasl(ex);
            }
            SaslStep::Done(creds) => {
                out.push(Action::Login(SubmissionLoginRequest {
                    credentials: creds,
                    helo: self.helo.clone(),
                }));
                self.state = State::LoginPending;
            }
        }
    }

    fn sasl_response(&mut self, ex: SaslExchange, line: &[u8], out: &mut Out) {
        match sasl_respond(&REPLIES, ex, line) {
            SaslOutcome::Step(ex, step) => self.step(ex, step, out),
            SaslOutcome::Reply(text) => out.push(reply(text)),
            SaslOutcome::Close => {
                self.state = State::Closed;
                out.push(Action::Close);
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
        tracing::debug!(reason = why, "submission backend login failed");
        self.state = BState::Done;
        out.push(BackendAction::Failed(BackendFailure::Protocol(why.into())));
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
                let c = &self.req.credentials;
                let authzid = if c.authzid.is_empty() {
                    &c.authcid
                } else {
                    &c.authzid
                };
                let b64 = sasl::encode_plain(authzid, &c.authcid, &c.password);
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
                if r.code == 235 {
                    out.push(BackendAction::SendClient(r.to_bytes()));
                    out.push(BackendAction::LoggedIn);
                } else if (400..600).contains(&r.code) {
                    out.push(BackendAction::SendClient(r.to_bytes()));
                    out.push(BackendAction::Failed(BackendFailure::AuthRejected));
                } else {
                    self.fail(out, "unexpected reply to AUTH");
                }
            }
            BState::TlsHandshake | BState::Done => {}
        }
    }
}
