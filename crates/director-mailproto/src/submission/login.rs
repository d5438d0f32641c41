//! The Submission pre-login side facing the client ([`SubmissionLogin`]): what
//! `submission-login` does.

use super::{DEFAULT_EXTENSIONS, MAX_BAD_COMMANDS, MAX_LINE};
use crate::action::Action;
use crate::connection::Credentials;
use crate::line::{split_word, LineBuffer, LineTooLong};
use crate::login::{reply, LineProtocol, LoginRules, PreLogin, Replies};
use crate::sasl;
use crate::smtp::{parse_xclient, XCLIENT_UNTRUSTED};
use std::borrow::Cow;

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
    /// The hops the login may still take (see [`crate::connection::next_hop_ttl`]).
    pub proxy_ttl: u32,
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

impl LoginRules for Submission {
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
        looping: "454 4.7.0 Account is temporarily unavailable.",
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
            proxy_ttl: m.proxy_ttl,
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

/// The EHLO line submission-login sends a trusted client.
const XCLIENT_EHLO: &str = "XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT FORWARD";

impl SubmissionLogin {
    /// `XCLIENT` from an upstream proxy: obeyed only from a trusted client. Accepted, it
    /// resets the connection (a new greeting; the client must EHLO again), as lib-smtp does.
    fn xclient(&mut self, params: &[u8], out: &mut Out) {
        if !self.trusted {
            out.push(reply(XCLIENT_UNTRUSTED));
            return;
        }
        match parse_xclient(params) {
            Ok(attrs) => {
                if let Some(ttl) = attrs.ttl {
                    self.proxy_ttl = ttl;
                }
                self.proto.helo = None;
                let cfg = &self.proto.cfg;
                out.push(reply(&format!("220 {} {}", cfg.hostname, cfg.greeting)));
            }
            Err(text) => out.push(reply(text)),
        }
    }

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
        if self.trusted {
            // What submission-login offers a trusted client (recorded from a backend).
            lines.push(XCLIENT_EHLO.into());
        }
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
            b"XCLIENT" => self.xclient(arg, out),
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
