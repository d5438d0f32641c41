//! Submission (smtplib) and ManageSieve (raw client) through the proxy to real Dovecot
//! submission and managesieve backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::{init_tracing, Lab, LabOptions, Raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_and_managesieve_logins_reach_the_users_backend() {
    init_tracing();
    testkit::require_submission_and_sieve();
    let lab = Lab::start(LabOptions {
        backend_submission_sieve: true,
        ..LabOptions::default()
    })
    .await;
    let user = "submitter@example.com";
    let ip = lab.expected_backend(user).await;
    for (mode, pass, want) in [
        ("plain", "pass", "OK"),
        ("starttls", "pass", "OK"),
        ("plain", "bad", "NO"),
    ] {
        let out = lab
            .python(vec![
                "--tls".to_string(),
                mode.into(),
                lab.ca_file.display().to_string(),
                "submission".into(),
                lab.proxy_ip.to_string(),
                lab.submission_port.to_string(),
                pass.into(),
                user.into(),
            ])
            .await;
        // USER<TAB>OK|NO<TAB>detail
        let status = out[0].split('\t').nth(1).unwrap_or_default();
        assert!(status.starts_with(want), "mode {mode} pass {pass}: {out:?}");
    }
    let log = lab
        .log_with(ip, "submission-login: Info: Login: user=<submitter")
        .await;
    assert!(
        log.lines().any(|l| l
            .contains("submission-login: Info: Login: user=<submitter@example.com>")
            && l.contains("rip=127.0.0.1")),
        "{log}"
    );

    // ManageSieve: AUTHENTICATE "PLAIN" with an initial response.
    let mut c = Raw::connect(lab.addr(lab.sieve_port)).await;
    c.until("OK").await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pass"));
    c.send(&format!("AUTHENTICATE \"PLAIN\" \"{b64}\"\r\n"))
        .await;
    let r = c.until("OK").await;
    assert!(r.last().unwrap().starts_with("OK"), "{r:?}");
    c.send("LISTSCRIPTS\r\n").await;
    let r = c.until("OK").await;
    assert!(r.last().unwrap().starts_with("OK"), "{r:?}");
    c.send("LOGOUT\r\n").await;
    let log = lab
        .log_with(ip, "managesieve-login: Info: Login: user=<submitter")
        .await;
    assert!(
        log.lines()
            .any(|l| l.contains("managesieve-login: Info: Login: user=<submitter@example.com>")),
        "{log}"
    );
}
