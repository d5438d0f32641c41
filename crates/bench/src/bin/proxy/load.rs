//! The three paths and the load points: timed logins at a fixed concurrency, or all paths
//! interleaved login by login.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::login_logout;

/// Bound on one IMAP exchange (connect, greeting, LOGIN, LOGOUT, or the whole FETCH).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrency of the pass that logs every user in once before measuring.
const PREPARE_CONCURRENCY: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    Direct,
    Directord,
    /// A second `directord`, its metrics listener on and scraped (`--metrics`).
    DirectordMetrics,
    Dovecot,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Directord => "directord",
            PathKind::DirectordMetrics => "directord+metrics",
            PathKind::Dovecot => "dovecot-director",
        }
    }
}

/// Where a path sends user `i`.
#[derive(Clone)]
pub enum Target {
    Direct(Arc<Vec<SocketAddr>>),
    Proxy(SocketAddr),
}

impl Target {
    pub fn addr(&self, user: usize) -> SocketAddr {
        match self {
            Target::Direct(homes) => homes[user % homes.len()],
            Target::Proxy(a) => *a,
        }
    }
}

pub fn user_name(i: usize) -> String {
    format!("bench{i}@example.com")
}

#[derive(Clone, Debug, Default)]
pub struct Point {
    /// Every login's latency, ms (for percentiles pooled over rounds).
    pub lat: Vec<f64>,
    pub logins: usize,
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl Point {
    /// One timed login of user `u` through `target`: its latency, or an error.
    pub async fn login(&mut self, target: &Target, u: usize) {
        let user = user_name(u);
        let t = Instant::now();
        match tokio::time::timeout(OP_TIMEOUT, login_logout(target.addr(u), &user)).await {
            Ok(Ok(())) => self.lat.push(t.elapsed().as_secs_f64() * 1000.0),
            Ok(Err(e)) => self.error(format!("{user}: {e:#}")),
            Err(_) => self.error(format!("{user}: timed out")),
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    /// Adds another worker's logins and errors.
    fn merge(&mut self, other: Point) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Sorts the latencies and sets the count, percentiles and `rate`.
    fn finish(mut self, rate: impl FnOnce(&[f64]) -> f64) -> Point {
        self.lat.sort_by(f64::total_cmp);
        self.logins = self.lat.len();
        self.rate = rate(&self.lat);
        self.p50 = percentile(&self.lat, 0.5);
        self.p99 = percentile(&self.lat, 0.99);
        self
    }
}

/// The `q` quantile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// `conc` workers log users in and out against `target` for `dur`; worker `w` takes users
/// `w, w+conc, …` so every path sees the same user sequence.
pub async fn run_point(conc: usize, dur: Duration, users: usize, target: Target) -> Point {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for w in 0..conc {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut p = Point::default();
            let mut i = w;
            while Instant::now() < deadline {
                p.login(&target, i % users).await;
                i += conc;
            }
            p
        }));
    }
    let mut point = Point::default();
    for t in tasks {
        point.merge(t.await.expect("worker panicked"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    point.finish(|lat| lat.len() as f64 / elapsed)
}

/// Concurrency 1, all paths interleaved login by login (the first path of each turn
/// rotates), for `dur`: every path sees the same moment of a machine whose speed drifts, so
/// latencies compare directly. The rate is 1 / mean latency.
pub async fn run_interleaved(dur: Duration, users: usize, targets: &[Target]) -> Vec<Point> {
    let deadline = Instant::now() + dur;
    let n = targets.len();
    let mut points = vec![Point::default(); n];
    let mut turn = 0usize;
    while Instant::now() < deadline {
        for k in 0..n {
            let i = (k + turn) % n;
            points[i].login(&targets[i], turn % users).await;
        }
        turn += 1;
    }
    points
        .into_iter()
        .map(|p| p.finish(|lat| 1000.0 * lat.len() as f64 / lat.iter().sum::<f64>()))
        .collect()
}

/// Logs every user in once (creates the mailboxes), bounded.
pub async fn prepare_users(users: usize, target: Target) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PREPARE_CONCURRENCY {
        let (next, target) = (Arc::clone(&next), target.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let u = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if u >= users {
                    return Ok::<(), anyhow::Error>(());
                }
                let user = user_name(u);
                tokio::time::timeout(OP_TIMEOUT, login_logout(target.addr(u), &user))
                    .await
                    .map_err(|_| anyhow::anyhow!("{user}: timed out"))?
                    .with_context(|| format!("first login of {user}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
