//! One probe: connect to a backend's port and read its greeting within a timeout; with a
//! test user, an IMAP or POP3 probe also logs in.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use director_proxy::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest line read from a backend (a ManageSieve capability line is the longest, well
/// under this); a backend sending more fails the probe.
const MAX_LINE_BYTES: usize = 8192;

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

/// Connects to `addr`, reads the `protocol` greeting and, with `login`, logs in (IMAP and
/// POP3; the other protocols are judged by their greeting), all within `timeout`. An error
/// says what failed.
pub async fn probe(
    protocol: Protocol,
    addr: SocketAddr,
    timeout: Duration,
    login: Option<&TestLogin>,
) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, check(protocol, addr, login))
        .await
        .with_context(|| format!("no verdict within {timeout:?}"))?
}

async fn check(
    protocol: Protocol,
    addr: SocketAddr,
    login: Option<&TestLogin>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await.context("connect")?;
    greet(protocol, &mut stream).await?;
    let Some(login) = login else {
        return Ok(());
    };
    match protocol {
        Protocol::Imap => {
            let command = format!(
                "h LOGIN {} {}\r\n",
                imap_quoted(&login.user),
                imap_quoted(&login.password)
            );
            stream
                .write_all(command.as_bytes())
                .await
                .context("send LOGIN")?;
            let reply = reply_line(&mut stream, |l| l.starts_with(b"h ")).await?;
            if !reply.starts_with(b"h OK") {
                bail!(
                    "test user login refused: {:?}",
                    String::from_utf8_lossy(reply.trim_ascii_end())
                );
            }
            let _ = stream.write_all(b"l LOGOUT\r\n").await;
        }
        Protocol::Pop3 => {
            for (what, line) in [("USER", &login.user), ("PASS", &login.password)] {
                if line.contains(['\r', '\n']) {
                    bail!("the test user or password has a line break");
                }
                stream
                    .write_all(format!("{what} {line}\r\n").as_bytes())
                    .await
                    .with_context(|| format!("send {what}"))?;
                let reply = reply_line(&mut stream, |_| true).await?;
                if !reply.starts_with(b"+OK") {
                    bail!(
                        "test user {what} refused: {:?}",
                        String::from_utf8_lossy(reply.trim_ascii_end())
                    );
                }
            }
            let _ = stream.write_all(b"QUIT\r\n").await;
        }
        Protocol::Submission | Protocol::ManageSieve | Protocol::Lmtp => {}
    }
    Ok(())
}

/// An IMAP quoted string.
fn imap_quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Reads lines until one `last` accepts; that line.
async fn reply_line(
    stream: &mut TcpStream,
    last: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Vec<u8>> {
    // Byte by byte: lines are short, and nothing past the line may be consumed.
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
async fn greet(protocol: Protocol, stream: &mut TcpStream) -> anyhow::Result<()> {
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
