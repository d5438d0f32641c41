//! One LMTP session to a backend for a transaction ([`LmtpBackendSession`]), with
//! dot-stuffing.

use super::server::{SessionPlan, Transaction};
use crate::connection::ConnInfo;
use crate::line::{split_word, LineBuffer};
use crate::smtp::{xclient_command, Reply, ReplyReader, MAX_REPLY_LINE};

/// Reply for recipients whose backend session failed (connect error,
/// protocol error, disconnect).
pub const REPLY_SESSION_FAILED: &str = "451 4.4.0 Remote server not answering";

/// Settings of a backend LMTP session.
#[derive(Debug, Clone)]
pub struct LmtpBackendConfig {
    /// Name we send in LHLO (Dovecot sends its `hostname`).
    pub lhlo_name: String,
    /// Send XCLIENT when advertised.
    pub send_xclient: bool,
}

impl Default for LmtpBackendConfig {
    fn default() -> Self {
        Self {
            lhlo_name: "localhost".into(),
            send_xclient: true,
        }
    }
}

/// What a backend LMTP session asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpBackendAction {
    /// Write these bytes to the backend.
    Send(Vec<u8>),
    /// Streaming sessions only: the backend is ready for the body; write it
    /// through a [`DotStuffer`] (chunks, then `finish`). Replies follow.
    SendBody,
    /// The session is over: one reply per planned recipient (in plan order).
    /// Send QUIT (optional) and close.
    Done(Vec<Vec<u8>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    Greeting,
    Lhlo,
    XclientGreeting,
    Mail,
    Rcpt(usize),
    Data,
    Final(usize),
    Done,
}

/// One LMTP client session to a backend, delivering one transaction to the
/// recipients planned for it.
///
/// Events in: `feed` (backend bytes), `failed` (connection lost). Actions
/// out: [`LmtpBackendAction`].
#[derive(Debug)]
pub struct LmtpBackendSession {
    cfg: LmtpBackendConfig,
    conn: ConnInfo,
    helo: Option<Vec<u8>>,
    mail_from: Vec<u8>,
    rcpts: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<Vec<u8>>,
    state: BState,
    buf: LineBuffer,
    reader: ReplyReader,
    xclient_done: bool,
    replies: Vec<Option<Vec<u8>>>,
}

/// Dot-stuffs a body (CRLF line ends) and appends the final `.` line.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut d = DotStuffer::default();
    let mut out = d.stuff(body);
    out.extend_from_slice(&d.finish());
    out
}

/// Chunk-wise dot-stuffing, for streaming a body to a backend after
/// [`LmtpBackendAction::SendBody`].
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self {
            at_line_start: true,
        }
    }
}

impl DotStuffer {
    /// The next chunk of the un-stuffed body, stuffed.
    pub fn stuff(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + 8);
        for &b in chunk {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
        }
        out
    }

    /// The end of the body: a line end if the body did not end with one, then `.`.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }
}

impl LmtpBackendSession {
    /// A session delivering `tx`'s recipients listed in `plan`.
    pub fn new<B>(
        cfg: LmtpBackendConfig,
        conn: ConnInfo,
        helo: Option<&[u8]>,
        tx: &Transaction<B>,
        plan: &SessionPlan<B>,
    ) -> Self {
        let rcpts: Vec<(Vec<u8>, Vec<u8>)> = plan
            .recipients
            .iter()
            .filter_map(|&i| tx.recipients.get(i))
            .map(|r| (r.address.clone(), r.params.clone()))
            .collect();
        let n = rcpts.len();
        Self {
            cfg,
            conn,
            helo: helo.map(<[u8]>::to_vec),
            mail_from: tx.mail_from.clone(),
            rcpts,
            body: Some(tx.data.clone()),
            state: BState::Greeting,
            buf: LineBuffer::new(MAX_REPLY_LINE),
            reader: ReplyReader::default(),
            xclient_done: false,
            replies: vec![None; n],
        }
    }

    /// Like [`new`](Self::new), but the body is streamed by the driver
    /// ([`LmtpServerConfig::stream_body`]): the session asks for it with
    /// [`LmtpBackendAction::SendBody`].
    pub fn new_streaming<B>(
        cfg: LmtpBackendConfig,
        conn: ConnInfo,
        helo: Option<&[u8]>,
        tx: &Transaction<B>,
        plan: &SessionPlan<B>,
    ) -> Self {
        let mut s = Self::new(cfg, conn, helo, tx, plan);
        s.body = None;
        s
    }

    /// Backend bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<LmtpBackendAction> {
        self.buf.feed(data);
        let mut out = Vec::new();
        while self.state != BState::Done {
            match self.reader.next(&mut self.buf) {
                Ok(Some(r)) => self.on_reply(r, &mut out),
                Ok(None) => break,
                Err(_) => {
                    out.push(self.finish());
                }
            }
        }
        out
    }

    /// The connection failed or closed early: recipients without a reply get
    /// [`REPLY_SESSION_FAILED`].
    pub fn failed(&mut self) -> Vec<LmtpBackendAction> {
        if self.state == BState::Done {
            return Vec::new();
        }
        vec![self.finish()]
    }

    fn finish(&mut self) -> LmtpBackendAction {
        self.state = BState::Done;
        LmtpBackendAction::Done(
            self.replies
                .iter()
                .map(|r| {
                    r.clone()
                        .unwrap_or_else(|| REPLY_SESSION_FAILED.as_bytes().to_vec())
                })
                .collect(),
        )
    }

    fn lhlo(&self) -> LmtpBackendAction {
        LmtpBackendAction::Send(format!("LHLO {}\r\n", self.cfg.lhlo_name).into_bytes())
    }

    fn all_fail(&mut self, r: &Reply) -> LmtpBackendAction {
        let line = r.lines.last().cloned().unwrap_or_default();
        for slot in self.replies.iter_mut().filter(|s| s.is_none()) {
            *slot = Some(line.clone());
        }
        self.finish()
    }

    fn on_reply(&mut self, r: Reply, out: &mut Vec<LmtpBackendAction>) {
        match self.state {
            BState::Greeting | BState::XclientGreeting => {
                if r.code != 220 {
                    return out.push(self.finish());
                }
                self.state = BState::Lhlo;
                out.push(self.lhlo());
            }
            BState::Lhlo => {
                if r.code != 250 {
                    return out.push(self.finish());
                }
                let xclient = r.texts().skip(1).find_map(|t| {
                    let (k, v) = split_word(t);
                    k.eq_ignore_ascii_case(b"XCLIENT").then(|| v.to_vec())
                });
                if let (Some(attrs), true, false) =
                    (xclient, self.cfg.send_xclient, self.xclient_done)
                {
                    self.xclient_done = true;
                    self.state = BState::XclientGreeting;
                    let cmd = xclient_command(&attrs, &self.conn, self.helo.as_deref(), "LMTP");
                    return out.push(LmtpBackendAction::Send(format!("{cmd}\r\n").into_bytes()));
                }
                // Pipeline MAIL and all RCPTs.
                let mut batch = b"MAIL FROM:".to_vec();
                batch.extend_from_slice(&self.mail_from);
                batch.extend_from_slice(b"\r\n");
                for (addr, params) in &self.rcpts {
                    batch.extend_from_slice(b"RCPT TO:<");
                    batch.extend_from_slice(addr);
                    batch.push(b'>');
                    if !params.is_empty() {
                        batch.push(b' ');
                        batch.extend_from_slice(params);
                    }
                    batch.extend_from_slice(b"\r\n");
                }
                self.state = BState::Mail;
                out.push(LmtpBackendAction::Send(batch));
            }
            BState::Mail => {
                if r.code / 100 != 2 {
                    // The pipelined RCPT replies that follow are ignored.
                    return out.push(self.all_fail(&r));
                }
                self.state = if self.rcpts.is_empty() {
                    BState::Data
                } else {
                    BState::Rcpt(0)
                };
                if self.rcpts.is_empty() {
                    out.push(self.finish());
                }
            }
            BState::Rcpt(i) => {
                if r.code / 100 != 2 {
                    if let Some(slot) = self.replies.get_mut(i) {
                        *slot = r.lines.last().cloned();
                    }
                }
                if i + 1 < self.rcpts.len() {
                    self.state = BState::Rcpt(i + 1);
                } else if self.replies.iter().all(Option::is_some) {
                    // Every recipient was refused: no DATA.
                    out.push(LmtpBackendAction::Send(b"RSET\r\n".to_vec()));
                    out.push(self.finish());
                } else {
                    self.state = BState::Data;
                    out.push(LmtpBackendAction::Send(b"DATA\r\n".to_vec()));
                }
            }
            BState::Data => {
                if r.code != 354 {
                    return out.push(self.all_fail(&r));
                }
                self.state = BState::Final(0);
                self.skip_answered(out);
                if self.state != BState::Done {
                    out.push(match &self.body {
                        Some(body) => LmtpBackendAction::Send(dot_stuff(body)),
                        None => LmtpBackendAction::SendBody,
                    });
                }
            }
            BState::Final(i) => {
                if let Some(slot) = self.replies.get_mut(i) {
                    *slot = r.lines.last().cloned();
                }
                self.state = BState::Final(i + 1);
                self.skip_answered(out);
            }
            BState::Done => {}
        }
    }

    /// Moves `Final(i)` past recipients already refused at RCPT time.
    fn skip_answered(&mut self, out: &mut Vec<LmtpBackendAction>) {
        let BState::Final(mut i) = self.state else {
            return;
        };
        while i < self.replies.len() && self.replies[i].is_some() {
            i += 1;
        }
        self.state = BState::Final(i);
        if i >= self.replies.len() {
            out.push(self.finish());
        }
    }
}
