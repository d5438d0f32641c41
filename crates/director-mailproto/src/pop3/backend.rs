//! The POP3 login replay facing the backend ([`Pop3Backend`]).

use crate::action::BackendAction;
use crate::connection::{ConnInfo, Credentials};
use crate::line::{with_crlf, LineBuffer};
use crate::sasl;

use super::MAX_BACKEND_LINE;

/// How to send the credentials to a POP3 backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop3BackendLogin {
    /// `USER`/`PASS` (Dovecot's choice); falls back to AUTH PLAIN for
    /// authzid logins and values containing CR, LF or NUL.
    UserPass,
    /// `AUTH PLAIN <initial response>`.
    AuthPlain,
}

/// Settings of the POP3 backend side.
#[derive(Debug, Clone)]
pub struct Pop3BackendConfig {
    /// Issue `STLS` before logging in.
    pub starttls: bool,
    /// Send `XCLIENT` when the greeting advertises `[XCLIENT]`.
    pub send_xclient: bool,
    /// How to send the credentials.
    pub login: Pop3BackendLogin,
}

impl Default for Pop3BackendConfig {
    fn default() -> Self {
        Self {
            starttls: false,
            send_xclient: true,
            login: Pop3BackendLogin::UserPass,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    Greeting,
    StlsReply,
    TlsHandshake,
    Xclient,
    User,
    Final,
    Done,
}

/// The POP3 login replay towards a backend.
///
/// Events in: `feed` (backend bytes), `tls_established`. Actions out:
/// [`BackendAction`].
#[derive(Debug)]
pub struct Pop3Backend {
    cfg: Pop3BackendConfig,
    conn: ConnInfo,
    creds: Credentials,
    state: BState,
    buf: LineBuffer,
    xclient: bool,
    pending: Vec<BState>,
}

/// The XCLIENT line Dovecot's POP3/ManageSieve proxies send (without CRLF).
pub fn xclient_line(conn: &ConnInfo) -> String {
    let mut s = format!("XCLIENT ADDR={} PORT={}", conn.client_ip, conn.client_port);
    if let Some(id) = &conn.session_id {
        s.push_str(&format!(" SESSION={id}"));
    }
    s.push_str(&format!(" TTL={}", conn.proxy_ttl));
    s
}

fn plain_safe(v: &[u8]) -> bool {
    !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

impl Pop3Backend {
    /// A replay of `creds` for the client `conn`.
    pub fn new(cfg: Pop3BackendConfig, conn: ConnInfo, creds: Credentials) -> Self {
        Self {
            cfg,
            conn,
            creds,
            state: BState::Greeting,
            buf: LineBuffer::new(MAX_BACKEND_LINE),
            xclient: false,
            pending: Vec::new(),
        }
    }

    fn use_user_pass(&self) -> bool {
        self.cfg.login == Pop3BackendLogin::UserPass
            && self.creds.authzid.is_empty()
            && plain_safe(&self.creds.authcid)
            && plain_safe(&self.creds.password)
            && !self.creds.authcid.contains(&b' ')
    }

    /// Backend bytes arrived.
    pub fn feed(&mut self, data: &[u8]) -> Vec<BackendAction> {
        self.buf.feed(data);
        let mut out = Vec::new();
        while !matches!(self.state, BState::Done | BState::TlsHandshake) {
            match self.buf.next_line() {
                Ok(Some(l)) => self.line(&l, &mut out),
                Ok(None) => break,
                Err(_) => {
                    self.fail(&mut out, "backend line too long");
                }
            }
        }
        out
    }

    /// The TLS handshake with the backend finished.
    pub fn tls_established(&mut self) -> Vec<BackendAction> {
        let mut out = Vec::new();
        if self.state == BState::TlsHandshake {
            self.buf.clear();
            self.send_login(&mut out);
        }
        out
    }

    /// Backend bytes after the final reply.
    pub fn take_remaining(&mut self) -> Vec<u8> {
        self.buf.take_rest()
    }

    fn fail(&mut self, out: &mut Vec<BackendAction>, why: &str) {
        self.state = BState::Done;
        out.push(BackendAction::protocol_error("pop3", why));
    }

    fn send_login(&mut self, out: &mut Vec<BackendAction>) {
        let mut batch = Vec::new();
        self.pending.clear();
        if self.xclient {
            batch.extend_from_slice(xclient_line(&self.conn).as_bytes());
            batch.extend_from_slice(b"\r\n");
            self.pending.push(BState::Xclient);
        }
        if self.use_user_pass() {
            batch.extend_from_slice(b"USER ");
            batch.extend_from_slice(&self.creds.authcid);
            batch.extend_from_slice(b"\r\n");
            self.pending.push(BState::User);
        } else {
            let b64 = sasl::encode_plain(
                &self.creds.authzid,
                &self.creds.authcid,
                &self.creds.password,
            );
            // Room first: a reallocation would leave a copy of the secret behind.
            batch.reserve(b64.len() + 13);
            batch.extend_from_slice(b"AUTH PLAIN ");
            batch.extend_from_slice(b64.as_bytes());
            batch.extend_from_slice(b"\r\n");
            self.pending.push(BState::Final);
        }
        self.pending.reverse();
        self.state = self.pending.pop().unwrap_or(BState::Final);
        out.push(BackendAction::SendBackend(batch));
    }

    fn next(&mut self) {
        self.state = self.pending.pop().unwrap_or(BState::Final);
    }

    fn line(&mut self, l: &[u8], out: &mut Vec<BackendAction>) {
        let ok = l.starts_with(b"+OK");
        match self.state {
            BState::Greeting => {
                if !ok {
                    return self.fail(out, "backend greeting is not +OK");
                }
                self.xclient = self.cfg.send_xclient && l.windows(9).any(|w| w == b"[XCLIENT]");
                if self.cfg.starttls {
                    self.state = BState::StlsReply;
                    out.push(BackendAction::SendBackend(b"STLS\r\n".to_vec()));
                } else {
                    self.send_login(out);
                }
            }
            BState::StlsReply => {
                if ok {
                    self.state = BState::TlsHandshake;
                    out.push(BackendAction::StartTls);
                } else {
                    self.fail(out, "backend refused STLS");
                }
            }
            BState::Xclient => {
                if ok {
                    self.next();
                } else {
                    self.fail(out, "backend refused XCLIENT");
                }
            }
            BState::User => {
                if ok {
                    let pass = [&b"PASS "[..], &self.creds.password, b"\r\n"].concat();
                    out.push(BackendAction::SendBackend(pass));
                    self.state = BState::Final;
                } else {
                    self.relay_verdict(l, false, out);
                }
            }
            BState::Final => {
                if ok || l.starts_with(b"-ERR") {
                    self.relay_verdict(l, ok, out);
                } else {
                    // SASL continuation (`+ `): AUTH PLAIN always has an IR.
                    self.fail(out, "unexpected reply to AUTH PLAIN");
                }
            }
            BState::TlsHandshake | BState::Done => {}
        }
    }

    fn relay_verdict(&mut self, l: &[u8], accepted: bool, out: &mut Vec<BackendAction>) {
        self.state = BState::Done;
        out.extend(BackendAction::verdict(with_crlf(l), accepted));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn xclient_syntax() {
        let conn = ConnInfo {
            client_ip: "127.0.0.1".parse().unwrap(),
            client_port: 43482,
            local_ip: "127.0.0.11".parse().unwrap(),
            local_port: 110,
            session_id: Some("H7+h31th2ql/AAAB".into()),
            proxy_ttl: 4,
        };
        // Recorded in the lab (tests/data/lab/login-flow.log).
        assert_eq!(
            xclient_line(&conn),
            "XCLIENT ADDR=127.0.0.1 PORT=43482 SESSION=H7+h31th2ql/AAAB TTL=4"
        );
    }
}
