//! What hostile clients on every listener at once can make the real `directord` hold, with
//! every limit at its default: at most the figure the README (and docs/SECURITY.md) states
//! per client connection, plus `director_proxy_buffer_memory` (the shared budget that bulk transfers and
//! large LMTP envelopes grow from).
//!
//! The clients, several hundred on each listener, each doing what costs the proxy most:
//! logged-in IMAP sessions over TLS that `FETCH` a large message from a real Dovecot backend
//! and never read it; pre-login lines left unfinished at their longest on IMAP (plain and
//! TLS), POP3, Submission and ManageSieve; LMTP bodies of 2 MiB left unfinished; unfinished
//! admin requests on the TCP admin listener and unfinished nginx `auth_http` requests.
//! Meanwhile a fresh login still works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::tls::{client_config, make_ca, make_leaf};
use common::Daemon;
use testkit::{free_ports, require_dovecot, BackendOptions, DovecotBackend, LoopbackAllocator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// What the README and docs/SECURITY.md state a client connection may cost at most.
const PER_CONNECTION_KIB: u64 = 64;
/// Clients of each kind.
const PER_KIND: usize = 150;
/// The stalled `FETCH`es read this message: far more than the socket buffers hold.
const BIG_MESSAGE: usize = 16 << 20;
/// Clients per source address (the per-IP limit is 100).
const PER_SOURCE: usize = 50;

const WAIT: Duration = Duration::from_secs(60);

/// Client source addresses, a new one every [`PER_SOURCE`] connections.
struct Sources {
    alloc: LoopbackAllocator,
    current: Ipv4Addr,
    used: usize,
}

impl Sources {
    fn next(&mut self) -> IpAddr {
        if self.used == PER_SOURCE {
            self.current = self.alloc.next_ip();
            self.used = 0;
        }
        self.used += 1;
        IpAddr::V4(self.current)
    }
}

async fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from, 0)).unwrap();
    tokio::time::timeout(WAIT, s.connect(to))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"))
}

async fn tls(
    config: &Arc<ClientConfig>,
    tcp: TcpStream,
    to: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = ServerName::IpAddress(to.ip().into());
    tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::clone(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .unwrap()
}

/// Reads lines until one starts with `prefix`.
async fn until<S: tokio::io::AsyncRead + Unpin>(r: &mut BufReader<S>, prefix: &str) {
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        let n = tokio::time::timeout(WAIT, r.read_line(&mut l))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "closed before {prefix:?}: {seen}");
        if l.starts_with(prefix) {
            return;
        }
        seen.push_str(&l);
    }
}

#[test]
fn hostile_clients_on_every_listener_stay_within_the_stated_memory() {
    require_dovecot();
    for (doc, text) in [
        ("README.md", include_str!("../../../README.md")),
        (
            "docs/SECURITY.md",
            include_str!("../../../docs/SECURITY.md"),
        ),
    ] {
        assert!(
            text.contains(&format!("{PER_CONNECTION_KIB} KiB per client connection")),
            "{doc} states the figure this test checks"
        );
    }
    let mut alloc = LoopbackAllocator::new();
    let proxy_ip = alloc.next_ip();
    let backend_ip = alloc.next_ip();
    let pip = IpAddr::V4(proxy_ip);

    let bip = IpAddr::V4(backend_ip);
    let [bsub, bsieve] = free_ports(bip, [None; 2]).unwrap();
    let mut opts = BackendOptions::new(backend_ip);
    opts.with_submission_and_sieve(bsub, bsieve);
    // One Dovecot process per stalled session, and all of them of one user from a few IPs.
    opts.extra_config.extend([
        "default_process_limit = 1000".to_string(),
        "default_client_limit = 10000".to_string(),
        "mail_max_userip_connections = 1000".to_string(),
    ]);
    let backend = DovecotBackend::start_with(opts).expect("backend starts");

    let files = tempfile::tempdir().unwrap();
    let ca = make_ca("memory test CA");
    let (cert, key) = make_leaf(
        &ca,
        &proxy_ip.to_string(),
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let cert_file = files.path().join("cert.pem");
    let key_file = files.path().join("key.pem");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let client_tls = client_config(&ca.0.pem(), None);

    let [imap, imaps, pop3, sub, sieve, lmtp, admin, auth_http] =
        free_ports(pip, [None; 8]).unwrap();
    let mut daemon = Daemon::start(&format!(
        "director_mail_servers = {backend_ip}\n\
         director_backend_port_imap = {bi}\n\
         director_backend_port_pop3 = {bp}\n\
         director_backend_port_lmtp = {bl}\n\
         director_backend_port_submission = {bsub}\n\
         director_backend_port_sieve = {bsieve}\n\
         disable_plaintext_auth = no\n\
         ssl = yes\n\
         ssl_cert = <{cert}\n\
         ssl_key = <{key}\n\
         service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {imap}\n }}\n\
         \x20inet_listener imaps {{\n address = {pip}\n port = {imaps}\n ssl = yes\n }}\n}}\n\
         service pop3-login {{\n inet_listener pop3 {{\n address = {pip}\n port = {pop3}\n }}\n}}\n\
         service submission-login {{\n inet_listener submission {{\n address = {pip}\n port = {sub}\n }}\n}}\n\
         service managesieve-login {{\n inet_listener sieve {{\n address = {pip}\n port = {sieve}\n }}\n}}\n\
         service lmtp {{\n inet_listener lmtp {{\n address = {pip}\n port = {lmtp}\n }}\n}}\n\
         service director {{\n inet_listener director-doveadm {{\n address = {pip}\n port = {admin}\n }}\n\
         \x20inet_listener director-auth-http {{\n address = {pip}\n port = {auth_http}\n }}\n}}\n",
        bi = backend.imap_addr().port(),
        bp = backend.pop3_addr().port(),
        bl = backend.lmtp_addr().port(),
        cert = cert_file.display(),
        key = key_file.display(),
    ));
    let at = |port| SocketAddr::new(pip, port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sources = Sources {
        current: alloc.next_ip(),
        alloc,
        used: 0,
    };

    rt.block_on(async {
        // The big message, delivered through the proxy.
        let mut c = BufReader::new(connect(sources.next(), at(lmtp)).await);
        until(&mut c, "220 ").await;
        c.get_mut()
            .write_all(
                b"LHLO t\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<big@example.com>\r\nDATA\r\n",
            )
            .await
            .unwrap();
        until(&mut c, "354 ").await;
        let line = format!("{}\r\n", "b".repeat(1022));
        for _ in 0..BIG_MESSAGE / line.len() {
            c.get_mut().write_all(line.as_bytes()).await.unwrap();
        }
        c.get_mut().write_all(b".\r\n").await.unwrap();
        until(&mut c, "250 2.0.0 <big@example.com>").await;
    });
    let before = daemon.peak_rss_kib();

    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    rt.block_on(async {
        // Logged in over TLS, FETCH of the big message, never read.
        for i in 0..PER_KIND {
            let tcp = connect(sources.next(), at(imaps)).await;
            let mut s = BufReader::new(tls(&client_tls, tcp, at(imaps)).await);
            until(&mut s, "* OK").await;
            s.get_mut()
                .write_all(format!("a LOGIN big@example.com pass\r\nf{i} FETCH 1 BODY[]\r\n").as_bytes())
                .await
                .unwrap();
            until(&mut s, "a OK").await;
            held.push(Box::new(s));
        }
        // Pre-login lines left unfinished, just under each protocol's line limit (a longer
        // one is refused and closed, which costs nothing).
        let partial = |cmd: &str, len: usize| format!("{cmd}{}", "x".repeat(len));
        for _ in 0..PER_KIND {
            let mut s = connect(sources.next(), at(imap)).await;
            s.write_all(partial("a LOGIN ", 1000).as_bytes()).await.unwrap();
            held.push(Box::new(s));
            let tcp = connect(sources.next(), at(imaps)).await;
            let mut s = tls(&client_tls, tcp, at(imaps)).await;
            s.write_all(partial("a LOGIN ", 1000).as_bytes()).await.unwrap();
            held.push(Box::new(s));
            let mut s = connect(sources.next(), at(pop3)).await;
            s.write_all(partial("USER ", 1000).as_bytes()).await.unwrap();
            held.push(Box::new(s));
            let mut s = connect(sources.next(), at(sub)).await;
            s.write_all(partial("EHLO ", 990).as_bytes()).await.unwrap();
            held.push(Box::new(s));
            let mut s = connect(sources.next(), at(sieve)).await;
            s.write_all(partial("AUTHENTICATE \"PLAIN\" \"", 1000).as_bytes())
                .await
                .unwrap();
            held.push(Box::new(s));
        }
        // LMTP bodies of 2 MiB, left unfinished.
        let line = format!("{}\r\n", "l".repeat(1022));
        for i in 0..PER_KIND {
            let mut c = BufReader::new(connect(sources.next(), at(lmtp)).await);
            until(&mut c, "220 ").await;
            c.get_mut()
                .write_all(format!("LHLO t\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<open{i}@example.com>\r\nDATA\r\n").as_bytes())
                .await
                .unwrap();
            until(&mut c, "354 ").await;
            for _ in 0..(2 << 20) / line.len() {
                c.get_mut().write_all(line.as_bytes()).await.unwrap();
            }
            held.push(Box::new(c));
        }
        // Unfinished admin requests (the TCP admin listener serves loopback by default).
        for _ in 0..90 {
            let mut s = connect(sources.next(), at(admin)).await;
            s.write_all(format!("VERSION\tdirector-doveadm\t1\t0\nHOST-LIST{}", "x".repeat(1000)).as_bytes())
                .await
                .unwrap();
            held.push(Box::new(s));
        }
        // Unfinished auth_http requests, a header line just under its limit.
        for _ in 0..PER_KIND {
            let mut s = connect(sources.next(), at(auth_http)).await;
            s.write_all(format!("GET /auth HTTP/1.0\r\nAuth-User: {}", "u".repeat(4000)).as_bytes())
                .await
                .unwrap();
            held.push(Box::new(s));
        }
        // Under all of it, a new login still works.
        let mut s = BufReader::new(connect(sources.next(), at(imap)).await);
        until(&mut s, "* OK").await;
        s.get_mut()
            .write_all(b"a LOGIN fresh@example.com pass\r\nb LOGOUT\r\n")
            .await
            .unwrap();
        until(&mut s, "a OK").await;
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
            .await
            .expect("logout in time")
            .unwrap();
    });
    let connections = held.len() as u64;
    let peak = daemon.peak_rss_kib();
    let budget_kib = 128 * 1024;
    let allowed = connections * PER_CONNECTION_KIB + budget_kib;
    eprintln!(
        "{connections} hostile connections: peak RSS {before} KiB before, {peak} KiB with them \
         ({} KiB per connection if the budget were unused); allowed {allowed} KiB more",
        (peak - before) / connections
    );
    assert!(
        peak - before <= allowed,
        "{connections} hostile connections took the daemon from {before} KiB to {peak} KiB; \
         the README allows {PER_CONNECTION_KIB} KiB each plus the 128 MiB buffer budget"
    );
    assert!(daemon.is_running(), "the daemon survived");
    drop(held);
}
