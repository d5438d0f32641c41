//! The metrics listener (`inet_listener director-metrics`, off unless configured): serves
//! Prometheus's text format at `/metrics`.
//!
//! A scrape reads the proxy's login counters (atomics, `director_proxy::ProxyMetrics`), its
//! session registry (one pass under its lock) and the driver's state (one taking of the
//! state lock, like an admin request); the login path itself never waits for a scrape.
//! Labels are protocols, results and backend addresses: never a user. Like the auth_http
//! listener it binds only an explicit address, serves only `director_metrics_allow_nets`
//! (default loopback), has its own pool of `director_metrics_max_connections` slots, and
//! closes a client that has not sent its request within `director_metrics_timeout`.
//!
//! With backend health checks on, their probes, failures and decisions are counted too (on
//! the director that decides; the others count nothing).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use director_config::IpNet;
use director_driver::{DirectorHandle, DriverMetrics};
use director_proto::auth_http::Request;
use director_proxy::budget::BufferBudget;
use director_proxy::{Protocol, ProxyMetrics, SessionRegistry};

use crate::health::HealthCounters;
use tokio::net::TcpListener;

use crate::admin::listener::{ListenerError, PeerName};

/// Prometheus's text exposition format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics listeners and their policy.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Where they bind (never a wildcard); usually none.
    pub listeners: Vec<SocketAddr>,
    /// `director_metrics_allow_nets`.
    pub allow_nets: Vec<IpNet>,
    /// `director_metrics_max_connections`.
    pub max_connections: usize,
    /// `director_metrics_timeout`: for the request and for the answer to be taken.
    pub timeout: Duration,
}

impl MetricsSettings {
    /// Whether a client at `ip` may scrape.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_nets.iter().any(|n| n.contains(ip))
    }
}

/// Binds every metrics listener.
pub fn bind_all(
    settings: &MetricsSettings,
) -> Result<Vec<(SocketAddr, TcpListener)>, ListenerError> {
    crate::http::bind_explicit(&settings.listeners, "a metrics listener")
}

/// The built-in proxy's part of the metrics.
#[derive(Clone)]
pub struct ProxySource {
    /// Its login counters.
    pub metrics: Arc<ProxyMetrics>,
    /// Its sessions.
    pub registry: Arc<SessionRegistry>,
    /// The login protocols it serves (LMTP has no logins).
    pub protocols: Vec<Protocol>,
    /// Its shared buffer budget.
    pub budget: Arc<BufferBudget>,
    /// It serves LMTP.
    pub lmtp: bool,
}

/// Where a scrape reads from.
#[derive(Clone)]
pub struct Sources {
    /// The driver.
    pub director: DirectorHandle,
    /// The built-in proxy, when it runs.
    pub proxy: Option<ProxySource>,
    /// The backend health checks, when they run.
    pub health: Option<Arc<HealthCounters>>,
}

/// The metrics listeners' service: `GET /metrics` renders [`Sources`].
pub struct MetricsService {
    settings: MetricsSettings,
    sources: Sources,
}

impl MetricsService {
    /// Serves the metrics of `sources` with `settings`.
    pub fn server(
        settings: &MetricsSettings,
        sources: Sources,
    ) -> crate::http::HttpServer<MetricsService> {
        crate::http::HttpServer::new(
            MetricsService {
                settings: settings.clone(),
                sources,
            },
            settings.max_connections,
        )
    }
}

impl crate::http::HttpService for MetricsService {
    const NAME: &'static str = "metrics";
    const ALLOW_NETS_SETTING: &'static str = "director_metrics_allow_nets";
    const TIMEOUT_SETTING: &'static str = "director_metrics_timeout";

    fn allows(&self, ip: IpAddr) -> bool {
        self.settings.allows(ip)
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    async fn answer(&self, request: &Request, _peer: &PeerName) -> Vec<u8> {
        let path = request.target.split(|b| *b == b'?').next().unwrap_or(&[]);
        match (request.method.as_str(), path) {
            ("GET", b"/metrics") => response("200 OK", CONTENT_TYPE, &render(&self.sources)),
            ("GET", _) => response("404 Not Found", "text/plain", "try /metrics\n"),
            _ => response("405 Method Not Allowed", "text/plain", "GET only\n"),
        }
    }
}

/// An HTTP/1.0 answer with `body`, closing the connection.
fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// One metric family's `# HELP` and `# TYPE` lines. Label values written after it are
/// protocol and result names and IP addresses, which need no escaping.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The whole exposition text.
pub fn render(sources: &Sources) -> String {
    let mut out = String::with_capacity(8192);
    family(
        &mut out,
        "director_build_info",
        "gauge",
        "The running directord's version; always 1.",
    );
    let _ = writeln!(
        out,
        "director_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(proxy) = &sources.proxy {
        render_proxy(&mut out, proxy);
    }
    if let Some(d) = sources.director.metrics() {
        render_driver(&mut out, &d);
    }
    if let Some(h) = &sources.health {
        render_health(&mut out, h);
    }
    out
}

fn render_health(out: &mut String, h: &HealthCounters) {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    family(
        out,
        "director_health_probes_total",
        "counter",
        "Backend health probes run (one per host and protocol per round, on the deciding director).",
    );
    let _ = writeln!(out, "director_health_probes_total {}", load(&h.probes));
    family(
        out,
        "director_health_probe_failures_total",
        "counter",
        "Backend health probes that failed.",
    );
    let _ = writeln!(
        out,
        "director_health_probe_failures_total {}",
        load(&h.probe_failures)
    );
    family(
        out,
        "director_health_marked_total",
        "counter",
        "Hosts the health checks marked down or up.",
    );
    let _ = writeln!(
        out,
        "director_health_marked_total{{state=\"down\"}} {}",
        load(&h.marked_down)
    );
    let _ = writeln!(
        out,
        "director_health_marked_total{{state=\"up\"}} {}",
        load(&h.marked_up)
    );
}

fn render_proxy(out: &mut String, proxy: &ProxySource) {
    let m = &proxy.metrics;
    family(
        out,
        "director_logins_total",
        "counter",
        "Logins through the built-in proxy, by protocol and result.",
    );
    for (protocol, result, n) in m.logins() {
        if proxy.protocols.contains(&protocol) {
            let (p, r) = (protocol.name(), result.name());
            let _ = writeln!(
                out,
                "director_logins_total{{protocol=\"{p}\",result=\"{r}\"}} {n}"
            );
        }
    }
    family(
        out,
        "director_login_duration_seconds",
        "histogram",
        "Time from the client's credentials to the login's result (backend connect and login included).",
    );
    for protocol in &proxy.protocols {
        let h = m.login_seconds(*protocol);
        let p = protocol.name();
        for (le, n) in &h.buckets {
            let _ = writeln!(
                out,
                "director_login_duration_seconds_bucket{{protocol=\"{p}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "director_login_duration_seconds_bucket{{protocol=\"{p}\",le=\"+Inf\"}} {}\n\
             director_login_duration_seconds_sum{{protocol=\"{p}\"}} {}\n\
             director_login_duration_seconds_count{{protocol=\"{p}\"}} {}",
            h.count, h.sum_seconds, h.count
        );
    }
    family(
        out,
        "director_backend_connect_failures_total",
        "counter",
        "Connections to a backend that could not be made (TCP, PROXY header or TLS), by backend.",
    );
    for (ip, n) in m.backend_connect_failures() {
        let _ = writeln!(
            out,
            "director_backend_connect_failures_total{{backend=\"{ip}\"}} {n}"
        );
    }
    family(
        out,
        "director_sessions",
        "gauge",
        "Open proxied sessions (routed, logging in or logged in), by backend and protocol.",
    );
    for (ip, protocol, n) in proxy.registry.routed_counts() {
        let p = protocol.name();
        let _ = writeln!(
            out,
            "director_sessions{{backend=\"{ip}\",protocol=\"{p}\"}} {n}"
        );
    }
    if proxy.lmtp {
        family(
            out,
            "director_lmtp_recipients_total",
            "counter",
            "LMTP recipients through the built-in proxy, by result.",
        );
        for (result, n) in m.recipients() {
            let r = result.name();
            let _ = writeln!(out, "director_lmtp_recipients_total{{result=\"{r}\"}} {n}");
        }
    }
    family(
        out,
        "director_proxy_buffer_bytes",
        "gauge",
        "Buffer memory the proxy's connections hold beyond their fixed share.",
    );
    let _ = writeln!(out, "director_proxy_buffer_bytes {}", proxy.budget.used());
    family(
        out,
        "director_proxy_buffer_limit_bytes",
        "gauge",
        "director_proxy_buffer_memory: the most they may hold.",
    );
    let _ = writeln!(
        out,
        "director_proxy_buffer_limit_bytes {}",
        proxy.budget.limit()
    );
}

fn render_driver(out: &mut String, d: &DriverMetrics) {
    family(
        out,
        "director_backend_up",
        "gauge",
        "1 when the backend is up, 0 when it is marked down.",
    );
    for h in &d.hosts {
        let _ = writeln!(
            out,
            "director_backend_up{{backend=\"{}\"}} {}",
            h.ip,
            u8::from(h.up)
        );
    }
    family(
        out,
        "director_backend_vhosts",
        "gauge",
        "The backend's vhost count (its share of new users).",
    );
    for h in &d.hosts {
        let _ = writeln!(
            out,
            "director_backend_vhosts{{backend=\"{}\"}} {}",
            h.ip, h.vhosts
        );
    }
    family(
        out,
        "director_backend_users",
        "gauge",
        "Users assigned to the backend in the user directory.",
    );
    for h in &d.hosts {
        let _ = writeln!(
            out,
            "director_backend_users{{backend=\"{}\"}} {}",
            h.ip, h.users
        );
    }
    let c = &d.counters;
    let (peers, synced) = match d.ring {
        Some(r) => (r.peers, r.synced),
        None => (0, true),
    };
    let _ = write!(
        out,
        "# HELP director_users Users in the user directory.\n# TYPE director_users gauge\n\
         director_users {}\n\
         # HELP director_user_moves_total User moves carried out here (the user's sessions on other backends closed).\n\
         # TYPE director_user_moves_total counter\ndirector_user_moves_total {}\n\
         # HELP director_kicks_total Kicks carried out here: of a user by name, by passdb field, or of all sessions of a removed or flushed backend.\n\
         # TYPE director_kicks_total counter\n\
         director_kicks_total{{kind=\"user\"}} {}\ndirector_kicks_total{{kind=\"user_alt\"}} {}\n\
         director_kicks_total{{kind=\"backend\"}} {}\n\
         # HELP director_admin_requests_total Admin protocol requests run.\n\
         # TYPE director_admin_requests_total counter\ndirector_admin_requests_total {}\n\
         # HELP director_logins_queued_total Logins that found the director state busy and waited for the driver task.\n\
         # TYPE director_logins_queued_total counter\ndirector_logins_queued_total {}\n\
         # HELP director_ring_peers Open connections to other directors of the ring.\n\
         # TYPE director_ring_peers gauge\ndirector_ring_peers {peers}\n\
         # HELP director_ring_synced 1 when the ring is synced (a standalone director always is).\n\
         # TYPE director_ring_synced gauge\ndirector_ring_synced {}\n",
        d.users,
        c.user_moves,
        c.user_kicks,
        c.user_kicks_alt,
        c.backend_kicks,
        c.admin_requests,
        d.queued_logins,
        u8::from(synced),
    );
}
