//! Shared harness: three REAL Dovecot backends (testkit), the director core run by its one
//! driver (as in `directord`), the proxy on its own 127.x address, certificates made with
//! rcgen, and the Python client script. `ring` builds a ring of such directors with relays on
//! its links, for the chaos test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod ring;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use director_config::{Config, DirectorSettings};
use director_core::ConfigHost;
use director_driver::{Clock, DirectorHandle, Directors, DriverConfig, RingView};
use director_proto::admin::{parse_user_lookup, AdminRequest, UserRef};
use director_proxy::{BackendFailureHook, NoBackendHook, Proxy, ProxySettings, SessionRegistry};
use testkit::{free_ports, require_dovecot, DovecotBackend, LoopbackAllocator};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What to vary per test.
#[derive(Default, Clone)]
pub struct LabOptions {
    /// Number of backends (default 3).
    pub backends: usize,
    /// Extra lines for the proxy config.
    pub proxy_extra: Vec<String>,
    /// Backends get a TLS certificate (ssl = yes, STARTTLS available, imaps/pop3s listeners).
    pub backend_tls: bool,
    /// Backend listeners take a HAProxy PROXY v2 header.
    pub backend_haproxy: bool,
    /// Proxy to the backends' implicit-TLS IMAP port with `director_backend_ssl = yes`.
    pub backend_implicit_tls: bool,
    /// Backends also serve Submission and ManageSieve.
    pub backend_submission_sieve: bool,
    /// The only users the backends know (default: every name exists).
    pub backend_users: Option<Vec<String>>,
    /// Backend failure hook (default: none).
    pub hook: Option<Arc<dyn BackendFailureHook>>,
}

/// Test certificates (one CA; a server cert for the proxy and one per backend).
pub struct Certs {
    pub ca_pem: String,
    pub ca_file: PathBuf,
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub backends: Vec<DovecotBackend>,
    /// The driver, as the daemon's admin connections reach it.
    pub director: DirectorHandle,
    pub proxy: Proxy,
    pub proxy_ip: Ipv4Addr,
    pub ca_file: PathBuf,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub pop3_port: u16,
    pub pop3s_port: u16,
    pub lmtp_port: u16,
    pub submission_port: u16,
    pub sieve_port: u16,
    pub backend_imaps_port: u16,
}

/// rcgen: a CA and a leaf certificate for `names` (IP literals become IP SANs).
pub fn make_ca() -> (rcgen::CertifiedKey, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "director-proxy test CA");
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    (
        rcgen::CertifiedKey {
            cert,
            key_pair: key,
        },
        pem,
    )
}

pub fn make_leaf(ca: &rcgen::CertifiedKey, names: &[String]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    let cert = params.signed_by(&key, &ca.cert, &ca.key_pair).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

impl Lab {
    pub async fn start(opts: LabOptions) -> Lab {
        require_dovecot();
        let n = if opts.backends == 0 { 3 } else { opts.backends };
        let dir = tempfile::tempdir().unwrap();
        let mut alloc = LoopbackAllocator::new();
        let proxy_ip = alloc.next_ip();
        let backend_ips: Vec<Ipv4Addr> = (0..n).map(|_| alloc.next_ip()).collect();

        let (ca, ca_pem) = make_ca();
        let ca_file = dir.path().join("ca.pem");
        write(&ca_file, &ca_pem);
        let (cert, key) = make_leaf(&ca, &["localhost".to_string(), proxy_ip.to_string()]);
        let cert_file = dir.path().join("proxy-cert.pem");
        let key_file = dir.path().join("proxy-key.pem");
        write(&cert_file, &cert);
        write(&key_file, &key);

        let b0 = IpAddr::V4(backend_ips[0]);
        let [bsub, bsieve, bimap, bpop3, blmtp, bimaps, bhap] =
            free_ports(b0, [None; 7]).expect("free ports");
        let backends = DovecotBackend::start_group(
            &backend_ips,
            [Some(bimap), Some(bpop3), Some(blmtp)],
            |o| {
                o.users.clone_from(&opts.backend_users);
                let ip = o.ip;
                if opts.backend_tls {
                    let (c, k) = make_leaf(&ca, &[format!("backend-{ip}.test"), ip.to_string()]);
                    let cf = dir.path().join(format!("backend-{ip}-cert.pem"));
                    let kf = dir.path().join(format!("backend-{ip}-key.pem"));
                    write(&cf, &c);
                    write(&kf, &k);
                    o.extra_config.push("ssl = yes".into());
                    o.extra_config.push(format!("ssl_cert = <{}", cf.display()));
                    o.extra_config.push(format!("ssl_key = <{}", kf.display()));
                    o.extra_config.push(format!(
                        "service imap-login {{\n inet_listener imaps {{\n address = {ip}\n port = {bimaps}\n ssl = yes\n }}\n}}"
                    ));
                }
                if opts.backend_submission_sieve {
                    o.with_submission_and_sieve(bsub, bsieve);
                }
                if opts.backend_haproxy {
                    o.extra_config
                        .push("haproxy_trusted_networks = 127.0.0.0/8".into());
                    // A second IMAP listener that takes the header (the plain one stays for
                    // testkit's readiness probe).
                    o.extra_config.push(format!(
                        "service imap-login {{\n inet_listener imap_haproxy {{\n address = {ip}\n port = {bhap}\n haproxy = yes\n }}\n}}"
                    ));
                }
            },
        )
        .expect("backends start");

        let pip = IpAddr::V4(proxy_ip);
        let [imap_port, imaps_port, pop3_port, pop3s_port, lmtp_port, submission_port, sieve_port] =
            free_ports(pip, [None; 7]).expect("free ports");
        let servers: Vec<String> = backend_ips.iter().map(|i| i.to_string()).collect();
        let mut text = format!(
            "director_mail_servers = {servers}\n\
             director_user_expire = 15 min\n\
             disable_plaintext_auth = no\n\
             ssl = yes\n\
             ssl_cert = <{cert}\n\
             ssl_key = <{key}\n\
             ssl_client_ca_file = <{ca}\n\
             hostname = proxy.test\n\
             director_backend_port_imap = {bimap}\n\
             director_backend_port_pop3 = {bpop3}\n\
             director_backend_port_lmtp = {blmtp}\n\
             director_backend_port_submission = {bsub}\n\
             director_backend_port_sieve = {bsieve}\n\
             login_proxy_timeout = 10 s\n\
             auth_failure_delay = 0\n\
             service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {imap_port}\n }}\n\
             \x20inet_listener imaps {{\n address = {pip}\n port = {imaps_port}\n ssl = yes\n }}\n}}\n\
             service pop3-login {{\n inet_listener pop3 {{\n address = {pip}\n port = {pop3_port}\n }}\n\
             \x20inet_listener pop3s {{\n address = {pip}\n port = {pop3s_port}\n ssl = yes\n }}\n}}\n\
             service lmtp {{\n inet_listener lmtp {{\n address = {pip}\n port = {lmtp_port}\n }}\n}}\n\
             service submission-login {{\n inet_listener submission {{\n address = {pip}\n port = {submission_port}\n }}\n}}\n\
             service managesieve-login {{\n inet_listener sieve {{\n address = {pip}\n port = {sieve_port}\n }}\n}}\n",
            servers = servers.join(" "),
            cert = cert_file.display(),
            key = key_file.display(),
            ca = ca_file.display(),
        );
        if opts.backend_haproxy {
            text.push_str(&format!("director_backend_port_imap = {bhap}\n"));
        }
        if opts.backend_implicit_tls {
            text.push_str(&format!(
                "director_backend_ssl = yes\ndirector_backend_port_imap = {bimaps}\n"
            ));
        }
        for l in &opts.proxy_extra {
            text.push_str(l);
            text.push('\n');
        }
        let conf_path = dir.path().join("proxy.conf");
        write(&conf_path, &text);
        let config = Config::load(&conf_path).expect("proxy config parses");
        let settings = ProxySettings::from_config(&config).expect("proxy settings");

        let mut core = DirectorSettings::from_config(&config)
            .and_then(|d| d.core_settings())
            .expect("director settings");
        core.config_hosts = backend_ips
            .iter()
            .map(|i| ConfigHost::new(IpAddr::V4(*i)))
            .collect();
        let registry = SessionRegistry::new(settings.username_hash.clone());
        let (director, _driver_task) = director_driver::spawn(DriverConfig {
            core,
            directors: Directors::Standalone(RingView::new(proxy_ip.into(), 0)),
            sessions: Arc::clone(&registry) as _,
            clock: Clock::new(),
            state: None,
        })
        .expect("director driver starts");
        let hook = opts.hook.clone().unwrap_or_else(|| Arc::new(NoBackendHook));
        let proxy = Proxy::start(settings, director.clone(), registry, hook)
            .await
            .expect("proxy starts");
        Lab {
            dir,
            backends,
            director,
            proxy,
            proxy_ip,
            ca_file,
            imap_port,
            imaps_port,
            pop3_port,
            pop3s_port,
            lmtp_port,
            submission_port,
            sieve_port,
            backend_imaps_port: bimaps,
        }
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.proxy_ip), port)
    }

    /// Runs an admin request as `doveadm director` would; the reply text.
    pub async fn admin(&self, request: AdminRequest) -> String {
        let reply = self
            .director
            .admin(request)
            .await
            .expect("director running");
        String::from_utf8(reply).expect("admin replies are text")
    }

    /// `USER-LOOKUP user`: (current host and its expiry, hashed host), as
    /// `doveadm director status USER` shows them.
    pub async fn lookup(&self, user: &str) -> (Option<(IpAddr, i64)>, Option<IpAddr>) {
        let reply = self
            .admin(AdminRequest::UserLookup {
                user: user.as_bytes().to_vec(),
                tag: String::new(),
            })
            .await;
        let r = parse_user_lookup(reply.trim_end().as_bytes()).expect("a USER-LOOKUP reply");
        (r.current.map(|ip| (ip, r.expire)), r.hashed)
    }

    /// The backend the core says serves `user` right now (`doveadm director status USER`'s
    /// "Current", else "Hashed").
    pub async fn expected_backend(&self, user: &str) -> IpAddr {
        let (current, hashed) = self.lookup(user).await;
        current
            .map(|(ip, _)| ip)
            .or(hashed)
            .expect("a host for the user")
    }

    /// `USER-MOVE user ip`: the reply line.
    pub async fn user_move(&self, user: &str, ip: IpAddr) -> String {
        self.admin(AdminRequest::UserMove {
            user: UserRef::Name(user.as_bytes().to_vec()),
            ip,
        })
        .await
    }

    pub fn backend_by_ip(&self, ip: IpAddr) -> &DovecotBackend {
        self.backends
            .iter()
            .find(|b| IpAddr::V4(b.ip()) == ip)
            .expect("backend with that ip")
    }

    /// The backend's log once it contains `needle` (Dovecot's log process writes
    /// asynchronously; bounded poll of 10 s, then the log as it is).
    pub async fn log_with(&self, ip: IpAddr, needle: &str) -> String {
        let b = self.backend_by_ip(ip);
        let mut log = b.log();
        for _ in 0..100 {
            if log.contains(needle) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            log = b.log();
        }
        log
    }

    /// Runs testkit's `mail_clients.py` with `args` (in a blocking thread) and returns its
    /// stdout lines.
    pub async fn python(&self, args: Vec<String>) -> Vec<String> {
        run_python(args).await
    }
}

/// Runs testkit's `mail_clients.py` with `args` (in a blocking thread) and returns its
/// stdout lines.
pub async fn run_python(args: Vec<String>) -> Vec<String> {
    tokio::task::spawn_blocking(move || testkit::run_mail_clients(&args, CLIENTS_TIMEOUT))
        .await
        .unwrap()
}

/// Longest a client batch may take.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(300);

/// A raw line-oriented client (for kicks, bad input and exact replies).
pub struct Raw {
    pub reader: BufReader<TcpStream>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        Raw {
            reader: BufReader::new(s),
        }
    }

    /// Connects from `local` (a 127.x address of the test's own): Dovecot's backends count
    /// authentication failures per client address, so unrelated clients get their own.
    pub async fn connect_from(addr: SocketAddr, local: IpAddr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(local, 0))
            .expect("bind the client address");
        let s = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        Raw {
            reader: BufReader::new(s),
        }
    }

    /// One line (with CRLF stripped); None on EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        // Longer than the director's 30 s request timeout (plus its 1 s timer granularity),
        // which some tests wait for.
        let n = tokio::time::timeout(Duration::from_secs(45), self.reader.read_line(&mut l))
            .await
            .expect("read timed out")
            .ok()?;
        if n == 0 {
            return None;
        }
        Some(l.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Reads until a line starting with `prefix`; returns all lines read.
    pub async fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut v = Vec::new();
        loop {
            let l = self
                .line()
                .await
                .unwrap_or_else(|| panic!("EOF before {prefix:?}; got {v:?}"));
            let done = l.starts_with(prefix);
            v.push(l);
            if done {
                return v;
            }
        }
    }

    pub async fn send(&mut self, data: &str) {
        self.reader
            .get_mut()
            .write_all(data.as_bytes())
            .await
            .unwrap();
    }

    pub async fn send_bytes(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(data).await
    }

    /// True when the server closed the connection within 30 s (lines before EOF ignored).
    pub async fn closed(&mut self) -> bool {
        for _ in 0..1000 {
            match self.line().await {
                None => return true,
                Some(_) => continue,
            }
        }
        false
    }
}

/// Logs in over raw IMAP and returns the client with the backend that answered `ID`.
pub async fn raw_imap_login(addr: SocketAddr, user: &str, pass: &str) -> (Raw, String) {
    let mut c = Raw::connect(addr).await;
    c.until("* OK").await;
    c.send(&format!("a LOGIN {user} {pass}\r\n")).await;
    let r = c.until("a ").await;
    assert!(r.last().unwrap().starts_with("a OK"), "login failed: {r:?}");
    c.send("b ID NIL\r\n").await;
    let r = c.until("b ").await;
    let id = r
        .iter()
        .find(|l| l.starts_with("* ID"))
        .cloned()
        .unwrap_or_default();
    let ip = id
        .split('"')
        .collect::<Vec<_>>()
        .windows(3)
        .find(|w| w[0].ends_with('(') || w[1] == "backend-ip")
        .map(|w| w[2].to_string())
        .unwrap_or_default();
    let ip = id
        .split('"')
        .filter(|s| s.parse::<IpAddr>().is_ok())
        .map(str::to_string)
        .next()
        .unwrap_or(ip);
    (c, ip)
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}
