//! The benchmark's IMAP and LMTP client: raw protocol text over tokio, nothing more than
//! the measurement needs.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::bail;
use testkit::BACKEND_PASSWORD;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Most lines read while waiting for one tagged reply.
const MAX_LINES_PER_REPLY: usize = 1000;

/// Reads lines until one starts with `tag ` and returns it (error on EOF or too many lines).
async fn tagged(r: &mut BufReader<TcpStream>, tag: &str) -> anyhow::Result<String> {
    let mut l = String::new();
    for _ in 0..MAX_LINES_PER_REPLY {
        l.clear();
        if r.read_line(&mut l).await? == 0 {
            bail!("EOF waiting for {tag}");
        }
        if l.starts_with(tag) && l.as_bytes().get(tag.len()) == Some(&b' ') {
            return Ok(l.trim_end().to_string());
        }
    }
    bail!("no tagged reply {tag}")
}

async fn greeting(r: &mut BufReader<TcpStream>) -> anyhow::Result<()> {
    let mut l = String::new();
    r.read_line(&mut l).await?;
    if !l.starts_with("* OK") {
        bail!("greeting {:?}", l.trim_end());
    }
    Ok(())
}

async fn expect_ok(r: &mut BufReader<TcpStream>, tag: &str) -> anyhow::Result<()> {
    let l = tagged(r, tag).await?;
    if !l[tag.len()..].trim_start().starts_with("OK") {
        bail!("{l}");
    }
    Ok(())
}

pub async fn login_logout(addr: SocketAddr, user: &str) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s);
    greeting(&mut r).await?;
    r.get_mut()
        .write_all(format!("a LOGIN {user} {BACKEND_PASSWORD}\r\n").as_bytes())
        .await?;
    expect_ok(&mut r, "a").await?;
    r.get_mut().write_all(b"b LOGOUT\r\n").await?;
    expect_ok(&mut r, "b").await?;
    Ok(())
}

pub async fn fetch_throughput(addr: SocketAddr, user: &str) -> anyhow::Result<f64> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(256 * 1024, s);
    greeting(&mut r).await?;
    r.get_mut()
        .write_all(format!("a LOGIN {user} {BACKEND_PASSWORD}\r\nb SELECT INBOX\r\n").as_bytes())
        .await?;
    expect_ok(&mut r, "a").await?;
    expect_ok(&mut r, "b").await?;
    let t = Instant::now();
    r.get_mut().write_all(b"c FETCH 1 BODY.PEEK[]\r\n").await?;
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let size: usize = line
        .rsplit('{')
        .next()
        .and_then(|s| s.trim_end().trim_end_matches('}').parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no literal in {line:?}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len());
        let n = r.read(&mut buf[..want]).await?;
        if n == 0 {
            bail!("EOF in literal");
        }
        left -= n;
    }
    expect_ok(&mut r, "c").await?;
    let secs = t.elapsed().as_secs_f64();
    r.get_mut().write_all(b"d LOGOUT\r\n").await?;
    let _ = tagged(&mut r, "d").await;
    Ok(size as f64 / secs)
}

pub async fn lmtp_deliver(addr: SocketAddr, rcpt: &str, body: &[u8]) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l).await?;
    if !l.starts_with("220") {
        bail!("LMTP greeting {l:?}");
    }
    r.get_mut()
        .write_all(
            format!("LHLO bench\r\nMAIL FROM:<b@example.com>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
                .as_bytes(),
        )
        .await?;
    for _ in 0..MAX_LINES_PER_REPLY {
        l.clear();
        if r.read_line(&mut l).await? == 0 {
            bail!("LMTP EOF before DATA");
        }
        if l.starts_with("354") {
            break;
        }
        if l.starts_with('4') || l.starts_with('5') {
            bail!("LMTP refused: {l:?}");
        }
    }
    r.get_mut().write_all(body).await?;
    r.get_mut().write_all(b".\r\n").await?;
    l.clear();
    r.read_line(&mut l).await?;
    if !l.starts_with("250") {
        bail!("LMTP DATA: {l:?}");
    }
    let _ = r.get_mut().write_all(b"QUIT\r\n").await;
    Ok(())
}
