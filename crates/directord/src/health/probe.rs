//! One probe: connect to a backend's port and read its greeting within a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use director_proxy::Protocol;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

/// Longest greeting read (ManageSieve's capability list is the longest, well under this).
const MAX_GREETING_BYTES: u64 = 8192;

/// Connects to `addr` and reads the `protocol` greeting, all within `timeout`. An error says
/// what failed.
pub async fn probe(protocol: Protocol, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, greet(protocol, addr))
        .await
        .with_context(|| format!("no greeting within {timeout:?}"))?
}

async fn greet(protocol: Protocol, addr: SocketAddr) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    let mut reader = BufReader::new(stream.take(MAX_GREETING_BYTES));
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .await
            .context("read the greeting")?
            == 0
        {
            bail!("closed before a greeting");
        }
        match greeting_verdict(protocol, &line) {
            Verdict::Ok => return Ok(()),
            Verdict::More => continue,
            Verdict::Bad => bail!(
                "unexpected greeting {:?}",
                String::from_utf8_lossy(line.trim_ascii_end())
            ),
        }
    }
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
