//! The ManageSieve login replay facing the backend ([`SieveBackend`]).

use crate::action::BackendAction;
use crate::connection::{ConnInfo, Credentials};
use crate::line::{with_crlf, LineBuffer};
use crate::pop3::xclient_line;
use crate::sasl::{self};

use super::MAX_BACKEND_LINE;

/// Settings of the ManageSieve backend side.
#[derive(Debug, Clone)]
pub struct SieveBackendConfig {
    /// Issue STARTTLS before logging in.
    pub starttls: bool,
    /// Send XCLIENT when the backend lists `"XCLIENT"`.
    pub send_xclient: bool,
}

impl Default for SieveBackendConfig {
    fn default() -> Self {
        Self {
            starttls: false,
            send_xclient: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    Greeting,
    StartTls,
    TlsHandshake,
    TlsGreeting,
    Xclient,
    Auth,
    Done,
}

/// The ManageSieve login replay towards a backend.
///
/// Events in: `feed`, `tls_established`. Actions out: [`BackendAction`].
#[derive(Debug)]
pub struct SieveBackend {
    cfg: SieveBackendConfig,
    conn: ConnInfo,
    creds: Credentials,
    state: BState,
    buf: LineBuffer,
    xclient: bool,
}

fn status(line: &[u8]) -> Option<&'static str> {
    let (w, _) = crate::line::split_word(line);
    if w.eq_ignore_ascii_case(b"OK") {
        Some("OK")
    } else if w.eq_ignore_ascii_case(b"NO") {
        Some("NO")
    } else if w.eq_ignore_ascii_case(b"BYE") {
        Some("BYE")
    } else {
        None
    }
}

impl SieveBackend {
    /// A replay of `creds` for the client `conn`.
    pub fn new(cfg: SieveBackendConfig, conn: ConnInfo, creds: Credentials) -> Self {
        Self {
            cfg,
            conn,
            creds,
            state: BState::Greeting,
            buf: LineBuffer::new(MAX_BACKEND_LINE),
            xclient: false,
        }
    }

    /// Backend bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<BackendAction> {
        self.buf.feed(data);
        let mut out = Vec::new();
        while !matches!(self.state, BState::Done | BState::TlsHandshake) {
            match self.buf.next_line() {
                Ok(Some(l)) => self.line(&l, &mut out),
                Ok(None) => break,
                Err(_) => self.fail(&mut out, "backend line too long"),
            }
        }
        out
    }

    /// The TLS handshake finished; the backend re-sends its capabilities.
    pub fn tls_established(&mut self) -> Vec<BackendAction> {
        if self.state == BState::TlsHandshake {
            self.buf.clear();
            self.xclient = false;
            self.state = BState::TlsGreeting;
        }
        Vec::new()
    }

    /// Backend bytes after the final reply.
    pub fn take_remaining(&mut self) -> Vec<u8> {
        self.buf.take_rest()
    }

    fn fail(&mut self, out: &mut Vec<BackendAction>, why: &str) {
        self.state = BState::Done;
        out.push(BackendAction::protocol_error("managesieve", why));
    }

    fn authenticate(&mut self, out: &mut Vec<BackendAction>) {
        let b64 = sasl::encode_plain_as_user(&self.creds);
        self.state = BState::Auth;
        out.push(BackendAction::SendBackend(
            [&b"AUTHENTICATE \"PLAIN\" \""[..], b64.as_bytes(), b"\"\r\n"].concat(),
        ));
    }

    fn after_greeting(&mut self, out: &mut Vec<BackendAction>) {
        if self.cfg.starttls && self.state == BState::Greeting {
            self.state = BState::StartTls;
            out.push(BackendAction::SendBackend(b"STARTTLS\r\n".to_vec()));
        } else if self.xclient && self.cfg.send_xclient {
            self.state = BState::Xclient;
            out.push(BackendAction::SendBackend(
                format!("{}\r\n", xclient_line(&self.conn)).into_bytes(),
            ));
        } else {
            self.authenticate(out);
        }
    }

    fn line(&mut self, l: &[u8], out: &mut Vec<BackendAction>) {
        let st = status(l);
        match self.state {
            BState::Greeting | BState::TlsGreeting => match st {
                None => {
                    if l.eq_ignore_ascii_case(b"\"XCLIENT\"") {
                        self.xclient = true;
                    }
                }
                Some("OK") => self.after_greeting(out),
                Some(_) => self.fail(out, "backend greeting is not OK"),
            },
            BState::StartTls => match st {
                Some("OK") => {
                    self.state = BState::TlsHandshake;
                    out.push(BackendAction::StartTls);
                }
                None => {}
                Some(_) => self.fail(out, "backend refused STARTTLS"),
            },
            BState::Xclient => match st {
                Some("OK") => self.authenticate(out),
                None => {}
                Some(_) => self.fail(out, "backend refused XCLIENT"),
            },
            BState::Auth => match st {
                Some(st @ ("OK" | "NO")) => {
                    self.state = BState::Done;
                    out.extend(BackendAction::verdict(with_crlf(l), st == "OK"));
                }
                // A continuation (`"…"`) would mean the backend ignored our
                // initial response.
                _ => self.fail(out, "unexpected reply to AUTHENTICATE"),
            },
            BState::TlsHandshake | BState::Done => {}
        }
    }
}
