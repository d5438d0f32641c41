//! Prints the RSS growth of a `UserDirectory` holding N users (default 1M), to separate the
//! directory's own footprint from the daemon's: `cargo run --release -p director-bench --bin
//! directory-rss -- [N]`.
#![forbid(unsafe_code)]
use director_core::host::{HostId, TagId};
use director_core::user_directory::UserDirectory;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut dir = UserDirectory::new(900);
    let before = rss_kb();
    let now = 1_800_000_000;
    for i in 0..n {
        // Spread like MD5 output; the hash function is irrelevant to the layout.
        let hash = i.wrapping_mul(2_654_435_761).max(1);
        dir.insert(TagId(0), hash, HostId((i % 3) as u16), now, now);
    }
    let after = rss_kb();
    println!(
        "users={} heap_bytes/user={:.1} rss_growth/user={:.1}",
        dir.len(),
        dir.heap_bytes() as f64 / f64::from(n),
        (after - before) as f64 * 1024.0 / f64::from(n)
    );
}
