//! Benchmark (not a test): IMAP LOGIN+LOGOUT rate and latency, and FETCH throughput of one
//! 32 MiB message, over three paths to the same three real Dovecot 2.3 backends, in one run:
//!
//! 1. **direct**: the client connects straight to the user's backend;
//! 2. **directord**: the real `directord` binary, a separate process, started with a
//!    Dovecot-syntax config (`director_mail_servers`, `service imap-login { inet_listener
//!    imap {…} }`, `director_backend_port_imap`);
//! 3. **dovecot-director**: the real Dovecot 2.3 director proxy (`director` service plus
//!    `imap-login` in director mode, [`testkit::DovecotDirectorProxy`]).
//!
//! Run, from the workspace root (one command; it first runs `cargo build --release -p
//! directord` into the same target dir, a no-op when up to date):
//!
//! ```text
//! cargo run --release -p director-bench --bin proxy -- [--secs 5] [--rounds 3] [--users 2000] [--conc 1,4,16,64] [--no-dovecot] [--split-cpus] [--metrics] [--health]
//! ```
//!
//! (`--metrics` adds a fourth path, "directord+metrics": a second `directord` with its
//! metrics listener on and scraped every second, to compare with the first, whose listener
//! is off; `--health` also turns on that one's health checks, every backend every second
//! with a test user's IMAP login; `DIRECTORD_METRICS_BIN` runs that one from another binary;
//! `DIRECTORD_EXTRA_CONFIG='director_proxy_workers = 1'` appends settings to `directord`'s
//! config; `DIRECTORD_BIN=/path/to/directord` uses that binary instead and skips the build; a bare
//! number as first argument is taken as `--secs`.) Needs Dovecot: `apt-get install -y
//! dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd`.
//!
//! Method. The client is this process (tokio, raw IMAP, `--users` users over the backends).
//! At each concurrency (1, 4, 16, 64) it runs `--rounds` rounds; a round measures every path
//! for `--secs` seconds, and the order of the paths rotates from round to round so that they
//! share the machine's state. At concurrency 1 the paths are interleaved login by login
//! instead, so their latencies are taken at the same moments (and no CPU is charged). Reported:
//! medians over rounds, each round's ratios to direct, plus every round's values.
//! Before the points, every user logs in once direct (mailboxes exist) and each proxy gets a
//! short warm-up. Where each user lives comes from `directord`'s admin `USER-LOOKUP` (hashed
//! host); the Dovecot director's `USER-LOOKUP` is compared against it, so all three paths hit
//! the same backend per user. CPU seconds are utime+stime from `/proc/PID/stat`, taken around
//! each point and charged to the path measured: the `directord` process; the Dovecot director
//! instance's processes by name (`director`, `imap-login`, `auth`, the rest, and children that
//! exited, from the master's cutime+cstime); the three backend instances; and this client.
//! The FETCH message is delivered once by LMTP straight to its backend; each path fetches it
//! `FETCH_RUNS` times, alternating, median MB/s. Only 127.x.y.z addresses are used and every
//! process started here is stopped by its PID (testkit types in `Drop`, `directord` by SIGTERM).
#![forbid(unsafe_code)]

mod args;
mod client;
mod cpu;
mod directord;
mod load;
mod measure;
mod report;
mod scrape;
mod setup;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args::parse_args()?;
    testkit::require_dovecot();
    let mut bench = setup::Bench::start(&args).await?;
    let logins = measure::logins(&bench, &args).await;
    if let Some(m) = &mut bench.metrics {
        m.last_page = scrape::page(m.listener).await.ok();
    }
    let fetch = measure::fetch(&mut bench).await?;
    report::print(&mut bench, &args, &logins, &fetch)?;
    bench.stop();
    Ok(())
}
