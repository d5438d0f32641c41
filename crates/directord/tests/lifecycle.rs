//! Start-up, signals and shutdown of the real binary.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

use common::Daemon;
use nix::sys::signal::Signal;

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("directord {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_argument_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: directord"));
}

#[test]
fn prints_socket_path_and_creates_socket_with_mode_0600() {
    let d = Daemon::start("");
    assert_eq!(d.socket, d.base_dir.join("director-admin"));
    let meta = std::fs::symlink_metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let mut d = Daemon::start("");
    // A connected idle client must not keep the daemon alive.
    let _idle = d.client();
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit();
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
    assert!(!d.socket.exists(), "socket file left behind");
}

#[test]
fn sigint_stops_cleanly() {
    let mut d = Daemon::start("");
    d.signal(Signal::SIGINT);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(!d.socket.exists());
}

#[test]
fn stale_socket_file_is_replaced() {
    let mut d = Daemon::start("");
    // Simulate a crash: kill -9 leaves the socket file behind.
    d.signal(Signal::SIGKILL);
    d.wait_exit();
    assert!(d.socket.exists());
    // Start a second daemon on the same base_dir: it must remove the stale file and serve.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("-c")
        .arg(&d.config)
        .arg("-o")
        .arg(format!("base_dir={}", d.base_dir.display()))
        .arg("-o")
        .arg(format!("log_path={}", d.log.display()))
        .arg("-o")
        .arg(format!(
            "state_dir={}",
            d.dir.path().join("state").display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(out.id() as i32);
    let mut child = out;
    // Wait until it answers (bounded).
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&d.socket) {
            use std::io::Read;
            let mut g = [0u8; 29];
            s.set_read_timeout(Some(common::WAIT)).unwrap();
            s.read_exact(&mut g).unwrap();
            assert_eq!(&g, common::HS);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "second daemon never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn refuses_to_steal_a_live_socket() {
    let d = Daemon::start("");
    let out = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("-c")
        .arg(&d.config)
        .arg("-o")
        .arg(format!("base_dir={}", d.base_dir.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first daemon still serves.
    let mut c = d.client();
    assert_eq!(
        c.request("HOST-LIST-REMOVED"),
        "\n",
        "first daemon broken after the second one failed"
    );
}

#[test]
fn admin_socket_mode_and_owner_follow_the_config() {
    use std::os::unix::fs::MetadataExt;
    // Needs a user and group to give the socket to: `nobody`/`nogroup` exist on Debian.
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .expect("group nogroup");
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test must run as root (it chowns the admin socket)");
    }
    let d = Daemon::start(
        "service director {\n  unix_listener director-admin {\n    mode = 0660\n    user = nobody\n    group = nogroup\n  }\n}\n",
    );
    let meta = std::fs::symlink_metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), nobody.uid.as_raw());
    assert_eq!(meta.gid(), nogroup.gid.as_raw());
}
