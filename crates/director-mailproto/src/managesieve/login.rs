//! The ManageSieve pre-login side facing the client ([`SieveLogin`]): what `managesieve-login`
//! does.

use crate::action::Action;
use crate::connection::Credentials;
use crate::imap::parse::{parse_single_arg, parse_untagged, Arg, Command, FatalError, Parsed};
use crate::login::{reply, LoginRules, PreLogin, Replies, State};
use crate::sasl::{self, SaslExchange, MAX_AUTH_RESPONSE};
use std::borrow::Cow;

use super::MAX_BAD_COMMANDS;

/// Settings of the ManageSieve login side.
#[derive(Debug, Clone)]
pub struct SieveLoginConfig {
    /// Greeting text in the final `OK "…"` of the greeting.
    pub greeting: String,
    /// `"IMPLEMENTATION"` value.
    pub implementation: String,
    /// `"SIEVE"` value (the backend's Sieve extensions).
    pub sieve: String,
    /// `"NOTIFY"` value (omitted when empty).
    pub notify: String,
    /// TLS can be started on this listener.
    pub tls_available: bool,
    /// Dovecot `disable_plaintext_auth`.
    pub disable_plaintext_auth: bool,
}

impl Default for SieveLoginConfig {
    fn default() -> Self {
        Self {
            greeting: "Dovecot ready.".into(),
            implementation: "Dovecot Pigeonhole".into(),
            sieve: "fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric relational regex imap4flags copy include variables body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext".into(),
            notify: "mailto".into(),
            tls_available: false,
            disable_plaintext_auth: true,
        }
    }
}

/// What the driver needs to replay a ManageSieve login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SieveLoginRequest {
    /// The credentials.
    pub credentials: Credentials,
    /// The hops the login may still take (see [`crate::connection::next_hop_ttl`]).
    pub proxy_ttl: u32,
}

/// The ManageSieve part of [`SieveLogin`]: its settings.
#[derive(Debug)]
pub struct Sieve {
    cfg: SieveLoginConfig,
}

type Out = Vec<Action<SieveLoginRequest>>;

/// The pre-login ManageSieve state machine.
///
/// Events in: `start`, `feed`, `tls_established`, `login_failed`,
/// `login_succeeded`, `idle_timeout`. Actions out: [`Action`] with
/// [`SieveLoginRequest`].
pub type SieveLogin = PreLogin<Sieve>;

impl LoginRules for Sieve {
    type Req = SieveLoginRequest;
    /// Commands may carry literals: the IMAP-syntax parser reads raw bytes.
    type Buf = Vec<u8>;
    /// ManageSieve's texts (recorded).
    const REPLIES: Replies = Replies {
        temporary: "NO (TRYLATER) \"Account is temporarily unavailable.\"",
        auth_failed: "NO \"Authentication failed.\"",
        aborted: "NO \"Authentication aborted by client.\"",
        invalid_base64: "NO \"Invalid base64 in response\"",
        invalid_initial_base64: "NO \"Invalid base64 data in initial response\"",
        unsupported_mechanism: "NO \"Unsupported authentication mechanism.\"",
        plaintext_disabled: "NO \"Plaintext authentication disabled.\"",
        input_full: "BYE \"Input buffer full, aborting\"",
        tls_active: "NO \"TLS is already active.\"",
        tls_unavailable: "NO \"TLS support isn't enabled.\"",
        tls_begin: "OK \"Begin TLS negotiation now.\"",
        looping: "NO \"Account is temporarily unavailable.\"",
    };

    fn tls_available(&self) -> bool {
        self.cfg.tls_available
    }

    fn disable_plaintext_auth(&self) -> bool {
        self.cfg.disable_plaintext_auth
    }

    fn idle_reply(&self) -> Cow<'static, str> {
        Cow::Borrowed("BYE \"Disconnected for inactivity.\"")
    }

    fn challenge(c: &str) -> String {
        format!("\"{c}\"")
    }

    fn request(m: &SieveLogin, credentials: Credentials) -> Option<SieveLoginRequest> {
        Some(SieveLoginRequest {
            credentials,
            proxy_ttl: m.proxy_ttl,
        })
    }

    fn process(m: &mut SieveLogin) -> Out {
        m.process()
    }

    /// RFC 5804 requires the capabilities again.
    fn tls_established(m: &mut SieveLogin) -> Out {
        vec![Action::Send(
            format!("{}OK \"TLS negotiation successful.\"\r\n", m.capability()).into_bytes(),
        )]
    }
}

impl SieveLogin {
    /// A machine for a new connection (see [`crate::imap::ImapLogin::new`]).
    pub fn new(cfg: SieveLoginConfig, tls_active: bool, secured: bool) -> Self {
        PreLogin::with(Sieve { cfg }, Vec::new(), tls_active, secured)
    }

    /// The capability lines for the current state.
    pub fn capability(&self) -> String {
        let cfg = &self.proto.cfg;
        let mut s = format!(
            "\"IMPLEMENTATION\" \"{}\"\r\n\"SIEVE\" \"{}\"\r\n",
            cfg.implementation, cfg.sieve
        );
        if !cfg.notify.is_empty() {
            s.push_str(&format!("\"NOTIFY\" \"{}\"\r\n", cfg.notify));
        }
        let mechs = if self.plaintext_allowed() {
            sasl::MECHANISMS
        } else {
            ""
        };
        s.push_str(&format!("\"SASL\" \"{mechs}\"\r\n"));
        if self.starttls_offered() {
            s.push_str("\"STARTTLS\"\r\n");
        }
        s.push_str("\"VERSION\" \"1.0\"\r\n");
        // A trusted client (an upstream proxy) may send XCLIENT, as managesieve-login says.
        if self.trusted {
            s.push_str("\"XCLIENT\"\r\n");
        }
        s
    }

    /// The greeting: capabilities, then `OK "<greeting>"`.
    pub fn start(&mut self) -> Out {
        vec![Action::Send(
            format!(
                "{}OK \"{}\"\r\n",
                self.capability(),
                self.proto.cfg.greeting
            )
            .into_bytes(),
        )]
    }

    fn process(&mut self) -> Out {
        let mut out = Vec::new();
        while self.state.parses() {
            if self.buf.is_empty() {
                break;
            }
            let parsed = if self.state.is_sasl() {
                parse_single_arg(&self.buf)
            } else {
                parse_untagged(&self.buf)
            };
            match parsed {
                Parsed::Incomplete { .. } => {
                    if self.state.is_sasl() && self.buf.len() > MAX_AUTH_RESPONSE + 4 {
                        self.close_silently(&mut out);
                    }
                    break;
                }
                Parsed::Fatal(FatalError::LineTooLong)
                | Parsed::Fatal(FatalError::LiteralTooLarge) => {
                    if self.state.is_sasl() {
                        self.close_silently(&mut out);
                    } else {
                        self.close(&mut out, Sieve::REPLIES.input_full);
                    }
                    break;
                }
                Parsed::Error { consumed, .. } => {
                    crate::line::discard_front(&mut self.buf, consumed);
                    if let State::Sasl(_) = std::mem::replace(&mut self.state, State::Commands) {
                        out.push(reply(Sieve::REPLIES.invalid_base64));
                        continue;
                    }
                    self.bad(&mut out);
                }
                Parsed::Complete { cmd, consumed } => {
                    crate::line::discard_front(&mut self.buf, consumed);
                    match std::mem::replace(&mut self.state, State::Commands) {
                        State::Sasl(ex) => self.sasl_arg(ex, &cmd, &mut out),
                        _ => self.command(cmd, &mut out),
                    }
                }
            }
        }
        out
    }

    fn bad(&mut self, out: &mut Out) {
        self.bad_commands += 1;
        if self.bad_commands >= MAX_BAD_COMMANDS {
            self.close(out, "BYE \"Too many invalid MANAGESIEVE commands.\"");
        } else {
            out.push(reply(
                "NO \"Error in MANAGESIEVE command received by server.\"",
            ));
        }
    }

    fn command(&mut self, cmd: Command, out: &mut Out) {
        match cmd.name.as_slice() {
            b"CAPABILITY" => out.push(Action::Send(
                format!("{}OK \"Capability completed.\"\r\n", self.capability()).into_bytes(),
            )),
            b"NOOP" => match cmd.args.first().and_then(Arg::as_nstring) {
                Some(Some(tag)) => {
                    let tag = String::from_utf8_lossy(tag).replace(['"', '\\'], "");
                    out.push(reply(&format!("OK (TAG \"{tag}\") \"Done\"")));
                }
                _ => out.push(reply("OK \"NOOP Completed\"")),
            },
            b"LOGOUT" => self.close(out, "OK \"Logout completed.\""),
            b"STARTTLS" => self.starttls(out),
            b"XCLIENT" => self.xclient(&cmd, out),
            b"AUTHENTICATE" => {
                let strings: Vec<Option<&[u8]>> =
                    cmd.args.iter().map(|a| a.as_nstring().flatten()).collect();
                match strings.as_slice() {
                    [Some(mech)] => self.authenticate(mech, None, out),
                    [Some(mech), Some(ir)] => self.authenticate(mech, Some(ir), out),
                    _ => self.bad(out),
                }
            }
            _ => self.bad(out),
        }
    }

    /// `XCLIENT attr=value …` from an upstream proxy, obeyed only from a trusted client
    /// (texts as managesieve-login's). The attributes are atoms; one that is not (or a
    /// malformed value) makes the command a bad one, after the atoms before it were read.
    fn xclient(&mut self, cmd: &Command, out: &mut Out) {
        if !self.trusted {
            out.push(reply("NO \"You are not from trusted IP\""));
            return;
        }
        let atoms: Vec<&[u8]> = cmd
            .args
            .iter()
            .map_while(|a| match a {
                Arg::Atom(v) => Some(v.as_slice()),
                _ => None,
            })
            .collect();
        let all_atoms = atoms.len() == cmd.args.len();
        if self.xclient_attributes(atoms.into_iter()) && all_atoms {
            out.push(reply("OK \"Updated\""));
        } else {
            self.bad(out);
        }
    }

    /// A SASL response is one quoted string or literal on its own line.
    fn sasl_arg(&mut self, ex: SaslExchange, cmd: &Command, out: &mut Out) {
        match cmd.args.first().and_then(Arg::as_nstring) {
            Some(Some(data)) => self.sasl_response(ex, data, out),
            _ => out.push(reply(Sieve::REPLIES.invalid_base64)),
        }
    }
}
