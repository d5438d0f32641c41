//! Running as a service: the notify protocol of a systemd `Type=notify` unit
//! (`sd_notify(3)`), the unit file, its system user and sample config in `contrib/systemd/`,
//! and directord(8), which says what `--help` says.
//!
//! systemd itself does not run here (no init in the test machine), so the tests play its
//! part: a datagram socket named by `NOTIFY_SOCKET`, and for the unit's `User=`,
//! capabilities and directories, `setpriv(1)` and directories made as systemd makes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Hang guard for one notification; the daemon sends each at once.
const WAIT: Duration = Duration::from_secs(20);

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Starts directord with `NOTIFY_SOCKET` set to `name`; returns it and its admin socket.
fn start(dir: &Path, notify_name: &str) -> (Child, PathBuf) {
    let config = dir.join("directord.conf");
    std::fs::write(
        &config,
        format!(
            "base_dir = {}\nlog_path = {}\nstate_dir = {}\n\
             director_mail_servers = 127.0.1.1 127.0.1.2\n",
            dir.join("run").display(),
            dir.join("directord.log").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("-c")
        .arg(&config)
        .env("NOTIFY_SOCKET", notify_name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn directord");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let socket = line
        .trim_end()
        .strip_prefix("directord: admin socket ")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .into();
    (child, socket)
}

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the hang guard");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The admin socket answers (the daemon is serving).
fn serving(socket: &Path) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"VERSION\tdirector-doveadm\t1\t0\nHOST-LIST\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    greeting.starts_with("VERSION\t") && first.starts_with("127.0.1.1\t")
}

fn ready_reload_and_stop(notify_name: &str, sock: &UnixDatagram, dir: &Path) {
    let (mut child, admin) = start(dir, notify_name);
    let ready = next(sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // By READY=1 the listeners are bound: the admin socket answers.
    assert!(serving(&admin));
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());

    kill(pid, Signal::SIGHUP).unwrap();
    let reloading = next(sock);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec.parse::<u64>().unwrap() > 0);
    let ready = next(sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");

    kill(pid, Signal::SIGTERM).unwrap();
    let stopping = next(sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn ready_reloading_and_stopping_reach_a_notify_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    ready_reload_and_stop(path.to_str().unwrap(), &sock, dir.path());
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    // systemd names its socket in the abstract namespace as `@...`.
    let name = format!("directord-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    ready_reload_and_stop(&format!("@{name}"), &sock, dir.path());
}

/// `systemd-analyze verify` finds nothing to say about the unit (its `ExecStart` pointed at
/// the binary under test, since verify checks that the program exists).
#[test]
fn the_unit_file_verifies() {
    let unit = std::fs::read_to_string(repo_file("contrib/systemd/directord.service")).unwrap();
    assert!(unit.contains("Type=notify"));
    let dir = tempfile::tempdir().unwrap();
    let here = unit.replace("/usr/local/sbin/directord", env!("CARGO_BIN_EXE_directord"));
    let path = dir.path().join("directord.service");
    std::fs::write(&path, here).unwrap();
    // Its Documentation= names our man pages: verify looks them up with man(1).
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", testkit::man_page_path(""))
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}; install it with `apt-get install -y systemd`")
        });
    let said = String::from_utf8_lossy(&out.stderr);
    // Only lines about our unit count: verify also loads the units it depends on.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("directord.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{said}");
}

/// The values of `key=` lines in a unit file.
fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn unit_text() -> String {
    std::fs::read_to_string(repo_file("contrib/systemd/directord.service")).unwrap()
}

/// The unit runs as the system user of `directord.sysusers`, never as root, and keeps only
/// the capability to bind the mail ports.
#[test]
fn the_unit_runs_as_its_own_system_user_with_only_the_bind_capability() {
    let unit = unit_text();
    let user = directive(&unit, "User");
    assert_eq!(user, ["directord"], "{unit}");
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        assert_eq!(directive(&unit, key), ["CAP_NET_BIND_SERVICE"], "{key}");
    }
    assert_eq!(directive(&unit, "NoNewPrivileges"), ["yes"]);
    // systemd-sysusers creates that user (in a scratch root, not on this machine).
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo_file("contrib/systemd/directord.sysusers"))
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-sysusers: {e}; install it with `apt-get install -y systemd`")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let entry: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("directord:"))
        .unwrap_or_else(|| panic!("no directord user in {passwd}"))
        .split(':')
        .collect();
    assert_ne!(entry[2], "0", "{passwd}");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("directord:")),
        "{group}"
    );
}

/// The unit's `base_dir` and `state_dir` (its `RuntimeDirectory` and `StateDirectory`, made
/// by systemd with the unit's modes and owned by `User=`) are where the sample config puts
/// them, and `directord` runs in them as an unprivileged user whose only capability is the
/// unit's (`setpriv` does what systemd does with `User=`, `AmbientCapabilities=`,
/// `CapabilityBoundingSet=` and `NoNewPrivileges=`): it accepts the directory, binds IMAP's
/// port 143, saves its state there and stops cleanly. Without the capability it cannot bind.
#[test]
fn as_the_unit_runs_it_an_unprivileged_directord_binds_port_143_in_systemds_directories() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test plays systemd, which starts services as root: run it as root"
    );
    let unit = unit_text();
    let mode = |key: &str| {
        let text = directive(&unit, key);
        u32::from_str_radix(text.first().unwrap_or_else(|| panic!("no {key}")), 8).unwrap()
    };
    let runtime = directive(&unit, "RuntimeDirectory")[0].to_string();
    let state = directive(&unit, "StateDirectory")[0].to_string();
    // The sample config uses what systemd makes of them.
    let shown = sample_config_settings();
    assert!(
        shown.contains(&format!("base_dir = /run/{runtime}\n")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("state_dir = /var/lib/{state}\n")),
        "{shown}"
    );

    // `nobody` stands for the unit's user: both are plain unprivileged users.
    let user = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path();
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let made = |name: &str, mode: u32| {
        let path = top.join(name);
        std::fs::DirBuilder::new().mode(mode).create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
        path
    };
    let run = made("run", mode("RuntimeDirectoryMode"));
    let state_dir = made("state", mode("StateDirectoryMode"));
    // The binary where the unprivileged user can run it (the build tree may be private).
    let bin = top.join("directord");
    std::fs::copy(env!("CARGO_BIN_EXE_directord"), &bin).unwrap();
    let ip = testkit::LoopbackAllocator::new().next_ip();
    let config = top.join("directord.conf");
    std::fs::write(
        &config,
        format!(
            "base_dir = {}\nstate_dir = {}\nlog_path = /dev/stderr\n\
             director_mail_servers = 127.0.1.1\nssl = no\n\
             service imap-login {{\n inet_listener imap {{\n address = {ip}\n port = 143\n }}\n}}\n",
            run.display(),
            state_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let setpriv = |caps: bool| {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--clear-groups")
            .arg("--no-new-privs");
        if caps {
            cmd.args([
                "--inh-caps=+net_bind_service",
                "--ambient-caps=+net_bind_service",
                "--bounding-set=-all,+net_bind_service",
            ]);
        }
        cmd.arg("--").arg(&bin).arg("-c").arg(&config);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    // Without the capability, port 143 is refused: unless the kernel lets anyone bind it,
    // and then the daemon would run (and this test wait) for ever.
    let unprivileged_from: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    assert!(
        unprivileged_from > 143,
        "net.ipv4.ip_unprivileged_port_start is {unprivileged_from}: anyone may bind port 143 \
         here, so the capability cannot be tested; run with `sysctl -w \
         net.ipv4.ip_unprivileged_port_start=1024`"
    );
    let out = setpriv(false).output().unwrap_or_else(|e| {
        panic!("setpriv: {e}; install it with `apt-get install -y util-linux`")
    });
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("Permission denied"),
        "{said}"
    );

    let mut child = setpriv(true).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let stop = |child: &mut Child| {
        let _ = kill(
            Pid::from_raw(i32::try_from(child.id()).unwrap()),
            Signal::SIGTERM,
        );
        child.wait().unwrap()
    };
    if !line.starts_with("directord: admin socket ") {
        stop(&mut child);
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!("directord did not start as the unit's user: {line:?} {err}");
    }
    // The proxy greets on 143; root (an operator's doveadm) reaches the admin socket.
    let mut imap = std::net::TcpStream::connect((ip, 143)).unwrap();
    imap.set_read_timeout(Some(WAIT)).unwrap();
    let mut greeting = String::new();
    BufReader::new(&mut imap).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting:?}");
    assert!(serving(&run.join("director-admin")));
    let status = stop(&mut child);
    assert!(status.success(), "{status:?}");
    use std::os::unix::fs::MetadataExt;
    for name in ["director-state", "director-state.lock"] {
        let meta = std::fs::metadata(state_dir.join(name)).unwrap();
        assert_eq!(meta.uid(), user.uid.as_raw(), "{name}");
    }
}

/// `directord -n` of the sample config.
fn sample_config_settings() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("-c")
        .arg(repo_file("contrib/systemd/directord.conf"))
        .arg("-n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sample config is read as written (its ring addresses are examples; `-n` reads and
/// checks the whole config without binding).
#[test]
fn the_sample_config_is_accepted() {
    let shown = sample_config_settings();
    for line in [
        "base_dir = /run/directord",
        "state_dir = /var/lib/directord",
        "director_servers = 10.0.0.5:9090 10.0.0.6:9090 10.0.0.7:9090",
    ] {
        assert!(shown.contains(line), "{shown}");
    }
}

/// The options a text names: words starting with `-`.
fn options(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',')
        .map(|w| w.trim_end_matches(['.', ')', ';', ':']))
        .filter(|w| {
            w.starts_with('-')
                && w.chars()
                    .nth(1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
        })
        .map(str::to_string)
        .collect()
}

/// Every option `directord --help` lists is in directord(8)'s OPTIONS, and the other way
/// round.
#[test]
fn directord_help_and_its_man_page_list_the_same_options() {
    let help = Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("--help")
        .output()
        .unwrap();
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    let page = testkit::render_man_page("man8/directord.8");
    let section = testkit::man_section(&page, "OPTIONS", "SIGNALS");
    let in_help = options(&help);
    for o in ["-c", "-n", "-o", "-F", "--version", "--settings-table"] {
        assert!(in_help.contains(o), "--help lacks {o}: {help}");
    }
    assert_eq!(
        in_help,
        options(section),
        "--help: {help}\nman page: {section}"
    );
}
