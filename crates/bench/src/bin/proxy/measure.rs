//! The measurements: login points at each concurrency, rounds with the path order rotating,
//! and the FETCH of one large message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::args::Args;
use crate::client::{fetch_throughput, lmtp_deliver};
use crate::cpu::{snapshot, PathCpu};
use crate::directord::lookup_homes;
use crate::load::{run_interleaved, run_point, PathKind, Point, Target, OP_TIMEOUT};
use crate::setup::Bench;

/// Size of the FETCHed message.
pub const FETCH_BYTES: usize = 32 << 20;
/// FETCHes per path (median reported).
pub const FETCH_RUNS: usize = 3;
/// The user whose mailbox holds the FETCHed message.
const FETCH_USER: &str = "bigmail@example.com";

/// What the login points measured.
#[derive(Default)]
pub struct Logins {
    /// Every round's point, by concurrency and path.
    pub results: HashMap<(usize, PathKind), Vec<Point>>,
    /// (concurrency, round from 1, path, point) in the order they ran.
    pub per_round: Vec<(usize, usize, PathKind, Point)>,
    /// CPU charged to each path (not measured at concurrency 1).
    pub cpu: HashMap<PathKind, PathCpu>,
}

/// Login points: at each concurrency, `--rounds` rounds, path order rotating; at
/// concurrency 1 the paths are interleaved login by login instead.
pub async fn logins(b: &Bench, args: &Args) -> Logins {
    let dur = Duration::from_secs(args.secs);
    let paths = &b.paths;
    let mut out = Logins::default();
    for &conc in &args.conc {
        for round in 0..args.rounds {
            if conc == 1 {
                eprintln!("proxy: c=1 round {} (paths interleaved)", round + 1);
                let targets: Vec<Target> = paths.iter().map(|(_, t)| t.clone()).collect();
                let points = run_interleaved(dur, args.users, &targets).await;
                for ((kind, _), p) in paths.iter().zip(points) {
                    out.results
                        .entry((conc, *kind))
                        .or_default()
                        .push(p.clone());
                    out.per_round.push((conc, round + 1, *kind, p));
                }
                continue;
            }
            for k in 0..paths.len() {
                let (kind, target) = &paths[(k + round) % paths.len()];
                eprintln!("proxy: c={conc} round {} {}", round + 1, kind.name());
                let a = snapshot(&b.pids);
                let p = run_point(conc, dur, args.users, target.clone()).await;
                let after = snapshot(&b.pids);
                out.cpu.entry(*kind).or_default().add(p.logins, &a, &after);
                out.results
                    .entry((conc, *kind))
                    .or_default()
                    .push(p.clone());
                out.per_round.push((conc, round + 1, *kind, p));
            }
        }
    }
    out
}

/// FETCH: one 32 MiB message delivered by LMTP straight to its backend, then fetched
/// `FETCH_RUNS` times through each path (order rotating); MB/s per fetch.
pub async fn fetch(b: &mut Bench) -> anyhow::Result<HashMap<PathKind, Vec<f64>>> {
    let big_home = lookup_homes(&mut b.admin, &[FETCH_USER.to_string()])?[0];
    let mut body = Vec::with_capacity(FETCH_BYTES + 128);
    body.extend_from_slice(b"Subject: big\r\n\r\n");
    while body.len() < FETCH_BYTES {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n",
        );
    }
    lmtp_deliver(
        SocketAddr::new(big_home, b.backend_lmtp_port),
        FETCH_USER,
        &body,
    )
    .await?;
    let mut fetch: HashMap<PathKind, Vec<f64>> = HashMap::new();
    for run in 0..FETCH_RUNS {
        for k in 0..b.paths.len() {
            let (kind, target) = &b.paths[(k + run) % b.paths.len()];
            let addr = match target {
                Target::Direct(_) => SocketAddr::new(big_home, b.backend_imap_port),
                Target::Proxy(a) => *a,
            };
            let r = tokio::time::timeout(OP_TIMEOUT, fetch_throughput(addr, FETCH_USER))
                .await
                .map_err(|_| anyhow::anyhow!("FETCH via {} timed out", kind.name()))?
                .with_context(|| format!("FETCH via {}", kind.name()))?;
            fetch.entry(*kind).or_default().push(r / 1e6);
        }
    }
    Ok(fetch)
}
