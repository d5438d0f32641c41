//! POP3: the pre-login side facing the client ([`Pop3Login`], what
//! `pop3-login` does) and the login replay facing the backend ([`Pop3Backend`]).
//!
//! Recorded from Dovecot 2.3.19's pop3-login proxy: after the backend's
//! `+OK [XCLIENT] …` greeting it pipelines `XCLIENT ADDR=… PORT=… SESSION=…
//! TTL=4` with `USER <name>`, waits for `+OK Updated` and `+OK`, then sends
//! `PASS <password>` and relays the backend's answer. It uses USER/PASS even
//! when the client logged in with `AUTH PLAIN`.

use crate::action::{Action, BackendAction, BackendFailure, LoginFailure};
use crate::line::{split_word, LineBuffer};
use crate::login::{sasl_respond, Replies, SaslOutcome, State};
use crate::sasl::{self, SaslError, SaslExchange, SaslMech, SaslStep, MAX_AUTH_RESPONSE};
use crate::session::{ConnInfo, Credentials, Mechanism};

/// Longest command line (Dovecot's 1 KiB login input buffer; past it
/// pop3-login answers `-ERR Input buffer full, aborting` and disconnects).
pub const MAX_LINE: usize = 1024;

/// Bad commands after which the connection is closed.
pub const MAX_BAD_COMMANDS: u32 = 3;

/// Longest backend reply line during the replay.
pub const MAX_BACKEND_LINE: usize = 8192;

/// Capability lines Dovecot 2.3.19 lists before `STLS`/`USER`/`SASL`.
pub const DEFAULT_CAPA: &[&str] = &[
    "CAPA",
    "TOP",
    "UIDL",
    "RESP-CODES",
    "PIPELINING",
    "AUTH-RESP-CODE",
];

/// Settings of the POP3 login side.
#[derive(Debug, Clone)]
pub struct Pop3LoginConfig {
    /// Greeting text after `+OK ` (Dovecot `login_greeting`).
    pub greeting: String,
    /// Capability lines before STLS/USER/SASL.
    pub capa: Vec<String>,
    /// TLS can be started on this listener.
    pub tls_available: bool,
    /// Dovecot `disable_plaintext_auth`.
    pub disable_plaintext_auth: bool,
}

impl Default for Pop3LoginConfig {
    fn default() -> Self {
        Self {
            greeting: "Dovecot ready.".into(),
            capa: DEFAULT_CAPA.iter().map(|s| s.to_string()).collect(),
            tls_available: false,
            disable_plaintext_auth: true,
        }
    }
}

/// What the driver needs to replay a POP3 login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3LoginRequest {
    /// The credentials.
    pub credentials: Credentials,
}

/// POP3's texts for the shared pre-login outcomes (recorded).
const REPLIES: Replies = Replies {
    temporary: "-ERR [SYS/TEMP] Account is temporarily unavailable.",
    auth_failed: "-ERR [AUTH] Authentication failed.",
    aborted: "-ERR Authentication aborted by client.",
    invalid_base64: "-ERR [AUTH] Invalid base64 in response",
};

type Out = Vec<Action<Pop3LoginRequest>>;

/// The pre-login POP3 state machine.
///
/// Events in: `start`, `feed`, `tls_established`, `login_failed`,
/// `login_succeeded`. Actions out: [`Action`] with [`Pop3LoginRequest`].
#[derive(Debug)]
pub struct Pop3Login {
    cfg: Pop3LoginConfig,
    tls_active: bool,
    secured: bool,
    state: State,
    buf: LineBuffer,
    user: Option<Vec<u8>>,
    bad_commands: u32,
}

fn reply(text: &str) -> Action<Pop3LoginRequest> {
    Action::Send(format!("{text}\r\n").into_bytes())
}

impl Pop3Login {
    /// A machine for a new connection (see [`crate::imap::ImapLogin::new`] for
    /// `tls_active` and `secured`).
    pub fn new(cfg: Pop3LoginConfig, tls_active: bool, secured: bool) -> Self {
        Self {
            cfg,
            tls_active,
            secured: secured || tls_active,
            state: State::Commands,
            buf: LineBuffer::new(MAX_LINE),
            user: None,
            bad_commands: 0,
        }
    }

    fn plaintext_allowed(&self) -> bool {
        self.secured || !self.cfg.disable_plaintext_auth
    }

    /// The greeting.
    pub fn start(&mut self) -> Out {
        vec![reply(&format!("+OK {}", self.cfg.greeting))]
    }

    /// The `CAPA` reply for the current state.
    pub fn capa(&self) -> String {
        let mut s = String::from("+OK\r\n");
        for c in &self.cfg.capa {
            s.push_str(c);
            s.push_str("\r\n");
        }
        if self.cfg.tls_available && !self.tls_active {
            s.push_str("STLS\r\n");
        }
        if self.plaintext_allowed() {
            s.push_str("USER\r\nSASL ");
            s.push_str(sasl::MECHANISMS);
            s.push_str("\r\n");
        } else {
            s.push_str("SASL\r\n");
        }
        s.push_str(".\r\n");
        s
    }

    /// The client stayed silent for [`crate::action::LOGIN_IDLE_TIMEOUT`]
    /// before logging in: `-ERR Disconnected for inactivity.` (recorded), then close.
    pub fn idle_timeout(&mut self) -> Out {
        let mut out = Vec::new();
        if self.state.past_login() {
            return out;
        }
        self.close(&mut out, "-ERR Disconnected for inactivity.");
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
        if self.state.pending_overflow(self.buf.len(), data.len()) {
            let mut out = Vec::new();
            self.close(&mut out, "-ERR Input buffer full, aborting");
            return out;
        }
        self.buf.feed(data);
        self.process()
    }

    /// The TLS handshake finished.
    pub fn tls_established(&mut self) -> Out {
        if let State::TlsHandshake = self.state {
            self.tls_active = true;
            self.secured = true;
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
            let max = if self.state.is_sasl() {
                MAX_AUTH_RESPONSE
            } else {
                MAX_LINE
            };
            self.buf.set_max(max);
            let line = match self.buf.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(_) => {
                    if self.state.is_sasl() {
                        self.state = State::Closed;
                        self.buf.clear();
                        out.push(Action::Close);
                    } else {
                        self.close(&mut out, "-ERR Input buffer full, aborting");
                    }
                    break;
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
        let cmd = cmd.to_ascii_uppercase();
        match cmd.as_slice() {
            b"CAPA" => out.push(Action::Send(self.capa().into_bytes())),
            b"QUIT" => self.close(out, "+OK Logging out"),
            b"STLS" => {
                if self.tls_active {
                    out.push(reply("-ERR TLS is already active."));
                } else if !self.cfg.tls_available {
                    out.push(reply("-ERR TLS support isn't enabled."));
                } else {
                    out.push(reply("+OK Begin TLS negotiation now."));
                    out.push(Action::StartTls);
                    self.buf.clear();
                    self.state = State::TlsHandshake;
                }
            }
            b"USER" => {
                if !self.plaintext_allowed() {
                    out.push(reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."));
                } else {
                    self.user = Some(arg.to_vec());
                    out.push(reply("+OK"));
                }
            }
            b"PASS" => {
                if !self.plaintext_allowed() {
                    out.push(reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."));
                    return;
                }
                let Some(user) = self.user.take() else {
                    out.push(reply("-ERR No username given."));
                    return;
                };
                let creds = Credentials {
                    authzid: Vec::new(),
                    authcid: user,
                    password: arg.to_vec(),
                    mechanism: Mechanism::Login,
                };
                self.request(creds, out);
            }
            b"AUTH" => self.auth(arg, out),
            _ => {
                self.bad_commands += 1;
                out.push(reply("-ERR Unknown command."));
                if self.bad_commands >= MAX_BAD_COMMANDS {
                    self.close(out, "-ERR Too many invalid bad commands.");
                }
            }
        }
    }

    fn request(&mut self, creds: Credentials, out: &mut Out) {
        if sasl::check_fields(&creds).is_err() {
            out.push(reply(REPLIES.auth_failed));
            return;
        }
        out.push(Action::Login(Pop3LoginRequest { credentials: creds }));
        self.state = State::LoginPending;
    }

    fn auth(&mut self, arg: &[u8], out: &mut Out) {
        let (mech, ir) = split_word(arg);
        if mech.is_empty() {
            let list = if self.plaintext_allowed() {
                "+OK\r\nPLAIN\r\nLOGIN\r\n."
            } else {
                "+OK\r\n."
            };
            out.push(reply(list));
            return;
        }
        let Some(mech) = SaslMech::parse(mech) else {
            out.push(reply("-ERR [AUTH] Unsupported authentication mechanism."));
            return;
        };
        if !self.plaintext_allowed() {
            out.push(reply("-ERR [AUTH] Plaintext authentication disabled."));
            return;
        }
        let ir = if ir.is_empty() { None } else { Some(ir) };
        match SaslExchange::start(mech, ir) {
            Ok((ex, step)) => self.step(ex, step, out),
            Err(SaslError::InvalidBase64) => {
                out.push(reply("-ERR [AUTH] Invalid base64 data in initial response"))
            }
            Err(_) => out.push(reply(REPLIES.auth_failed)),
        }
    }

    fn step(&mut self, ex: SaslExchange, step: SaslStep, out: &mut Out) {
        match step {
            SaslStep::Challenge(c) => {
                out.push(reply(&format!("+ {c}")));
                self.state = State::Sasl(ex);
            }
            SaslStep::Done(creds) => self.request(creds, out),
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

/// How to send the credentials to a POP3 backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop3BackendLogin {
    /// `USER`/`PASS` (Dovecot's choice); falls back to AUTH PLAIN for
    /// authzid logins and values containing CR, LF or NUL.
    UserPass,
    /// `AUTH PLAIN <initial response>`.
    AuthPlain,
}

/// Settings of the POP3 backend side.
#[derive(Debug, Clone)]
pub struct Pop3BackendConfig {
    /// Issue `STLS` before logging in.
    pub starttls: bool,
    /// Send `XCLIENT` when the greeting advertises `[XCLIENT]`.
    pub send_xclient: bool,
    /// How to send the credentials.
    pub login: Pop3BackendLogin,
}

impl Default for Pop3BackendConfig {
    fn default() -> Self {
        Self {
            starttls: false,
            send_xclient: true,
            login: Pop3BackendLogin::UserPass,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    Greeting,
    StlsReply,
    TlsHandshake,
    Xclient,
    User,
    Final,
    Done,
}

/// The POP3 login replay towards a backend.
///
/// Events in: `feed` (backend bytes), `tls_established`. Actions out:
/// [`BackendAction`].
#[derive(Debug)]
pub struct Pop3Backend {
    cfg: Pop3BackendConfig,
    conn: ConnInfo,
    creds: Credentials,
    state: BState,
    buf: LineBuffer,
    xclient: bool,
    pending: Vec<BState>,
}

/// The XCLIENT line Dovecot's POP3/ManageSieve proxies send (without CRLF).
pub fn xclient_line(conn: &ConnInfo) -> String {
    let mut s = format!("XCLIENT ADDR={} PORT={}", conn.client_ip, conn.client_port);
    if let Some(id) = &conn.session_id {
        s.push_str(&format!(" SESSION={id}"));
    }
    s.push_str(&format!(" TTL={}", conn.proxy_ttl));
    s
}

fn plain_safe(v: &[u8]) -> bool {
    !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

impl Pop3Backend {
    /// A replay of `creds` for the client `conn`.
    pub fn new(cfg: Pop3BackendConfig, conn: ConnInfo, creds: Credentials) -> Self {
        Self {
            cfg,
            conn,
            creds,
            state: BState::Greeting,
            buf: LineBuffer::new(MAX_BACKEND_LINE),
            xclient: false,
            pending: Vec::new(),
        }
    }

    fn use_user_pass(&self) -> bool {
        self.cfg.login == Pop3BackendLogin::UserPass
            && self.creds.authzid.is_empty()
            && plain_safe(&self.creds.authcid)
            && plain_safe(&self.creds.password)
            && !self.creds.authcid.contains(&b' ')
    }

    /// Backend bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<BackendAction> {
        self.buf.feed(data);
        let mut out = Vec::new();
        while !matches!(self.state, BState::Done | BState::TlsHandshake) {
            match self.buf.next_line() {
                Ok(Some(l)) => self.line(&l, &mut out),
                Ok(None) => break,
                Err(_) => {
                    self.fail(&mut out, "backend line too long");
                }
            }
        }
        out
    }

    /// The TLS handshake with the backend finished.
    pub fn tls_established(&mut self) -> Vec<BackendAction> {
        let mut out = Vec::new();
        if self.state == BState::TlsHandshake {
            self.buf.clear();
            self.send_login(&mut out);
        }
        out
    }

    /// Backend bytes after the final reply.
    pub fn take_remaining(&mut self) -> Vec<u8> {
        self.buf.take_rest()
    }

    fn fail(&mut self, out: &mut Vec<BackendAction>, why: &str) {
        tracing::debug!(reason = why, "pop3 backend login failed");
        self.state = BState::Done;
        out.push(BackendAction::Failed(BackendFailure::Protocol(why.into())));
    }

    fn send_login(&mut self, out: &mut Vec<BackendAction>) {
        let mut batch = Vec::new();
        self.pending.clear();
        if self.xclient {
            batch.extend_from_slice(xclient_line(&self.conn).as_bytes());
            batch.extend_from_slice(b"\r\n");
            self.pending.push(BState::Xclient);
        }
        if self.use_user_pass() {
            batch.extend_from_slice(b"USER ");
            batch.extend_from_slice(&self.creds.authcid);
            batch.extend_from_slice(b"\r\n");
            self.pending.push(BState::User);
        } else {
            let b64 = sasl::encode_plain(
                &self.creds.authzid,
                &self.creds.authcid,
                &self.creds.password,
            );
            batch.extend_from_slice(format!("AUTH PLAIN {b64}\r\n").as_bytes());
            self.pending.push(BState::Final);
        }
        self.pending.reverse();
        self.state = self.pending.pop().unwrap_or(BState::Final);
        out.push(BackendAction::SendBackend(batch));
    }

    fn next(&mut self) {
        self.state = self.pending.pop().unwrap_or(BState::Final);
    }

    fn line(&mut self, l: &[u8], out: &mut Vec<BackendAction>) {
        let ok = l.starts_with(b"+OK");
        match self.state {
            BState::Greeting => {
                if !ok {
                    return self.fail(out, "backend greeting is not +OK");
                }
                self.xclient = self.cfg.send_xclient && l.windows(9).any(|w| w == b"[XCLIENT]");
                if self.cfg.starttls {
                    self.state = BState::StlsReply;
                    out.push(BackendAction::SendBackend(b"STLS\r\n".to_vec()));
                } else {
                    self.send_login(out);
                }
            }
            BState::StlsReply => {
                if ok {
                    self.state = BState::TlsHandshake;
                    out.push(BackendAction::StartTls);
                } else {
                    self.fail(out, "backend refused STLS");
                }
            }
            BState::Xclient => {
                if ok {
                    self.next();
                } else {
                    self.fail(out, "backend refused XCLIENT");
                }
            }
            BState::User => {
                if ok {
                    let mut pass = b"PASS ".to_vec();
                    pass.extend_from_slice(&self.creds.password);
                    pass.extend_from_slice(b"\r\n");
                    out.push(BackendAction::SendBackend(pass));
                    self.state = BState::Final;
                } else {
                    self.relay_failure(l, out);
                }
            }
            BState::Final => {
                if ok {
                    let mut r = l.to_vec();
                    r.extend_from_slice(b"\r\n");
                    self.state = BState::Done;
                    out.push(BackendAction::SendClient(r));
                    out.push(BackendAction::LoggedIn);
                } else if l.starts_with(b"-ERR") {
                    self.relay_failure(l, out);
                } else {
                    // SASL continuation (`+ `): AUTH PLAIN always has an IR.
                    self.fail(out, "unexpected reply to AUTH PLAIN");
                }
            }
            BState::TlsHandshake | BState::Done => {}
        }
    }

    fn relay_failure(&mut self, l: &[u8], out: &mut Vec<BackendAction>) {
        let mut r = l.to_vec();
        r.extend_from_slice(b"\r\n");
        self.state = BState::Done;
        out.push(BackendAction::SendClient(r));
        out.push(BackendAction::Failed(BackendFailure::AuthRejected));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn xclient_syntax() {
        let conn = ConnInfo {
            client_ip: "127.0.0.1".parse().unwrap(),
            client_port: 43482,
            local_ip: "127.0.0.11".parse().unwrap(),
            local_port: 110,
            session_id: Some("H7+h31th2ql/AAAB".into()),
            proxy_ttl: 4,
        };
        // Recorded in the lab (login-flow.log).
        assert_eq!(
            xclient_line(&conn),
            "XCLIENT ADDR=127.0.0.1 PORT=43482 SESSION=H7+h31th2ql/AAAB TTL=4"
        );
    }
}
