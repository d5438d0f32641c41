//! Command line of the proxy benchmark.

use anyhow::{bail, Context};

/// Seconds per measured point unless `--secs` says otherwise.
const DEFAULT_SECS: u64 = 5;
/// Rounds per concurrency unless `--rounds` says otherwise.
const DEFAULT_ROUNDS: usize = 3;
/// Distinct users the logins cycle through unless `--users` says otherwise.
const DEFAULT_USERS: usize = 2000;
/// Concurrencies measured unless `--conc` says otherwise.
const CONCURRENCIES: [usize; 4] = [1, 4, 16, 64];

const USAGE: &str = "usage: proxy [--secs N] [--rounds N] [--users N] [--conc N[,N...]] [--no-dovecot] [--split-cpus] [--metrics] [--health]";

pub struct Args {
    pub secs: u64,
    pub rounds: usize,
    pub users: usize,
    /// Concurrencies to measure (`--conc 64` or `--conc 1,64`); default all four.
    pub conc: Vec<usize>,
    /// `--no-dovecot`: leave out the Dovecot director path (quicker experiments).
    pub no_dovecot: bool,
    /// `--split-cpus`: backends on the upper half of the CPUs, everything else (client,
    /// `directord`, the Dovecot director) on the lower half.
    pub split_cpus: bool,
    /// `--metrics`: also measure a second `directord` with its metrics listener on and
    /// scraped ("directord+metrics"), to compare with the first, whose listener is off.
    pub metrics: bool,
    /// `--health` (implies `--metrics`): that second `directord` also runs health checks on
    /// the backends every second, a test user's login included, so the path measures the
    /// login-path cost of both.
    pub health: bool,
}

pub fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        secs: DEFAULT_SECS,
        rounds: DEFAULT_ROUNDS,
        users: DEFAULT_USERS,
        conc: CONCURRENCIES.to_vec(),
        no_dovecot: false,
        split_cpus: false,
        metrics: false,
        health: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| -> anyhow::Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--secs" => a.secs = val("--secs")?,
            "--rounds" => a.rounds = val("--rounds")? as usize,
            "--no-dovecot" => a.no_dovecot = true,
            "--split-cpus" => a.split_cpus = true,
            "--metrics" => a.metrics = true,
            "--health" => {
                a.health = true;
                a.metrics = true;
            }
            "--users" => a.users = val("--users")? as usize,
            "--conc" => {
                a.conc = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|c| c.trim().parse::<usize>().ok().filter(|c| *c > 0))
                    .collect::<Option<Vec<_>>>()
                    .context("--conc needs positive numbers, e.g. 64 or 1,64")?;
            }
            other => match other.parse() {
                Ok(n) => a.secs = n,
                Err(_) => bail!("{USAGE}"),
            },
        }
    }
    if a.secs == 0 || a.rounds == 0 || a.users == 0 {
        bail!("--secs, --rounds and --users must be positive");
    }
    Ok(a)
}
