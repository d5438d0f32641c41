//! POP3: the pre-login side facing the client ([`Pop3Login`], what
//! `pop3-login` does) and the login replay facing the backend ([`Pop3Backend`]).
//!
//! Recorded from Dovecot 2.3.19's pop3-login proxy: after the backend's
//! `+OK [XCLIENT] …` greeting it pipelines `XCLIENT ADDR=… PORT=… SESSION=…
//! TTL=4` with `USER <name>`, waits for `+OK Updated` and `+OK`, then sends
//! `PASS <password>` and relays the backend's answer. It uses USER/PASS even
//! when the client logged in with `AUTH PLAIN`.

use std::borrow::Cow;

use crate::action::{Action, BackendAction};
use crate::line::{split_word, with_crlf, LineBuffer, LineTooLong};
use crate::login::{reply, LineProtocol, PreLogin, Protocol, Replies};
use crate::sasl;
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

/// The POP3 part of [`Pop3Login`]: its settings and the `USER` name given.
#[derive(Debug)]
pub struct Pop3 {
    cfg: Pop3LoginConfig,
    user: Option<Vec<u8>>,
}

type Out = Vec<Action<Pop3LoginRequest>>;

/// The pre-login POP3 state machine.
///
/// Events in: `start`, `feed`, `tls_established`, `login_failed`,
/// `login_succeeded`, `idle_timeout`. Actions out: [`Action`] with
/// [`Pop3LoginRequest`].
pub type Pop3Login = PreLogin<Pop3>;

const PLAINTEXT_DISALLOWED: &str =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";

impl Protocol for Pop3 {
    type Req = Pop3LoginRequest;
    type Buf = LineBuffer;
    /// POP3's texts (recorded).
    const REPLIES: Replies = Replies {
        temporary: "-ERR [SYS/TEMP] Account is temporarily unavailable.",
        auth_failed: "-ERR [AUTH] Authentication failed.",
        aborted: "-ERR Authentication aborted by client.",
        invalid_base64: "-ERR [AUTH] Invalid base64 in response",
        invalid_initial_base64: "-ERR [AUTH] Invalid base64 data in initial response",
        unsupported_mechanism: "-ERR [AUTH] Unsupported authentication mechanism.",
        plaintext_disabled: "-ERR [AUTH] Plaintext authentication disabled.",
        input_full: "-ERR Input buffer full, aborting",
        tls_active: "-ERR TLS is already active.",
        tls_unavailable: "-ERR TLS support isn't enabled.",
        tls_begin: "+OK Begin TLS negotiation now.",
    };

    fn tls_available(&self) -> bool {
        self.cfg.tls_available
    }

    fn disable_plaintext_auth(&self) -> bool {
        self.cfg.disable_plaintext_auth
    }

    fn idle_reply(&self) -> Cow<'static, str> {
        Cow::Borrowed("-ERR Disconnected for inactivity.")
    }

    fn challenge(c: &str) -> String {
        format!("+ {c}")
    }

    /// Empty or NUL-containing names and passwords fail here, before any
    /// backend is involved.
    fn request(_: &Pop3Login, credentials: Credentials) -> Option<Pop3LoginRequest> {
        sasl::check_fields(&credentials).ok()?;
        Some(Pop3LoginRequest { credentials })
    }

    fn process(m: &mut Pop3Login) -> Out {
        m.process_lines()
    }
}

impl LineProtocol for Pop3 {
    const MAX_LINE: usize = MAX_LINE;

    fn command(m: &mut Pop3Login, line: &[u8], out: &mut Out) {
        m.command(line, out);
    }

    /// pop3-login gives up on an over-long line.
    fn line_too_long(m: &mut Pop3Login, _: LineTooLong, out: &mut Out) -> bool {
        m.close(out, Self::REPLIES.input_full);
        false
    }
}

impl Pop3Login {
    /// A machine for a new connection (see [`crate::imap::ImapLogin::new`] for
    /// `tls_active` and `secured`).
    pub fn new(cfg: Pop3LoginConfig, tls_active: bool, secured: bool) -> Self {
        let proto = Pop3 { cfg, user: None };
        PreLogin::with(proto, LineBuffer::new(MAX_LINE), tls_active, secured)
    }

    /// The greeting.
    pub fn start(&mut self) -> Out {
        vec![reply(&format!("+OK {}", self.proto.cfg.greeting))]
    }

    /// The `CAPA` reply for the current state.
    pub fn capa(&self) -> String {
        let mut s = String::from("+OK\r\n");
        for c in &self.proto.cfg.capa {
            s.push_str(c);
            s.push_str("\r\n");
        }
        if self.starttls_offered() {
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

    fn command(&mut self, line: &[u8], out: &mut Out) {
        let (cmd, arg) = split_word(line);
        let cmd = cmd.to_ascii_uppercase();
        match cmd.as_slice() {
            b"CAPA" => out.push(Action::Send(self.capa().into_bytes())),
            b"QUIT" => self.close(out, "+OK Logging out"),
            b"STLS" => self.starttls(out),
            b"USER" => {
                if !self.plaintext_allowed() {
                    out.push(reply(PLAINTEXT_DISALLOWED));
                } else {
                    self.proto.user = Some(arg.to_vec());
                    out.push(reply("+OK"));
                }
            }
            b"PASS" => {
                if !self.plaintext_allowed() {
                    out.push(reply(PLAINTEXT_DISALLOWED));
                    return;
                }
                let Some(user) = self.proto.user.take() else {
                    out.push(reply("-ERR No username given."));
                    return;
                };
                let creds = Credentials {
                    authzid: Vec::new(),
                    authcid: user,
                    password: arg.to_vec(),
                    mechanism: Mechanism::Login,
                };
                self.request_login(creds, out);
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
        let ir = if ir.is_empty() { None } else { Some(ir) };
        self.authenticate(mech, ir, out);
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
        self.state = BState::Done;
        out.push(BackendAction::protocol_error("pop3", why));
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
                    self.relay_verdict(l, false, out);
                }
            }
            BState::Final => {
                if ok || l.starts_with(b"-ERR") {
                    self.relay_verdict(l, ok, out);
                } else {
                    // SASL continuation (`+ `): AUTH PLAIN always has an IR.
                    self.fail(out, "unexpected reply to AUTH PLAIN");
                }
            }
            BState::TlsHandshake | BState::Done => {}
        }
    }

    fn relay_verdict(&mut self, l: &[u8], accepted: bool, out: &mut Vec<BackendAction>) {
        self.state = BState::Done;
        out.extend(BackendAction::verdict(with_crlf(l), accepted));
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
        // Recorded in the lab (tests/data/lab/login-flow.log).
        assert_eq!(
            xclient_line(&conn),
            "XCLIENT ADDR=127.0.0.1 PORT=43482 SESSION=H7+h31th2ql/AAAB TTL=4"
        );
    }
}
