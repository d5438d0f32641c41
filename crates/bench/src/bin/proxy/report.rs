//! The report: Markdown tables on stdout.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Command;
use std::sync::atomic::Ordering;

use crate::args::Args;
use crate::cpu::{clock_ticks, PathCpu};
use crate::load::{percentile, PathKind, Point, Target};
use crate::measure::{Logins, FETCH_BYTES, FETCH_RUNS};
use crate::setup::{Bench, MetricsPath};

/// Prints every table of one run, then the notes.
pub fn print(
    b: &mut Bench,
    args: &Args,
    logins: &Logins,
    fetch: &HashMap<PathKind, Vec<f64>>,
) -> anyhow::Result<()> {
    let has_dv = b.dovecot.is_ok();
    header(b, args);
    medians(args, &logins.results, has_dv);
    ratios(args, &logins.per_round);
    rounds(&logins.per_round);
    if let Some(m) = &b.metrics {
        metrics_table(args, logins, m, &b.directord_bin);
    }
    cpu_table(&b.paths, &logins.cpu, has_dv);
    fetch_table(&b.paths, fetch);
    notes(b);
    std::io::stdout().flush()?;
    Ok(())
}

fn header(b: &Bench, args: &Args) {
    let (mail_servers, directord_bin) = (&b.mail_servers, &b.directord_bin);
    let (dovecot, split) = (&b.dovecot, &b.split);
    println!(
        "# Proxy benchmark: direct vs directord vs Dovecot 2.3 director proxy\n\n\
         IMAP LOGIN+LOGOUT, {} s per point, {} round(s) per concurrency (path order rotating), \
         {} users over 3 real Dovecot backends ({}); directord = `{}` (separate process); \
         client = this process (tokio). Medians over rounds; added p50 = median p50 − median \
         direct p50.\n",
        args.secs,
        args.rounds,
        args.users,
        mail_servers,
        directord_bin.display()
    );
    match &dovecot {
        Ok(_) => println!(
            "dovecot-director = real Dovecot {} director + `imap-login director` \
             (service_count=0, process_min_avail=2), static passdb proxy=y nopassword=y.\n",
            dovecot_version()
        ),
        Err(e) => println!("**dovecot-director: NOT MEASURED**, it did not start here: {e}\n"),
    }
    match &split {
        Some(s) => println!("CPUs split (`--split-cpus`): {}.\n", s.desc),
        None => println!("CPUs shared: backends, proxies and client all run on every CPU.\n"),
    }
}

/// Medians over rounds of each concurrency's rate and latencies.
fn medians(args: &Args, results: &HashMap<(usize, PathKind), Vec<Point>>, has_dv: bool) {
    let med = |conc: usize, kind: PathKind, f: fn(&Point) -> f64| -> f64 {
        results
            .get(&(conc, kind))
            .map_or(f64::NAN, |v| median(&v.iter().map(f).collect::<Vec<_>>()))
    };
    let dv = PathKind::Dovecot;
    println!("## Login rate and latency (medians)\n");
    println!(
        "| c | direct/s | directord/s | dovecot-director/s | directord/direct | dovecot/direct \
         | direct p50 ms | directord p50 | dovecot p50 | added p50 directord | added p50 dovecot \
         | direct p99 ms | directord p99 | dovecot p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &conc in &args.conc {
        let r = |k| med(conc, k, |p| p.rate);
        let p50 = |k| med(conc, k, |p| p.p50);
        let p99 = |k| med(conc, k, |p| p.p99);
        let (d, o) = (PathKind::Direct, PathKind::Directord);
        let ifdv = |x: f64| if has_dv { x } else { f64::NAN };
        println!(
            "| {conc} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(r(d), 0),
            num(r(o), 0),
            num(ifdv(r(dv)), 0),
            pct(r(o), r(d)),
            pct(ifdv(r(dv)), r(d)),
            num(p50(d), 2),
            num(p50(o), 2),
            num(ifdv(p50(dv)), 2),
            num(p50(o) - p50(d), 2),
            num(ifdv(p50(dv)) - p50(d), 2),
            num(p99(d), 2),
            num(p99(o), 2),
            num(ifdv(p99(dv)), 2),
        );
    }
}

/// Each round's ratios to direct, pooled ratios, and latency percentiles pooled over rounds.
fn ratios(args: &Args, per_round: &[(usize, usize, PathKind, Point)]) {
    // The machine's speed drifts (a shared VM); paths measured in the same round ran back to
    // back, so per-round ratios cancel most of the drift that ratios of medians keep.
    println!(
        "\n## Per-round ratios (the paths of one round ran back to back)\n\n\
         Median over rounds of each round's ratio to direct (min–max), and the pooled ratio \
         (all logins of all rounds).\n"
    );
    println!(
        "| c | directord/direct rate | pooled | directord/direct p99 | dovecot/direct rate | pooled | dovecot/direct p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut pooled_lat = String::new();
    for &conc in &args.conc {
        let ratios = |kind: PathKind, f: fn(&Point) -> f64| -> Vec<f64> {
            let of = |k: PathKind| -> Vec<f64> {
                let mut v: Vec<(usize, f64)> = per_round
                    .iter()
                    .filter(|(c, _, pk, _)| *c == conc && *pk == k)
                    .map(|(_, r, _, p)| (*r, f(p)))
                    .collect();
                v.sort_by_key(|(r, _)| *r);
                v.into_iter().map(|(_, x)| x).collect()
            };
            of(kind)
                .iter()
                .zip(of(PathKind::Direct))
                .map(|(x, d)| x / d)
                .collect()
        };
        let pooled = |kind: PathKind| -> f64 {
            let total = |k: PathKind| -> f64 {
                per_round
                    .iter()
                    .filter(|(c, _, pk, _)| *c == conc && *pk == k)
                    .map(|(_, _, _, p)| p.logins as f64)
                    .sum()
            };
            // NaN for a path that was not measured.
            match total(kind) {
                0.0 => f64::NAN,
                t => t / total(PathKind::Direct),
            }
        };
        let cell = |v: Vec<f64>| -> String {
            if v.is_empty() {
                return "–".into();
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{:.1} % ({:.1}–{:.1})",
                median(&v) * 100.0,
                lo * 100.0,
                hi * 100.0
            )
        };
        let (o, dv) = (PathKind::Directord, PathKind::Dovecot);
        let pooled_pct = |kind: PathKind, q: f64| -> f64 {
            let mut all: Vec<f64> = per_round
                .iter()
                .filter(|(c, _, pk, _)| *c == conc && *pk == kind)
                .flat_map(|(_, _, _, p)| p.lat.iter().copied())
                .collect();
            all.sort_by(f64::total_cmp);
            percentile(&all, q)
        };
        let d = PathKind::Direct;
        pooled_lat.push_str(&format!(
            "| {conc} | {} / {} / {} | {} | {} | {} / {} / {} |\n",
            num(pooled_pct(d, 0.5), 2),
            num(pooled_pct(o, 0.5), 2),
            num(pooled_pct(dv, 0.5), 2),
            num(pooled_pct(o, 0.5) - pooled_pct(d, 0.5), 2),
            num(pooled_pct(dv, 0.5) - pooled_pct(d, 0.5), 2),
            num(pooled_pct(d, 0.99), 2),
            num(pooled_pct(o, 0.99), 2),
            num(pooled_pct(dv, 0.99), 2),
        ));
        println!(
            "| {conc} | {} | {} | {} | {} | {} | {} |",
            cell(ratios(o, |p| p.rate)),
            pct(pooled(o), 1.0),
            cell(ratios(o, |p| p.p99)),
            cell(ratios(dv, |p| p.rate)),
            pct(pooled(dv), 1.0),
            cell(ratios(dv, |p| p.p99)),
        );
    }
    println!(
        "\nLatency percentiles pooled over all rounds (ms):\n\n\
         | c | p50 direct / directord / dovecot | added p50 directord | added p50 dovecot \
         | p99 direct / directord / dovecot |\n|---|---|---|---|---|\n{pooled_lat}"
    );
}

/// `--metrics`: the two `directord`s side by side, metrics listener off and on.
fn metrics_table(args: &Args, logins: &Logins, m: &MetricsPath, off_bin: &std::path::Path) {
    let (off, on) = (PathKind::Directord, PathKind::DirectordMetrics);
    let health = if m.health {
        let page = m.last_page.as_deref().unwrap_or_default();
        let v =
            |s: &str| crate::scrape::value(page, s).map_or("?".to_string(), |v| format!("{v:.0}"));
        format!(
            ", and health checks on: every backend every {}, greeting and a test user's IMAP \
             login ({} probes, {} failed, {} hosts marked down)",
            crate::directord::HEALTH_INTERVAL,
            v("director_health_probes_total"),
            v("director_health_probe_failures_total"),
            v("director_health_marked_total{state=\"down\"}"),
        )
    } else {
        String::new()
    };
    println!(
        "\n## {} off vs on (`--metrics{}`)\n\n\
         directord = off; directord+metrics = a second directord, same config \
         plus `inet_listener director-metrics`, scraped every {} s during the whole run \
         ({} scrapes answered, {} failed, {} bytes per page){health}. On/off: pooled (all logins of all \
         rounds) and the median of each round's ratio (min–max). Binaries: off `{}`, on `{}`.\n",
        if m.health {
            "Metrics listener and health checks"
        } else {
            "Metrics listener"
        },
        if m.health { " --health" } else { "" },
        crate::scrape::SCRAPE_INTERVAL.as_secs(),
        m.scrapes.ok.load(Ordering::Relaxed),
        m.scrapes.failed.load(Ordering::Relaxed),
        m.scrapes.last_bytes.load(Ordering::Relaxed),
        off_bin.display(),
        m.bin.display(),
    );
    println!(
        "| c | off logins/s | on logins/s | on/off pooled | on/off per round | p50 ms off / on | p99 ms off / on |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &conc in &args.conc {
        let points = |k: PathKind| -> Vec<(usize, &Point)> {
            let mut v: Vec<(usize, &Point)> = logins
                .per_round
                .iter()
                .filter(|(c, _, pk, _)| *c == conc && *pk == k)
                .map(|(_, r, _, p)| (*r, p))
                .collect();
            v.sort_by_key(|(r, _)| *r);
            v
        };
        let (a, b) = (points(off), points(on));
        let logins_of = |v: &[(usize, &Point)]| v.iter().map(|(_, p)| p.logins).sum::<usize>();
        let rate =
            |v: &[(usize, &Point)]| median(&v.iter().map(|(_, p)| p.rate).collect::<Vec<_>>());
        let per_round: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|((_, x), (_, y))| y.rate / x.rate)
            .collect();
        let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pooled_pct = |v: &[(usize, &Point)], q: f64| -> f64 {
            let mut all: Vec<f64> = v.iter().flat_map(|(_, p)| p.lat.iter().copied()).collect();
            all.sort_by(f64::total_cmp);
            percentile(&all, q)
        };
        println!(
            "| {conc} | {} | {} | {} | {:.1} % ({:.1}–{:.1}) | {} / {} | {} / {} |",
            num(rate(&a), 0),
            num(rate(&b), 0),
            // At c = 1 the paths take turns login by login: equal counts, nothing to compare.
            if conc == 1 {
                "–".to_string()
            } else {
                pct(logins_of(&b) as f64, logins_of(&a) as f64)
            },
            median(&per_round) * 100.0,
            lo * 100.0,
            hi * 100.0,
            num(pooled_pct(&a, 0.5), 2),
            num(pooled_pct(&b, 0.5), 2),
            num(pooled_pct(&a, 0.99), 2),
            num(pooled_pct(&b, 0.99), 2),
        );
    }
    let ticks = clock_ticks();
    let per_k = |t: u64, n: usize| {
        if n == 0 {
            "–".to_string()
        } else {
            format!("{:.3}", t as f64 / ticks / n as f64 * 1000.0)
        }
    };
    let c_off = logins.cpu.get(&off).cloned().unwrap_or_default();
    let c_on = logins.cpu.get(&on).cloned().unwrap_or_default();
    println!(
        "\ndirectord CPU seconds per 1000 logins, each charged with its own path's points \
         (c > 1): off {}, on {}.",
        per_k(c_off.directord, c_off.logins),
        per_k(c_on.directord_metrics, c_on.logins),
    );
}

fn rounds(per_round: &[(usize, usize, PathKind, Point)]) {
    println!("\n### Every round\n");
    println!("| c | round | path | logins | logins/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for (conc, round, kind, p) in per_round {
        println!(
            "| {conc} | {round} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            p.logins,
            num(p.rate, 0),
            num(p.p50, 2),
            num(p.p99, 2),
            p.errors
        );
    }
    let errs: Vec<String> = per_round
        .iter()
        .filter_map(|(c, r, k, p)| {
            p.first_error.as_ref().map(|e| {
                format!(
                    "c={c} round {r} {}: {} errors, first: {e}",
                    k.name(),
                    p.errors
                )
            })
        })
        .collect();
    if !errs.is_empty() {
        println!("\nErrors:\n");
        for e in errs {
            println!("- {e}");
        }
    }
}

/// CPU seconds per 1000 logins, charged to the path measured.
fn cpu_table(paths: &[(PathKind, Target)], cpu: &HashMap<PathKind, PathCpu>, has_dv: bool) {
    let ticks = clock_ticks();
    println!("\n## CPU seconds per 1000 logins (utime+stime, all points of that path)\n");
    let per_k = |ticks_used: u64, logins: usize| -> String {
        if logins == 0 {
            "–".into()
        } else {
            format!("{:.3}", ticks_used as f64 / ticks / logins as f64 * 1000.0)
        }
    };
    println!(
        "| path | logins | directord | dovecot director | dovecot imap-login | dovecot auth \
         | dovecot other+exited | dovecot total | 3 backends | client |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (kind, _) in paths {
        let c = cpu.get(kind).cloned().unwrap_or_default();
        let g = |name: &str| c.dovecot.get(name).copied().unwrap_or(0);
        let total: u64 = c.dovecot.values().sum();
        let other = total - g("director") - g("imap-login") - g("auth");
        let show_dv = has_dv;
        let dvcol = |t: u64| {
            if show_dv {
                per_k(t, c.logins)
            } else {
                "–".into()
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            c.logins,
            per_k(c.directord, c.logins),
            dvcol(g("director")),
            dvcol(g("imap-login")),
            dvcol(g("auth")),
            dvcol(other),
            dvcol(total),
            per_k(c.backends, c.logins),
            per_k(c.client, c.logins),
        );
    }
    println!(
        "\nEach row is charged only with the CPU used while that path was measured, so the \
         directord column of the directord row and the dovecot columns of the dovecot-director \
         row are the proxies' cost; the other cells show their idle cost."
    );
}

fn fetch_table(paths: &[(PathKind, Target)], fetch: &HashMap<PathKind, Vec<f64>>) {
    println!(
        "\n## FETCH of one {} MiB message (median of {FETCH_RUNS}, MB/s)\n",
        FETCH_BYTES >> 20
    );
    println!("| path | MB/s (median) | runs | vs direct |");
    println!("|---|---|---|---|");
    let fmed = |k: PathKind| fetch.get(&k).map_or(f64::NAN, |v| median(v));
    for (kind, _) in paths {
        let runs = fetch
            .get(kind)
            .map(|v| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        println!(
            "| {} | {} | {runs} | {} |",
            kind.name(),
            num(fmed(*kind), 1),
            pct(fmed(*kind), fmed(PathKind::Direct))
        );
    }
}

/// The notes gathered while setting up, and what the Dovecot director's log shows.
fn notes(b: &mut Bench) {
    let (dovecot, notes) = (&b.dovecot, &mut b.notes);
    if let Ok(d) = &dovecot {
        // The Dovecot proxy really replayed the logins to the backends (its own log says so).
        let log = d.log();
        let started = log.matches("Started proxying").count();
        let mut hosts: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Started proxying"))
            .filter_map(|l| l.split("proxy(").nth(1))
            .filter_map(|l| l.split(',').nth(1))
            .filter_map(|hp| hp.split(':').next())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        notes.push(format!(
            "dovecot-director log: {started} \"Started proxying\" lines, to backends {hosts:?}."
        ));
    }
    if !notes.is_empty() {
        println!();
        for n in notes.iter() {
            println!("{n}");
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn pct(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.1} %", 100.0 * a / b)
    } else {
        "–".into()
    }
}

pub fn num(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "–".into()
    }
}

pub fn dovecot_version() -> String {
    Command::new("dovecot")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".into())
}
