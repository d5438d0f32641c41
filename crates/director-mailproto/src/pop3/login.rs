//! The POP3 pre-login side facing the client ([`Pop3Login`]): what `pop3-login` does.

use crate::action::Action;
use crate::connection::{Credentials, Mechanism};
use crate::line::{split_word, LineBuffer, LineTooLong};
use crate::login::{reply, LineProtocol, LoginRules, PreLogin, Replies};
use crate::sasl;
use std::borrow::Cow;

use super::{DEFAULT_CAPA, MAX_BAD_COMMANDS, MAX_LINE};

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
    /// The hops the login may still take (see [`crate::connection::next_hop_ttl`]).
    pub proxy_ttl: u32,
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

impl LoginRules for Pop3 {
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
        looping: "-ERR Account is temporarily unavailable.",
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
    fn request(m: &Pop3Login, credentials: Credentials) -> Option<Pop3LoginRequest> {
        sasl::check_fields(&credentials).ok()?;
        Some(Pop3LoginRequest {
            credentials,
            proxy_ttl: m.proxy_ttl,
        })
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

    /// The greeting; `[XCLIENT]` before the text tells a trusted client (an upstream proxy)
    /// that its `XCLIENT` is obeyed, as pop3-login does.
    pub fn start(&mut self) -> Out {
        let xclient = if self.trusted { "[XCLIENT] " } else { "" };
        vec![reply(&format!("+OK {xclient}{}", self.proto.cfg.greeting))]
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
            b"XCLIENT" => self.xclient(arg, out),
            _ => {
                self.bad_commands += 1;
                out.push(reply("-ERR Unknown command."));
                if self.bad_commands >= MAX_BAD_COMMANDS {
                    self.close(out, "-ERR Too many invalid bad commands.");
                }
            }
        }
    }

    /// `XCLIENT attr=value …` from an upstream proxy: obeyed only from a trusted client
    /// (texts as pop3-login's).
    fn xclient(&mut self, arg: &[u8], out: &mut Out) {
        if !self.trusted {
            out.push(reply("+OK You are not from trusted IP - ignoring"));
        } else if self.xclient_attributes(arg.split(|b| *b == b' ')) {
            out.push(reply("+OK Updated"));
        } else {
            out.push(reply("-ERR Invalid parameters"));
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
