//! POP3 (poplib) and LMTP (smtplib.LMTP) through the proxy against real Dovecot backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{init_tracing, Lab, LabOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_fans_out_and_pop3_reads_from_the_right_backend() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    // Pick recipients until they cover all three backends.
    let mut rcpts: Vec<String> = Vec::new();
    let mut covered = std::collections::HashSet::new();
    for i in 0..200 {
        let u = format!("rcpt{i}@example.com");
        let b = lab.expected_backend(&u).await;
        if covered.insert(b) || rcpts.len() < 5 {
            rcpts.push(u);
        }
        if covered.len() == 3 && rcpts.len() >= 5 {
            break;
        }
    }
    assert_eq!(covered.len(), 3);
    let mut args = vec![
        "lmtp".to_string(),
        lab.proxy_ip.to_string(),
        lab.lmtp_port.to_string(),
        "sender@example.com".into(),
        // All recipients in one transaction.
        rcpts.len().to_string(),
    ];
    args.extend(rcpts.iter().cloned());
    let out = lab.python(args).await;
    assert_eq!(out.len(), rcpts.len(), "{out:?}");
    for (line, rcpt) in out.iter().zip(&rcpts) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[0], rcpt, "replies in RCPT order: {out:?}");
        assert_eq!(f[1], "250", "{line}");
        assert!(
            f[2].contains(rcpt.as_str()),
            "per-recipient reply names the recipient: {line}"
        );
    }
    // Each message is in the mailbox on the recipient's backend, and only there.
    for rcpt in &rcpts {
        let ip = lab.expected_backend(rcpt).await;
        for b in &lab.backends {
            let new = b.mail_dir().join(rcpt.to_lowercase()).join("Maildir/new");
            let n = std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0);
            if std::net::IpAddr::V4(b.ip()) == ip {
                assert_eq!(n, 1, "{rcpt} has one message on {ip}");
            } else {
                assert_eq!(n, 0, "{rcpt} has no mail on {}", b.ip());
            }
        }
    }
    // POP3 through the proxy sees the delivered message (so it reached the right backend),
    // over plain, STLS and implicit TLS.
    for (port, mode) in [
        (lab.pop3_port, "plain"),
        (lab.pop3_port, "starttls"),
        (lab.pop3s_port, "ssl"),
    ] {
        let mut args = vec![
            "--tls".to_string(),
            mode.into(),
            lab.ca_file.display().to_string(),
            "pop3".into(),
            lab.proxy_ip.to_string(),
            port.to_string(),
            "pass".into(),
        ];
        args.extend(rcpts.iter().cloned());
        let out = lab.python(args).await;
        for (line, rcpt) in out.iter().zip(&rcpts) {
            assert_eq!(*line, format!("{rcpt}\tOK\t1"), "mode {mode}");
        }
        // The backend logged the POP3 login with the client's address (XCLIENT).
        let log = lab
            .log_with(
                lab.expected_backend(&rcpts[0]).await,
                "pop3-login: Info: Login: user=<",
            )
            .await;
        assert!(
            log.contains("pop3-login: Info: Login: user=<") && log.contains("rip=127.0.0.1"),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_wrong_password_is_relayed() {
    init_tracing();
    let lab = Lab::start(LabOptions::default()).await;
    let out = lab
        .python(vec![
            "--tls".to_string(),
            "plain".into(),
            lab.ca_file.display().to_string(),
            "pop3".into(),
            lab.proxy_ip.to_string(),
            lab.pop3_port.to_string(),
            "wrong".into(),
            "popvictim@example.com".into(),
        ])
        .await;
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains("\tNO\t") && out[0].contains("[AUTH]"),
        "{out:?}"
    );
}
