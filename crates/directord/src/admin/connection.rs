//! One admin client: greeting, handshake, then one command at a time.
//!
//! Like Dovecot, a connection runs its commands strictly in order and does not read the next
//! line while a command is unfinished, so pipelined requests are answered in order and a
//! client that never reads its replies stalls only itself (its task blocks in `write`, it
//! holds at most one [`LineBuffer`] of input and one reply). Any protocol error closes the
//! connection without a reply; the reason is logged at error level with Dovecot's wording,
//! except overlong lines, which Dovecot drops silently (we log them at debug only).
//!
//! There is no idle timeout: Dovecot's admin connections have none either, and the
//! connection cap ([`crate::limits::MAX_ADMIN_CONNECTIONS`]) bounds what idle clients cost.

use director_proto::admin::{check_client_handshake, parse_request, SERVER_GREETING};
use director_proto::line::{LineBuffer, ADMIN_MAX_LINE_LEN};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::actor::DirectorHandle;
use crate::admin::listener::PeerName;

/// Most pipelined requests sent to the actor in one message; bounds one reply buffer.
const MAX_BATCH: usize = 256;

/// What every connection task needs; cheap to clone.
#[derive(Clone)]
pub struct ConnectionContext {
    /// The director actor.
    pub director: DirectorHandle,
}

/// Why a connection ended early; only used for logging.
enum Next {
    Line(Vec<u8>),
    Closed,
}

async fn next_line<R: AsyncRead + AsFd + Unpin>(
    rd: &mut R,
    lb: &mut LineBuffer,
    peer: &PeerName,
) -> Next {
    loop {
        match lb.next_line() {
            Ok(Some(line)) => return Next::Line(line),
            Ok(None) => {}
            Err(e) => {
                // Dovecot logs nothing here; keep it out of the error log too.
                tracing::debug!(peer = %peer, error = %e, "admin input line too long, closing");
                return Next::Closed;
            }
        }
        let fd = rd.as_fd().as_raw_fd();
        let got = match spin_read(fd, lb.spare_mut()).await {
            Some(r) => r,
            None => rd.read(lb.spare_mut()).await,
        };
        match got {
            Ok(0) => return Next::Closed,
            Ok(n) => lb.commit(n),
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "admin read failed");
                return Next::Closed;
            }
        }
    }
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

/// Serves one admin client until it disconnects or misbehaves.
pub async fn serve<S>(stream: S, peer: PeerName, ctx: ConnectionContext)
where
    S: AsyncRead + AsyncWrite + AsFd + Unpin,
{
    // One command at a time: reads and writes never overlap, so no split is needed.
    let mut stream = stream;
    if stream.write_all(SERVER_GREETING).await.is_err() {
        return;
    }
    let mut lb = LineBuffer::new(ADMIN_MAX_LINE_LEN);

    let Next::Line(first) = next_line(&mut stream, &mut lb, &peer).await else {
        return;
    };
    if let Err(e) = check_client_handshake(&first) {
        tracing::error!(peer = %peer, "{e}");
        return;
    }

    // Pipelined requests: every complete line already buffered joins one batch, which the
    // actor answers in one round trip and we write with one syscall. Order and the
    // "an unfinished command holds back the next" rule are kept by the actor.
    let mut batch = Vec::new();
    loop {
        let Next::Line(line) = next_line(&mut stream, &mut lb, &peer).await else {
            return;
        };
        let mut failure = None;
        let mut line = Some(line);
        while let Some(l) = line.take() {
            match parse_request(&l) {
                Ok(r) => batch.push(r),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            match lb.next_line() {
                Ok(next) => line = next,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "admin input line too long, closing");
                    failure = Some(String::new());
                }
            }
        }
        if !batch.is_empty() {
            let requests = std::mem::take(&mut batch);
            let count = requests.len();
            let Some(replies) = ctx.director.admin_batch(requests).await else {
                tracing::debug!(peer = %peer, "director is shutting down, closing");
                return;
            };
            if let Err(e) = stream.write_all(&replies).await {
                tracing::debug!(peer = %peer, requests = count, error = %e, "admin write failed");
                return;
            }
        }
        if let Some(reason) = failure {
            // Dovecot closes without a reply; an overlong line is not even logged.
            if !reason.is_empty() {
                tracing::error!(peer = %peer, "{reason}");
            }
            return;
        }
    }
}
