//! Counters of the proxy's login path, read by the daemon's metrics listener.
//!
//! A login pays a few relaxed atomic increments and never takes a lock: the counters are
//! fixed arrays indexed by protocol and result, and the latency histogram has fixed
//! buckets. Only a backend connect failure (rare, and already slow) takes a lock, for its
//! per-backend count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::settings::Protocol;

/// How a client's login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// The backend accepted it; the session is proxied.
    Ok,
    /// The backend refused the credentials (its reply went to the client).
    Rejected,
    /// The login name cannot be routed (empty, or containing NUL); no backend was asked.
    Refused,
    /// The director had no backend for the user (no host up, a move, a ring not synced).
    NoBackend,
    /// The backend could not be reached or failed during the login.
    BackendFailed,
    /// The client went away, or a kick stopped the login.
    Aborted,
}

impl LoginResult {
    /// Every result, in the order of the counters.
    pub const ALL: [LoginResult; 6] = [
        LoginResult::Ok,
        LoginResult::Rejected,
        LoginResult::Refused,
        LoginResult::NoBackend,
        LoginResult::BackendFailed,
        LoginResult::Aborted,
    ];

    /// The `result` label.
    pub fn name(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Rejected => "rejected",
            LoginResult::Refused => "refused",
            LoginResult::NoBackend => "no_backend",
            LoginResult::BackendFailed => "backend_failed",
            LoginResult::Aborted => "aborted",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What became of an LMTP recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientResult {
    /// The backend took the message for it (a 2xx final reply).
    Delivered,
    /// The backend refused it for good (5xx: no such user, message too big...).
    Refused,
    /// A temporary failure (4xx): the backend said so, could not be reached or failed, or
    /// the proxy's buffer budget was spent; the MTA retries.
    Deferred,
    /// The director had no backend for the user (no host up, a move, a ring not synced).
    NoBackend,
}

impl RecipientResult {
    /// Every result, in the order of the counters.
    pub const ALL: [RecipientResult; 4] = [
        RecipientResult::Delivered,
        RecipientResult::Refused,
        RecipientResult::Deferred,
        RecipientResult::NoBackend,
    ];

    /// The `result` label.
    pub fn name(self) -> &'static str {
        match self {
            RecipientResult::Delivered => "delivered",
            RecipientResult::Refused => "refused",
            RecipientResult::Deferred => "deferred",
            RecipientResult::NoBackend => "no_backend",
        }
    }

    /// The result a final reply line says.
    pub fn of_reply(reply: &[u8]) -> Self {
        match reply.first() {
            Some(b'2') => RecipientResult::Delivered,
            Some(b'5') => RecipientResult::Refused,
            _ => RecipientResult::Deferred,
        }
    }
}

/// Upper bounds (seconds) of the login latency buckets: from a backend on the same LAN
/// (about a millisecond) to `login_proxy_timeout`'s 30 s.
pub const LOGIN_SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

const PROTOCOLS: usize = Protocol::ALL.len();
const RESULTS: usize = LoginResult::ALL.len();
const BUCKETS: usize = LOGIN_SECONDS_BUCKETS.len();

fn protocol_index(p: Protocol) -> usize {
    Protocol::ALL.iter().position(|q| *q == p).unwrap_or(0)
}

/// One protocol's latency histogram: per-bucket counts (not cumulative), the sum in
/// microseconds and the count.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A histogram as Prometheus shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at most that)`, cumulative, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations in seconds.
    pub sum_seconds: f64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
}

/// The proxy's login counters.
#[derive(Default)]
pub struct ProxyMetrics {
    logins: [[AtomicU64; RESULTS]; PROTOCOLS],
    login_seconds: [Histogram; PROTOCOLS],
    connect_failures: Mutex<HashMap<IpAddr, u64>>,
    recipients: [AtomicU64; RecipientResult::ALL.len()],
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

impl ProxyMetrics {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A login of `protocol` ended with `result`, `took` after its credentials arrived.
    pub fn login_finished(&self, protocol: Protocol, result: LoginResult, took: Duration) {
        let p = protocol_index(protocol);
        self.logins[p][result.index()].fetch_add(1, Ordering::Relaxed);
        let h = &self.login_seconds[p];
        let secs = took.as_secs_f64();
        if let Some(b) = LOGIN_SECONDS_BUCKETS.iter().position(|le| secs <= *le) {
            h.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
    }

    /// An LMTP recipient ended with `result`.
    pub fn recipient(&self, result: RecipientResult) {
        self.recipients[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// LMTP recipients by result (every result, zeros included).
    pub fn recipients(&self) -> Vec<(RecipientResult, u64)> {
        RecipientResult::ALL
            .iter()
            .map(|r| (*r, self.recipients[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// A connection to backend `ip` could not be made (TCP, PROXY header or TLS).
    pub fn backend_connect_failed(&self, ip: IpAddr) {
        let mut map = match self.connect_failures.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        *map.entry(ip).or_default() += 1;
    }

    /// Logins by protocol and result (every pair, zeros included).
    pub fn logins(&self) -> Vec<(Protocol, LoginResult, u64)> {
        let mut out = Vec::with_capacity(PROTOCOLS * RESULTS);
        for (p, protocol) in Protocol::ALL.iter().enumerate() {
            for r in LoginResult::ALL {
                let n = self.logins[p][r.index()].load(Ordering::Relaxed);
                out.push((*protocol, r, n));
            }
        }
        out
    }

    /// The login latency histogram of `protocol`.
    pub fn login_seconds(&self, protocol: Protocol) -> HistogramSnapshot {
        let h = &self.login_seconds[protocol_index(protocol)];
        let mut total = 0;
        let buckets = LOGIN_SECONDS_BUCKETS
            .iter()
            .zip(&h.buckets)
            .map(|(le, n)| {
                total += n.load(Ordering::Relaxed);
                (*le, total)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            // Microseconds to seconds: exact enough for a sum of latencies.
            sum_seconds: h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: h.count.load(Ordering::Relaxed),
        }
    }

    /// Backend connect failures by backend.
    pub fn backend_connect_failures(&self) -> Vec<(IpAddr, u64)> {
        let map = match self.connect_failures.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out: Vec<(IpAddr, u64)> = map.iter().map(|(ip, n)| (*ip, *n)).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_lands_in_its_counter_and_bucket() {
        let m = ProxyMetrics::new();
        m.login_finished(Protocol::Pop3, LoginResult::Ok, Duration::from_millis(3));
        m.login_finished(
            Protocol::Pop3,
            LoginResult::Rejected,
            Duration::from_secs(60),
        );
        let pop3: Vec<_> = m
            .logins()
            .into_iter()
            .filter(|(p, _, n)| *p == Protocol::Pop3 && *n > 0)
            .map(|(_, r, n)| (r, n))
            .collect();
        assert_eq!(pop3, vec![(LoginResult::Ok, 1), (LoginResult::Rejected, 1)]);
        let h = m.login_seconds(Protocol::Pop3);
        assert_eq!(h.count, 2);
        // 3 ms is in the 5 ms bucket and every later one; 60 s only in +Inf.
        assert_eq!(h.buckets[2], (0.0025, 0));
        assert_eq!(h.buckets[3], (0.005, 1));
        assert_eq!(h.buckets.last(), Some(&(30.0, 1)));
        assert!((h.sum_seconds - 60.003).abs() < 1e-9);
        assert_eq!(m.login_seconds(Protocol::Imap).count, 0);
    }

    #[test]
    fn a_recipient_counts_by_its_final_reply() {
        let m = ProxyMetrics::new();
        for reply in [
            &b"250 2.0.0 <a> Saved"[..],
            b"550 5.1.1 <b> no",
            b"451 4.4.0 x",
        ] {
            m.recipient(RecipientResult::of_reply(reply));
        }
        m.recipient(RecipientResult::NoBackend);
        assert_eq!(
            m.recipients(),
            RecipientResult::ALL
                .iter()
                .map(|r| (*r, 1))
                .collect::<Vec<_>>()
        );
    }
}
