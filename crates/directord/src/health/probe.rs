//! One probe: connect to a backend's port, run TLS as the proxy would (implicit, or
//! STARTTLS after the greeting), read the greeting within a timeout and, with a test user,
//! log in (IMAP `LOGIN`, POP3 `USER`/`PASS`, Submission `AUTH PLAIN`, ManageSieve
//! `AUTHENTICATE "PLAIN"`). LMTP is judged by its greeting alone, in plaintext, as the proxy
//! speaks it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use director_mailproto::sasl::encode_plain;
use director_proxy::stream::Stream;
use director_proxy::Protocol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Longest line read from a backend (a ManageSieve capability line is the longest, well
/// under this); a backend sending more fails the probe.
const MAX_LINE_BYTES: usize = 8192;

/// The name a probe gives in SMTP's `EHLO`.
const EHLO_NAME: &str = "director-health-check";

/// The test user a probe logs in as (`director_health_check_user`, `_password`).
#[derive(Clone, PartialEq, Eq)]
pub struct TestLogin {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for TestLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("TestLogin")
            .field("user", &self.user)
            .finish()
    }
}

/// TLS of one probe, with the connector the proxy's backend connections use.
#[derive(Clone)]
pub enum ProbeTls {
    /// Plaintext.
    Off,
    /// TLS from the first byte.
    Implicit(TlsConnector),
    /// STARTTLS (`STLS` for POP3) after the greeting.
    StartTls(TlsConnector),
}

/// Where a probe goes: the address, and the name the backend's certificate must carry.
#[derive(Debug, Clone)]
pub struct Target {
    /// The backend's address and the protocol's port.
    pub addr: SocketAddr,
    /// The name TLS verifies (the host's configured name, else its address).
    pub name: ServerName<'static>,
    /// The port takes a HAProxy PROXY v2 header first (`director_proxy_protocol`).
    pub proxy_header: bool,
}

/// Probes `target` for `protocol` with `tls` and, with `login`, logs in, all within
/// `timeout`. An error says what failed.
pub async fn probe(
    protocol: Protocol,
    target: &Target,
    timeout: Duration,
    login: Option<&TestLogin>,
    tls: &ProbeTls,
) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, check(protocol, target, login, tls))
        .await
        .with_context(|| format!("no verdict within {timeout:?}"))?
}

async fn check(
    protocol: Protocol,
    target: &Target,
    login: Option<&TestLogin>,
    tls: &ProbeTls,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(target.addr).await.context("connect")?;
    let mut stream = Stream::Plain(tcp);
    // The proxy's LMTP uses neither TLS nor a PROXY header; probing it with them would
    // judge another path.
    let lmtp = protocol == Protocol::Lmtp;
    if target.proxy_header && !lmtp {
        // LOCAL: the probe is the director's own connection, there is no client to name.
        stream
            .write_all(&director_mailproto::proxy_v2::encode_local())
            .await
            .context("send the PROXY header")?;
    }
    let tls = if lmtp { &ProbeTls::Off } else { tls };
    if let ProbeTls::Implicit(connector) = tls {
        handshake(&mut stream, connector, target, "implicit TLS").await?;
    }
    greet(protocol, &mut stream).await?;
    let starttls = match tls {
        ProbeTls::StartTls(c) => Some(c),
        ProbeTls::Off | ProbeTls::Implicit(_) => None,
    };
    match protocol {
        Protocol::Imap => imap(&mut stream, target, starttls, login).await?,
        Protocol::Pop3 => pop3(&mut stream, target, starttls, login).await?,
        Protocol::Submission => submission(&mut stream, target, starttls, login).await?,
        Protocol::ManageSieve => managesieve(&mut stream, target, starttls, login).await?,
        Protocol::Lmtp => {}
    }
    // TLS's close_notify; the verdict is in.
    let _ = stream.finish().await;
    Ok(())
}

/// Runs the TLS client handshake; a failure names the step and rustls's reason.
async fn handshake(
    stream: &mut Stream,
    connector: &TlsConnector,
    target: &Target,
    what: &str,
) -> anyhow::Result<()> {
    stream
        .connect_tls(connector, target.name.clone())
        .await
        .with_context(|| format!("TLS handshake ({what}) with {}", name_text(target)))
}

/// The name TLS verifies, as an operator wrote it.
fn name_text(target: &Target) -> String {
    match &target.name {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        _ => target.addr.ip().to_string(),
    }
}

async fn imap(
    stream: &mut Stream,
    target: &Target,
    starttls: Option<&TlsConnector>,
    login: Option<&TestLogin>,
) -> anyhow::Result<()> {
    if let Some(connector) = starttls {
        let reply = command(stream, "STARTTLS", b"s STARTTLS\r\n", |l| {
            l.starts_with(b"s ")
        })
        .await?;
        expect(&reply, b"s OK", "STARTTLS")?;
        handshake(stream, connector, target, "STARTTLS").await?;
    }
    let Some(login) = login else {
        return Ok(());
    };
    let line = format!(
        "h LOGIN {} {}\r\n",
        imap_quoted(&login.user),
        imap_quoted(&login.password)
    );
    let reply = command(stream, "LOGIN", line.as_bytes(), |l| l.starts_with(b"h ")).await?;
    expect(&reply, b"h OK", "test user login")?;
    let _ = stream.write_all(b"l LOGOUT\r\n").await;
    Ok(())
}

async fn pop3(
    stream: &mut Stream,
    target: &Target,
    starttls: Option<&TlsConnector>,
    login: Option<&TestLogin>,
) -> anyhow::Result<()> {
    if let Some(connector) = starttls {
        let reply = command(stream, "STLS", b"STLS\r\n", |_| true).await?;
        expect(&reply, b"+OK", "STLS")?;
        handshake(stream, connector, target, "STLS").await?;
    }
    let Some(login) = login else {
        return Ok(());
    };
    for (what, value) in [("USER", &login.user), ("PASS", &login.password)] {
        no_line_break(value)?;
        let line = format!("{what} {value}\r\n");
        let reply = command(stream, what, line.as_bytes(), |_| true).await?;
        expect(&reply, b"+OK", &format!("test user {what}"))?;
    }
    let _ = stream.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// Whether an SMTP reply line is the last of its reply (`250 x`, not `250-x`).
fn smtp_last(line: &[u8]) -> bool {
    line.get(3) != Some(&b'-')
}

async fn submission(
    stream: &mut Stream,
    target: &Target,
    starttls: Option<&TlsConnector>,
    login: Option<&TestLogin>,
) -> anyhow::Result<()> {
    if starttls.is_none() && login.is_none() {
        return Ok(());
    }
    let ehlo = format!("EHLO {EHLO_NAME}\r\n");
    let reply = command(stream, "EHLO", ehlo.as_bytes(), smtp_last).await?;
    expect(&reply, b"250", "EHLO")?;
    if let Some(connector) = starttls {
        let reply = command(stream, "STARTTLS", b"STARTTLS\r\n", smtp_last).await?;
        expect(&reply, b"220", "STARTTLS")?;
        handshake(stream, connector, target, "STARTTLS").await?;
        // RFC 3207: the session starts over; the client says EHLO again.
        let reply = command(stream, "EHLO", ehlo.as_bytes(), smtp_last).await?;
        expect(&reply, b"250", "EHLO after STARTTLS")?;
    }
    if let Some(login) = login {
        let line = format!(
            "AUTH PLAIN {}\r\n",
            encode_plain(b"", login.user.as_bytes(), login.password.as_bytes()).as_str()
        );
        let reply = command(stream, "AUTH PLAIN", line.as_bytes(), smtp_last).await?;
        expect(&reply, b"235", "test user AUTH PLAIN")?;
    }
    let _ = stream.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// Whether a ManageSieve line ends a response (`OK`, `NO`, `BYE`), rather than being a
/// capability line.
fn sieve_last(line: &[u8]) -> bool {
    [&b"OK"[..], b"NO", b"BYE"]
        .iter()
        .any(|p| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p))
}

async fn managesieve(
    stream: &mut Stream,
    target: &Target,
    starttls: Option<&TlsConnector>,
    login: Option<&TestLogin>,
) -> anyhow::Result<()> {
    if let Some(connector) = starttls {
        let reply = command(stream, "STARTTLS", b"STARTTLS\r\n", sieve_last).await?;
        expect(&reply, b"OK", "STARTTLS")?;
        handshake(stream, connector, target, "STARTTLS").await?;
        // RFC 5804 2.2: the server sends its capabilities again, ended by OK.
        let caps = reply_line(stream, sieve_last)
            .await
            .context("read the capabilities after STARTTLS")?;
        expect(&caps, b"OK", "capabilities after STARTTLS")?;
    }
    let Some(login) = login else {
        return Ok(());
    };
    let line = format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"\r\n",
        encode_plain(b"", login.user.as_bytes(), login.password.as_bytes()).as_str()
    );
    let reply = command(stream, "AUTHENTICATE", line.as_bytes(), sieve_last).await?;
    expect(&reply, b"OK", "test user AUTHENTICATE \"PLAIN\"")?;
    let _ = stream.write_all(b"LOGOUT\r\n").await;
    Ok(())
}

/// Sends `line` and reads the reply up to the line `last` accepts; that line.
async fn command(
    stream: &mut Stream,
    what: &str,
    line: &[u8],
    last: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Vec<u8>> {
    stream
        .write_all(line)
        .await
        .with_context(|| format!("send {what}"))?;
    reply_line(stream, last)
        .await
        .with_context(|| format!("read the reply to {what}"))
}

/// Fails unless `reply` starts with `ok`, quoting what the backend said.
fn expect(reply: &[u8], ok: &[u8], what: &str) -> anyhow::Result<()> {
    if !reply.starts_with(ok) {
        bail!(
            "{what} refused: {:?}",
            String::from_utf8_lossy(reply.trim_ascii_end())
        );
    }
    Ok(())
}

fn no_line_break(value: &str) -> anyhow::Result<()> {
    if value.contains(['\r', '\n']) {
        bail!("the test user or password has a line break");
    }
    Ok(())
}

/// An IMAP quoted string.
fn imap_quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Reads lines until one `last` accepts; that line.
async fn reply_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    last: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Vec<u8>> {
    // Byte by byte: lines are short, and nothing past the line may be consumed (the TLS
    // handshake of STARTTLS starts right after it).
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).await.context("read a reply")? == 0 {
            bail!("closed before a reply");
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            if last(&line) {
                return Ok(line);
            }
            line.clear();
        } else if line.len() > MAX_LINE_BYTES {
            bail!("reply line too long");
        }
    }
}

/// Reads the greeting and judges it.
async fn greet(protocol: Protocol, stream: &mut Stream) -> anyhow::Result<()> {
    let line = reply_line(stream, |l| greeting_verdict(protocol, l) != Verdict::More)
        .await
        .context("read the greeting")?;
    if greeting_verdict(protocol, &line) != Verdict::Ok {
        bail!(
            "unexpected greeting {:?}",
            String::from_utf8_lossy(line.trim_ascii_end())
        );
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    More,
    Bad,
}

/// Judges one greeting line: IMAP `* OK`, POP3 `+OK`, SMTP/LMTP `220` (a `220-` line
/// continues), ManageSieve capability lines (`"…"`) ended by `OK`.
fn greeting_verdict(protocol: Protocol, line: &[u8]) -> Verdict {
    let ok = |b: bool| if b { Verdict::Ok } else { Verdict::Bad };
    match protocol {
        Protocol::Imap => ok(line.starts_with(b"* OK")),
        Protocol::Pop3 => ok(line.starts_with(b"+OK")),
        Protocol::Submission | Protocol::Lmtp => {
            if line.starts_with(b"220-") {
                Verdict::More
            } else {
                ok(line.starts_with(b"220 ") || line.trim_ascii_end() == b"220")
            }
        }
        Protocol::ManageSieve => {
            if line.starts_with(b"\"") {
                Verdict::More
            } else {
                ok(line.starts_with(b"OK"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_strings_are_quoted_with_their_escapes() {
        assert_eq!(imap_quoted("user@example.com"), "\"user@example.com\"");
        assert_eq!(imap_quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn smtp_and_sieve_replies_end_where_their_protocols_say() {
        assert!(!smtp_last(b"250-PIPELINING\r\n"));
        assert!(smtp_last(b"250 SMTPUTF8\r\n"));
        assert!(smtp_last(b"235 2.7.0 Logged in.\r\n"));
        assert!(!sieve_last(b"\"SIEVE\" \"fileinto\"\r\n"));
        assert!(sieve_last(b"OK \"Logged in.\"\r\n"));
        assert!(sieve_last(b"NO \"Authentication failed.\"\r\n"));
        assert!(sieve_last(b"bye \"Server shutting down.\"\r\n"));
    }

    #[test]
    fn each_protocol_greeting_is_judged_by_its_prefix() {
        use Verdict::*;
        let cases: &[(Protocol, &[u8], Verdict)] = &[
            (
                Protocol::Imap,
                b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n",
                Ok,
            ),
            (Protocol::Imap, b"* BYE too many\r\n", Bad),
            (Protocol::Pop3, b"+OK Dovecot ready.\r\n", Ok),
            (Protocol::Pop3, b"-ERR no\r\n", Bad),
            (Protocol::Lmtp, b"220 host Dovecot ready.\r\n", Ok),
            (Protocol::Submission, b"220-host\r\n", More),
            (Protocol::Submission, b"421 busy\r\n", Bad),
            (
                Protocol::ManageSieve,
                b"\"IMPLEMENTATION\" \"Dovecot\"\r\n",
                More,
            ),
            (Protocol::ManageSieve, b"OK \"ready\"\r\n", Ok),
        ];
        for (p, line, want) in cases {
            assert_eq!(&greeting_verdict(*p, line), want, "{p:?} {line:?}");
        }
    }
}
