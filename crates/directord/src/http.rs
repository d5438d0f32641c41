//! What the daemon's small HTTP listeners share (nginx's `auth_http`, the metrics): binding
//! only explicit addresses, logging peers the allow-list refuses, and reading one request
//! within the limits of `director_proto::auth_http::RequestReader`.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use director_proto::auth_http::{encode_bad_request, Request, RequestReader};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::admin::listener::{self, ListenerError, PeerName};
use crate::admin::tcp::RefusalLog;

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

/// Logs a peer refused by the allow-list `allow_setting` (rate-limited like the admin
/// listener's).
pub fn log_refusal(
    log: &Mutex<RefusalLog>,
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
