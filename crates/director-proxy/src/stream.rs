//! [`Stream`]: a TCP connection that may be upgraded to TLS in place (STARTTLS on either
//! side), so every driver works on one type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Most bytes a TLS connection holds that its peer has not taken yet (rustls's default is
/// 64 KiB). One TLS record's worth keeps the data flowing (the socket buffers hold the
/// rest), and a peer that stops reading costs the process 16 KiB, not 64.
const TLS_BUFFER_LIMIT: usize = 16 * 1024 + 512;

/// A client- or backend-facing connection.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS towards a client (we are the server).
    ServerTls(Box<server::TlsStream<TcpStream>>),
    /// TLS towards a backend (we are the client).
    ClientTls(Box<client::TlsStream<TcpStream>>),
    /// Transient state during an upgrade (or after a failed one).
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost during TLS upgrade",
    )
}

impl Stream {
    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
    }

    /// Ends our side of a connection that is dropped next: TLS sends its close_notify. Plain
    /// TCP needs nothing, since closing the socket sends the FIN; a `shutdown` first would
    /// cost a system call per connection for the same FIN.
    pub async fn finish(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) | Stream::Gone => Ok(()),
            Stream::ServerTls(_) | Stream::ClientTls(_) => self.shutdown().await,
        }
    }

    /// Runs the TLS server handshake (implicit TLS listener or client STARTTLS).
    pub async fn accept_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(tcp) => {
                let mut tls = acceptor.accept(tcp).await?;
                tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
                *self = Stream::ServerTls(Box::new(tls));
                Ok(())
            }
            other => {
                *self = other;
                Err(io::Error::other("TLS already active"))
            }
        }
    }

    /// Runs the TLS client handshake towards a backend, verifying `name`.
    pub async fn connect_tls(
        &mut self,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(tcp) => {
                let mut tls = connector.connect(name, tcp).await?;
                tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
                *self = Stream::ClientTls(Box::new(tls));
                Ok(())
            }
            other => {
                *self = other;
                Err(io::Error::other("TLS already active"))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}
