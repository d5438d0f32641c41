//! What saving and restoring the state costs with N users (default 1 M): the snapshot taken
//! under the state lock, encoding, the atomic write (fsync included), the file size, and at
//! start the read, decode and restore. The same code paths as `directord`:
//! `cargo run --release -p director-bench --bin state-save -- [N] [DIR]` (DIR: where the file
//! is written, default a temp dir; use the disk `state_dir` lives on).
#![forbid(unsafe_code)]
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use director_core::lookup::ConfigHost;
use director_core::{CoreSettings, Director, RequestOutcome};
use director_driver::state_store::{ReadOutcome, StateStore};
use director_proto::state_file;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("N must be a number")?
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let settings = || CoreSettings {
        config_hosts: (1..=10)
            .map(|i| ConfigHost::new(format!("10.0.0.{i}").parse().expect("ip")))
            .collect(),
        ..CoreSettings::default()
    };
    let mut d = Director::new(settings())?;
    // Logins spread over the 15 minutes of director_user_expire, as a busy director has them.
    let t0 = 1_800_000_000u64;
    for i in 0..n {
        let now = t0 + u64::from(i) * 899 / u64::from(n.max(1));
        if !matches!(
            d.request(format!("user{i}@example.com").as_bytes(), "", now),
            RequestOutcome::Ready(_)
        ) {
            bail!("login {i} was not routed");
        }
    }
    // The last second before the oldest expires: every user is restored.
    let now = t0 + 899;
    let users = d.counters().users;

    let started = Instant::now();
    let snapshot = d.snapshot(now);
    let t_snapshot = started.elapsed();
    let started = Instant::now();
    let bytes = state_file::encode(&snapshot);
    let t_encode = started.elapsed();
    let store = StateStore::open(&dir)?;
    let started = Instant::now();
    store.write(1, &bytes)?;
    let t_write = started.elapsed();

    let started = Instant::now();
    let read = match store.read() {
        ReadOutcome::Read(s) => s,
        other => bail!("the file did not read back: {other:?}"),
    };
    let t_read = started.elapsed();
    let mut e = Director::new(settings())?;
    let started = Instant::now();
    let report = e.restore(&read, now)?;
    let t_restore = started.elapsed();
    if report.users != users {
        bail!("restored {} users of {users}", report.users);
    }

    println!(
        "logins={n} users={users} file_bytes={} bytes/user={:.1}",
        bytes.len(),
        bytes.len() as f64 / users.max(1) as f64
    );
    println!(
        "save: snapshot under the lock {}, encode {}, write+fsync+rename {}",
        ms(t_snapshot),
        ms(t_encode),
        ms(t_write)
    );
    println!(
        "start: read+decode {}, restore {}",
        ms(t_read),
        ms(t_restore)
    );
    Ok(())
}
