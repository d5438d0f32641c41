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

async fn next_line<R: AsyncRead + Unpin>(rd: &mut R, lb: &mut LineBuffer, peer: &PeerName) -> Next {
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
        let got = match spin_read(rd, lb.spare_mut()).await {
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

/// How many times a connection that just got a reply looks for its next request before it
/// sleeps in the reactor (about 20-50 µs). A client that sends one request at a time
/// answers within that window, and catching it here saves the kernel wake-up that
/// dominates an unpipelined round trip (docs/BENCHMARKS.md §2). Idle connections don't spin:
/// the window ends and they park as usual.
const SPIN_POLLS: u32 = 256;

/// Looks for input without sleeping: yields to the scheduler (which polls the reactor every
/// few dozen yields) and tries the read, for at most [`SPIN_POLLS`] rounds.
async fn spin_read<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    for _ in 0..SPIN_POLLS {
        tokio::task::yield_now().await;
        let mut read = std::pin::pin!(rd.read(&mut *buf));
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = read.as_mut().poll(&mut cx) {
            return Some(r);
        }
    }
    None
}

/// Serves one admin client until it disconnects or misbehaves.
pub async fn serve<S>(stream: S, peer: PeerName, ctx: ConnectionContext)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    if wr.write_all(SERVER_GREETING).await.is_err() {
        return;
    }
    let mut lb = LineBuffer::new(ADMIN_MAX_LINE_LEN);

    let Next::Line(first) = next_line(&mut rd, &mut lb, &peer).await else {
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
        let Next::Line(line) = next_line(&mut rd, &mut lb, &peer).await else {
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
            if let Err(e) = wr.write_all(&replies).await {
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
