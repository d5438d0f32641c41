//! The pre-login machine the untagged protocols share ([`crate::pop3::Pop3Login`],
//! [`crate::smtp::SubmissionLogin`], [`crate::managesieve::SieveLogin`]).
//!
//! They differ only in their reply texts and in how a command looks on the
//! wire; the driver-facing events (input, back-pressure, TLS, login outcome,
//! idle timeout), the SASL exchange and STARTTLS behave the same. So this
//! module holds one machine, [`PreLogin`], with the states and the decisions,
//! and each protocol supplies its texts as data ([`Replies`]) and its command
//! handling through [`LoginRules`] (and [`LineProtocol`] when commands are
//! lines). IMAP's machine carries a tag in its states and keeps its own.

use std::borrow::Cow;
use std::fmt::Debug;

use crate::action::{Action, LoginFailure, MAX_PENDING_INPUT};
use crate::connection::{parse_ttl, Credentials, LOGIN_PROXY_TTL};
use crate::line::{LineBuffer, LineTooLong};
use crate::sasl::{SaslError, SaslExchange, SaslMech, SaslStep, MAX_AUTH_RESPONSE};

/// Where a pre-login machine is.
#[derive(Debug)]
pub(crate) enum State {
    /// Reading commands.
    Commands,
    /// Reading the next SASL response line.
    Sasl(SaslExchange),
    /// The driver runs the TLS handshake.
    TlsHandshake,
    /// The driver runs the login replay; input is buffered, not parsed.
    LoginPending,
    /// Logged in: the driver splices bytes.
    Proxying,
    /// Closed (or about to be).
    Closed,
}

impl State {
    /// Client bytes are dropped in these states (nothing to parse them for).
    fn ignores_input(&self) -> bool {
        matches!(self, Self::Closed | Self::TlsHandshake | Self::Proxying)
    }

    /// False while the machine waits for its driver or is done.
    fn wants_input(&self) -> bool {
        !matches!(
            self,
            Self::LoginPending | Self::TlsHandshake | Self::Proxying | Self::Closed
        )
    }

    /// Buffered input is parsed in these states.
    pub(crate) fn parses(&self) -> bool {
        matches!(self, Self::Commands | Self::Sasl(_))
    }

    /// A SASL exchange waits for a response.
    pub(crate) fn is_sasl(&self) -> bool {
        matches!(self, Self::Sasl(_))
    }
}

/// A protocol's reply texts (without CRLF) for the outcomes decided here,
/// all recorded from the Dovecot login processes.
pub struct Replies {
    /// [`LoginFailure::Temporary`].
    pub temporary: &'static str,
    /// [`LoginFailure::AuthFailed`], malformed SASL messages, bad credentials.
    pub auth_failed: &'static str,
    /// The client answered a challenge with `*`.
    pub aborted: &'static str,
    /// A SASL response was not base64.
    pub invalid_base64: &'static str,
    /// A SASL initial response was not base64.
    pub invalid_initial_base64: &'static str,
    /// The SASL mechanism is not one we offer.
    pub unsupported_mechanism: &'static str,
    /// AUTH on an insecure connection with `disable_plaintext_auth`.
    pub plaintext_disabled: &'static str,
    /// More than [`MAX_PENDING_INPUT`] bytes arrived while the machine was not
    /// reading, or a command line was too long (closes).
    pub input_full: &'static str,
    /// STARTTLS on a TLS connection.
    pub tls_active: &'static str,
    /// STARTTLS without a certificate configured.
    pub tls_unavailable: &'static str,
    /// STARTTLS accepted: the handshake starts after this reply.
    pub tls_begin: &'static str,
    /// [`LoginFailure::Looping`]: no proxy hop left (Dovecot's reply for a misconfigured
    /// remote, read from its source: the recordings have no loop).
    pub looping: &'static str,
}

/// What makes [`PreLogin`] a POP3, Submission or ManageSieve machine.
pub trait LoginRules: Sized + Debug {
    /// What [`Action::Login`] carries.
    type Req;
    /// How client bytes are held until parsed.
    type Buf: InputBuffer + Debug;
    /// The protocol's texts.
    const REPLIES: Replies;
    /// The listener can start TLS (`tls_available` of the config).
    fn tls_available(&self) -> bool;
    /// Dovecot `disable_plaintext_auth` (of the config).
    fn disable_plaintext_auth(&self) -> bool;
    /// The reply before an idle client is disconnected.
    fn idle_reply(&self) -> Cow<'static, str>;
    /// A SASL challenge line (without CRLF) for the base64 text `c`.
    fn challenge(c: &str) -> String;
    /// The login request for `creds`, or `None` to answer
    /// [`Replies::auth_failed`] instead.
    fn request(m: &PreLogin<Self>, creds: Credentials) -> Option<Self::Req>;
    /// Parses what is buffered while the state allows it.
    fn process(m: &mut PreLogin<Self>) -> Vec<Action<Self::Req>>;
    /// Protocol-specific reaction to a finished TLS handshake (the machine
    /// is already secured and reading commands).
    fn tls_established(_m: &mut PreLogin<Self>) -> Vec<Action<Self::Req>> {
        Vec::new()
    }
}

/// A protocol whose commands and SASL responses are single lines
/// (POP3, Submission): [`PreLogin::process_lines`] frames them.
pub trait LineProtocol: LoginRules<Buf = LineBuffer> {
    /// Longest command line.
    const MAX_LINE: usize;
    /// Handles one command line.
    fn command(m: &mut PreLogin<Self>, line: &[u8], out: &mut Vec<Action<Self::Req>>);
    /// A command line was longer than [`Self::MAX_LINE`]; true to go on
    /// parsing.
    fn line_too_long(
        m: &mut PreLogin<Self>,
        e: LineTooLong,
        out: &mut Vec<Action<Self::Req>>,
    ) -> bool;
}

/// Client bytes a machine holds: framed lines, or the raw bytes the
/// IMAP-syntax parser reads (ManageSieve).
pub trait InputBuffer {
    /// Bytes held.
    fn len(&self) -> usize;
    /// Appends received bytes.
    fn append(&mut self, data: &[u8]);
    /// Drops everything held.
    fn clear(&mut self);
    /// Takes everything held.
    fn take_all(&mut self) -> Vec<u8>;
}

impl InputBuffer for LineBuffer {
    fn len(&self) -> usize {
        LineBuffer::len(self)
    }
    fn append(&mut self, data: &[u8]) {
        self.feed(data);
    }
    fn clear(&mut self) {
        LineBuffer::clear(self);
    }
    fn take_all(&mut self) -> Vec<u8> {
        self.take_rest()
    }
}

impl InputBuffer for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn append(&mut self, data: &[u8]) {
        crate::line::append_wiping(self, data);
    }
    fn clear(&mut self) {
        zeroize::Zeroize::zeroize(self);
    }
    fn take_all(&mut self) -> Vec<u8> {
        crate::line::take_all(self)
    }
}

/// An `XCLIENT ADDR=` value Dovecot accepts (`net_addr2ip`: IPv4, or IPv6 bare or in
/// brackets).
fn is_xclient_addr(v: &[u8]) -> bool {
    let v = v
        .strip_prefix(b"[")
        .and_then(|v| v.strip_suffix(b"]"))
        .unwrap_or(v);
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::IpAddr>().is_ok())
}

/// An `XCLIENT PORT=` value Dovecot accepts (`net_str2port`: 1 to 65535).
fn is_xclient_port(v: &[u8]) -> bool {
    parse_ttl(v).is_some_and(|p| (1..=u32::from(u16::MAX)).contains(&p))
}

/// `text` and CRLF, to send.
pub(crate) fn reply<R>(text: &str) -> Action<R> {
    Action::Send(format!("{text}\r\n").into_bytes())
}

/// A pre-login state machine (one per client connection), parameterised by
/// its protocol.
///
/// Events in: `start`, [`feed`](Self::feed), [`tls_established`](Self::tls_established),
/// [`login_failed`](Self::login_failed), [`login_succeeded`](Self::login_succeeded),
/// [`idle_timeout`](Self::idle_timeout). Actions out: [`Action`] with the
/// protocol's login request.
#[derive(Debug)]
pub struct PreLogin<P: LoginRules> {
    /// The protocol's settings and per-connection facts.
    pub(crate) proto: P,
    pub(crate) state: State,
    /// TLS is on (implicit TLS, or after STARTTLS).
    pub(crate) tls_active: bool,
    /// Plaintext authentication is acceptable (TLS, or a trusted client).
    pub(crate) secured: bool,
    pub(crate) buf: P::Buf,
    /// Unknown or malformed commands so far.
    pub(crate) bad_commands: u32,
    /// The client is in `login_trusted_networks`: it may set the proxy TTL (`XCLIENT`).
    pub(crate) trusted: bool,
    /// The hops the login may still take ([`LOGIN_PROXY_TTL`] unless a trusted client said);
    /// the request carries it.
    pub(crate) proxy_ttl: u32,
}

impl<P: LoginRules> PreLogin<P> {
    /// Whether `reply`, sent by this machine, refuses the client's credentials (the
    /// protocol's "authentication failed" reply): a driver delays it by
    /// `auth_failure_delay`, as Dovecot's login processes do.
    pub fn is_auth_failure(reply: &[u8]) -> bool {
        reply.starts_with(P::REPLIES.auth_failed.as_bytes())
    }

    /// A machine for a new connection (see [`crate::imap::ImapLogin::new`]
    /// for `tls_active` and `secured`).
    pub(crate) fn with(proto: P, buf: P::Buf, tls_active: bool, secured: bool) -> Self {
        Self {
            proto,
            state: State::Commands,
            tls_active,
            secured: secured || tls_active,
            buf,
            bad_commands: 0,
            trusted: false,
            proxy_ttl: LOGIN_PROXY_TTL,
        }
    }

    /// Marks the client as one of `login_trusted_networks` (an upstream proxy), whose
    /// `XCLIENT` is obeyed (Dovecot ignores it from anyone else).
    pub fn with_trusted(mut self, trusted: bool) -> Self {
        self.trusted = trusted;
        self
    }

    /// Reads the attributes of a trusted client's `XCLIENT` (`ADDR=`, `PORT=`, `SESSION=`,
    /// `TTL=`, `FORWARD=`; names in any case, others ignored), as Dovecot's POP3 and
    /// ManageSieve logins do. `TTL=` is taken at once, even when a later attribute is bad
    /// (as Dovecot does); the client's address and session are checked but not adopted (the
    /// proxy reports the connection's own). False when an attribute is malformed.
    pub(crate) fn xclient_attributes<'a>(&mut self, attrs: impl Iterator<Item = &'a [u8]>) -> bool {
        let mut ok = true;
        for attr in attrs {
            let (name, value) = match attr.iter().position(|b| *b == b'=') {
                Some(eq) => (&attr[..eq], &attr[eq + 1..]),
                None => continue,
            };
            match name.to_ascii_uppercase().as_slice() {
                b"ADDR" => ok &= is_xclient_addr(value),
                b"PORT" => ok &= is_xclient_port(value),
                b"TTL" => match parse_ttl(value) {
                    Some(ttl) => self.proxy_ttl = ttl,
                    None => ok = false,
                },
                _ => {}
            }
        }
        ok
    }

    /// Plaintext mechanisms may be offered and used.
    pub(crate) fn plaintext_allowed(&self) -> bool {
        self.secured || !self.proto.disable_plaintext_auth()
    }

    /// STARTTLS can be offered (available and not on yet).
    pub(crate) fn starttls_offered(&self) -> bool {
        self.proto.tls_available() && !self.tls_active
    }

    /// The client stayed silent for [`crate::action::LOGIN_IDLE_TIMEOUT`]
    /// before logging in: the protocol's "Disconnected for inactivity."
    /// reply (recorded), then close. Nothing once logged in or closed.
    pub fn idle_timeout(&mut self) -> Vec<Action<P::Req>> {
        let mut out = Vec::new();
        if !matches!(self.state, State::Closed | State::Proxying) {
            let text = self.proto.idle_reply();
            self.close(&mut out, &text);
        }
        out
    }

    /// False while the machine waits for the driver (login in progress):
    /// stop reading from the client until it turns true again.
    pub fn wants_input(&self) -> bool {
        self.state.wants_input()
    }

    /// Client bytes arrived. Ignored once closed, during a TLS handshake and
    /// after `login_succeeded` (the driver splices from then on). Past
    /// [`MAX_PENDING_INPUT`] buffered while not reading, the machine closes.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Action<P::Req>> {
        if self.state.ignores_input() {
            return Vec::new();
        }
        if !self.state.wants_input()
            && self.buf.len().saturating_add(data.len()) > MAX_PENDING_INPUT
        {
            let mut out = Vec::new();
            self.close(&mut out, P::REPLIES.input_full);
            return out;
        }
        self.buf.append(data);
        P::process(self)
    }

    /// The TLS handshake the machine asked for finished.
    pub fn tls_established(&mut self) -> Vec<Action<P::Req>> {
        if !matches!(self.state, State::TlsHandshake) {
            return Vec::new();
        }
        self.tls_active = true;
        self.secured = true;
        self.state = State::Commands;
        P::tls_established(self)
    }

    /// The login did not reach the proxying state; the client may try again.
    pub fn login_failed(&mut self, why: LoginFailure) -> Vec<Action<P::Req>> {
        if !matches!(self.state, State::LoginPending) {
            return Vec::new();
        }
        self.state = State::Commands;
        let mut out = Vec::new();
        let text = match why {
            LoginFailure::Relayed => None,
            LoginFailure::Temporary => Some(P::REPLIES.temporary),
            LoginFailure::AuthFailed => Some(P::REPLIES.auth_failed),
            LoginFailure::Looping => Some(P::REPLIES.looping),
        };
        out.extend(text.map(reply));
        out.extend(P::process(self));
        out
    }

    /// The backend accepted the login. Returns the client bytes received after
    /// the login command, which belong to the backend session.
    pub fn login_succeeded(&mut self) -> Vec<u8> {
        self.state = State::Proxying;
        self.buf.take_all()
    }

    /// Sends `text`, then closes.
    pub(crate) fn close(&mut self, out: &mut Vec<Action<P::Req>>, text: &str) {
        out.push(reply(text));
        self.close_silently(out);
    }

    /// Closes without a reply (an over-long SASL response, as Dovecot does).
    pub(crate) fn close_silently(&mut self, out: &mut Vec<Action<P::Req>>) {
        out.push(Action::Close);
        self.state = State::Closed;
        self.buf.clear();
    }

    /// STARTTLS: refused when TLS is on or unavailable; else the handshake
    /// starts and pipelined plaintext is dropped (STARTTLS command injection).
    pub(crate) fn starttls(&mut self, out: &mut Vec<Action<P::Req>>) {
        if self.tls_active {
            out.push(reply(P::REPLIES.tls_active));
        } else if !self.proto.tls_available() {
            out.push(reply(P::REPLIES.tls_unavailable));
        } else {
            out.push(reply(P::REPLIES.tls_begin));
            out.push(Action::StartTls);
            self.buf.clear();
            self.state = State::TlsHandshake;
        }
    }

    /// AUTH/AUTHENTICATE with mechanism name `mech` and initial response `ir`.
    pub(crate) fn authenticate(
        &mut self,
        mech: &[u8],
        ir: Option<&[u8]>,
        out: &mut Vec<Action<P::Req>>,
    ) {
        let Some(mech) = SaslMech::parse(mech) else {
            out.push(reply(P::REPLIES.unsupported_mechanism));
            return;
        };
        if !self.plaintext_allowed() {
            out.push(reply(P::REPLIES.plaintext_disabled));
            return;
        }
        match SaslExchange::start(mech, ir) {
            Ok((ex, step)) => self.sasl_step(ex, step, out),
            Err(SaslError::InvalidBase64) => out.push(reply(P::REPLIES.invalid_initial_base64)),
            Err(_) => out.push(reply(P::REPLIES.auth_failed)),
        }
    }

    /// The client gave `creds`: ask the driver to log in (or refuse them).
    pub(crate) fn request_login(&mut self, creds: Credentials, out: &mut Vec<Action<P::Req>>) {
        match P::request(self, creds) {
            Some(req) => {
                out.push(Action::Login(req));
                self.state = State::LoginPending;
            }
            None => out.push(reply(P::REPLIES.auth_failed)),
        }
    }

    fn sasl_step(&mut self, ex: SaslExchange, step: SaslStep, out: &mut Vec<Action<P::Req>>) {
        match step {
            SaslStep::Challenge(c) => {
                out.push(reply(&P::challenge(c)));
                self.state = State::Sasl(ex);
            }
            SaslStep::Done(creds) => self.request_login(creds, out),
        }
    }

    /// Feeds one SASL response to `ex` and answers errors with the
    /// protocol's texts.
    pub(crate) fn sasl_response(
        &mut self,
        mut ex: SaslExchange,
        data: &[u8],
        out: &mut Vec<Action<P::Req>>,
    ) {
        match ex.respond(data) {
            Ok(step) => self.sasl_step(ex, step, out),
            Err(SaslError::Aborted) => out.push(reply(P::REPLIES.aborted)),
            Err(SaslError::InvalidBase64) => out.push(reply(P::REPLIES.invalid_base64)),
            Err(SaslError::TooLong) => self.close_silently(out),
            Err(SaslError::Malformed) => out.push(reply(P::REPLIES.auth_failed)),
        }
    }
}

impl<P: LineProtocol> PreLogin<P> {
    /// The parse loop of line protocols: commands up to
    /// [`LineProtocol::MAX_LINE`], SASL responses up to [`MAX_AUTH_RESPONSE`]
    /// (longer ones close silently).
    pub(crate) fn process_lines(&mut self) -> Vec<Action<P::Req>> {
        let mut out = Vec::new();
        while self.state.parses() {
            let sasl = self.state.is_sasl();
            self.buf
                .set_max(if sasl { MAX_AUTH_RESPONSE } else { P::MAX_LINE });
            let line = match self.buf.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(_) if sasl => {
                    self.close_silently(&mut out);
                    break;
                }
                Err(e) => {
                    if P::line_too_long(self, e, &mut out) {
                        continue;
                    }
                    break;
                }
            };
            let mut line = line;
            match std::mem::replace(&mut self.state, State::Commands) {
                State::Sasl(ex) => self.sasl_response(ex, &line, &mut out),
                _ => P::command(self, &line, &mut out),
            }
            // The line may have been `PASS secret` or a SASL response.
            zeroize::Zeroize::zeroize(&mut line);
        }
        out
    }
}
