//! IMAP through the proxy against real Dovecot backends, with Python's imaplib as the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{init_tracing, Lab, LabOptions};

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@example.com")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_logins_of_200_users_land_on_the_backend_the_core_picks() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let us = users("imapuser", 200);
    let mut args = vec![
        "--tls".to_string(),
        "plain".into(),
        lab.ca_file.display().to_string(),
        "imap".into(),
        lab.proxy_ip.to_string(),
        lab.imap_port.to_string(),
        "pass".into(),
    ];
    args.extend(us.iter().cloned());
    let out = lab.python(args).await;
    assert_eq!(out.len(), us.len(), "{out:?}");
    let mut seen = std::collections::HashSet::new();
    for line in &out {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[1], "OK", "{line}");
        let expected = lab.expected_backend(f[0]).await;
        assert_eq!(
            f[2],
            expected.to_string(),
            "user {} served by the wrong backend",
            f[0]
        );
        seen.insert(f[2].to_string());
        // The backend's own log shows the login with the client's real address.
        let log = lab.log_with(expected, &format!("user=<{}>", f[0])).await;
        assert!(
            log.contains(&format!("user=<{}>", f[0])),
            "no login for {} in {expected}'s log",
            f[0]
        );
    }
    assert_eq!(
        seen.len(),
        3,
        "200 users should spread over all 3 backends: {seen:?}"
    );
    // The client's address was forwarded (ID x-originating-ip): rip is the client, not us.
    let log = lab
        .log_with(lab.expected_backend(&us[0]).await, "rip=127.0.0.1")
        .await;
    assert!(
        log.contains("rip=127.0.0.1"),
        "client address not forwarded:\n{log}"
    );
    assert_eq!(
        lab.proxy.registry().count(),
        0,
        "sessions deregistered after logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_wrong_password_is_relayed() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let out = lab
        .python(vec![
            "--tls".to_string(),
            "plain".into(),
            lab.ca_file.display().to_string(),
            "imap".into(),
            lab.proxy_ip.to_string(),
            lab.imap_port.to_string(),
            "wrong".into(),
            "victim@example.com".into(),
        ])
        .await;
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains("\tNO\t") && out[0].contains("AUTHENTICATIONFAILED"),
        "{out:?}"
    );
    let ip = lab.expected_backend("victim@example.com").await;
    let log = lab.log_with(ip, "auth failed").await;
    assert!(
        log.contains("auth failed") || log.contains("Disconnected"),
        "backend {ip} saw the attempt:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_parallel_sessions_of_one_user_share_a_backend() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let out = lab
        .python(vec![
            "imap-parallel".into(),
            lab.proxy_ip.to_string(),
            lab.imap_port.to_string(),
            "pass".into(),
            "8".into(),
            "busy@example.com".into(),
        ])
        .await;
    assert_eq!(out.len(), 8);
    let expected = lab.expected_backend("busy@example.com").await.to_string();
    assert!(out.iter().all(|l| *l == expected), "{out:?} vs {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_implicit_tls_and_starttls() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    for (port, mode) in [(lab.imaps_port, "ssl"), (lab.imap_port, "starttls")] {
        let out = lab
            .python(vec![
                "--tls".to_string(),
                mode.into(),
                lab.ca_file.display().to_string(),
                "imap".into(),
                lab.proxy_ip.to_string(),
                port.to_string(),
                "pass".into(),
                "tlsuser@example.com".into(),
            ])
            .await;
        let expected = lab
            .expected_backend("tlsuser@example.com")
            .await
            .to_string();
        assert_eq!(
            out,
            vec![format!("tlsuser@example.com\tOK\t{expected}")],
            "mode {mode}"
        );
    }
}

/// A TLS client trusting `ca_pems`; returns the stream and the certificate the server sent.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca_pems: &[String],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
    let mut roots = RootCertStore::empty();
    for pem in ca_pems {
        for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, cert)
}

async fn tls_command(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    cmd: &str,
    tag: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !cmd.is_empty() {
        s.write_all(cmd.as_bytes()).await.unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got
        .split(|b| *b == b'\n')
        .any(|l: &[u8]| l.starts_with(tag.as_bytes()))
    {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "closed while waiting for {tag:?}: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Certificate rotation: after a reload, new connections get the new certificate while an
/// open session keeps working; a reload with a broken key changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rotates_the_certificate_for_new_connections_only() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let addr = lab.addr(lab.imaps_port);
    let ca1 = std::fs::read_to_string(&lab.ca_file).unwrap();
    let (ca2, ca2_pem) = common::make_ca();
    let cas = [ca1, ca2_pem];

    let (mut old, old_cert) = tls_connect(addr, &cas).await;
    tls_command(&mut old, "", "* OK").await;
    let r = tls_command(&mut old, "a LOGIN rotate@example.com pass\r\n", "a ").await;
    assert!(r.contains("a OK"), "{r}");

    let conf = lab.dir.path().join("proxy.conf");
    let reload = || {
        let config = director_config::Config::load(&conf).unwrap();
        lab.proxy
            .reload(director_proxy::ProxySettings::from_config(&config).unwrap())
    };
    let (cert, key) = common::make_leaf(&ca2, &[lab.proxy_ip.to_string()]);
    std::fs::write(lab.dir.path().join("proxy-cert.pem"), cert).unwrap();
    std::fs::write(lab.dir.path().join("proxy-key.pem"), key).unwrap();
    let summary = reload().expect("reload with the new certificate");
    assert!(summary.need_restart.is_empty(), "{summary:?}");

    let (mut new, new_cert) = tls_connect(addr, &cas).await;
    assert_ne!(
        new_cert, old_cert,
        "a new connection gets the new certificate"
    );
    tls_command(&mut new, "", "* OK").await;
    let r = tls_command(&mut new, "a LOGIN rotate2@example.com pass\r\n", "a ").await;
    assert!(r.contains("a OK"), "{r}");
    let r = tls_command(&mut old, "b NOOP\r\n", "b ").await;
    assert!(r.contains("b OK"), "the open session is untouched: {r}");

    // A key that does not parse: the reload fails and the running certificate stays.
    std::fs::write(lab.dir.path().join("proxy-key.pem"), "not a key\n").unwrap();
    let e = reload().expect_err("a broken key is refused");
    assert!(e.to_string().contains("ssl_key"), "{e}");
    let (_s, cert) = tls_connect(addr, &cas).await;
    assert_eq!(
        cert, new_cert,
        "still the certificate of the last good reload"
    );

    // The worker count is fixed at start: a reload names it and keeps serving.
    let (cert, key) = common::make_leaf(&ca2, &[lab.proxy_ip.to_string()]);
    std::fs::write(lab.dir.path().join("proxy-cert.pem"), cert).unwrap();
    std::fs::write(lab.dir.path().join("proxy-key.pem"), key).unwrap();
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("director_proxy_workers = 7\n");
    std::fs::write(&conf, text).unwrap();
    let summary = reload().expect("reload");
    assert_eq!(summary.need_restart, ["director_proxy_workers"]);
    let (mut s, _) = tls_connect(addr, &cas).await;
    tls_command(&mut s, "", "* OK").await;
}
