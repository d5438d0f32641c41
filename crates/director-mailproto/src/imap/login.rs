//! The client side of the director's IMAP proxy: everything `imap-login`
//! does before the backend takes over.

use super::parse::{parse_command, Arg, Command, FatalError, Parsed, SyntaxError};
use crate::action::{Action, LoginFailure};
use crate::connection::{parse_ttl, Credentials, Mechanism, LOGIN_PROXY_TTL};
use crate::sasl::{SaslError, SaslExchange, SaslMech, SaslStep, MAX_AUTH_RESPONSE};

/// Bad commands after which the connection is closed (the third one is
/// answered only with `* BYE Too many invalid IMAP commands.`, as imap-login does).
pub const MAX_BAD_COMMANDS: u32 = 3;

/// Most `ID` parameters kept to forward (RFC 2971: at most 30 pairs).
pub const MAX_ID_PARAMS: usize = 30;
/// Longest `ID` field name kept (RFC 2971: 30 octets).
pub const MAX_ID_KEY: usize = 30;
/// Longest `ID` value kept (RFC 2971: 1024 octets).
pub const MAX_ID_VALUE: usize = 1024;

/// Pre-login capabilities Dovecot 2.3.19 advertises (before STARTTLS and
/// the AUTH=/LOGINDISABLED part).
pub const DEFAULT_CAPABILITY: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+";

/// Settings of the IMAP login side.
#[derive(Debug, Clone)]
pub struct ImapLoginConfig {
    /// Greeting text after the capability code (Dovecot `login_greeting`,
    /// default `Dovecot ready.`).
    pub greeting: String,
    /// Base capability list; `STARTTLS` and `AUTH=…`/`LOGINDISABLED` are
    /// appended as the connection state requires.
    pub capability: String,
    /// TLS can be started on this listener (a certificate is configured).
    pub tls_available: bool,
    /// Dovecot `disable_plaintext_auth`: refuse LOGIN/PLAIN on insecure connections.
    pub disable_plaintext_auth: bool,
    /// Payload of the untagged `ID` reply (Dovecot's default `imap_id_send =
    /// name *` gives `("name" "Dovecot")`).
    pub id_reply: String,
}

impl Default for ImapLoginConfig {
    fn default() -> Self {
        Self {
            greeting: "Dovecot ready.".into(),
            capability: DEFAULT_CAPABILITY.into(),
            tls_available: false,
            disable_plaintext_auth: true,
            id_reply: "(\"name\" \"Dovecot\")".into(),
        }
    }
}

/// What the driver needs to replay an IMAP login to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapLoginRequest {
    /// The client's tag for the LOGIN/AUTHENTICATE command; the backend's
    /// final reply is relayed with it.
    pub tag: Vec<u8>,
    /// The credentials.
    pub credentials: Credentials,
    /// `ID` parameters the client sent (name, value or NIL), to forward if
    /// configured.
    pub client_id: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The client issued `CAPABILITY`; Dovecot then also sends `C CAPABILITY`
    /// to the backend so post-login capabilities come as an untagged reply.
    pub capability_requested: bool,
    /// The hops the login may still take (see [`crate::connection::next_hop_ttl`]).
    pub proxy_ttl: u32,
}

#[derive(Debug)]
enum State {
    Commands,
    Sasl {
        tag: Vec<u8>,
        exchange: SaslExchange,
    },
    TlsHandshake,
    LoginPending {
        tag: Vec<u8>,
    },
    Proxying,
    Closed,
}

/// The pre-login IMAP state machine (one per client connection).
///
/// Events in: [`start`](Self::start) (greeting), [`feed`](Self::feed) (client
/// bytes), [`tls_established`](Self::tls_established),
/// [`login_failed`](Self::login_failed), [`login_succeeded`](Self::login_succeeded).
/// Actions out: [`Action`] with [`ImapLoginRequest`] for `Login`.
#[derive(Debug)]
pub struct ImapLogin {
    cfg: ImapLoginConfig,
    tls_active: bool,
    secured: bool,
    state: State,
    buf: Vec<u8>,
    sync_acked: usize,
    bad_commands: u32,
    client_id: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    capability_requested: bool,
    /// The client is in `login_trusted_networks`: its first `ID` may set the proxy TTL.
    trusted: bool,
    /// An `ID` command was answered: later ones no longer change the connection's facts.
    id_seen: bool,
    proxy_ttl: u32,
}

type Out = Vec<Action<ImapLoginRequest>>;

fn line(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = parts.concat();
    v.extend_from_slice(b"\r\n");
    v
}

impl ImapLogin {
    /// Whether `reply`, sent by this machine, refuses the client's credentials
    /// (`TAG NO [AUTHENTICATIONFAILED] ...`): a driver delays it by `auth_failure_delay`, as
    /// Dovecot's login processes do.
    pub fn is_auth_failure(reply: &[u8]) -> bool {
        reply
            .iter()
            .position(|b| *b == b' ')
            .is_some_and(|sp| reply[sp + 1..].starts_with(b"NO [AUTHENTICATIONFAILED]"))
    }

    /// A machine for a new connection. `tls_active`: the connection is already
    /// TLS (imaps). `secured`: plaintext auth is fine even without TLS (Dovecot
    /// treats a connection whose remote IP equals the local IP as secured, and
    /// `login_trusted_networks`/`ssl=no` setups can decide so too).
    pub fn new(cfg: ImapLoginConfig, tls_active: bool, secured: bool) -> Self {
        Self {
            cfg,
            tls_active,
            secured: secured || tls_active,
            state: State::Commands,
            buf: Vec::new(),
            sync_acked: 0,
            bad_commands: 0,
            client_id: Vec::new(),
            capability_requested: false,
            trusted: false,
            id_seen: false,
            proxy_ttl: LOGIN_PROXY_TTL,
        }
    }

    /// Marks the client as one of `login_trusted_networks` (an upstream proxy): its first
    /// `ID` may set `x-proxy-ttl`, as imap-login allows (from anyone else it is ignored).
    pub fn with_trusted(mut self, trusted: bool) -> Self {
        self.trusted = trusted;
        self
    }

    /// The hops the login may still take: [`LOGIN_PROXY_TTL`], or what a trusted client set.
    pub fn proxy_ttl(&self) -> u32 {
        self.proxy_ttl
    }

    fn plaintext_allowed(&self) -> bool {
        self.secured || !self.cfg.disable_plaintext_auth
    }

    /// The capability list for the current connection state.
    pub fn capability(&self) -> String {
        let mut caps = self.cfg.capability.clone();
        if self.cfg.tls_available && !self.tls_active {
            caps.push_str(" STARTTLS");
        }
        if self.plaintext_allowed() {
            caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
        } else {
            caps.push_str(" LOGINDISABLED");
        }
        caps
    }

    /// The greeting: `* OK [CAPABILITY …] <greeting>`.
    pub fn start(&mut self) -> Out {
        vec![Action::Send(
            format!(
                "* OK [CAPABILITY {}] {}\r\n",
                self.capability(),
                self.cfg.greeting
            )
            .into_bytes(),
        )]
    }

    /// The client stayed silent for [`crate::action::LOGIN_IDLE_TIMEOUT`]
    /// before logging in: `* BYE Disconnected for inactivity.` (recorded), then close.
    pub fn idle_timeout(&mut self) -> Out {
        let mut out = Vec::new();
        if matches!(self.state, State::Closed | State::Proxying) {
            return out;
        }
        self.close(&mut out, b"* BYE Disconnected for inactivity.\r\n");
        out
    }

    /// False while the machine waits for the driver (login in progress):
    /// stop reading from the client until it turns true again.
    pub fn wants_input(&self) -> bool {
        !matches!(
            self.state,
            State::LoginPending { .. } | State::TlsHandshake | State::Proxying | State::Closed
        )
    }

    /// Client bytes arrived. Ignored once closed, during a TLS handshake and
    /// after `login_succeeded` (the driver splices from then on).
    pub fn feed(&mut self, data: &[u8]) -> Out {
        match self.state {
            State::Closed | State::TlsHandshake | State::Proxying => return Vec::new(),
            _ => {}
        }
        if !self.wants_input()
            && self.buf.len().saturating_add(data.len()) > crate::action::MAX_PENDING_INPUT
        {
            let mut out = Vec::new();
            self.close(&mut out, b"* BYE Input buffer full, aborting\r\n");
            return out;
        }
        crate::line::append_wiping(&mut self.buf, data);
        self.process()
    }

    /// The TLS handshake the machine asked for finished.
    pub fn tls_established(&mut self) -> Out {
        if let State::TlsHandshake = self.state {
            self.tls_active = true;
            self.secured = true;
            self.state = State::Commands;
        }
        Vec::new()
    }

    /// The login did not reach the proxying state; the client may try again.
    pub fn login_failed(&mut self, why: LoginFailure) -> Out {
        let State::LoginPending { tag } = std::mem::replace(&mut self.state, State::Commands)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match why {
            LoginFailure::Relayed => {}
            LoginFailure::Temporary => out.push(Action::Send(line(&[
                &tag,
                b" NO [UNAVAILABLE] Account is temporarily unavailable.",
            ]))),
            LoginFailure::AuthFailed => out.push(Action::Send(line(&[
                &tag,
                b" NO [AUTHENTICATIONFAILED] Authentication failed.",
            ]))),
            // imap-login's reply for a misconfigured remote (from its source; the
            // recordings have no loop).
            LoginFailure::Looping => out.push(Action::Send(line(&[
                &tag,
                b" NO [SERVERBUG] Account is temporarily unavailable.",
            ]))),
        }
        out.extend(self.process());
        out
    }

    /// The backend accepted the login. Returns the client bytes received after
    /// the login command, which belong to the backend session.
    pub fn login_succeeded(&mut self) -> Vec<u8> {
        self.state = State::Proxying;
        crate::line::take_all(&mut self.buf)
    }

    /// True once the machine asked to close (or the session was handed over).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn close(&mut self, out: &mut Out, msg: &[u8]) {
        out.push(Action::Send(msg.to_vec()));
        out.push(Action::Close);
        self.state = State::Closed;
        zeroize::Zeroize::zeroize(&mut self.buf);
    }

    fn process(&mut self) -> Out {
        let mut out = Vec::new();
        loop {
            match &mut self.state {
                State::Commands => {
                    if !self.step_command(&mut out) {
                        break;
                    }
                }
                State::Sasl { .. } => {
                    if !self.step_sasl(&mut out) {
                        break;
                    }
                }
                _ => break,
            }
        }
        out
    }

    fn bad(&mut self, out: &mut Out, tag: Option<&[u8]>, text: &[u8]) {
        self.bad_commands += 1;
        if self.bad_commands >= MAX_BAD_COMMANDS {
            self.close(out, b"* BYE Too many invalid IMAP commands.\r\n");
            return;
        }
        out.push(Action::Send(line(&[tag.unwrap_or(b"*"), b" BAD ", text])));
    }

    /// Handles one command if complete; false when more input is needed or
    /// the state changed to one that does not parse commands.
    fn step_command(&mut self, out: &mut Out) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        match parse_command(&self.buf) {
            Parsed::Incomplete { sync_literals } => {
                if sync_literals > self.sync_acked {
                    self.sync_acked = sync_literals;
                    out.push(Action::Send(b"+ OK\r\n".to_vec()));
                }
                false
            }
            Parsed::Fatal(FatalError::LineTooLong) => {
                self.close(out, b"* BYE Input buffer full, aborting\r\n");
                false
            }
            Parsed::Fatal(FatalError::LiteralTooLarge) => {
                self.close(out, b"* BYE Literal size too large\r\n");
                false
            }
            Parsed::Error {
                tag,
                error,
                consumed,
            } => {
                crate::line::discard_front(&mut self.buf, consumed);
                self.sync_acked = 0;
                let text: &[u8] = match error {
                    SyntaxError::Generic => b"Error in IMAP command received by server.",
                    SyntaxError::InvalidAtom => b"Invalid characters in atom",
                };
                self.bad(out, tag.as_deref(), text);
                !matches!(self.state, State::Closed)
            }
            Parsed::Complete { cmd, consumed } => {
                crate::line::discard_front(&mut self.buf, consumed);
                self.sync_acked = 0;
                self.dispatch(cmd, out);
                matches!(self.state, State::Commands | State::Sasl { .. })
            }
        }
    }

    fn dispatch(&mut self, cmd: Command, out: &mut Out) {
        let tag = cmd.tag.as_slice();
        match cmd.name.as_slice() {
            b"CAPABILITY" => {
                self.capability_requested = true;
                out.push(Action::Send(
                    [
                        format!("* CAPABILITY {}\r\n", self.capability()).into_bytes(),
                        line(&[tag, b" OK Pre-login capabilities listed, post-login capabilities have more."]),
                    ]
                    .concat(),
                ));
            }
            b"NOOP" => out.push(Action::Send(line(&[tag, b" OK NOOP completed."]))),
            b"LOGOUT" => {
                let msg = [
                    b"* BYE Logging out\r\n".to_vec(),
                    line(&[tag, b" OK Logout completed."]),
                ]
                .concat();
                self.close(out, &msg);
            }
            b"ENABLE" => out.push(Action::Send(
                [
                    b"* ENABLED\r\n".to_vec(),
                    line(&[tag, b" OK ENABLE ignored in non-authenticated state."]),
                ]
                .concat(),
            )),
            b"ID" => self.cmd_id(&cmd, out),
            b"STARTTLS" => {
                if self.tls_active {
                    out.push(Action::Send(line(&[tag, b" BAD TLS is already active."])));
                } else if !self.cfg.tls_available {
                    out.push(Action::Send(line(&[
                        tag,
                        b" BAD TLS support isn't enabled.",
                    ])));
                } else {
                    out.push(Action::Send(line(&[
                        tag,
                        b" OK Begin TLS negotiation now.",
                    ])));
                    out.push(Action::StartTls);
                    // Anything pipelined after STARTTLS was sent in plaintext:
                    // drop it (STARTTLS command injection).
                    zeroize::Zeroize::zeroize(&mut self.buf);
                    self.state = State::TlsHandshake;
                }
            }
            b"LOGIN" => self.cmd_login(&cmd, out),
            b"AUTHENTICATE" => self.cmd_authenticate(&cmd, out),
            _ => self.bad(out, Some(tag), b"Error in IMAP command received by server."),
        }
    }

    fn cmd_id(&mut self, cmd: &Command, out: &mut Out) {
        let tag = cmd.tag.as_slice();
        match cmd.args.as_slice() {
            [Arg::Nil] => {}
            [Arg::List(items)] => {
                let mut params = Vec::new();
                for pair in items.chunks(2) {
                    let [k, v] = pair else { break };
                    let (Some(Some(k)), Some(v)) = (k.as_nstring(), v.as_nstring()) else {
                        continue;
                    };
                    // Only the first ID of a trusted client sets the connection's facts
                    // (imap-login); an invalid number leaves the TTL as it was.
                    if k.eq_ignore_ascii_case(b"x-proxy-ttl") && self.trusted && !self.id_seen {
                        if let Some(ttl) = v.and_then(parse_ttl) {
                            self.proxy_ttl = ttl;
                        }
                    }
                    if params.len() < MAX_ID_PARAMS
                        && k.len() <= MAX_ID_KEY
                        && !matches!(v, Some(v) if v.len() > MAX_ID_VALUE)
                    {
                        params.push((k.to_vec(), v.map(<[u8]>::to_vec)));
                    }
                }
                self.client_id = params;
            }
            _ => {
                self.bad(out, Some(tag), b"Error in IMAP command received by server.");
                return;
            }
        }
        self.id_seen = true;
        out.push(Action::Send(
            [
                format!("* ID {}\r\n", self.cfg.id_reply).into_bytes(),
                line(&[tag, b" OK ID completed."]),
            ]
            .concat(),
        ));
    }

    fn request_login(&mut self, tag: Vec<u8>, credentials: Credentials, out: &mut Out) {
        out.push(Action::Login(ImapLoginRequest {
            tag: tag.clone(),
            credentials,
            client_id: self.client_id.clone(),
            capability_requested: self.capability_requested,
            proxy_ttl: self.proxy_ttl,
        }));
        self.state = State::LoginPending { tag };
    }

    fn auth_failed(&self, tag: &[u8], out: &mut Out) {
        out.push(Action::Send(line(&[
            tag,
            b" NO [AUTHENTICATIONFAILED] Authentication failed.",
        ])));
    }

    fn cmd_login(&mut self, cmd: &Command, out: &mut Out) {
        let tag = cmd.tag.clone();
        let (Some(user), Some(pass)) = (
            cmd.args.first().and_then(Arg::as_astring),
            cmd.args.get(1).and_then(Arg::as_astring),
        ) else {
            self.bad(
                out,
                Some(&tag),
                b"Error in IMAP command received by server.",
            );
            return;
        };
        if cmd.args.len() != 2 {
            self.bad(
                out,
                Some(&tag),
                b"Error in IMAP command received by server.",
            );
            return;
        }
        if !self.plaintext_allowed() {
            out.push(Action::Send(
                [
                    b"* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. If anyone was listening, the password was exposed.\r\n".to_vec(),
                    line(&[&tag, b" NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."]),
                ]
                .concat(),
            ));
            return;
        }
        let creds = Credentials {
            authzid: Vec::new(),
            authcid: user.to_vec(),
            password: pass.to_vec(),
            mechanism: Mechanism::Login,
        };
        if crate::sasl::check_fields(&creds).is_err() {
            self.auth_failed(&tag, out);
            return;
        }
        self.request_login(tag, creds, out);
    }

    fn cmd_authenticate(&mut self, cmd: &Command, out: &mut Out) {
        let tag = cmd.tag.clone();
        let (mech, ir) = match cmd.args.as_slice() {
            [Arg::Atom(m)] => (m, None),
            [Arg::Atom(m), Arg::Atom(ir)] => (m, Some(ir.as_slice())),
            _ => {
                self.bad(
                    out,
                    Some(&tag),
                    b"Error in IMAP command received by server.",
                );
                return;
            }
        };
        let Some(mech) = SaslMech::parse(mech) else {
            out.push(Action::Send(line(&[
                &tag,
                b" NO [ALERT] Unsupported authentication mechanism.",
            ])));
            return;
        };
        if !self.plaintext_allowed() {
            out.push(Action::Send(line(&[
                &tag,
                b" NO [PRIVACYREQUIRED] Plaintext authentication disabled.",
            ])));
            return;
        }
        match SaslExchange::start(mech, ir) {
            Ok((exchange, step)) => self.sasl_step(tag, exchange, step, out),
            Err(SaslError::InvalidBase64) => out.push(Action::Send(line(&[
                &tag,
                b" BAD Invalid base64 data in initial response",
            ]))),
            Err(SaslError::TooLong) => {
                self.state = State::Closed;
                out.push(Action::Close);
            }
            Err(_) => self.auth_failed(&tag, out),
        }
    }

    fn sasl_step(&mut self, tag: Vec<u8>, exchange: SaslExchange, step: SaslStep, out: &mut Out) {
        match step {
            SaslStep::Challenge(c) => {
                out.push(Action::Send(format!("+ {c}\r\n").into_bytes()));
                self.state = State::Sasl { tag, exchange };
            }
            SaslStep::Done(creds) => self.request_login(tag, creds, out),
        }
    }

    fn step_sasl(&mut self, out: &mut Out) -> bool {
        let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > MAX_AUTH_RESPONSE + 2 {
                // imap-login disconnects without a reply ("Authentication
                // response too large").
                self.state = State::Closed;
                zeroize::Zeroize::zeroize(&mut self.buf);
                out.push(Action::Close);
            }
            return false;
        };
        let mut resp = zeroize::Zeroizing::new(crate::line::take_front(&mut self.buf, pos + 1));
        resp.pop();
        if resp.last() == Some(&b'\r') {
            resp.pop();
        }
        let State::Sasl { tag, mut exchange } = std::mem::replace(&mut self.state, State::Commands)
        else {
            return false;
        };
        match exchange.respond(&resp) {
            Ok(step) => self.sasl_step(tag, exchange, step, out),
            Err(SaslError::Aborted) => out.push(Action::Send(line(&[
                &tag,
                b" BAD Authentication aborted by client.",
            ]))),
            Err(SaslError::InvalidBase64) => out.push(Action::Send(line(&[
                &tag,
                b" NO [ALERT] Invalid base64 in response",
            ]))),
            Err(SaslError::TooLong) => {
                self.state = State::Closed;
                zeroize::Zeroize::zeroize(&mut self.buf);
                out.push(Action::Close);
            }
            Err(SaslError::Malformed) => self.auth_failed(&tag, out),
        }
        matches!(self.state, State::Commands | State::Sasl { .. })
    }
}
