//! nginx's mail `auth_http` protocol, sans I/O: the request reader and the response
//! encoder.
//!
//! nginx's mail proxy (`ngx_mail_auth_http_module`) asks an HTTP server where to send each
//! login: one HTTP/1.0 `GET` per connection, the login in headers (`Auth-User`,
//! `Auth-Protocol` `imap`/`pop3`/`smtp`, `Auth-Method`, `Auth-Login-Attempt`, `Client-IP`,
//! …), no body. The answer is in the headers of a `200 OK`: `Auth-Status: OK` with
//! `Auth-Server` (an IP address: nginx does not resolve names there) and `Auth-Port`, or an
//! error text in `Auth-Status`. With `Auth-Wait: N` nginx waits N seconds, gives the client
//! the error and lets it try again; without it nginx closes the client's connection. For SMTP
//! `Auth-Error-Code` is the reply code nginx sends (`451 4.3.0` for a temporary failure).
//! nginx URL-escapes `Auth-User` and `Auth-Pass` (`%XX`), so a value is one header line.
//!
//! [`RequestReader`] takes bytes as they arrive and yields the [`Request`] once its header
//! block is complete; a line, the header count or the whole request beyond the limits below
//! is an error, so a client that never ends its request costs at most
//! [`MAX_REQUEST_LEN`] bytes. [`AuthRequest::from_request`] reads the headers the director
//! needs; [`encode_response`] writes the answer.

use std::net::IpAddr;

use thiserror::Error;

/// Longest request or header line (without its line end). nginx sends short lines: a user
/// name of at most a few hundred escaped bytes, a password (which we never use), and its own
/// `auth_http_header` lines.
pub const MAX_LINE_LEN: usize = 4096;

/// Most header lines in one request (nginx sends at most a dozen of its own, plus the
/// operator's `auth_http_header` lines).
pub const MAX_HEADERS: usize = 64;

/// Most bytes of one request, request line and headers together.
pub const MAX_REQUEST_LEN: usize = 16 * 1024;

/// Why a request was refused before it could be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// A line is longer than [`MAX_LINE_LEN`].
    #[error("a request line is longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// More than [`MAX_REQUEST_LEN`] bytes before the end of the headers.
    #[error("the request is longer than {MAX_REQUEST_LEN} bytes")]
    TooLong,
    /// The request line is not `METHOD TARGET HTTP/1.x`.
    #[error("malformed request line")]
    BadRequestLine,
    /// An HTTP version other than 1.0 and 1.1.
    #[error("unsupported HTTP version")]
    BadVersion,
    /// A header line without a colon or with a name that is not an HTTP token.
    #[error("malformed header line")]
    BadHeader,
    /// A continuation line (obsolete header folding), which nginx never sends.
    #[error("folded header lines are not accepted")]
    FoldedHeader,
    /// A request with a body (nginx's requests have none).
    #[error("a request body is not accepted")]
    Body,
    /// The peer closed the connection before the end of the headers.
    #[error("the request ended before its headers did")]
    Truncated,
}

/// One header: the name as sent, the value with surrounding blanks removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (compare with [`str::eq_ignore_ascii_case`]).
    pub name: String,
    /// Header value, raw bytes.
    pub value: Vec<u8>,
}

/// A request whose header block has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` for nginx.
    pub method: String,
    /// The request target (`/auth`); not interpreted.
    pub target: Vec<u8>,
    /// The headers, in order.
    pub headers: Vec<Header>,
}

impl Request {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The value of header `name` when it appears exactly once.
    pub fn single(&self, name: &str) -> Result<Option<&[u8]>, AuthRequestError> {
        let mut values = self.values(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(AuthRequestError::Repeated(header_name(name)));
        }
        Ok(first)
    }
}

/// Reads one request from a byte stream, within the limits above.
#[derive(Debug, Clone, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already known to hold no line end.
    scanned: usize,
    /// Where the current line starts.
    line_start: usize,
    /// Lines completed so far (the request line included).
    lines: usize,
    done: bool,
}

impl RequestReader {
    /// A reader waiting for the first byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data`; `Ok(Some(request))` once the blank line that ends the headers has
    /// arrived. Bytes after it are ignored (nginx sends none). After a request or an error
    /// the reader is finished and must not be fed again.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Request>, RequestError> {
        if self.done {
            return Ok(None);
        }
        for &b in data {
            if self.buf.len() >= MAX_REQUEST_LEN {
                self.done = true;
                return Err(RequestError::TooLong);
            }
            self.buf.push(b);
            self.scanned += 1;
            if b != b'\n' {
                let len = self.buf.len() - self.line_start;
                // The line may still end in CR LF: allow its CR.
                if len > MAX_LINE_LEN + 1 || (len == MAX_LINE_LEN + 1 && b != b'\r') {
                    self.done = true;
                    return Err(RequestError::LineTooLong);
                }
                continue;
            }
            let line = trim_line_end(&self.buf[self.line_start..self.buf.len() - 1]);
            if line.len() > MAX_LINE_LEN {
                self.done = true;
                return Err(RequestError::LineTooLong);
            }
            let blank = line.is_empty();
            self.line_start = self.buf.len();
            if blank && self.lines > 0 {
                self.done = true;
                return parse_request(&self.buf).map(Some);
            }
            if blank {
                // Blank lines before the request line are tolerated (RFC 9112 §2.2).
                continue;
            }
            self.lines += 1;
            if self.lines > MAX_HEADERS + 1 {
                self.done = true;
                return Err(RequestError::TooManyHeaders);
            }
        }
        Ok(None)
    }

    /// The peer closed its side: an unfinished request is [`RequestError::Truncated`].
    pub fn finish(&mut self) -> Result<(), RequestError> {
        if self.done {
            Ok(())
        } else {
            self.done = true;
            Err(RequestError::Truncated)
        }
    }

    /// Bytes buffered (never more than [`MAX_REQUEST_LEN`]).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_blank(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

fn trim_blanks(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_blank(first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_blank(last) {
            break;
        }
        v = rest;
    }
    v
}

/// Parses a complete header block (the reader has checked the limits).
fn parse_request(block: &[u8]) -> Result<Request, RequestError> {
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(trim_line_end)
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or(RequestError::BadRequestLine)?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::BadRequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_token_byte(b)) || target.is_empty() {
        return Err(RequestError::BadRequestLine);
    }
    if target.iter().any(|b| b.is_ascii_control()) {
        return Err(RequestError::BadRequestLine);
    }
    if version != b"HTTP/1.0" && version != b"HTTP/1.1" {
        return Err(RequestError::BadVersion);
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if is_blank(&line[0]) {
            return Err(RequestError::FoldedHeader);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(RequestError::BadHeader)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(RequestError::BadHeader);
        }
        let value = trim_blanks(&line[colon + 1..]);
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(RequestError::BadHeader);
        }
        headers.push(Header {
            // Token bytes are ASCII.
            name: String::from_utf8_lossy(name).into_owned(),
            value: value.to_vec(),
        });
    }
    let request = Request {
        method: String::from_utf8_lossy(method).into_owned(),
        target: target.to_vec(),
        headers,
    };
    let has_body = request
        .values("Content-Length")
        .any(|v| trim_blanks(v) != b"0")
        || request.values("Transfer-Encoding").next().is_some();
    if has_body {
        return Err(RequestError::Body);
    }
    Ok(request)
}

/// The mail protocol of a login (`Auth-Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailProtocol {
    /// `imap`.
    Imap,
    /// `pop3`.
    Pop3,
    /// `smtp` (nginx's SMTP proxy; the backend is the submission service).
    Smtp,
}

impl MailProtocol {
    /// The name nginx sends.
    pub fn name(self) -> &'static str {
        match self {
            MailProtocol::Imap => "imap",
            MailProtocol::Pop3 => "pop3",
            MailProtocol::Smtp => "smtp",
        }
    }

    /// The protocol nginx names `name` (case-insensitive).
    pub fn from_name(name: &[u8]) -> Option<MailProtocol> {
        [MailProtocol::Imap, MailProtocol::Pop3, MailProtocol::Smtp]
            .into_iter()
            .find(|p| name.eq_ignore_ascii_case(p.name().as_bytes()))
    }
}

/// Why a well-formed HTTP request is not a login the director can route. The text is what
/// nginx shows in its error log (through `Auth-Status`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthRequestError {
    /// Not a `GET`.
    #[error("method {0} is not supported (nginx sends GET)")]
    Method(String),
    /// A header the director needs is missing.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header that must appear once appears more often.
    #[error("header {0} appears more than once")]
    Repeated(&'static str),
    /// `Auth-User` is empty or holds a bad `%` escape.
    #[error("bad Auth-User value")]
    BadUser,
    /// `Auth-Protocol` is not `imap`, `pop3` or `smtp`.
    #[error("unknown Auth-Protocol (imap, pop3 and smtp are routed)")]
    UnknownProtocol,
    /// `Client-IP` is not an IP address.
    #[error("bad Client-IP value")]
    BadClientIp,
}

/// The names of the headers this module reads, for error texts.
fn header_name(name: &str) -> &'static str {
    [
        "Auth-User",
        "Auth-Protocol",
        "Client-IP",
        "Auth-Method",
        "Auth-Login-Attempt",
    ]
    .into_iter()
    .find(|n| n.eq_ignore_ascii_case(name))
    .unwrap_or("?")
}

/// What the director needs from one nginx request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// `Auth-User`, `%XX` escapes decoded.
    pub user: Vec<u8>,
    /// `Auth-Protocol`.
    pub protocol: MailProtocol,
    /// `Client-IP`, when sent.
    pub client_ip: Option<IpAddr>,
    /// `Auth-Login-Attempt`, when sent and a number.
    pub login_attempt: Option<u32>,
}

impl AuthRequest {
    /// Reads the login from `request`. `Auth-Pass` is never looked at.
    pub fn from_request(request: &Request) -> Result<AuthRequest, AuthRequestError> {
        if request.method != "GET" {
            return Err(AuthRequestError::Method(request.method.clone()));
        }
        let protocol = request
            .single("Auth-Protocol")?
            .ok_or(AuthRequestError::Missing("Auth-Protocol"))?;
        let protocol =
            MailProtocol::from_name(protocol).ok_or(AuthRequestError::UnknownProtocol)?;
        let user = request
            .single("Auth-User")?
            .ok_or(AuthRequestError::Missing("Auth-User"))?;
        let user = percent_decode(user).ok_or(AuthRequestError::BadUser)?;
        if user.is_empty() {
            return Err(AuthRequestError::BadUser);
        }
        let client_ip = match request.single("Client-IP")? {
            Some(v) => Some(
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(AuthRequestError::BadClientIp)?,
            ),
            None => None,
        };
        let login_attempt = request
            .single("Auth-Login-Attempt")?
            .and_then(crate::value::parse_uint);
        Ok(AuthRequest {
            user,
            protocol,
            client_ip,
            login_attempt,
        })
    }
}

/// Decodes nginx's `%XX` escapes; `None` for a `%` not followed by two hex digits.
pub fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'%' {
            let hi = hex_value(*value.get(i + 1)?)?;
            let lo = hex_value(*value.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The SMTP reply code nginx sends with a temporary failure (`Auth-Error-Code`).
pub const SMTP_TEMPFAIL_CODE: &str = "451 4.3.0";

/// What to tell nginx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResponse<'a> {
    /// Proxy the login to `server:port`.
    Ok {
        /// The backend's address.
        server: IpAddr,
        /// The backend's port for the protocol.
        port: u16,
    },
    /// Try again later: nginx waits `wait_secs`, gives the client `message` and lets it
    /// retry. For SMTP the reply code is [`SMTP_TEMPFAIL_CODE`].
    TryLater {
        /// `Auth-Status` text.
        message: &'a str,
        /// `Auth-Wait`.
        wait_secs: u32,
        /// The login is SMTP (adds `Auth-Error-Code`).
        smtp: bool,
    },
    /// A request the director will never route (a missing header, an unknown protocol):
    /// nginx gives the client `message` and closes its connection.
    Refused {
        /// `Auth-Status` text.
        message: &'a str,
    },
}

/// Appends `text` as a header value: control bytes become spaces, so a value is always
/// one line, and an empty text becomes `-` (nginx needs a non-empty status).
fn push_value(out: &mut Vec<u8>, text: &str) {
    if text.is_empty() {
        out.push(b'-');
        return;
    }
    out.extend(
        text.bytes()
            .map(|b| if b.is_ascii_control() { b' ' } else { b }),
    );
}

/// Writes `response` as nginx reads it: `HTTP/1.0 200 OK` and the `Auth-*` headers, no
/// body. The connection is closed after it.
pub fn encode_response(response: &AuthResponse<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.0 200 OK\r\n");
    match *response {
        AuthResponse::Ok { server, port } => {
            out.extend_from_slice(b"Auth-Status: OK\r\nAuth-Server: ");
            out.extend_from_slice(server.to_string().as_bytes());
            out.extend_from_slice(b"\r\nAuth-Port: ");
            out.extend_from_slice(port.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        AuthResponse::TryLater {
            message,
            wait_secs,
            smtp,
        } => {
            out.extend_from_slice(b"Auth-Status: ");
            push_value(out, message);
            out.extend_from_slice(b"\r\n");
            if smtp {
                out.extend_from_slice(b"Auth-Error-Code: ");
                out.extend_from_slice(SMTP_TEMPFAIL_CODE.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"Auth-Wait: ");
            out.extend_from_slice(wait_secs.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        AuthResponse::Refused { message } => {
            out.extend_from_slice(b"Auth-Status: ");
            push_value(out, message);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
}

/// Writes the answer to bytes that are not an HTTP request at all (`400 Bad Request`).
pub fn encode_bad_request(error: &RequestError, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.0 400 Bad Request\r\nAuth-Status: ");
    push_value(out, &error.to_string());
    out.extend_from_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

#[cfg(test)]
mod tests;
