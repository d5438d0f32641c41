//! Starts what one run measures: three real Dovecot backends, `directord`, and (unless
//! `--no-dovecot`) a real Dovecot director proxy; finds each user's backend; logs every user
//! in once and warms the proxies up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use testkit::{
    free_port, AdminClient, DirectorProxyOptions, DovecotBackend, DovecotDirectorProxy,
    LoopbackAllocator,
};

use crate::args::Args;
use crate::cpu::{pin_threads, pin_tree, CpuSplit, Pids};
use crate::directord::{self, lookup_homes, Directord};
use crate::load::{prepare_users, run_point, user_name, PathKind, Target};
use crate::scrape::{self, ScrapeStats};

/// Warm-up of each proxy before the points (starts login processes, fills caches).
const WARMUP: Duration = Duration::from_secs(1);
/// Concurrency of the warm-up.
const WARMUP_CONCURRENCY: usize = 4;

/// Everything one run measures, running.
pub struct Bench {
    pub directord_bin: PathBuf,
    pub split: Option<CpuSplit>,
    /// The backends' addresses, as `director_mail_servers` lists them.
    pub mail_servers: String,
    /// The backends' IMAP and LMTP ports (the same on every backend).
    pub backend_imap_port: u16,
    pub backend_lmtp_port: u16,
    pub directord: Directord,
    /// The real Dovecot director proxy, or why it is not measured.
    pub dovecot: Result<DovecotDirectorProxy, String>,
    /// `--metrics`: the second `directord`, with its metrics listener on and scraped.
    pub metrics: Option<MetricsPath>,
    /// `directord`'s admin connection.
    pub admin: AdminClient,
    /// The measured paths, in their first round's order.
    pub paths: Vec<(PathKind, Target)>,
    pub pids: Pids,
    /// Lines for the end of the report.
    pub notes: Vec<String>,
    // Last: dropped after the proxies in front of them.
    pub backends: Vec<DovecotBackend>,
}

/// The "directord+metrics" path.
pub struct MetricsPath {
    pub directord: Directord,
    /// Its binary (`DIRECTORD_METRICS_BIN`, else the other's).
    pub bin: PathBuf,
    pub scrapes: Arc<ScrapeStats>,
    scraper: tokio::task::JoinHandle<()>,
    /// Its metrics listener.
    pub listener: SocketAddr,
    /// `--health`: it runs health checks too.
    pub health: bool,
    /// The page of a last scrape, after the points (health probe counts).
    pub last_page: Option<String>,
}

impl Bench {
    pub async fn start(args: &Args) -> anyhow::Result<Bench> {
        let directord_bin = directord::directord_binary()?;
        let split = if args.split_cpus {
            Some(CpuSplit::new()?)
        } else {
            None
        };
        if let Some(s) = &split {
            // Inherited by every process started below; backends are moved afterwards.
            pin_threads(std::process::id() as i32, &s.front)?;
        }

        let mut alloc = LoopbackAllocator::new();
        let dip = alloc.next_ip(); // directord
        let vip = alloc.next_ip(); // Dovecot director proxy
        let ips: Vec<Ipv4Addr> = (0..3).map(|_| alloc.next_ip()).collect();
        let backends = DovecotBackend::start_group(&ips, [None; 3], |o| {
            o.extra_config.push("auth_cache_size = 1M".into());
            o.extra_config
                .push("service imap-login {\n service_count = 0\n process_min_avail = 2\n}".into());
        })?;
        let (bimap, blmtp) = (
            backends[0].imap_addr().port(),
            backends[0].lmtp_addr().port(),
        );
        if let Some(s) = &split {
            for b in &backends {
                // The master and what it runs now; later children inherit the master's mask.
                pin_tree(b.master_pid().context("backend master PID")?, &s.back)?;
            }
        }
        let mail_servers = ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ");

        // directord: separate process, Dovecot-syntax config.
        let imap = SocketAddr::new(IpAddr::V4(dip), free_port(IpAddr::V4(dip))?);
        let directord = Directord::start(
            &directord_bin,
            &directord::config(&mail_servers, bimap, imap),
            imap,
        )?;
        directord.wait_until_proxying().await?;

        // --metrics: the same config plus the metrics listener, scraped from now on.
        let metrics = if args.metrics {
            let mip = IpAddr::V4(alloc.next_ip());
            let imap = SocketAddr::new(mip, free_port(mip)?);
            let listener = SocketAddr::new(mip, free_port(mip)?);
            let mut config = directord::config(&mail_servers, bimap, imap)
                + &directord::metrics_config(listener);
            if args.health {
                config += &directord::health_config();
            }
            // Another build for this path, e.g. to compare with one without the counters.
            let bin = std::env::var_os("DIRECTORD_METRICS_BIN")
                .map_or_else(|| directord_bin.clone(), PathBuf::from);
            let d = Directord::start(&bin, &config, imap)?;
            d.wait_until_proxying().await?;
            scrape::scrape(listener)
                .await
                .context("the metrics listener of directord+metrics")?;
            let (scrapes, scraper) = scrape::start(listener);
            Some(MetricsPath {
                directord: d,
                bin,
                scrapes,
                scraper,
                listener,
                health: args.health,
                last_page: None,
            })
        } else {
            None
        };

        // The real Dovecot director proxy, or why not.
        let dovecot = if args.no_dovecot {
            Err("skipped (--no-dovecot)".to_string())
        } else {
            DovecotDirectorProxy::start(
                DirectorProxyOptions::new(mail_servers.clone(), bimap).with_ip(vip),
            )
            .map_err(|e| format!("{e}"))
        };

        // Where each user lives: directord's USER-LOOKUP; the Dovecot director must agree.
        let users: Vec<String> = (0..args.users).map(user_name).collect();
        let mut admin = AdminClient::connect_unix(&directord.admin_socket)?;
        let home_ips = lookup_homes(&mut admin, &users)?;
        let mut notes = Vec::new();
        if let Ok(d) = &dovecot {
            let theirs = lookup_homes(&mut d.admin_client()?, &users)?;
            let differ = home_ips.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            notes.push(format!(
                "Routing check: the Dovecot director's USER-LOOKUP agrees with directord's for {} of {} users.",
                users.len() - differ,
                users.len()
            ));
        }
        let homes: Arc<Vec<SocketAddr>> = Arc::new(
            home_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, bimap))
                .collect(),
        );

        let mut paths: Vec<(PathKind, Target)> = vec![
            (PathKind::Direct, Target::Direct(Arc::clone(&homes))),
            (PathKind::Directord, Target::Proxy(directord.imap)),
        ];
        if let Some(m) = &metrics {
            paths.push((PathKind::DirectordMetrics, Target::Proxy(m.directord.imap)));
        }
        if let Ok(d) = &dovecot {
            paths.push((PathKind::Dovecot, Target::Proxy(d.imap_addr())));
        }
        let pids = Pids {
            directord: directord.pid(),
            directord_metrics: metrics.as_ref().map(|m| m.directord.pid()),
            dovecot: dovecot.as_ref().ok().and_then(|d| d.master_pid()),
            backends: backends
                .iter()
                .filter_map(DovecotBackend::master_pid)
                .collect(),
        };

        eprintln!("proxy: first login of {} users (direct)", args.users);
        prepare_users(args.users, Target::Direct(Arc::clone(&homes))).await?;
        for (kind, target) in &paths {
            if *kind != PathKind::Direct {
                let w = run_point(WARMUP_CONCURRENCY, WARMUP, args.users, target.clone()).await;
                if w.errors > 0 {
                    notes.push(format!(
                        "Warm-up of {}: {} errors (first: {})",
                        kind.name(),
                        w.errors,
                        w.first_error.unwrap_or_default()
                    ));
                }
            }
        }
        Ok(Bench {
            directord_bin,
            split,
            mail_servers,
            backend_imap_port: bimap,
            backend_lmtp_port: blmtp,
            directord,
            dovecot,
            metrics,
            admin,
            paths,
            pids,
            notes,
            backends,
        })
    }

    /// Stops `directord` first, then the Dovecot director, then the backends.
    pub fn stop(mut self) {
        self.directord.stop();
        if let Some(mut m) = self.metrics.take() {
            m.scraper.abort();
            m.directord.stop();
        }
        drop(self.dovecot);
        drop(self.backends);
    }
}
