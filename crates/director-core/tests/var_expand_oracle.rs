//! `director_username_hash` templates checked against real doveadm (Dovecot 2.3.19):
//! `doveadm director map -u USER` hashes locally with its own copy of the setting, so it is
//! an exact oracle for our `var_expand` subset.
//!
//! * `recorded_cases_match_doveadm`: 450 recorded (format, user) pairs
//!   (`tests/data/var_expand_doveadm.json`, regenerate with
//!   `tests/data/record_var_expand_oracle.py`).
//! * `live_doveadm_agrees`: runs the installed doveadm now on one user per format.

use std::path::Path;
use std::process::Command;

use director_core::hash::{user_hash, HashFormat};
use serde_json::Value;

fn ours(format: &str, user: &str) -> String {
    let f = HashFormat::parse_lenient(format).expect("template within limits");
    match user_hash(user.as_bytes(), &f) {
        Ok(h) => h.to_string(),
        Err(_) => "ERR".to_string(),
    }
}

#[test]
fn recorded_cases_match_doveadm() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/var_expand_doveadm.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("missing {}: {e}", p.display()));
    let v: Value = serde_json::from_str(&text).expect("json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 400);
    let mut bad = Vec::new();
    for c in cases {
        let (f, u, h) = (
            c["format"].as_str().expect("format"),
            c["user"].as_str().expect("user"),
            c["hash"].as_str().expect("hash"),
        );
        let got = ours(f, u);
        if got != h {
            bad.push(format!("{f:?} {u:?}: ours {got}, doveadm {h}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn live_doveadm_agrees() {
    let probe = Command::new("doveadm").arg("-V").output();
    assert!(
        probe.is_ok(),
        "doveadm not found: install Dovecot with `apt-get install -y dovecot-core`"
    );
    let dir = std::env::temp_dir().join(format!("core-var-expand-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {0}/run\nstate_dir = {0}/state\nprotocols =\nlog_path = {0}/log\n",
            dir.display()
        ),
    )
    .expect("write conf");
    let formats = [
        "%Lu",
        "%Ln",
        "%n@%d",
        "%LRu",
        "%4.256Hu",
        "%8Nu",
        "%-2.2u",
        "%05u",
        "%Du",
        "%Eu",
        "%Xu",
        "%{user",
        "%LLLLLLLLLLLu",
    ];
    let users = ["Mixed.Case@Example.ORG", "12345"];
    let mut bad = Vec::new();
    for f in formats {
        for u in users {
            let out = Command::new("doveadm")
                .arg("-c")
                .arg(&conf)
                .arg("-o")
                .arg(format!("director_username_hash={f}"))
                .args(["director", "map", "-u", u])
                .output()
                .expect("run doveadm");
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let theirs =
                if out.status.success() && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                    s
                } else {
                    "ERR".to_string()
                };
            let got = ours(f, u);
            if got != theirs {
                bad.push(format!("{f:?} {u:?}: ours {got}, doveadm {theirs}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
