//! The Submission login replay facing the backend ([`SubmissionBackend`]).

use super::login::SubmissionLoginRequest;
use crate::action::BackendAction;
use crate::connection::ConnInfo;
use crate::line::LineBuffer;
use crate::sasl;
use crate::smtp::{ehlo_keywords, xclient_command, Reply, ReplyReader, MAX_REPLY_LINE};

/// Settings of the Submission backend side.
#[derive(Debug, Clone)]
pub struct SubmissionBackendConfig {
    /// Name we send in EHLO (Dovecot sends its `hostname`).
    pub ehlo_name: String,
    /// Issue STARTTLS before logging in.
    pub starttls: bool,
    /// Send XCLIENT when advertised.
    pub send_xclient: bool,
}

impl Default for SubmissionBackendConfig {
    fn default() -> Self {
        Self {
            ehlo_name: "localhost".into(),
            starttls: false,
            send_xclient: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    Greeting,
    Ehlo,
    StartTls,
    TlsHandshake,
    XclientGreeting,
    Auth,
    Done,
}

/// The Submission login replay towards a backend.
///
/// Events in: `feed`, `tls_established`. Actions out: [`BackendAction`].
#[derive(Debug)]
pub struct SubmissionBackend {
    cfg: SubmissionBackendConfig,
    conn: ConnInfo,
    req: SubmissionLoginRequest,
    state: BState,
    buf: LineBuffer,
    reader: ReplyReader,
    tls_done: bool,
    xclient_done: bool,
}

impl SubmissionBackend {
    /// A replay of `req` for the client `conn`.
    pub fn new(cfg: SubmissionBackendConfig, conn: ConnInfo, req: SubmissionLoginRequest) -> Self {
        Self {
            cfg,
            conn,
            req,
            state: BState::Greeting,
            buf: LineBuffer::new(MAX_REPLY_LINE),
            reader: ReplyReader::default(),
            tls_done: false,
            xclient_done: false,
        }
    }

    /// Backend bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<BackendAction> {
        self.buf.feed(data);
        let mut out = Vec::new();
        while !matches!(self.state, BState::Done | BState::TlsHandshake) {
            match self.reader.next(&mut self.buf) {
                Ok(Some(r)) => self.on_reply(r, &mut out),
                Ok(None) => break,
                Err(e) => self.fail(&mut out, &e.to_string()),
            }
        }
        out
    }

    /// The TLS handshake finished: EHLO again.
    pub fn tls_established(&mut self) -> Vec<BackendAction> {
        if self.state != BState::TlsHandshake {
            return Vec::new();
        }
        self.tls_done = true;
        self.buf.clear();
        self.state = BState::Ehlo;
        vec![self.ehlo()]
    }

    /// Backend bytes after the final reply.
    pub fn take_remaining(&mut self) -> Vec<u8> {
        self.buf.take_rest()
    }

    fn ehlo(&self) -> BackendAction {
        BackendAction::SendBackend(format!("EHLO {}\r\n", self.cfg.ehlo_name).into_bytes())
    }

    fn fail(&mut self, out: &mut Vec<BackendAction>, why: &str) {
        self.state = BState::Done;
        out.push(BackendAction::protocol_error("submission", why));
    }

    fn on_reply(&mut self, r: Reply, out: &mut Vec<BackendAction>) {
        match self.state {
            BState::Greeting | BState::XclientGreeting => {
                if r.code != 220 {
                    return self.fail(out, "backend greeting is not 220");
                }
                self.state = BState::Ehlo;
                out.push(self.ehlo());
            }
            BState::Ehlo => {
                if r.code != 250 {
                    return self.fail(out, "backend refused EHLO");
                }
                let kws = ehlo_keywords(&r);
                if self.cfg.starttls && !self.tls_done {
                    self.state = BState::StartTls;
                    out.push(BackendAction::SendBackend(b"STARTTLS\r\n".to_vec()));
                    return;
                }
                let xclient = kws.iter().find(|(k, _)| k == b"XCLIENT");
                if let (Some((_, attrs)), true, false) =
                    (xclient, self.cfg.send_xclient, self.xclient_done)
                {
                    self.xclient_done = true;
                    let cmd = xclient_command(attrs, &self.conn, self.req.helo.as_deref(), "ESMTP");
                    self.state = BState::XclientGreeting;
                    out.push(BackendAction::SendBackend(
                        format!("{cmd}\r\n").into_bytes(),
                    ));
                    return;
                }
                let b64 = sasl::encode_plain_as_user(&self.req.credentials);
                self.state = BState::Auth;
                out.push(BackendAction::SendBackend(
                    [&b"AUTH PLAIN "[..], b64.as_bytes(), b"\r\n"].concat(),
                ));
            }
            BState::StartTls => {
                if r.code != 220 {
                    return self.fail(out, "backend refused STARTTLS");
                }
                self.state = BState::TlsHandshake;
                out.push(BackendAction::StartTls);
            }
            BState::Auth => {
                self.state = BState::Done;
                if r.code == 235 || (400..600).contains(&r.code) {
                    out.extend(BackendAction::verdict(r.to_bytes(), r.code == 235));
                } else {
                    self.fail(out, "unexpected reply to AUTH");
                }
            }
            BState::TlsHandshake | BState::Done => {}
        }
    }
}
