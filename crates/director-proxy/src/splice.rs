//! The splice of a logged-in session: bytes copied both ways until one side closes, fails, or
//! the session is killed.
//!
//! The two directions run independently: a client that stops reading a large `FETCH` does
//! not stop its next commands from reaching the backend, and a backend that stops reading
//! does not stop its replies from reaching the client.
//!
//! Each direction has its own buffer ([`SpliceBuf`]): small at the start, since most sessions
//! are idle (`IDLE`), doubled while reads fill it (a bulk transfer moves in few large system
//! calls) as far as the [`BufferBudget`] allows, and back to the small size as soon as the
//! source has nothing more to read, so a session does not keep a burst's memory.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::budget::{BufferBudget, Reservation};
use crate::registry::{KillReason, SessionGuard};
use crate::stream::Stream;

/// Per-direction buffer at the start, and after every burst.
pub(crate) const SPLICE_BUF_MIN: usize = 4 * 1024;
/// Largest per-direction buffer.
pub(crate) const SPLICE_BUF_MAX: usize = 512 * 1024;
/// How long a closing session may take to flush its last bytes.
pub(crate) const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How a splice ended.
#[derive(Debug)]
pub(crate) enum SpliceEnd {
    /// One side closed normally.
    Closed,
    /// A kick or shutdown.
    Killed(KillReason),
    /// The client connection failed.
    ClientError(io::Error),
    /// The backend connection failed.
    BackendError(io::Error),
}

/// One direction's buffer; what it holds beyond [`SPLICE_BUF_MIN`] is taken from the budget.
#[derive(Debug)]
pub(crate) struct SpliceBuf {
    buf: Vec<u8>,
    extra: Reservation,
}

impl SpliceBuf {
    pub(crate) fn new(budget: &Arc<BufferBudget>) -> Self {
        Self {
            buf: vec![0; SPLICE_BUF_MIN],
            extra: Reservation::new(Arc::clone(budget)),
        }
    }

    /// Current size.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// A read filled the buffer: there is more where that came from, so double it, if the
    /// budget allows.
    fn after_read(&mut self, n: usize) {
        let len = self.buf.len();
        if n == len && len < SPLICE_BUF_MAX {
            let grown = (len * 2).min(SPLICE_BUF_MAX);
            if self.extra.resize(grown - SPLICE_BUF_MIN) {
                self.buf.resize(grown, 0);
            }
        }
    }

    /// The source has nothing to read: the burst is over.
    fn shrink(&mut self) {
        if self.buf.len() > SPLICE_BUF_MIN {
            self.buf = vec![0; SPLICE_BUF_MIN];
            self.extra.resize(0);
        }
    }

    /// Reads what is there; while waiting for more, the buffer is back at its small size.
    async fn read_from<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        poll_fn(|cx| {
            let polled = {
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            };
            if polled.is_pending() {
                self.shrink();
            }
            polled
        })
        .await
    }
}

/// How one direction ended.
enum PumpEnd {
    Eof,
    Read(io::Error),
    Write(io::Error),
}

/// Copies one direction until EOF or an error.
async fn pump<R, W>(r: &mut R, w: &mut W, mut buf: SpliceBuf) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let n = match buf.read_from(r).await {
            Ok(0) => return PumpEnd::Eof,
            Ok(n) => n,
            Err(e) => return PumpEnd::Read(e),
        };
        // The flush matters for TLS: a write can leave records in the TLS layer when the
        // socket is full, and nothing else would push them out.
        let written = async {
            w.write_all(&buf.buf[..n]).await?;
            w.flush().await
        };
        if let Err(e) = written.await {
            return PumpEnd::Write(e);
        }
        buf.after_read(n);
    }
}

/// Which direction ended first, and how.
enum Ended {
    Up(PumpEnd),
    Down(PumpEnd),
    Killed(KillReason),
}

/// Copies bytes both ways until one side closes, an error, or a kill. A kill closes both
/// connections at once with no goodbye, as Dovecot's login proxy does when kicked.
pub(crate) async fn splice(
    client: &mut Stream,
    backend: &mut Stream,
    guard: &SessionGuard,
    budget: &Arc<BufferBudget>,
) -> SpliceEnd {
    let ended = {
        let (mut client_in, mut client_out) = tokio::io::split(&mut *client);
        let (mut backend_in, mut backend_out) = tokio::io::split(&mut *backend);
        let up = pump(&mut client_in, &mut backend_out, SpliceBuf::new(budget));
        let down = pump(&mut backend_in, &mut client_out, SpliceBuf::new(budget));
        // Writes race the kill too, so a peer that stops reading can't make a kick wait.
        tokio::select! {
            // A killed session forwards nothing more, even with bytes waiting on either side.
            biased;
            reason = guard.wait_killed() => Ended::Killed(reason),
            e = up => Ended::Up(e),
            e = down => Ended::Down(e),
        }
    };
    match ended {
        Ended::Killed(reason) => SpliceEnd::Killed(reason),
        Ended::Up(PumpEnd::Eof) => {
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, backend.finish()).await;
            SpliceEnd::Closed
        }
        Ended::Down(PumpEnd::Eof) => {
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, client.finish()).await;
            SpliceEnd::Closed
        }
        Ended::Up(PumpEnd::Read(e)) | Ended::Down(PumpEnd::Write(e)) => SpliceEnd::ClientError(e),
        Ended::Up(PumpEnd::Write(e)) | Ended::Down(PumpEnd::Read(e)) => SpliceEnd::BackendError(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A burst grows the buffer (within the budget); once the source has nothing more, the
    /// buffer is small again and the budget is whole.
    #[tokio::test]
    async fn a_burst_grows_the_buffer_and_idling_shrinks_it() {
        let budget = BufferBudget::new(1 << 20);
        let (mut src, mut dst) = tokio::io::duplex(1 << 20);
        let mut buf = SpliceBuf::new(&budget);
        src.write_all(&vec![7u8; 256 * 1024]).await.unwrap();
        let mut total = 0;
        while total < 256 * 1024 {
            let n = buf.read_from(&mut dst).await.unwrap();
            total += n;
            buf.after_read(n);
        }
        assert!(buf.len() > SPLICE_BUF_MIN, "the burst grew the buffer");
        assert_eq!(budget.used(), buf.len() - SPLICE_BUF_MIN);
        // Nothing more to read: the pending read shrinks the buffer.
        let pending = tokio::time::timeout(Duration::ZERO, buf.read_from(&mut dst)).await;
        assert!(pending.is_err(), "no data");
        assert_eq!(buf.len(), SPLICE_BUF_MIN);
        assert_eq!(budget.used(), 0);
    }

    /// With the budget spent, a direction keeps its small buffer and still moves every byte.
    #[tokio::test]
    async fn a_spent_budget_keeps_buffers_small() {
        let budget = BufferBudget::new(0);
        let (mut src, mut dst) = tokio::io::duplex(1 << 20);
        let mut buf = SpliceBuf::new(&budget);
        src.write_all(&vec![7u8; 64 * 1024]).await.unwrap();
        let mut total = 0;
        while total < 64 * 1024 {
            let n = buf.read_from(&mut dst).await.unwrap();
            assert!(n <= SPLICE_BUF_MIN);
            total += n;
            buf.after_read(n);
        }
        assert_eq!(buf.len(), SPLICE_BUF_MIN);
    }
}
