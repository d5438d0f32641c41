//! The ring listener (`inet_listener` of type `ring` in `service director`): accepts other
//! directors' connections and hands them to the driver, whose ring decides whether a peer
//! may stay (only directors listed in `director_servers` may).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use director_driver::DirectorHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds the ring listener on `addr`. Must run inside the driver thread's runtime.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)
        .with_context(|| format!("bind the ring listener on {addr}"))?;
    std.set_nonblocking(true)
        .context("make the ring listener non-blocking")?;
    TcpListener::from_std(std).context("register the ring listener")
}

/// Accepts ring connections until `shutdown` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    director: DirectorHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => director.ring_accept(stream, peer).await,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "ring accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
