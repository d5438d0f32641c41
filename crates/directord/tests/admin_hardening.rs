//! The admin listeners' hardening, each point shown as the attack it stops: the TCP listener
//! refuses wildcards at start, serves only allowed peers, can demand TLS client certificates,
//! has its own connection limit and idle timeout; `base_dir` must be ours alone.
//!
//! Every test starts the real `directord`; the lock-out test uses the real Dovecot `doveadm`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::doveadm::RealDoveadm;
use common::{connect_from, read_to_close, Daemon, HS, WAIT};
use testkit::{free_port, LoopbackAllocator, INSTALL_HINT};

const GREETING: &[u8] = b"VERSION\tdirector-doveadm\t1\t0\n";
/// What the log says when the idle timeout closes a TCP admin client.
const IDLE_CLOSE: &str = "admin client idle too long (director_admin_idle_timeout), closing";
const REFUSED: &str = "admin connection refused: address not in director_admin_allow_nets";

/// A daemon with one `inet_listener director-doveadm` on a fresh loopback address.
fn start_with_tcp(
    alloc: &mut LoopbackAllocator,
    top: &str,
    listener: &str,
) -> (Daemon, SocketAddr) {
    let ip = alloc.next_ip();
    let port = free_port(IpAddr::V4(ip)).unwrap();
    let d = Daemon::start(&format!(
        "{top}\nservice director {{\n  inet_listener director-doveadm {{\n    address = {ip}\n    \
         port = {port}\n{listener}\n  }}\n}}\n"
    ));
    (d, SocketAddr::new(IpAddr::V4(ip), port))
}

/// Sends `request` lines and reads until `want` bytes arrived.
fn exchange(s: &mut TcpStream, request: &str, want: usize) -> String {
    s.write_all(request.as_bytes()).unwrap();
    let mut got = vec![0u8; want];
    s.read_exact(&mut got).unwrap();
    String::from_utf8(got).unwrap()
}

/// Waits (bounded by [`WAIT`]) for `child` to exit and returns its status, stdout and
/// stderr; past the bound it is killed and the test fails with `hang`.
fn finish_within(
    mut child: std::process::Child,
    hang: &str,
) -> (std::process::ExitStatus, String, String) {
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{hang}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

/// Runs `directord ARGS` that must fail at start; returns its exit code and stderr.
fn start_must_fail(args: &[&str], env: &[(&str, &Path)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_directord"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let (status, stdout, stderr) = finish_within(
        child,
        &format!("directord {args:?} kept running; it should have refused to start"),
    );
    assert!(
        !stdout.contains("admin socket"),
        "it must not have announced a socket: {stdout}"
    );
    (status.code().unwrap_or(-1), stderr)
}

/// Runs the real `doveadm -c CONF director status -a TARGET`, bounded by [`WAIT`]; returns
/// (exit code, stdout, stderr).
fn real_doveadm_status(conf: &Path, target: &str) -> (i32, String, String) {
    testkit::require_dovecot();
    let child = Command::new("doveadm")
        .arg("-c")
        .arg(conf)
        .args(["director", "status", "-a", target])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run doveadm ({e}); install it with `{INSTALL_HINT}`"));
    let (status, out, err) = finish_within(
        child,
        &format!("doveadm director status -a {target} did not finish: locked out"),
    );
    (status.code().unwrap_or(-1), out, err)
}

// --- 1. The TCP admin listener -------------------------------------------------------------

/// A wildcard address would put `HOST-SET`/`USER-MOVE` on every interface: refused at start
/// (config check, before anything is bound), naming the setting.
#[test]
fn a_wildcard_tcp_admin_listener_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "address = *\n port = 9091",
            "inet_listener director-doveadm: address = * is a wildcard",
        ),
        (
            "address = ::\n port = 9091",
            "inet_listener director-doveadm: address = :: is a wildcard",
        ),
        (
            "address = 0.0.0.0\n port = 9091",
            "address = 0.0.0.0 is a wildcard",
        ),
        (
            "port = 9091",
            "inet_listener director-doveadm has no address, and listen = *, :: is a wildcard",
        ),
    ];
    for (body, want) in cases {
        let conf = dir.path().join("d.conf");
        std::fs::write(
            &conf,
            common::config_text(
                dir.path(),
                &format!(
                    "service director {{\n inet_listener director-doveadm {{\n {body}\n }}\n}}\n"
                ),
            ),
        )
        .unwrap();
        let (code, stderr) = start_must_fail(&["-c", conf.to_str().unwrap()], &[]);
        assert_eq!(code, 78, "a config error: {stderr}");
        assert!(stderr.contains(want), "{body:?}: {stderr}");
        assert!(
            stderr.contains("d.conf:"),
            "names the file and line: {stderr}"
        );
    }
}

/// The attack: a peer that reaches the TCP listener sets a server of its own and moves a
/// user there. An allowed peer still can (that is what the listener is for); a peer outside
/// `director_admin_allow_nets` is logged and closed before it gets even the greeting, and
/// its commands change nothing.
#[test]
fn peers_outside_the_allow_list_are_closed_without_a_reply() {
    let mut alloc = LoopbackAllocator::new();
    let admin_ip = alloc.next_ip();
    let attacker_ip = alloc.next_ip();
    let (d, addr) = start_with_tcp(
        &mut alloc,
        &format!("director_admin_allow_nets = {admin_ip}/32"),
        "",
    );
    let rogue = "127.0.1.66";
    let attack = format!(
        "VERSION\tdirector-doveadm\t1\t0\nHOST-SET\t{rogue}\t100\nUSER-MOVE\tvictim\t{rogue}\n"
    );

    let mut s = connect_from(attacker_ip, addr);
    // The attacker may get a reset for the lines it sent; it never gets a byte from us.
    let _ = s.write_all(attack.as_bytes());
    assert_eq!(read_to_close(&mut s), b"", "not even the greeting");
    let log = d.wait_log(REFUSED);
    assert!(
        log.lines().any(|l| l.contains(REFUSED)
            && l.contains(&attacker_ip.to_string())
            && l.contains("WARN")),
        "the refused peer's address is logged: {log}"
    );
    let mut local = d.client();
    assert!(
        !local.request("HOST-LIST").contains(rogue),
        "the refused HOST-SET changed nothing"
    );

    // The same commands from the allowed address work, over plain TCP as with Dovecot.
    let mut s = connect_from(admin_ip, addr);
    let got = exchange(&mut s, &attack, GREETING.len() + "OK\nOK\n".len());
    assert_eq!(got, "VERSION\tdirector-doveadm\t1\t0\nOK\nOK\n");
    assert!(local.request("HOST-LIST").contains(rogue));
}

/// Many idle TCP clients (the TCP limit + 50) cannot lock the local `doveadm` out of the
/// UNIX socket: the TCP listener has slots of its own. Real Dovecot `doveadm` over the UNIX
/// socket answers while the TCP pool is full, and over TCP once the idle clients left.
#[test]
fn idle_tcp_clients_cannot_lock_out_the_unix_socket() {
    const TCP_LIMIT: usize = 20;
    let mut alloc = LoopbackAllocator::new();
    let (d, addr) = start_with_tcp(
        &mut alloc,
        &format!("director_admin_tcp_max_connections = {TCP_LIMIT}"),
        "",
    );
    let mut idle = Vec::new();
    for i in 0..TCP_LIMIT + 50 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        if i < TCP_LIMIT {
            let mut g = [0u8; GREETING.len()];
            s.read_exact(&mut g).unwrap();
            assert_eq!(&g[..], GREETING);
        }
        idle.push(s);
    }
    d.wait_log("admin connection limit reached");
    let doveadm = RealDoveadm::for_daemon(&d);
    let conf = doveadm.conf();
    let (code, out, err) = real_doveadm_status(conf, d.socket.to_str().unwrap());
    assert_eq!(code, 0, "doveadm over the UNIX socket: {out}{err}");
    assert!(out.contains("127.0.1.1"), "{out}");

    drop(idle);
    let (code, out, err) = real_doveadm_status(conf, &addr.to_string());
    assert_eq!(
        code, 0,
        "real doveadm -a ip:port from an allowed address: {out}{err}"
    );
    assert!(out.contains("127.0.1.3"), "{out}");
}

/// An idle TCP client is closed after `director_admin_idle_timeout`; an idle UNIX client is
/// not (Dovecot's local admin connections have no timeout).
#[test]
fn an_idle_tcp_client_is_closed_after_the_idle_timeout() {
    let mut alloc = LoopbackAllocator::new();
    let (d, addr) = start_with_tcp(&mut alloc, "director_admin_idle_timeout = 1 sec", "");
    let mut local = d.client();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    assert_eq!(
        exchange(&mut s, "VERSION\tdirector-doveadm\t1\t0\n", GREETING.len()).as_bytes(),
        GREETING
    );
    assert_eq!(read_to_close(&mut s), b"", "closed without a reply");
    assert!(
        started.elapsed().as_millis() >= 900,
        "not before the timeout"
    );
    let log = d.wait_log(IDLE_CLOSE);
    assert!(log.contains(&addr.ip().to_string()), "{log}");
    // The UNIX client, idle all that time, still works.
    assert_eq!(local.request("HOST-LIST-REMOVED"), "\n");
}

// --- TLS with client certificates ---------------------------------------------------------

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
    stranger_ca_pem: String,
}

fn make_pki(server_ip: IpAddr) -> Pki {
    use common::tls::{make_ca, make_leaf};
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let ca = make_ca("director admin CA");
    let other = make_ca("some other CA");
    Pki {
        ca_pem: ca.0.pem(),
        server: make_leaf(&ca, &server_ip.to_string(), ServerAuth),
        client: make_leaf(&ca, "admin-client", ClientAuth),
        stranger: make_leaf(&other, "admin-client", ClientAuth),
        stranger_ca_pem: other.0.pem(),
    }
}

mod tls_client {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    /// Connects with TLS (trusting `ca_pem`), optionally presenting `client` (cert, key),
    /// sends the handshake and returns the greeting, or why there was none.
    pub async fn greeting(
        addr: SocketAddr,
        ca_pem: &str,
        client: Option<&(String, String)>,
        then: &str,
    ) -> Result<String, String> {
        let config = crate::common::tls::client_config(ca_pem, client);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let run = async {
            let mut s = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            s.write_all(format!("VERSION\tdirector-doveadm\t1\t0\n{then}").as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err(format!("closed after {got:?}"));
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if text.ends_with("\n\n") || (then.is_empty() && text.ends_with('\n')) {
                    return Ok(text);
                }
            }
        };
        tokio::time::timeout(super::WAIT, run)
            .await
            .map_err(|_| "no answer and no close".to_string())?
    }
}

/// `ssl = yes` with `ssl_verify_client_cert = yes`: only a client whose certificate the
/// configured CA signed gets the admin protocol; no certificate, another CA's certificate or
/// plain TCP get nothing.
#[test]
fn tls_listener_serves_only_clients_with_a_certificate_from_ssl_ca() {
    let mut alloc = LoopbackAllocator::new();
    let ip = alloc.next_ip();
    let pki = make_pki(IpAddr::V4(ip));
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let top = format!(
        "ssl_cert = <{}\nssl_key = <{}\nssl_ca = <{}\nssl_verify_client_cert = yes",
        write("cert.pem", &pki.server.0),
        write("key.pem", &pki.server.1),
        write("ca.pem", &pki.ca_pem)
    );
    let port = free_port(IpAddr::V4(ip)).unwrap();
    let d = Daemon::start(&format!(
        "{top}\nservice director {{\n  inet_listener director-doveadm {{\n    address = {ip}\n    \
         port = {port}\n    ssl = yes\n  }}\n}}\n"
    ));
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let got = rt
        .block_on(tls_client::greeting(
            addr,
            &pki.ca_pem,
            Some(&pki.client),
            "HOST-LIST\n",
        ))
        .unwrap();
    assert_eq!(
        got,
        "VERSION\tdirector-doveadm\t1\t0\n127.0.1.1\t100\t0\t\tU\t0\n127.0.1.2\t100\t0\t\tU\t0\n\
         127.0.1.3\t100\t0\t\tU\t0\n\n"
    );

    let refused = rt.block_on(tls_client::greeting(addr, &pki.ca_pem, None, ""));
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let refused = rt.block_on(tls_client::greeting(
        addr,
        &pki.ca_pem,
        Some(&pki.stranger),
        "",
    ));
    assert!(refused.is_err(), "another CA's certificate: {refused:?}");
    // A client that trusts the other CA gets no further either (our server cert fails).
    let refused = rt.block_on(tls_client::greeting(
        addr,
        &pki.stranger_ca_pem,
        Some(&pki.client),
        "",
    ));
    assert!(refused.is_err(), "{refused:?}");
    d.wait_log("admin connection refused: TLS handshake failed");

    // Plain TCP, as real doveadm speaks it: no greeting, closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(HS);
    let got = read_to_close(&mut s);
    assert!(
        !String::from_utf8_lossy(&got).contains("VERSION"),
        "plain TCP to an ssl = yes listener: {got:?}"
    );
}

// --- 6. base_dir ---------------------------------------------------------------------------

/// Starts `directord -c <config with base_dir = DIR>`, which must refuse `DIR`.
fn refused_base_dir(dir: &Path, run: &Path) -> String {
    let conf = dir.join("d.conf");
    std::fs::write(&conf, common::config_text(dir, "")).unwrap();
    let (code, stderr) = start_must_fail(
        &[
            "-c",
            conf.to_str().unwrap(),
            "-o",
            &format!("base_dir={}", run.display()),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!("base_dir {}", run.display())),
        "names the directory: {stderr}"
    );
    assert!(
        !run.join("director-admin").exists(),
        "no socket was created in it"
    );
    stderr
}

fn nobody_uid() -> u32 {
    nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a `nobody` user (the tests chown to it)")
        .uid
        .as_raw()
}

/// A `base_dir` others can write to: anyone could replace our socket with theirs.
#[test]
fn a_group_or_world_writable_base_dir_is_refused() {
    for mode in [0o777, 0o770, 0o1777] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = refused_base_dir(dir.path(), &run);
        assert!(
            err.contains(&format!("mode {mode:04o} lets group or others write to it")),
            "{err}"
        );
    }
}

/// A `base_dir` another user made: they own it and can replace our socket.
#[test]
fn a_base_dir_owned_by_another_user_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test chowns a directory to `nobody`: run the tests as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let nobody = nobody_uid();
    std::os::unix::fs::chown(&run, Some(nobody), None).unwrap();
    let err = refused_base_dir(dir.path(), &run);
    assert!(err.contains(&format!("is owned by uid {nobody}")), "{err}");

    // A symbolic link another user planted, pointing at a directory of ours.
    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&ours, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(nobody), None).unwrap();
    let err = refused_base_dir(dir.path(), &link);
    assert!(err.contains("is a symbolic link owned by uid"), "{err}");
}

/// Without a config the default `base_dir` is `$XDG_RUNTIME_DIR/director` (else
/// `/tmp/director-<uid>`): one planted there by another user first is refused; a missing one
/// is created with mode 0700 and the socket gets the listener's mode.
#[test]
fn the_default_base_dir_is_created_private_and_a_planted_one_is_refused() {
    let runtime = tempfile::tempdir().unwrap();
    let planted = runtime.path().join("director");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&planted, Some(nobody_uid()), None).unwrap();
    let log = runtime.path().join("d.log");
    let log_arg = format!("log_path={}", log.display());
    let (code, stderr) = start_must_fail(&["-o", &log_arg], &[("XDG_RUNTIME_DIR", runtime.path())]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!("base_dir {}: is owned by uid", planted.display())),
        "{stderr}"
    );

    std::fs::remove_dir(&planted).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_directord"))
        .args(["-o", &log_arg])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
    }
    let socket_mode =
        std::fs::metadata(planted.join("director-admin")).map(|m| m.permissions().mode() & 0o7777);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(socket_mode.unwrap(), 0o600, "the listener's mode");
    assert_eq!(
        line.trim_end(),
        format!(
            "directord: admin socket {}",
            planted.join("director-admin").display()
        )
    );
    let meta = std::fs::metadata(&planted).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
}
