//! Acceptance: the real `doveadm director …` gets the same answers from our directord as from
//! a real Dovecot 2.3 director given the same config and the same command sequence.
//!
//! Both daemons read the same generated Dovecot config (testkit's standalone director: a
//! one-director ring on its own 127.x.y.z address). Ours gets a private `base_dir`/log and no
//! TCP admin port (the real one owns it). Each step runs `doveadm -c CONF [-v|-f tab] director
//! SUB -a SOCKET` against ours, then against Dovecot, and compares the exit code, stdout and
//! stderr, with local times (`YYYY-MM-DD HH:MM:SS`) and the socket paths masked.
//! Needs `apt-get install -y dovecot-core` (the test fails with that hint otherwise).

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::path::Path;
use std::process::Command;

use common::Daemon;
use testkit::{require_dovecot, DirectorOptions, DovecotDirector};

/// Masks `YYYY-MM-DD HH:MM:SS` and the admin socket path.
fn normalize(text: &str, socket: &Path) -> String {
    let text = text.replace(&socket.display().to_string(), "<SOCKET>");
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let shape = b"dddd-dd-dd dd:dd:dd";
    while i < b.len() {
        if i + shape.len() <= b.len()
            && shape
                .iter()
                .zip(&b[i..i + shape.len()])
                .all(|(s, c)| match s {
                    b'd' => c.is_ascii_digit(),
                    other => other == c,
                })
        {
            out.push_str("<TIME>");
            i += shape.len();
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn doveadm(conf: &Path, socket: &Path, global: &[&str], sub: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("doveadm");
    cmd.arg("-c").arg(conf).args(global).arg("director");
    // `-a` goes right after the subcommand, like in the lab recordings.
    let (head, tail) = if sub.first() == Some(&"ring") {
        sub.split_at(2.min(sub.len()))
    } else {
        sub.split_at(1.min(sub.len()))
    };
    cmd.args(head).arg("-a").arg(socket).args(tail);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "run doveadm ({e}); install it with `{}`",
            testkit::INSTALL_HINT
        )
    });
    (
        out.status.code().unwrap_or(-1),
        normalize(&String::from_utf8_lossy(&out.stdout), socket),
        normalize(&String::from_utf8_lossy(&out.stderr), socket),
    )
}

#[test]
fn real_doveadm_sees_the_same_director() {
    require_dovecot();
    let real = DovecotDirector::start(DirectorOptions::new("127.0.1.1 127.0.1.2 127.0.1.3"))
        .expect("start real Dovecot director");
    let conf = real.config_path();
    let ours = Daemon::start_with_file(
        &conf,
        &[
            "-o",
            "service/director/inet_listener/director-doveadm/port=0",
        ],
    );
    let users = ours.dir.path().join("users.txt");
    std::fs::write(&users, "user1\nuser2@example.com\nuser4\nnosuchuser\n").unwrap();
    let users = users.to_str().unwrap().to_string();

    let steps: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec![], vec!["status"]),
        (vec!["-f", "tab"], vec!["status"]),
        (vec![], vec!["ring", "status"]),
        (vec!["-f", "tab"], vec!["ring", "status"]),
        (vec![], vec!["dump"]),
        (vec![], vec!["add", "127.0.1.4"]),
        (vec!["-v"], vec!["add", "127.0.1.5", "50"]),
        (vec![], vec!["add", "127.0.1.4", "150"]),
        (vec![], vec!["add", "127.0.1.6", "0"]),
        (vec![], vec!["add", "127.0.1.9", "5000"]),
        (vec![], vec!["add", "-t", "tagA", "127.0.1.7"]),
        (vec![], vec!["add", "127.0.1.8@tagB", "20"]),
        (vec![], vec!["add", "localhost", "10"]),
        (vec![], vec!["status"]),
        (vec![], vec!["update", "127.0.1.4", "70"]),
        (vec!["-v"], vec!["update", "127.0.1.4", "80"]),
        (vec![], vec!["update", "127.0.9.9", "70"]),
        (vec![], vec!["down", "127.0.1.2"]),
        (vec![], vec!["down", "127.0.1.2"]),
        (vec![], vec!["down", "127.0.9.9"]),
        (vec!["-v"], vec!["down", "127.0.1.3"]),
        (vec![], vec!["status"]),
        (vec![], vec!["dump"]),
        (vec![], vec!["up", "127.0.1.2"]),
        (vec!["-v"], vec!["up", "127.0.1.3"]),
        (vec![], vec!["up", "127.0.9.9"]),
        (vec!["-f", "tab"], vec!["status"]),
        (vec![], vec!["move", "user1", "127.0.1.1"]),
        (vec!["-v"], vec!["move", "user2@example.com", "127.0.1.2"]),
        (vec![], vec!["move", "user3", "127.0.9.9"]),
        (vec![], vec!["move", "user4", "127.0.1.7"]),
        (vec![], vec!["status", "user1"]),
        (vec!["-f", "tab"], vec!["status", "USER1"]),
        (vec![], vec!["status", "nosuchuser"]),
        (vec![], vec!["status", "user4", "tagA"]),
        (vec![], vec!["status", "user4", "notag"]),
        (vec![], vec!["status", "42"]),
        (vec![], vec!["map", "-f", &users]),
        (vec!["-f", "tab"], vec!["map", "-f", &users, "127.0.1.1"]),
        (vec![], vec!["map", "-f", &users, "127.0.9.9"]),
        (vec![], vec!["map", "-u", "user1"]),
        (vec![], vec!["kick", "user1"]),
        (vec!["-v"], vec!["kick", "user1"]),
        (vec![], vec!["kick", "-f", "myfield", "value1"]),
        (vec![], vec!["flush", "127.0.1.1"]),
        (vec!["-v"], vec!["flush", "-F", "127.0.1.2"]),
        (vec![], vec!["flush", "127.0.9.9"]),
        (vec![], vec!["flush", "-F", "all"]),
        (vec![], vec!["remove", "127.0.1.5"]),
        (vec!["-v"], vec!["remove", "127.0.1.9"]),
        (vec![], vec!["remove", "127.0.1.5"]),
        (vec![], vec!["remove", "127.0.0.1"]),
        (vec![], vec!["remove", "127.0.1.3"]),
        (vec![], vec!["status"]),
        (vec![], vec!["dump"]),
        (vec!["-f", "tab"], vec!["dump"]),
        (vec![], vec!["ring", "remove", "127.0.9.99", "9"]),
        (vec![], vec!["ring", "status"]),
        (vec![], vec!["frobnicate"]),
    ];

    let mut failures = Vec::new();
    let mut outputs = Vec::new();
    for (global, sub) in &steps {
        let a = doveadm(&conf, &ours.socket, global, sub);
        let b = doveadm(&conf, &real.admin_socket_path(), global, sub);
        outputs.push(a.clone());
        if a != b {
            failures.push(format!(
                "doveadm {} director {}:\n  ours:    {a:?}\n  dovecot: {b:?}",
                global.join(" "),
                sub.join(" ")
            ));
        }
    }
    // Guard against comparing two empty outputs: the run must have produced real answers.
    assert_eq!(outputs[0].0, 0);
    assert!(outputs[0].1.contains("mail server ip") && outputs[0].1.contains("127.0.1.3"));
    assert!(outputs
        .iter()
        .any(|o| o.1.contains("doveadm director add -a <SOCKET>")));
    assert!(outputs.iter().any(|o| o.0 == 68), "a NOTFOUND step");
    assert!(
        outputs.iter().any(|o| o.0 == 75),
        "a TRYAGAIN/too large step"
    );
    assert!(outputs
        .iter()
        .any(|o| o.1.contains("127.0.1.7") && o.1.contains("<TIME>")));
    assert!(
        failures.is_empty(),
        "{} of {} steps differ:\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n")
    );
}
