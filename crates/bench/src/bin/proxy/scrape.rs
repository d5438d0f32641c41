//! `--metrics`: a Prometheus stand-in that scrapes the metrics listener of the
//! "directord+metrics" path every [`SCRAPE_INTERVAL`] for the whole run (Prometheus's
//! default interval is 15 s: this is the harsher case).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How often the metrics are scraped.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the scrapes got.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Bytes of the last page.
    pub last_bytes: AtomicU64,
}

/// Starts scraping `addr` until the task is aborted.
pub fn start(addr: SocketAddr) -> (Arc<ScrapeStats>, JoinHandle<()>) {
    let stats = Arc::new(ScrapeStats::default());
    let s = Arc::clone(&stats);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
        loop {
            tick.tick().await;
            match tokio::time::timeout(SCRAPE_TIMEOUT, scrape(addr)).await {
                Ok(Ok(n)) => {
                    s.ok.fetch_add(1, Ordering::Relaxed);
                    s.last_bytes.store(n as u64, Ordering::Relaxed);
                }
                _ => {
                    s.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    (stats, task)
}

/// One `GET /metrics`; the page's size.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<usize> {
    Ok(page(addr).await?.len())
}

/// One `GET /metrics`; the page.
pub async fn page(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut page = Vec::new();
    s.read_to_end(&mut page).await?;
    if !page.starts_with(b"HTTP/1.0 200 ") {
        bail!(
            "metrics answered {:?}",
            String::from_utf8_lossy(&page[..page.len().min(64)])
        );
    }
    Ok(String::from_utf8_lossy(&page).into_owned())
}

/// The value of the sample `series` (name and labels as the page writes them) on `page`.
pub fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
