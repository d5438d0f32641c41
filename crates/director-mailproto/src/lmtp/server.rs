//! The LMTP server side facing the MTA ([`LmtpServer`]) and the plan of a transaction's
//! fan-out ([`plan_fanout`], [`merge_replies`]).

use super::backend::REPLY_SESSION_FAILED;
use super::{DEFAULT_MAX_MESSAGE_SIZE, MAX_DATA_LINE, MAX_LINE, MAX_RECIPIENTS};
use crate::line::{split_word, LineBuffer};
use crate::smtp::{parse_xclient, XCLIENT_UNTRUSTED};

/// Settings of the LMTP server side.
#[derive(Debug, Clone)]
pub struct LmtpServerConfig {
    /// Our host name (greeting, LHLO reply).
    pub hostname: String,
    /// Greeting text after the host name.
    pub greeting: String,
    /// LHLO keywords after the host name. Dovecot also lists CHUNKING; we
    /// only take DATA, so it is not in the default.
    pub extensions: Vec<String>,
    /// Largest message (see [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_message_size: usize,
    /// Stream the body: at `DATA` the driver opens the backend sessions first
    /// ([`LmtpAction::OpenData`], answered by [`LmtpServer::data_opened`]), then gets the
    /// body in chunks as it arrives ([`LmtpAction::BodyChunk`]) instead of accumulated into
    /// [`Transaction::data`]. The machine then holds no more than one input chunk of the
    /// message, whatever its size or its line lengths.
    pub stream_body: bool,
    /// Route by the local part only (`user` of `user@domain`); by default the
    /// whole address is the user name, as Dovecot's LMTP does with the
    /// default `auth_username_format`.
    pub strip_domain: bool,
    /// Dovecot `recipient_delimiter`: `user+detail@dom` routes as `user@dom`.
    /// Empty disables.
    pub recipient_delimiter: String,
}

impl Default for LmtpServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            greeting: "Dovecot ready.".into(),
            extensions: vec![
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
                "PIPELINING".into(),
            ],
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            stream_body: false,
            strip_domain: false,
            recipient_delimiter: "+".into(),
        }
    }
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient<B> {
    /// The path as given, without `<>`.
    pub address: Vec<u8>,
    /// The RCPT parameters after the path (forwarded as they are).
    pub params: Vec<u8>,
    /// The backend the core chose for this recipient's user.
    pub backend: B,
}

/// A complete transaction to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction<B> {
    /// The MAIL FROM arguments after `FROM:` (path and parameters).
    pub mail_from: Vec<u8>,
    /// Accepted recipients, in RCPT order.
    pub recipients: Vec<Recipient<B>>,
    /// The message, un-stuffed, with CRLF line ends (empty when streamed).
    pub data: Vec<u8>,
    /// The message exceeded the size limit: answer each recipient with
    /// [`REPLY_TOO_BIG`] instead of delivering.
    pub too_big: bool,
    /// The TTL to send the backends (`XCLIENT TTL=`): [`LMTP_PROXY_DEFAULT_TTL`], or one
    /// less than a trusted client's.
    pub proxy_ttl: u32,
}

/// The TTL Dovecot's LMTP proxy sends when its client set none (`LMTP_PROXY_DEFAULT_TTL`;
/// recorded: `XCLIENT … TTL=5`). Unlike the login proxies it counts down to 0 and refuses a
/// recipient only when the TTL it got is 0.
pub const LMTP_PROXY_DEFAULT_TTL: u32 = 5;

/// The reply to a recipient that arrives with TTL 0: the proxies forward to each other in a
/// loop (Dovecot 2.3.19's LMTP proxy, from its source).
pub const REPLY_LOOPING: &str = "554 5.4.6 Proxying appears to be looping (TTL=0)";

/// The LHLO line Dovecot's LMTP sends a client in `login_trusted_networks` (recorded).
const XCLIENT_LHLO: &str = "XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT";

/// Reply to every recipient when the message exceeded the limit.
pub const REPLY_TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";
/// The last line of a client whose message body did not arrive within the DATA deadline.
pub const REPLY_DATA_TIMEOUT: &str = "421 4.4.2 Message not received in time, closing";

/// What the LMTP server machine asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAction<B> {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Find the backend for `user` (from `RCPT TO:<address>`) and call
    /// [`LmtpServer::recipient_resolved`]. Input is buffered until then.
    Resolve {
        /// Routing user name.
        user: Vec<u8>,
        /// The address as given.
        address: Vec<u8>,
    },
    /// Streaming mode, after `DATA`: open a session to every backend of the transaction
    /// (up to the point where it takes the body), then call [`LmtpServer::data_opened`].
    /// Input is buffered until then.
    OpenData(Transaction<B>),
    /// Streaming mode: the next part of the un-stuffed body (CRLF line ends).
    BodyChunk(Vec<u8>),
    /// The body is complete: deliver (see [`plan_fanout`]) and call
    /// [`LmtpServer::delivered`] with one reply per recipient. In streaming mode the body
    /// went out in [`LmtpAction::BodyChunk`]s and `data` is empty; `too_big` means the
    /// sessions must be abandoned, not finished.
    Deliver(Transaction<B>),
    /// Flush and close.
    Close,
}

#[derive(Debug)]
enum State {
    Commands,
    Resolving {
        address: Vec<u8>,
        params: Vec<u8>,
    },
    /// Streaming: waiting for [`LmtpServer::data_opened`].
    Opening,
    Data,
    Delivering,
    Closed,
}

/// The LMTP server state machine (one per connection).
///
/// Events in: `start`, `feed`, `recipient_resolved`, `delivered`. Actions out:
/// [`LmtpAction`].
#[derive(Debug)]
pub struct LmtpServer<B> {
    cfg: LmtpServerConfig,
    state: State,
    buf: LineBuffer,
    helo: Option<Vec<u8>>,
    mail_from: Option<Vec<u8>>,
    recipients: Vec<Recipient<B>>,
    data: Vec<u8>,
    data_size: usize,
    too_big: bool,
    body: BodyDecoder,
    /// The client is in `login_trusted_networks` (an upstream proxy or MTA): its `XCLIENT`
    /// is obeyed.
    trusted: bool,
    /// The TTL a trusted client set with `XCLIENT TTL=`.
    inbound_ttl: Option<u32>,
}

fn reply<B>(text: &str) -> LmtpAction<B> {
    LmtpAction::Send(format!("{text}\r\n").into_bytes())
}

/// Parses `<path> params` after `FROM:`/`TO:`; `None` when the `<` is missing.
fn parse_path(arg: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let arg = arg.strip_prefix(b" ").unwrap_or(arg);
    let rest = arg.strip_prefix(b"<")?;
    let end = rest.iter().position(|&b| b == b'>')?;
    let params = rest[end + 1..]
        .strip_prefix(b" ")
        .unwrap_or(&rest[end + 1..]);
    Some((rest[..end].to_vec(), params.to_vec()))
}

impl<B: Clone> LmtpServer<B> {
    /// A machine for a new connection.
    pub fn new(cfg: LmtpServerConfig) -> Self {
        Self {
            cfg,
            state: State::Commands,
            buf: LineBuffer::new(MAX_LINE),
            helo: None,
            mail_from: None,
            recipients: Vec::new(),
            data: Vec::new(),
            data_size: 0,
            too_big: false,
            body: BodyDecoder::default(),
            trusted: false,
            inbound_ttl: None,
        }
    }

    /// Marks the client as one of `login_trusted_networks`: LHLO offers it `XCLIENT`, and its
    /// `XCLIENT` (the TTL, for loops through other proxies) is obeyed, as Dovecot's LMTP does.
    pub fn with_trusted(mut self, trusted: bool) -> Self {
        self.trusted = trusted;
        self
    }

    /// The TTL to send the backends: one less than a trusted client's, else the default.
    fn outbound_ttl(&self) -> u32 {
        self.inbound_ttl
            .map_or(LMTP_PROXY_DEFAULT_TTL, |t| t.saturating_sub(1))
    }

    /// The greeting.
    pub fn start(&mut self) -> Vec<LmtpAction<B>> {
        vec![reply(&format!(
            "220 {} {}",
            self.cfg.hostname, self.cfg.greeting
        ))]
    }

    /// The client's LHLO name (forwarded as `XCLIENT HELO=`).
    pub fn helo(&self) -> Option<&[u8]> {
        self.helo.as_deref()
    }

    /// The routing user for an address (see [`LmtpServerConfig`]).
    pub fn routing_user(&self, address: &[u8]) -> Vec<u8> {
        let (local, domain) = match address.iter().rposition(|&b| b == b'@') {
            Some(i) => (&address[..i], &address[i..]),
            None => (address, &b""[..]),
        };
        let seps = self.cfg.recipient_delimiter.as_bytes();
        let local = match local.iter().position(|b| seps.contains(b)) {
            Some(i) => &local[..i],
            None => local,
        };
        if self.cfg.strip_domain {
            local.to_vec()
        } else {
            [local, domain].concat()
        }
    }

    /// Bytes the transaction's envelope holds (sender and recipients), which grow with
    /// every accepted `RCPT`: the driver bounds them with its memory budget.
    pub fn held_bytes(&self) -> usize {
        let rcpts: usize = self
            .recipients
            .iter()
            .map(|r| r.address.len() + r.params.len() + std::mem::size_of::<Recipient<B>>())
            .sum();
        rcpts + self.mail_from.as_ref().map_or(0, Vec::len)
    }

    /// False while the machine waits for the driver (recipient lookup or
    /// delivery in progress): stop reading from the client until it turns true.
    pub fn wants_input(&self) -> bool {
        matches!(self.state, State::Commands | State::Data)
    }

    /// Client bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<LmtpAction<B>> {
        if matches!(self.state, State::Closed) {
            return Vec::new();
        }
        if !self.wants_input()
            && self.buf.len().saturating_add(data.len()) > crate::action::MAX_PENDING_INPUT
        {
            self.state = State::Closed;
            self.buf.clear();
            return vec![
                reply("421 4.7.0 Input buffer full, aborting"),
                LmtpAction::Close,
            ];
        }
        if self.cfg.stream_body && matches!(self.state, State::Data) {
            let mut out = Vec::new();
            self.stream_data(data, &mut out);
            return out;
        }
        self.buf.feed(data);
        self.process()
    }

    /// Streaming mode: decodes body bytes; at the final `.` the transaction is delivered and
    /// the bytes after it are commands again.
    fn stream_data(&mut self, data: &[u8], out: &mut Vec<LmtpAction<B>>) {
        let mut chunk = Vec::with_capacity(data.len() + 16);
        let end = self.body.decode(data, &mut chunk);
        if !self.too_big {
            self.data_size = self.data_size.saturating_add(chunk.len());
            if self.data_size > self.cfg.max_message_size {
                self.too_big = true;
            } else if !chunk.is_empty() {
                out.push(LmtpAction::BodyChunk(chunk));
            }
        }
        if let Some(consumed) = end {
            self.state = State::Delivering;
            out.push(LmtpAction::Deliver(Transaction {
                mail_from: self.mail_from.clone().unwrap_or_default(),
                recipients: self.recipients.clone(),
                data: Vec::new(),
                too_big: self.too_big,
                proxy_ttl: self.outbound_ttl(),
            }));
            if let Some(rest) = data.get(consumed..) {
                self.buf.feed(rest);
            }
        }
    }

    /// The driver's answer to [`LmtpAction::Resolve`]: `Some(backend)`, or
    /// `None` when the user's backend can't be determined (the recipient gets
    /// a temporary failure, the transaction goes on).
    pub fn recipient_resolved(&mut self, backend: Option<B>) -> Vec<LmtpAction<B>> {
        let State::Resolving { address, params } =
            std::mem::replace(&mut self.state, State::Commands)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match backend {
            Some(backend) => {
                self.recipients.push(Recipient {
                    address,
                    params,
                    backend,
                });
                out.push(reply("250 2.1.5 OK"));
            }
            None => out.push(reply(&format!(
                "451 4.3.0 <{}> Temporary internal error",
                String::from_utf8_lossy(&address)
            ))),
        }
        out.extend(self.process());
        out
    }

    /// The driver's answer to [`LmtpAction::OpenData`]: the backend sessions are ready (or
    /// have failed, which their recipients learn at the end). The client gets `354` and the
    /// body is read.
    pub fn data_opened(&mut self) -> Vec<LmtpAction<B>> {
        if !matches!(self.state, State::Opening) {
            return Vec::new();
        }
        self.state = State::Data;
        self.body = BodyDecoder::default();
        let mut out = vec![reply("354 OK")];
        // Whatever the client sent early is the start of the body.
        let early = self.buf.take_rest();
        self.stream_data(&early, &mut out);
        out
    }

    /// The driver's answer to [`LmtpAction::Deliver`]: one reply line per
    /// recipient, in RCPT order (see [`merge_replies`]).
    pub fn delivered(&mut self, replies: Vec<Vec<u8>>) -> Vec<LmtpAction<B>> {
        if !matches!(self.state, State::Delivering) {
            return Vec::new();
        }
        self.state = State::Commands;
        self.reset();
        let mut bytes = Vec::new();
        for r in replies {
            bytes.extend_from_slice(&r);
            if !r.ends_with(b"\n") {
                bytes.extend_from_slice(b"\r\n");
            }
        }
        let mut out = vec![LmtpAction::Send(bytes)];
        out.extend(self.process());
        out
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.recipients.clear();
        self.data.clear();
        self.data_size = 0;
        self.too_big = false;
    }

    fn process(&mut self) -> Vec<LmtpAction<B>> {
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Commands => {
                    self.buf.set_max(MAX_LINE);
                    match self.buf.next_line() {
                        Ok(Some(l)) => self.command(&l, &mut out),
                        Ok(None) => break,
                        Err(e) => {
                            out.push(reply("500 5.5.2 Line too long"));
                            if !e.complete {
                                self.buf.skip_rest_of_line();
                                break;
                            }
                        }
                    }
                }
                State::Data => {
                    self.buf.set_max(MAX_DATA_LINE);
                    match self.buf.next_line() {
                        Ok(Some(l)) => self.data_line(l, &mut out),
                        Ok(None) => break,
                        Err(_) => {
                            // A body line past MAX_DATA_LINE: give up on the
                            // connection rather than guess where the body ends.
                            out.push(reply("500 5.5.2 Line too long"));
                            out.push(LmtpAction::Close);
                            self.state = State::Closed;
                            break;
                        }
                    }
                }
                _ => break,
            }
        }
        out
    }

    /// Buffered mode: one body line.
    fn data_line(&mut self, l: Vec<u8>, out: &mut Vec<LmtpAction<B>>) {
        if l == b"." {
            self.state = State::Delivering;
            out.push(LmtpAction::Deliver(Transaction {
                mail_from: self.mail_from.clone().unwrap_or_default(),
                recipients: self.recipients.clone(),
                data: std::mem::take(&mut self.data),
                too_big: self.too_big,
                proxy_ttl: self.outbound_ttl(),
            }));
            return;
        }
        let content = l.strip_prefix(b".").unwrap_or(&l);
        self.data_size = self.data_size.saturating_add(content.len() + 2);
        if self.data_size > self.cfg.max_message_size {
            self.too_big = true;
            self.data.clear();
            return;
        }
        self.data.extend_from_slice(content);
        self.data.extend_from_slice(b"\r\n");
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<LmtpAction<B>>) {
        let (cmd, arg) = split_word(line);
        match cmd.to_ascii_uppercase().as_slice() {
            b"LHLO" if arg.is_empty() => out.push(reply("501 Missing hostname")),
            b"LHLO" => {
                self.helo = Some(arg.to_vec());
                self.reset();
                let mut lines = vec![self.cfg.hostname.clone()];
                lines.extend(self.cfg.extensions.iter().cloned());
                if self.trusted {
                    lines.push(XCLIENT_LHLO.into());
                }
                let n = lines.len();
                let text: String = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}\r\n", if i + 1 == n { ' ' } else { '-' }))
                    .collect();
                out.push(LmtpAction::Send(text.into_bytes()));
            }
            b"MAIL" => {
                if self.mail_from.is_some() {
                    out.push(reply("503 5.5.0 MAIL already given"));
                    return;
                }
                let Some(rest) = strip_ci(arg, b"FROM:") else {
                    out.push(reply("501 5.5.4 Invalid parameters"));
                    return;
                };
                if parse_path(rest).is_none() {
                    out.push(reply(
                        "501 5.5.4 Invalid FROM: Missing '<' at beginning of path",
                    ));
                    return;
                }
                self.mail_from = Some(rest.strip_prefix(b" ").unwrap_or(rest).to_vec());
                out.push(reply("250 2.1.0 OK"));
            }
            b"RCPT" => {
                if self.mail_from.is_none() {
                    out.push(reply("503 5.5.0 MAIL needed first"));
                    return;
                }
                let Some(rest) = strip_ci(arg, b"TO:") else {
                    out.push(reply("501 5.5.4 Invalid parameters"));
                    return;
                };
                let Some((address, params)) = parse_path(rest) else {
                    out.push(reply(
                        "501 5.5.4 Invalid TO: Missing '<' at beginning of path",
                    ));
                    return;
                };
                if self.recipients.len() >= MAX_RECIPIENTS {
                    out.push(reply("452 4.5.3 Too many recipients"));
                    return;
                }
                if self.inbound_ttl == Some(0) {
                    tracing::error!(
                        recipient = ?String::from_utf8_lossy(&address),
                        "Proxying appears to be looping (TTL=0)"
                    );
                    out.push(reply(REPLY_LOOPING));
                    return;
                }
                let user = self.routing_user(&address);
                out.push(LmtpAction::Resolve {
                    user,
                    address: address.clone(),
                });
                self.state = State::Resolving { address, params };
            }
            b"DATA" => {
                if self.mail_from.is_none() {
                    out.push(reply("503 5.5.0 MAIL needed first"));
                } else if self.recipients.is_empty() {
                    out.push(reply("503 5.5.0 No valid recipients"));
                } else if self.cfg.stream_body {
                    self.state = State::Opening;
                    out.push(LmtpAction::OpenData(Transaction {
                        mail_from: self.mail_from.clone().unwrap_or_default(),
                        recipients: self.recipients.clone(),
                        data: Vec::new(),
                        too_big: false,
                        proxy_ttl: self.outbound_ttl(),
                    }));
                } else {
                    out.push(reply("354 OK"));
                    self.state = State::Data;
                }
            }
            b"RSET" => {
                self.reset();
                out.push(reply("250 2.0.0 OK"));
            }
            b"NOOP" => out.push(reply("250 2.0.0 OK")),
            b"XCLIENT" => self.xclient(arg, out),
            b"QUIT" => {
                out.push(reply("221 2.0.0 Bye"));
                out.push(LmtpAction::Close);
                self.state = State::Closed;
            }
            _ => out.push(reply("500 5.5.1 Unknown command")),
        }
    }
}

/// Where the body decoder is within a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum BodyPos {
    /// At the start of a line.
    #[default]
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` and CR at the start of a line.
    DotCr,
}

/// Un-stuffs a DATA body byte by byte, the way the buffered mode's line framing does
/// (lines end in CRLF or LF, and come out with CRLF; a leading `.` is dropped; a line of
/// only `.` ends the body), but without holding a line: its state is one position.
#[derive(Debug, Clone, Copy, Default)]
struct BodyDecoder {
    pos: BodyPos,
}

impl BodyDecoder {
    /// Appends the body bytes of `data` to `out`; `Some(n)` when the body ended after the
    /// first `n` bytes of `data` (the rest are commands).
    fn decode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        for (i, &b) in data.iter().enumerate() {
            self.pos = match (self.pos, b) {
                (BodyPos::Dot | BodyPos::DotCr, b'\n') => {
                    self.pos = BodyPos::LineStart;
                    return Some(i + 1);
                }
                (BodyPos::LineStart, b'.') => BodyPos::Dot,
                (BodyPos::Dot, b'\r') => BodyPos::DotCr,
                (BodyPos::DotCr, _) => {
                    // ".\r" then more: the CR was part of the line.
                    out.push(b'\r');
                    Self::in_line(b, out)
                }
                (BodyPos::Cr, b'\r') => {
                    out.push(b'\r');
                    BodyPos::Cr
                }
                (BodyPos::Cr, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    BodyPos::LineStart
                }
                (BodyPos::Cr, _) => {
                    out.push(b'\r');
                    Self::in_line(b, out)
                }
                (BodyPos::LineStart | BodyPos::Mid | BodyPos::Dot, _) => Self::in_line(b, out),
            };
        }
        None
    }

    /// `b` inside a line (or starting one).
    fn in_line(b: u8, out: &mut Vec<u8>) -> BodyPos {
        match b {
            b'\r' => BodyPos::Cr,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                BodyPos::LineStart
            }
            _ => {
                out.push(b);
                BodyPos::Mid
            }
        }
    }
}

impl<B: Clone> LmtpServer<B> {
    /// `XCLIENT` from an upstream proxy or MTA (lib-smtp's rules and texts): obeyed only from
    /// a trusted client and outside a transaction; accepted, it resets the connection (a new
    /// greeting, LHLO again).
    fn xclient(&mut self, params: &[u8], out: &mut Vec<LmtpAction<B>>) {
        if self.mail_from.is_some() {
            out.push(reply(
                "503 5.5.0 XCLIENT not permitted during a mail transaction",
            ));
        } else if !self.trusted {
            out.push(reply(XCLIENT_UNTRUSTED));
        } else {
            match parse_xclient(params) {
                Ok(attrs) => {
                    if attrs.ttl.is_some() {
                        self.inbound_ttl = attrs.ttl;
                    }
                    self.helo = None;
                    self.reset();
                    out.extend(self.start());
                }
                Err(text) => out.push(reply(text)),
            }
        }
    }
}

fn strip_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// The recipients one backend session delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan<B> {
    /// The backend.
    pub backend: B,
    /// Indexes into [`Transaction::recipients`], in RCPT order.
    pub recipients: Vec<usize>,
}

/// Groups a transaction's recipients by backend, in order of first
/// appearance; one [`LmtpBackendSession`] per group.
pub fn plan_fanout<B: Clone + PartialEq>(recipients: &[Recipient<B>]) -> Vec<SessionPlan<B>> {
    let mut plans: Vec<SessionPlan<B>> = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        match plans.iter_mut().find(|p| p.backend == r.backend) {
            Some(p) => p.recipients.push(i),
            None => plans.push(SessionPlan {
                backend: r.backend.clone(),
                recipients: vec![i],
            }),
        }
    }
    plans
}

/// Puts per-session replies back in RCPT order. `results[k]` are the replies
/// of `plans[k]`'s session, one per recipient in the plan; a recipient with no
/// reply (session result too short) gets [`REPLY_SESSION_FAILED`].
pub fn merge_replies<B>(
    total: usize,
    plans: &[SessionPlan<B>],
    results: &[Vec<Vec<u8>>],
) -> Vec<Vec<u8>> {
    let mut out = vec![REPLY_SESSION_FAILED.as_bytes().to_vec(); total];
    for (plan, res) in plans.iter().zip(results) {
        for (slot, reply) in plan.recipients.iter().zip(res) {
            if let Some(o) = out.get_mut(*slot) {
                o.clone_from(reply);
            }
        }
    }
    out
}
