//! Benchmark (not a test): IMAP LOGIN+LOGOUT rate and latency through the proxy against
//! going direct to the same real Dovecot backends, at several concurrencies, and FETCH
//! throughput of a large message through the proxy against direct.
//!
//! Run: `cargo run --release -p director-proxy --example proxy_bench [SECS_PER_POINT]`
//! Prints Markdown tables. Needs Dovecot (`apt-get install -y dovecot-core dovecot-imapd
//! dovecot-pop3d dovecot-lmtpd`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use director_config::Config;
use director_core::{ConfigHost, CoreSettings, Director, UserKey};
use director_proxy::{CoreRouter, NoBackendHook, Protocol, Proxy, ProxySettings, SessionRegistry};
use testkit::{free_port, require_dovecot, BackendOptions, DovecotBackend, LoopbackAllocator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const USERS: usize = 2000;

async fn read_until(r: &mut BufReader<TcpStream>, prefix: &str) -> anyhow::Result<()> {
    let mut l = String::new();
    loop {
        l.clear();
        if r.read_line(&mut l).await? == 0 {
            anyhow::bail!("EOF");
        }
        if l.starts_with(prefix) {
            return Ok(());
        }
    }
}

async fn login_logout(addr: SocketAddr, user: &str) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s);
    read_until(&mut r, "* OK").await?;
    r.get_mut()
        .write_all(format!("a LOGIN {user} pass\r\n").as_bytes())
        .await?;
    read_until(&mut r, "a OK").await?;
    r.get_mut().write_all(b"b LOGOUT\r\n").await?;
    read_until(&mut r, "b OK").await?;
    Ok(())
}

struct Point {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: usize,
}

async fn run_point(
    conc: usize,
    secs: u64,
    target: Arc<dyn Fn(&str) -> SocketAddr + Send + Sync>,
) -> Point {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let target = Arc::clone(&target);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = w;
            while Instant::now() < deadline {
                let user = format!("bench{}@example.com", i % USERS);
                i += conc;
                let t = Instant::now();
                match login_logout(target(&user), &user).await {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Point {
        rate: lat.len() as f64 / secs as f64,
        p50: pct(0.5),
        p99: pct(0.99),
        errors,
    }
}

async fn fetch_throughput(addr: SocketAddr, user: &str) -> anyhow::Result<f64> {
    let s = TcpStream::connect(addr).await?;
    let mut r = BufReader::new(s);
    read_until(&mut r, "* OK").await?;
    r.get_mut()
        .write_all(format!("a LOGIN {user} pass\r\nb SELECT INBOX\r\n").as_bytes())
        .await?;
    read_until(&mut r, "b OK").await?;
    let t = Instant::now();
    r.get_mut().write_all(b"c FETCH 1 BODY.PEEK[]\r\n").await?;
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let size: usize = line
        .rsplit('{')
        .next()
        .and_then(|s| s.trim_end().trim_end_matches('}').parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no literal in {line:?}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = r.read(&mut buf[..left.min(64 * 1024)]).await?;
        if n == 0 {
            anyhow::bail!("EOF in literal");
        }
        left -= n;
    }
    read_until(&mut r, "c OK").await?;
    let secs = t.elapsed().as_secs_f64();
    r.get_mut().write_all(b"d LOGOUT\r\n").await?;
    Ok(size as f64 / secs)
}

async fn lmtp_deliver(addr: SocketAddr, rcpt: &str, body: &[u8]) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    let mut r = BufReader::new(s);
    read_until(&mut r, "220").await?;
    r.get_mut()
        .write_all(
            format!("LHLO bench\r\nMAIL FROM:<b@example.com>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
                .as_bytes(),
        )
        .await?;
    read_until(&mut r, "354").await?;
    r.get_mut().write_all(body).await?;
    r.get_mut().write_all(b".\r\n").await?;
    read_until(&mut r, "250 2.0.0").await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    require_dovecot();
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut alloc = LoopbackAllocator::new();
    let pip = alloc.next_ip();
    let ips: Vec<_> = (0..3).map(|_| alloc.next_ip()).collect();
    let b0 = IpAddr::V4(ips[0]);
    let (bimap, bpop3, blmtp) = (free_port(b0)?, free_port(b0)?, free_port(b0)?);
    let mut backends = Vec::new();
    for ip in &ips {
        let mut o = BackendOptions::new(*ip);
        o.imap_port = Some(bimap);
        o.pop3_port = Some(bpop3);
        o.lmtp_port = Some(blmtp);
        o.extra_config.push("auth_cache_size = 1M".into());
        o.extra_config
            .push("service imap-login {\n service_count = 0\n process_min_avail = 2\n}".into());
        backends.push(DovecotBackend::start_with(o)?);
    }
    let (pimap, plmtp) = (free_port(IpAddr::V4(pip))?, free_port(IpAddr::V4(pip))?);
    let text = format!(
        "director_mail_servers = {}\ndisable_plaintext_auth = no\nssl = no\n\
         director_backend_port_imap = {bimap}\ndirector_backend_port_lmtp = {blmtp}\n\
         director_proxy_max_connections_per_ip = 10000\n\
         service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {pimap}\n }}\n}}\n\
         service lmtp {{\n inet_listener lmtp {{\n address = {pip}\n port = {plmtp}\n }}\n}}\n",
        ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
    );
    let settings = ProxySettings::from_config(&Config::parse_str(&text, "bench.conf")?)?;
    let core = CoreSettings {
        config_hosts: ips
            .iter()
            .map(|i| ConfigHost::new(IpAddr::V4(*i)))
            .collect(),
        ..CoreSettings::default()
    };
    let registry = SessionRegistry::new(settings.username_hash.clone());
    let router = CoreRouter::start(Director::new(core)?, Arc::clone(&registry));
    let proxy = Proxy::start(settings, router.clone(), registry, Arc::new(NoBackendHook)).await?;
    let proxy_addr = proxy.addr_of(Protocol::Imap, false).expect("imap listener");
    // Where each user lives (the same distribution direct and proxied).
    let homes: Arc<Vec<SocketAddr>> = Arc::new(
        (0..USERS)
            .map(|i| {
                let u = format!("bench{i}@example.com");
                let ip = router.with_director(|d, now| {
                    let l = d
                        .user_lookup(&UserKey::Name(u.into_bytes()), "", now)
                        .unwrap();
                    l.current.map(|(ip, _)| ip).or(l.hashed).unwrap()
                });
                SocketAddr::new(ip, bimap)
            })
            .collect(),
    );
    let direct: Arc<dyn Fn(&str) -> SocketAddr + Send + Sync> = {
        let homes = Arc::clone(&homes);
        Arc::new(move |u: &str| {
            let i: usize = u
                .trim_start_matches("bench")
                .trim_end_matches("@example.com")
                .parse()
                .unwrap_or(0);
            homes[i]
        })
    };
    let proxied: Arc<dyn Fn(&str) -> SocketAddr + Send + Sync> =
        Arc::new(move |_u: &str| proxy_addr);
    // Warm-up: create every mailbox once.
    let _ = run_point(16, 2, Arc::clone(&direct)).await;

    println!(
        "## IMAP LOGIN+LOGOUT, {secs} s per point, {USERS} users over 3 real Dovecot backends\n"
    );
    println!("| concurrency | direct logins/s | direct p50 ms | direct p99 ms | proxy logins/s | proxy p50 ms | proxy p99 ms | rate ratio | added p50 ms | errors d/p |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for conc in [1, 4, 16, 64] {
        let d = run_point(conc, secs, Arc::clone(&direct)).await;
        let p = run_point(conc, secs, Arc::clone(&proxied)).await;
        println!(
            "| {conc} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1} % | {:.2} | {}/{} |",
            d.rate,
            d.p50,
            d.p99,
            p.rate,
            p.p50,
            p.p99,
            100.0 * p.rate / d.rate.max(1e-9),
            p.p50 - d.p50,
            d.errors,
            p.errors
        );
    }

    // Throughput: one 32 MiB message, FETCHed direct and through the proxy.
    let user = "bigmail@example.com";
    let mut body = Vec::with_capacity(32 << 20);
    body.extend_from_slice(b"Subject: big\r\n\r\n");
    while body.len() < (32 << 20) {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n",
        );
    }
    lmtp_deliver(SocketAddr::new(IpAddr::V4(pip), plmtp), user, &body).await?;
    let home = router.with_director(|d, now| {
        let l = d
            .user_lookup(&UserKey::Name(user.as_bytes().to_vec()), "", now)
            .unwrap();
        l.current.map(|(ip, _)| ip).or(l.hashed).unwrap()
    });
    let mut d_best: f64 = 0.0;
    let mut p_best: f64 = 0.0;
    for _ in 0..3 {
        d_best = d_best.max(fetch_throughput(SocketAddr::new(home, bimap), user).await?);
        p_best = p_best.max(fetch_throughput(proxy_addr, user).await?);
    }
    println!("\n## FETCH of a 32 MiB message (best of 3)\n");
    println!("| path | MB/s |\n|---|---|");
    println!("| direct | {:.1} |", d_best / 1e6);
    println!("| proxy | {:.1} |", p_best / 1e6);
    println!("| ratio | {:.1} % |", 100.0 * p_best / d_best.max(1e-9));
    proxy.shutdown(Some(Duration::from_secs(1))).await;
    drop(backends);
    Ok(())
}
