//! IMAP through the proxy against real Dovecot backends, with Python's imaplib as the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
        "imap".to_string(),
        lab.proxy_ip.to_string(),
        lab.imap_port.to_string(),
        "plain".into(),
        lab.ca_file.display().to_string(),
        "pass".into(),
    ];
    args.extend(us.iter().cloned());
    let out = lab.python(args).await;
    assert_eq!(out.len(), us.len(), "{out:?}");
    let mut seen = std::collections::HashSet::new();
    for line in &out {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[1], "OK", "{line}");
        let expected = lab.expected_backend(f[0]);
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
        .log_with(lab.expected_backend(&us[0]), "rip=127.0.0.1")
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
            "imap".into(),
            lab.proxy_ip.to_string(),
            lab.imap_port.to_string(),
            "plain".into(),
            lab.ca_file.display().to_string(),
            "wrong".into(),
            "victim@example.com".into(),
        ])
        .await;
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains("\tNO\t") && out[0].contains("AUTHENTICATIONFAILED"),
        "{out:?}"
    );
    let ip = lab.expected_backend("victim@example.com");
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
    let expected = lab.expected_backend("busy@example.com").to_string();
    assert!(out.iter().all(|l| *l == expected), "{out:?} vs {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_implicit_tls_and_starttls() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    for (port, mode) in [(lab.imaps_port, "ssl"), (lab.imap_port, "starttls")] {
        let out = lab
            .python(vec![
                "imap".into(),
                lab.proxy_ip.to_string(),
                port.to_string(),
                mode.into(),
                lab.ca_file.display().to_string(),
                "pass".into(),
                "tlsuser@example.com".into(),
            ])
            .await;
        let expected = lab.expected_backend("tlsuser@example.com").to_string();
        assert_eq!(
            out,
            vec![format!("tlsuser@example.com\tOK\t{expected}")],
            "mode {mode}"
        );
    }
}
