//! What the daemon's small HTTP listeners share (nginx's `auth_http`, the metrics): binding
//! only explicit addresses, the server ([`HttpServer`]: a slot pool, the allow-list with
//! refusals logged, one request and one answer per connection within the timeout), and
//! reading one request within the limits of `director_proto::auth_http::RequestReader`.
//! Each listener is an [`HttpService`]: its names, its policy and its answers.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use director_proto::auth_http::{encode_bad_request, Request, RequestReader};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::admin::listener::{self, ListenerError, PeerName};
use director_core::refusal_log::RefusalLog;

/// Bytes read from a client at once (a whole request fits).
const READ_CHUNK: usize = 4096;

/// Binds each of `addrs`; a wildcard never gets here (director-config refuses it), and is
/// refused again. `what` names the listener in the error.
pub fn bind_explicit(
    addrs: &[SocketAddr],
    what: &str,
) -> Result<Vec<(SocketAddr, TcpListener)>, ListenerError> {
    addrs
        .iter()
        .map(|addr| {
            if addr.ip().is_unspecified() {
                return Err(ListenerError::Listen {
                    what: addr.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{what} binds only an explicit address"),
                    ),
                });
            }
            Ok((*addr, listener::bind_tcp(*addr)?))
        })
        .collect()
}

/// Logs a peer refused by the allow-list `allow_setting` of a `what` listener (admin,
/// metrics, auth_http), rate-limited by [`RefusalLog`].
pub fn log_refusal(
    log: &Mutex<RefusalLog<Instant>>,
    peer: &PeerName,
    listener: SocketAddr,
    what: &str,
    allow_setting: &str,
) {
    let verdict = match log.lock() {
        Ok(mut l) => l.refusal(Instant::now()),
        Err(poisoned) => poisoned.into_inner().refusal(Instant::now()),
    };
    if verdict.suppressed_before > 0 {
        tracing::warn!(
            listener = %listener,
            count = verdict.suppressed_before,
            "more {what} connections were refused (not in {allow_setting}) and not logged"
        );
    }
    if verdict.log {
        tracing::warn!(
            peer = %peer,
            listener = %listener,
            "{what} connection refused: address not in {allow_setting}"
        );
    }
}

/// Reads one request: `Ok(Some)`, `Ok(None)` when the peer went away (nothing to answer),
/// `Err(bytes)` with the `400` answer for bytes that are not a request.
pub async fn read_request(stream: &mut TcpStream) -> Result<Option<Request>, Vec<u8>> {
    let mut reader = RequestReader::new();
    let mut buf = [0u8; READ_CHUNK];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP read failed");
                return Ok(None);
            }
        };
        if n == 0 {
            if let Err(e) = reader.finish() {
                tracing::debug!(error = %e, "HTTP client went away");
            }
            return Ok(None);
        }
        match reader.feed(&buf[..n]) {
            Ok(Some(request)) => return Ok(Some(request)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "HTTP request refused");
                let mut out = Vec::new();
                encode_bad_request(&e, &mut out);
                return Err(out);
            }
        }
    }
}

/// One kind of HTTP listener: how it is named in the log and which settings it answers to,
/// who may use it, and how it answers a request.
pub trait HttpService: Send + Sync + 'static {
    /// The listener's name in the log (`auth_http`, `metrics`).
    const NAME: &'static str;
    /// The setting of its allow-list, for the log.
    const ALLOW_NETS_SETTING: &'static str;
    /// The setting of its timeout, for the log.
    const TIMEOUT_SETTING: &'static str;

    /// Whether a client at `ip` may use the listener.
    fn allows(&self, ip: std::net::IpAddr) -> bool;

    /// How long a client has to send its request, and then to take the answer.
    fn timeout(&self) -> std::time::Duration;

    /// The whole answer to `request`.
    fn answer(
        &self,
        request: &Request,
        peer: &PeerName,
    ) -> impl std::future::Future<Output = Vec<u8>> + Send;
}

/// Serves the listeners of one [`HttpService`]: one slot pool, the allow-list (refusals
/// logged, rate-limited), one request and one answer per connection, within the timeout.
pub struct HttpServer<S> {
    service: std::sync::Arc<S>,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    refusals: std::sync::Arc<Mutex<RefusalLog<Instant>>>,
}

impl<S: HttpService> HttpServer<S> {
    /// The listeners' shared state; `max_connections` clients are served at once.
    pub fn new(service: S, max_connections: usize) -> HttpServer<S> {
        HttpServer {
            service: std::sync::Arc::new(service),
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections)),
            max_connections,
            refusals: std::sync::Arc::new(Mutex::new(RefusalLog::new())),
        }
    }

    /// Accepts clients of one listener until `shutdown` flips to `true`.
    pub fn accept_loop(
        &self,
        l: TcpListener,
        addr: SocketAddr,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let service = std::sync::Arc::clone(&self.service);
        let refusals = std::sync::Arc::clone(&self.refusals);
        listener::accept_with(
            l,
            format!("{} {addr}", S::NAME),
            std::sync::Arc::clone(&self.slots),
            self.max_connections,
            move |stream, peer| {
                let allowed = match &peer {
                    PeerName::Tcp(a) if service.allows(a.ip()) => true,
                    _ => {
                        log_refusal(&refusals, &peer, addr, S::NAME, S::ALLOW_NETS_SETTING);
                        false
                    }
                };
                let service = std::sync::Arc::clone(&service);
                async move {
                    if allowed {
                        serve(stream, peer, &*service).await;
                    }
                    // Otherwise dropping the stream closes it without a reply.
                }
            },
            shutdown,
        )
    }
}

/// Serves one connection: one request, one answer, close.
async fn serve<S: HttpService>(mut stream: TcpStream, peer: PeerName, service: &S) {
    use tokio::io::AsyncWriteExt;
    let timeout = service.timeout();
    let out = match tokio::time::timeout(timeout, read_request(&mut stream)).await {
        Ok(Ok(Some(request))) => service.answer(&request, &peer).await,
        Ok(Ok(None)) => return,
        Ok(Err(bad_request)) => bad_request,
        Err(_) => {
            tracing::info!(
                peer = %peer,
                "{} connection closed: no complete request within {}",
                S::NAME,
                S::TIMEOUT_SETTING
            );
            return;
        }
    };
    match tokio::time::timeout(timeout, stream.write_all(&out)).await {
        Ok(Ok(())) => {
            let _ = stream.shutdown().await;
        }
        Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "{} answer not sent", S::NAME),
        Err(_) => tracing::info!(
            peer = %peer,
            "{} connection closed: answer not taken within {}",
            S::NAME,
            S::TIMEOUT_SETTING
        ),
    }
}
