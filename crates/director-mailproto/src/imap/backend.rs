//! The backend side of the IMAP proxy: log in to a Dovecot backend with the
//! client's credentials, as Dovecot's imap-login proxy does.
//!
//! Recorded (`tests/data/lab/login-flow.log` and the oracle runs in
//! `tests/data/oracle/`), after the
//! backend's greeting the proxy pipelines
//! `I ID ("x-session-id" … "x-originating-ip" … "x-originating-port" …
//! "x-connected-ip" … "x-connected-port" … "x-proxy-ttl" "4")`, then
//! `C CAPABILITY` only if the client had asked for capabilities, then
//! `L LOGIN "user" "pass"`. The `I` and `C` replies are swallowed; untagged
//! lines after them (the post-login `* CAPABILITY`) and the final `L` reply are
//! relayed with the client's tag.

use super::login::ImapLoginRequest;
use super::parse::quote;
use crate::action::BackendAction;
use crate::connection::ConnInfo;
use crate::line::{with_crlf, LineBuffer};
use crate::sasl::encode_plain;

/// Longest backend response line during login (post-login capability lines
/// are long, a few hundred bytes with Dovecot).
pub const MAX_BACKEND_LINE: usize = 65536;

/// How to send the credentials to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendLoginMethod {
    /// `LOGIN "user" "pass"` (Dovecot's choice without a master user);
    /// falls back to `AUTHENTICATE PLAIN` when a value cannot be quoted.
    Login,
    /// `AUTHENTICATE PLAIN` (with SASL-IR when the backend advertises it).
    AuthenticatePlain,
}

/// Settings of the backend side.
#[derive(Debug, Clone)]
pub struct ImapBackendConfig {
    /// Issue `STARTTLS` before logging in (Dovecot `starttls` proxy field).
    pub starttls: bool,
    /// Send the `ID` command with the client's address (the backend must
    /// trust us via `login_trusted_networks`).
    pub send_id: bool,
    /// Append the client's own `ID` parameters. Dovecot 2.3.19 does not (it
    /// sends only the `x-…` fields), so the default is off.
    pub forward_client_id: bool,
    /// How to send the credentials.
    pub login_method: BackendLoginMethod,
}

impl Default for ImapBackendConfig {
    fn default() -> Self {
        Self {
            starttls: false,
            send_id: true,
            forward_client_id: false,
            login_method: BackendLoginMethod::Login,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    StartTlsReply,
    TlsHandshake,
    LoginReplies,
    Done,
}

/// The login replay towards one backend.
///
/// Events in: [`feed`](Self::feed) (backend bytes),
/// [`tls_established`](Self::tls_established). Actions out: [`BackendAction`].
#[derive(Debug)]
pub struct ImapBackend {
    cfg: ImapBackendConfig,
    conn: ConnInfo,
    req: ImapLoginRequest,
    state: State,
    buf: LineBuffer,
    caps: Vec<Vec<u8>>,
    pending_id: bool,
    pending_cap: bool,
    awaiting_continuation: Option<Vec<u8>>,
    after_tls: bool,
    /// The login was sent before the greeting arrived ([`start`](Self::start)); the
    /// greeting is still to be checked.
    greeting_pending: bool,
}

fn has_cap(caps: &[Vec<u8>], name: &[u8]) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// Capabilities in a `[CAPABILITY …]` response code of a status line.
fn capability_code(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let start = text
        .windows(12)
        .position(|w| w.eq_ignore_ascii_case(b"[CAPABILITY "))?;
    let rest = &text[start + 12..];
    let end = rest.iter().position(|&b| b == b']')?;
    Some(
        rest[..end]
            .split(|&b| b == b' ')
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// Appends `"s"`, escaped (addresses, ports and session ids are ASCII without quotes, so
/// this rarely has anything to escape).
fn push_quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

impl ImapBackend {
    /// A replay of `req` for the client described by `conn`.
    pub fn new(cfg: ImapBackendConfig, conn: ConnInfo, req: ImapLoginRequest) -> Self {
        Self {
            cfg,
            conn,
            req,
            state: State::Greeting,
            buf: LineBuffer::new(MAX_BACKEND_LINE),
            caps: Vec::new(),
            pending_id: false,
            pending_cap: false,
            awaiting_continuation: None,
            after_tls: false,
            greeting_pending: false,
        }
    }

    /// Called once the connection is up, before any backend bytes. When the login needs
    /// nothing from the greeting (no STARTTLS, and `LOGIN` rather than `AUTHENTICATE`, which
    /// would look for SASL-IR), it is sent right away, pipelined ahead of the greeting: the
    /// backend answers greeting, `ID` and `LOGIN` in one go, which saves the proxy a wake-up
    /// and a round trip per login. Otherwise nothing happens until the greeting, as with
    /// Dovecot's own proxy.
    pub fn start(&mut self) -> Vec<BackendAction> {
        let mut out = Vec::new();
        if self.state == State::Greeting && !self.cfg.starttls && self.login_command().is_some() {
            self.greeting_pending = true;
            self.send_login(&mut out);
        }
        out
    }

    /// The `ID` command line the replay sends (without the `I ` tag).
    pub fn id_command(&self) -> Vec<u8> {
        let c = &self.conn;
        let mut out = Vec::with_capacity(200);
        out.extend_from_slice(b"ID (");
        let field = |out: &mut Vec<u8>, k: &str, v: &str| {
            if out.len() > 4 {
                out.push(b' ');
            }
            push_quoted(out, k);
            out.push(b' ');
            push_quoted(out, v);
        };
        if let Some(s) = &c.session_id {
            field(&mut out, "x-session-id", s);
        }
        for (k, v) in [
            ("x-originating-ip", c.client_ip.to_string()),
            ("x-originating-port", c.client_port.to_string()),
            ("x-connected-ip", c.local_ip.to_string()),
            ("x-connected-port", c.local_port.to_string()),
            ("x-proxy-ttl", c.proxy_ttl.to_string()),
        ] {
            field(&mut out, k, &v);
        }
        if self.cfg.forward_client_id {
            for (k, v) in &self.req.client_id {
                // Never let the client override what we vouch for.
                if k.len() >= 2 && k[..2].eq_ignore_ascii_case(b"x-") {
                    continue;
                }
                let Some(qk) = quote(k) else { continue };
                let qv = match v {
                    Some(v) => match quote(v) {
                        Some(q) => q,
                        None => continue,
                    },
                    None => b"NIL".to_vec(),
                };
                out.push(b' ');
                out.extend_from_slice(&qk);
                out.push(b' ');
                out.extend_from_slice(&qv);
            }
        }
        out.push(b')');
        out
    }

    /// Backend bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<BackendAction> {
        let mut out = Vec::new();
        if matches!(self.state, State::Done | State::TlsHandshake) {
            if self.state == State::Done {
                self.buf.feed(data);
            }
            return out;
        }
        self.buf.feed(data);
        loop {
            if self.state == State::Done || self.state == State::TlsHandshake {
                break;
            }
            match self.buf.next_line() {
                Ok(Some(l)) => self.handle_line(&l, &mut out),
                Ok(None) => break,
                Err(_) => {
                    self.fail(&mut out, "backend line too long");
                    break;
                }
            }
        }
        out
    }

    /// The TLS handshake with the backend finished.
    pub fn tls_established(&mut self) -> Vec<BackendAction> {
        let mut out = Vec::new();
        if self.state == State::TlsHandshake {
            self.after_tls = true;
            self.buf.clear();
            self.send_login(&mut out);
        }
        out
    }

    /// Backend bytes received after the final login reply (to relay to the client).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        self.buf.take_rest()
    }

    fn fail(&mut self, out: &mut Vec<BackendAction>, why: &str) {
        self.state = State::Done;
        out.push(BackendAction::protocol_error("imap", why));
    }

    fn send_login(&mut self, out: &mut Vec<BackendAction>) {
        let mut batch = Vec::new();
        if self.cfg.send_id {
            batch.extend_from_slice(b"I ");
            batch.extend_from_slice(&self.id_command());
            batch.extend_from_slice(b"\r\n");
            self.pending_id = true;
        }
        if self.req.capability_requested || self.after_tls {
            batch.extend_from_slice(b"C CAPABILITY\r\n");
            self.pending_cap = true;
        }
        // Room is made before a secret goes in: a reallocation would leave a copy behind.
        match self.login_command() {
            Some(login) => {
                batch.reserve(login.len());
                batch.extend_from_slice(&login);
            }
            None => {
                let c = &self.req.credentials;
                let b64 = encode_plain(&c.authzid, &c.authcid, &c.password);
                if has_cap(&self.caps, b"SASL-IR") && !self.after_tls {
                    batch.reserve(b64.len() + 24);
                    batch.extend_from_slice(b"L AUTHENTICATE PLAIN ");
                    batch.extend_from_slice(b64.as_bytes());
                    batch.extend_from_slice(b"\r\n");
                } else {
                    batch.extend_from_slice(b"L AUTHENTICATE PLAIN\r\n");
                    let mut cont = Vec::with_capacity(b64.len() + 2);
                    cont.extend_from_slice(b64.as_bytes());
                    self.awaiting_continuation = Some(cont);
                }
            }
        }
        self.state = State::LoginReplies;
        out.push(BackendAction::SendBackend(batch));
    }

    /// `L LOGIN "user" "pass"` when the login goes that way: the `Login` method, no master
    /// user, and both values quotable. Otherwise the login is `AUTHENTICATE PLAIN`.
    fn login_command(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let c = &self.req.credentials;
        if self.cfg.login_method != BackendLoginMethod::Login || !c.authzid.is_empty() {
            return None;
        }
        let u = quote(&c.authcid)?;
        // The quoted password is a copy: wiped when dropped (the command is wiped once sent).
        let p = zeroize::Zeroizing::new(quote(&c.password)?);
        Some(zeroize::Zeroizing::new(
            [&b"L LOGIN "[..], &u, b" ", &p, b"\r\n"].concat(),
        ))
    }

    fn handle_line(&mut self, l: &[u8], out: &mut Vec<BackendAction>) {
        match self.state {
            State::Greeting => {
                if l.len() < 4 || !l[..4].eq_ignore_ascii_case(b"* OK") {
                    self.fail(out, "backend greeting is not * OK");
                    return;
                }
                if let Some(caps) = capability_code(l) {
                    self.caps = caps;
                }
                if self.cfg.starttls {
                    self.state = State::StartTlsReply;
                    out.push(BackendAction::SendBackend(b"S STARTTLS\r\n".to_vec()));
                } else {
                    self.send_login(out);
                }
            }
            State::StartTlsReply => {
                if l.starts_with(b"* ") {
                    return;
                }
                if l.len() >= 4 && l[..4].eq_ignore_ascii_case(b"S OK") {
                    self.state = State::TlsHandshake;
                    out.push(BackendAction::StartTls);
                } else {
                    self.fail(out, "backend refused STARTTLS");
                }
            }
            State::LoginReplies => self.login_reply(l, out),
            State::TlsHandshake | State::Done => {}
        }
    }

    fn login_reply(&mut self, l: &[u8], out: &mut Vec<BackendAction>) {
        if self.greeting_pending {
            self.greeting_pending = false;
            if l.len() < 4 || !l[..4].eq_ignore_ascii_case(b"* OK") {
                self.fail(out, "backend greeting is not * OK");
            }
            return;
        }
        if l.first() == Some(&b'+') {
            match self.awaiting_continuation.take() {
                Some(mut b64) => {
                    b64.extend_from_slice(b"\r\n");
                    out.push(BackendAction::SendBackend(b64));
                }
                None => self.fail(out, "unexpected continuation from backend"),
            }
            return;
        }
        if l.starts_with(b"* ") {
            if self.pending_id || self.pending_cap {
                if let Some(rest) = l.get(2..13) {
                    if rest.eq_ignore_ascii_case(b"CAPABILITY ") {
                        self.caps = l[13..].split(|&b| b == b' ').map(<[u8]>::to_vec).collect();
                    }
                }
                return;
            }
            out.push(BackendAction::SendClient(with_crlf(l)));
            return;
        }
        let (tag, rest) = crate::line::split_word(l);
        match tag {
            b"I" => self.pending_id = false,
            b"C" => self.pending_cap = false,
            b"L" => {
                let (status, _) = crate::line::split_word(rest);
                let ok = status.eq_ignore_ascii_case(b"OK");
                if ok || status.eq_ignore_ascii_case(b"NO") {
                    let reply = [&self.req.tag, &b" "[..], rest, b"\r\n"].concat();
                    self.state = State::Done;
                    out.extend(BackendAction::verdict(reply, ok));
                } else {
                    self.fail(out, "backend answered the login with BAD");
                }
            }
            _ => self.fail(out, "unexpected tagged reply from backend"),
        }
    }
}
