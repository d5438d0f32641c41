//! Configuration handling of the real binary: the embedded default, `-n`, `-o`, log paths,
//! and SIGHUP reloading `director_mail_servers`.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::Daemon;
use nix::sys::signal::Signal;

#[test]
fn no_arguments_runs_the_embedded_standalone_config() {
    let runtime = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_directord"))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let socket = runtime.path().join("director").join("director-admin");
    assert_eq!(
        first,
        format!("directord: admin socket {}", socket.display())
    );
    let s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut c = common::Client::from_stream(s);
    c.send(common::HS);
    assert_eq!(
        c.read_line().as_deref(),
        Some("VERSION\tdirector-doveadm\t1\t0")
    );
    assert_eq!(
        c.request("HOST-LIST"),
        "127.0.1.1\t100\t0\t\tU\t0\n127.0.1.2\t100\t0\t\tU\t0\n127.0.1.3\t100\t0\t\tU\t0\n\n"
    );
    assert_eq!(
        c.request("DIRECTOR-LIST"),
        "127.0.0.1\t0\tself\t0\tring synced\t0\n\n"
    );
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!socket.exists());
}

#[test]
fn dash_n_prints_the_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("d.conf");
    std::fs::write(
        &conf,
        "director_mail_servers = 127.0.1.5 127.0.1.6@x\ndirector_user_expire = 20 min\nprotocols = imap\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("-c")
        .arg(&conf)
        .args(["-o", "director_user_kick_delay=5 s", "-n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("# director "), "{text}");
    assert!(
        text.contains("director_mail_servers = 127.0.1.5 127.0.1.6@x\n"),
        "{text}"
    );
    assert!(text.contains("director_user_expire = 20 mins\n"), "{text}");
    assert!(
        text.contains("director_user_kick_delay = 5 secs\n"),
        "{text}"
    );
}

#[test]
fn config_errors_name_the_line_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("d.conf");
    std::fs::write(&conf, "base_dir = /tmp\ndirector_mail_servrs = 127.0.1.1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("d.conf:2"), "{err}");
    assert!(err.contains("director_mail_servrs"), "{err}");
}

#[test]
fn overrides_win_over_the_file() {
    let d = Daemon::start_with_args("", &["-o", "director_mail_servers=127.0.1.9"]);
    assert_eq!(
        d.client().request("HOST-LIST"),
        "127.0.1.9\t100\t0\t\tU\t0\n\n"
    );
}

#[test]
fn info_and_error_logs_go_to_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("info.log");
    let d = Daemon::start(&format!("info_log_path = {}\n", info.display()));
    let mut s = d.connect_raw();
    std::io::Write::write_all(&mut s, b"BAD\n").unwrap();
    let _ = common::raw_read_to_close(&mut s);
    d.wait_log("doveadm not compatible");
    // The start-up line may be written just after the first client was served: wait for it.
    let deadline = std::time::Instant::now() + common::WAIT;
    let info_text = loop {
        let t = std::fs::read_to_string(&info).unwrap_or_default();
        if t.contains("directord started") || std::time::Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        info_text.contains("directord started"),
        "info log: {info_text}"
    );
    assert!(
        !info_text.contains("doveadm not compatible"),
        "error went to the info log"
    );
    assert!(
        !d.log_text().contains("directord started"),
        "info went to the error log"
    );
}

#[test]
fn other_services_settings_are_ignored_and_logged_at_debug() {
    let d = Daemon::start(
        "mail_location = maildir:~/Maildir\nservice imap-login {\n  inet_listener imap {\n    port = 0\n  }\n}\n",
    );
    // Test daemons log at debug (DIRECTORD_LOG=debug); Daemon::start sends debug to log_path.
    let text = d.wait_log("service imap-login");
    assert!(text.contains("mail_location"), "{text}");
    assert_eq!(d.client().request("HOST-LIST-REMOVED"), "\n");
}

#[test]
fn sighup_reloads_mail_servers() {
    let d = Daemon::start("");
    let mut c = d.client();
    assert_eq!(c.request("HOST-LIST-REMOVED"), "\n");
    // New config: .4 added, .3 dropped.
    let text = std::fs::read_to_string(&d.config).unwrap().replace(
        "director_mail_servers = 127.0.1.1 127.0.1.2 127.0.1.3",
        "director_mail_servers = 127.0.1.1 127.0.1.2 127.0.1.4",
    );
    std::fs::write(&d.config, text).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log("director_mail_servers reloaded");
    // Reload merges: .4 is added, .3 stays live until an operator removes it.
    assert_eq!(
        c.request("HOST-LIST"),
        "127.0.1.1\t100\t0\t\tU\t0\n127.0.1.2\t100\t0\t\tU\t0\n127.0.1.3\t100\t0\t\tU\t0\n127.0.1.4\t100\t0\t\tU\t0\n\n"
    );
    // The new list is the HOST-LIST-REMOVED baseline.
    assert_eq!(c.request("HOST-REMOVE\t127.0.1.4"), "OK\n");
    assert_eq!(c.request("HOST-REMOVE\t127.0.1.3"), "OK\n");
    assert_eq!(c.request("HOST-LIST-REMOVED"), "127.0.1.4\n\n");
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let d = Daemon::start("");
    std::fs::write(
        &d.config,
        "director_mail_servers = not an ip list !!!\n{{{\n",
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log("reload failed, keeping the old configuration");
    assert_eq!(
        d.client().request("HOST-LIST"),
        "127.0.1.1\t100\t0\t\tU\t0\n127.0.1.2\t100\t0\t\tU\t0\n127.0.1.3\t100\t0\t\tU\t0\n\n"
    );
}
