//! One admin client: greeting, handshake, then one command at a time.
//!
//! The protocol side is director-proto's [`AdminServerSession`] (handshake, 1023-byte lines,
//! request parsing, which closes are logged): this file only moves bytes and runs requests.
//! Like Dovecot, a connection runs its commands strictly in order and does not read the next
//! line while a command is unfinished, so pipelined requests are answered in order and a
//! client that never reads its replies stalls only itself (its task blocks in `write`, it
//! holds at most one line buffer of input and one reply). Any protocol error closes the
//! connection without a reply; the reason is logged at error level with Dovecot's wording,
//! except overlong lines, which Dovecot drops silently (we log them at debug only).
//!
//! UNIX-socket clients have no idle timeout (Dovecot's admin connections have none either,
//! and the connection cap [`crate::limits::MAX_ADMIN_CONNECTIONS`] bounds what idle local
//! clients cost). TCP clients get `director_admin_idle_timeout`: a connection that waits
//! that long for its client, to send a request or to take a reply, is closed.

use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use director_proto::admin::{AdminServerSession, SERVER_GREETING};
use director_proto::log_text::LogText;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use director_driver::DirectorHandle;

use crate::admin::listener::{AdminStream, PeerName};

/// Most pipelined requests run as one batch; bounds one reply buffer.
const MAX_BATCH: usize = 256;

/// What every connection task needs; cheap to clone.
#[derive(Clone)]
pub struct ConnectionContext {
    /// The director driver.
    pub director: DirectorHandle,
}

/// How long a connection that just got a reply keeps looking for its next request before it
/// sleeps in the reactor. A client that sends one request at a time answers within that
/// window, and catching it here saves the kernel wake-up that dominates an unpipelined round
/// trip (docs/BENCHMARKS.md §2). Idle connections don't spin: the window ends and they park
/// as usual.
const SPIN_TIME: std::time::Duration = std::time::Duration::from_micros(100);

/// Non-blocking reads between two yields to the other tasks of the director thread.
const SPIN_READS_PER_YIELD: u32 = 4;

/// Looks for input without sleeping, for at most [`SPIN_TIME`]: non-blocking `recv` on the
/// socket itself (tokio's own read would wait for the reactor to report readiness, a poll
/// later), yielding to the other tasks every few tries. Reading behind tokio's back is safe:
/// its epoll registration is edge-triggered and its cached readiness is only a hint, so the
/// next tokio read that finds nothing clears it and waits for the next edge, which new data
/// always makes.
async fn spin_read(fd: RawFd, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    use nix::errno::Errno;
    use nix::sys::socket::{recv, MsgFlags};
    let start = std::time::Instant::now();
    loop {
        for _ in 0..SPIN_READS_PER_YIELD {
            match recv(fd, buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Some(Ok(n)),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
        if start.elapsed() >= SPIN_TIME {
            return None;
        }
        tokio::task::yield_now().await;
    }
}

/// Runs one wait for the client, bounded by `idle` when there is one.
async fn within<T>(
    idle: Option<Duration>,
    io: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match idle {
        None => io.await,
        Some(limit) => tokio::time::timeout(limit, io)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, IDLE_CLOSE))),
    }
}

/// What the log says when the idle timeout closes a connection.
pub const IDLE_CLOSE: &str = "admin client idle too long (director_admin_idle_timeout), closing";

fn log_io_error(peer: &PeerName, what: &str, e: &io::Error) {
    if e.kind() == io::ErrorKind::TimedOut {
        tracing::info!(peer = %peer, "{IDLE_CLOSE}");
    } else {
        tracing::debug!(peer = %peer, error = %e, "admin {what} failed");
    }
}

/// Serves one admin client until it disconnects or misbehaves, or (with `idle`) until it
/// keeps us waiting longer than that for a request or for taking a reply.
pub async fn serve<S: AdminStream>(
    stream: S,
    peer: PeerName,
    ctx: ConnectionContext,
    idle: Option<Duration>,
) {
    // One command at a time: reads and writes never overlap, so no split is needed.
    let mut stream = stream;
    if let Err(e) = within(idle, stream.write_all(SERVER_GREETING)).await {
        log_io_error(&peer, "write", &e);
        return;
    }
    let mut session = AdminServerSession::new();
    let mut batch = Vec::new();
    loop {
        // Pipelined requests: every complete request already buffered joins one batch,
        // answered with one write. Order, and "an unfinished command holds back the next",
        // are kept by `admin_batch`.
        let mut close = None;
        while batch.len() < MAX_BATCH {
            match session.next_request() {
                Ok(Some(request)) => batch.push(request),
                Ok(None) => break,
                Err(e) => {
                    close = Some(e);
                    break;
                }
            }
        }
        let full = batch.len() >= MAX_BATCH;
        if !batch.is_empty() {
            let requests = std::mem::take(&mut batch);
            let count = requests.len();
            let Some(replies) = ctx.director.admin_batch(requests).await else {
                tracing::debug!(peer = %peer, "director is shutting down, closing");
                return;
            };
            if let Err(e) = within(idle, stream.write_all(&replies)).await {
                tracing::debug!(peer = %peer, requests = count, "admin replies not delivered");
                log_io_error(&peer, "write", &e);
                return;
            }
        }
        if let Some(reason) = close {
            // Dovecot closes without a reply; an overlong line is not even logged.
            if reason.dovecot_logs() {
                // Dovecot's wording, which quotes the client's line: escaped, so that it
                // cannot break or forge a log line.
                tracing::error!(peer = %peer, "{}", LogText(reason.to_string().as_bytes()));
            } else {
                tracing::debug!(peer = %peer, error = %reason, "admin input line too long, closing");
            }
            return;
        }
        if full {
            // More requests may be buffered already: run them before reading.
            continue;
        }
        let spun = match stream.spin_fd() {
            Some(fd) => spin_read(fd, session.spare_mut()).await,
            None => None,
        };
        let got = match spun {
            Some(r) => r,
            None => within(idle, stream.read(session.spare_mut())).await,
        };
        match got {
            Ok(0) => return,
            Ok(n) => session.commit(n),
            Err(e) => {
                log_io_error(&peer, "read", &e);
                return;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use director_core::CoreSettings;
    use tokio::io::DuplexStream;

    use super::*;
    use director_driver::{Clock, Directors, DriverConfig, NoLocalSessions, RingView};

    use crate::settings::STANDALONE_SELF;

    impl AdminStream for DuplexStream {
        fn spin_fd(&self) -> Option<RawFd> {
            None
        }
    }

    /// A connection context on a standalone director with the default settings (the
    /// admin tests' director).
    pub(crate) fn context() -> ConnectionContext {
        let (director, _task) = director_driver::spawn(DriverConfig {
            core: CoreSettings::default(),
            directors: Directors::Standalone(RingView::new(STANDALONE_SELF.0, STANDALONE_SELF.1)),
            sessions: Arc::new(NoLocalSessions),
            clock: Clock::new(),
            state: None,
        })
        .unwrap();
        ConnectionContext { director }
    }

    /// A client that sends requests but never reads the replies is closed once a reply has
    /// waited `idle` to be taken (tokio's paused clock: no real waiting).
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_closed_after_the_idle_timeout() {
        let idle = Duration::from_secs(60);
        let (mut client, server) = tokio::io::duplex(256);
        let started = tokio::time::Instant::now();
        let served = tokio::spawn(serve(server, PeerName::Unix, context(), Some(idle)));
        let writer = tokio::spawn(async move {
            let mut requests = b"VERSION\tdirector-doveadm\t1\t0\n".to_vec();
            for _ in 0..200 {
                requests.extend_from_slice(b"HOST-LIST-REMOVED\nDIRECTOR-LIST\n");
            }
            // Fails once the server gave up and dropped its end.
            let _ = client.write_all(&requests).await;
            client
        });
        tokio::time::timeout(idle * 10, served)
            .await
            .expect("the stalled connection was closed")
            .unwrap();
        assert!(started.elapsed() >= idle, "not before the timeout");
        drop(writer);
    }

    /// Without an idle limit (the UNIX socket) the same client is waited for.
    #[tokio::test(start_paused = true)]
    async fn without_a_limit_a_stalled_client_is_kept() {
        let (mut client, server) = tokio::io::duplex(256);
        let served = tokio::spawn(serve(server, PeerName::Unix, context(), None));
        let mut requests = b"VERSION\tdirector-doveadm\t1\t0\n".to_vec();
        for _ in 0..200 {
            requests.extend_from_slice(b"HOST-LIST-REMOVED\nDIRECTOR-LIST\n");
        }
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&requests).await;
            client
        });
        let waited = tokio::time::timeout(Duration::from_secs(3600), served).await;
        assert!(waited.is_err(), "still served after an hour of stall");
        drop(writer);
    }
}
