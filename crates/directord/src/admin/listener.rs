//! Admin listeners: the `director-admin` UNIX socket and the optional TCP
//! `inet_listener director-doveadm`, with the accept loop shared by both.
//!
//! The accept loop takes a connection slot (a semaphore permit) *before* accepting, so at most
//! as many clients as the pool has slots are served; beyond that the kernel backlog holds new
//! clients until one leaves (accept back-off). The UNIX sockets share one pool of
//! [`MAX_ADMIN_CONNECTIONS`]; the TCP listeners have their own, smaller one
//! (`director_admin_tcp_max_connections`, see [`crate::admin::tcp`]), so TCP clients can never
//! take the local `doveadm`'s slots. Failed `accept()`s (EMFILE, ENFILE, ENOBUFS…) pause with
//! exponential back-off instead of spinning.
//!
//! `base_dir` and every directory an admin socket is created in must belong to us and be
//! writable by nobody else ([`ensure_dir`]): whoever can write there can replace the socket
//! with one of their own and receive the local `doveadm`'s commands.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use crate::admin::connection::{self, ConnectionContext};
use crate::limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, ADMIN_LISTEN_BACKLOG, MAX_ADMIN_CONNECTIONS,
};

/// Errors preparing a listener; they stop the daemon at start-up with this context.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// `base_dir` could not be created or examined.
    #[error("create base_dir {path}: {source}")]
    BaseDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `base_dir` (or a socket's directory) is not ours alone.
    #[error(
        "base_dir {path}: {reason}; refusing to create admin sockets there (another user could \
         replace them)"
    )]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Something answered on the socket path: another daemon owns it.
    #[error("{0} is in use by a running process (another directord or Dovecot?)")]
    InUse(PathBuf),
    /// The path exists and is not a socket; we refuse to delete it.
    #[error("{0} exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    /// bind/listen/chmod failed.
    #[error("listen on {what}: {source}")]
    Listen {
        /// Socket path or address.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// The configured user or group does not exist, or chown failed.
    #[error("set owner of {path}: {reason}")]
    Owner {
        /// Socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// How the UNIX admin socket is created (`service director { unix_listener director-admin }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketSpec {
    /// Full path, normally `<base_dir>/director-admin`.
    pub path: PathBuf,
    /// Permission bits (Dovecot default 0600).
    pub mode: u32,
    /// Owner user name; empty = keep ours.
    pub user: String,
    /// Owner group name; empty = keep ours.
    pub group: String,
}

/// Mode of a directory we create for sockets (`base_dir` when missing).
pub const NEW_DIR_MODE: u32 = 0o700;

/// The umask while a socket is bound: the socket file is created inaccessible to anyone else,
/// and the listener's `mode` is applied afterwards.
pub const BIND_UMASK: u32 = 0o077;

/// Creates `dir` (and missing parents) with mode 0700 if missing, then checks that it is
/// ours alone: owned by our effective uid (a symbolic link too, and what it points to) and
/// not writable by group or others. Dovecot creates `base_dir` at start; we also refuse one
/// that another user could have prepared, such as a `/tmp/director-<uid>` made by someone
/// else first.
pub fn ensure_dir(dir: &Path) -> Result<(), ListenerError> {
    let io_err = |source| ListenerError::BaseDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(NEW_DIR_MODE)
        .create(dir)
        .map_err(io_err)?;
    check_private_dir(dir, nix::unistd::geteuid().as_raw())
}

/// Refuses a directory not owned by `uid` or writable by group or others.
pub fn check_private_dir(dir: &Path, uid: u32) -> Result<(), ListenerError> {
    let unsafe_dir = |reason: String| ListenerError::UnsafeDir {
        path: dir.to_path_buf(),
        reason,
    };
    let io_err = |source| ListenerError::BaseDir {
        path: dir.to_path_buf(),
        source,
    };
    let link = std::fs::symlink_metadata(dir).map_err(io_err)?;
    if link.file_type().is_symlink() && link.uid() != uid {
        return Err(unsafe_dir(format!(
            "is a symbolic link owned by uid {}, not by us (uid {uid})",
            link.uid()
        )));
    }
    let meta = std::fs::metadata(dir).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by us (uid {uid})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {mode:04o} lets group or others write to it (chmod go-w)"
        )));
    }
    Ok(())
}

/// Binds the UNIX admin socket: removes a stale socket file left by a dead process (but not a
/// live one), binds, applies mode and owner.
pub fn bind_unix(spec: &UnixSocketSpec) -> Result<UnixListener, ListenerError> {
    if let Some(parent) = spec.path.parent() {
        ensure_dir(parent)?;
    }
    remove_stale_socket(&spec.path)?;
    // The umask is per process: this runs at start, before any other thread creates files.
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(BIND_UMASK));
    let bound = std::os::unix::net::UnixListener::bind(&spec.path);
    nix::sys::stat::umask(old_umask);
    let std_listener = bound.map_err(|source| ListenerError::Listen {
        what: spec.path.display().to_string(),
        source,
    })?;
    let listen_err = |source| ListenerError::Listen {
        what: spec.path.display().to_string(),
        source,
    };
    std::fs::set_permissions(&spec.path, std::fs::Permissions::from_mode(spec.mode))
        .map_err(listen_err)?;
    set_owner(&spec.path, &spec.user, &spec.group)?;
    std_listener.set_nonblocking(true).map_err(listen_err)?;
    UnixListener::from_std(std_listener).map_err(listen_err)
}

fn remove_stale_socket(path: &Path) -> Result<(), ListenerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenerError::Listen {
                what: path.display().to_string(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ListenerError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ListenerError::InUse(path.to_path_buf()));
    }
    tracing::info!(path = %path.display(), "removing stale socket");
    std::fs::remove_file(path).map_err(|source| ListenerError::Listen {
        what: path.display().to_string(),
        source,
    })
}

pub(crate) fn set_owner(path: &Path, user: &str, group: &str) -> Result<(), ListenerError> {
    if user.is_empty() && group.is_empty() {
        return Ok(());
    }
    let owner_err = |reason: String| ListenerError::Owner {
        path: path.to_path_buf(),
        reason,
    };
    let uid = if user.is_empty() {
        None
    } else {
        let u = nix::unistd::User::from_name(user)
            .map_err(|e| owner_err(format!("look up user {user}: {e}")))?
            .ok_or_else(|| owner_err(format!("unknown user {user}")))?;
        Some(u.uid)
    };
    let gid = if group.is_empty() {
        None
    } else {
        let g = nix::unistd::Group::from_name(group)
            .map_err(|e| owner_err(format!("look up group {group}: {e}")))?
            .ok_or_else(|| owner_err(format!("unknown group {group}")))?;
        Some(g.gid)
    };
    nix::unistd::chown(path, uid, gid).map_err(|e| owner_err(format!("chown: {e}")))
}

/// Binds the TCP admin listener with our backlog.
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ListenerError> {
    let err = |source| ListenerError::Listen {
        what: addr.to_string(),
        source,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(ADMIN_LISTEN_BACKLOG).map_err(err)
}

/// A stream an admin connection runs on: a UNIX or TCP socket, or TLS over TCP.
pub trait AdminStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
    /// The socket to look for input on without the reactor (see `connection::spin_read`),
    /// when the bytes on it are the protocol's own; `None` for TLS, whose bytes are records.
    fn spin_fd(&self) -> Option<RawFd>;
}

impl AdminStream for UnixStream {
    fn spin_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl AdminStream for TcpStream {
    fn spin_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl AdminStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn spin_fd(&self) -> Option<RawFd> {
        None
    }
}

/// A listener the accept loop can drive: UNIX or TCP.
pub trait AdminAcceptor: Send + 'static {
    /// The accepted stream type.
    type Stream: Send + 'static;
    /// Accepts one client; returns the stream and a printable peer name for logs.
    fn accept(
        &self,
    ) -> impl std::future::Future<Output = io::Result<(Self::Stream, PeerName)>> + Send;
}

/// Who is on the other end, for logs.
#[derive(Debug, Clone)]
pub enum PeerName {
    /// A UNIX socket client (no useful address).
    Unix,
    /// A TCP client.
    Tcp(SocketAddr),
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerName::Unix => f.write_str("unix"),
            PeerName::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl AdminAcceptor for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> io::Result<(UnixStream, PeerName)> {
        let (s, _) = UnixListener::accept(self).await?;
        Ok((s, PeerName::Unix))
    }
}

impl AdminAcceptor for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> io::Result<(TcpStream, PeerName)> {
        let (s, a) = TcpListener::accept(self).await?;
        // Replies are small and latency matters more than packet count.
        let _ = s.set_nodelay(true);
        Ok((s, PeerName::Tcp(a)))
    }
}

/// Shared connection-slot pool for all admin listeners.
pub fn connection_slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS))
}

/// Accepts admin clients of a UNIX socket until `shutdown` flips to `true`, spawning one
/// task per client (no idle timeout: local clients are trusted, as in Dovecot).
pub async fn accept_loop<A>(
    listener: A,
    what: String,
    slots: Arc<Semaphore>,
    ctx: ConnectionContext,
    shutdown: watch::Receiver<bool>,
) where
    A: AdminAcceptor,
    A::Stream: AdminStream,
{
    accept_with(
        listener,
        what,
        slots,
        MAX_ADMIN_CONNECTIONS,
        move |stream, peer| connection::serve(stream, peer, ctx.clone(), None),
        shutdown,
    )
    .await
}

/// Accepts clients until `shutdown` flips to `true`, holding one of `slots` (`limit` in all,
/// for the log) per client while `handle`'s future runs in a task of its own.
pub async fn accept_with<A, H, F>(
    listener: A,
    what: String,
    slots: Arc<Semaphore>,
    limit: usize,
    mut handle: H,
    mut shutdown: watch::Receiver<bool>,
) where
    A: AdminAcceptor,
    H: FnMut(A::Stream, PeerName) -> F + Send,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut warned_full = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                warned_full = false;
                p
            }
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        listener = %what,
                        limit,
                        "admin connection limit reached, waiting for a slot before accepting more"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break, // semaphore closed: shutting down
                    },
                    _ = shutdown.changed() => break,
                }
            }
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let served = handle(stream, peer);
                tokio::spawn(async move {
                    served.await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::error!(listener = %what, error = %e, "accept() failed");
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    tracing::debug!(listener = %what, "stopped accepting");
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::time::Duration;

    use super::*;
    use crate::admin::connection::tests::context;

    fn connect_and_read_greeting(path: &Path) -> std::os::unix::net::UnixStream {
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut g = [0u8; 29];
        s.read_exact(&mut g).unwrap();
        assert_eq!(&g[..], director_proto::admin::SERVER_GREETING);
        s
    }

    /// With every slot taken, a new client waits in the backlog (no greeting) and is served
    /// as soon as a slot frees up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accept_waits_for_a_free_slot() {
        let dir = tempfile::tempdir().unwrap();
        let spec = UnixSocketSpec {
            path: dir.path().join("director-admin"),
            mode: 0o600,
            user: String::new(),
            group: String::new(),
        };
        let listener = bind_unix(&spec).unwrap();
        let slots = Arc::new(Semaphore::new(2));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            "test".into(),
            slots.clone(),
            context(),
            stop_rx,
        ));
        let path = spec.path.clone();
        tokio::task::spawn_blocking(move || {
            let first = connect_and_read_greeting(&path);
            let _second = connect_and_read_greeting(&path);
            let mut third = std::os::unix::net::UnixStream::connect(&path).unwrap();
            third.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            // Not served while both slots are taken.
            match third.read(&mut buf) {
                Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock),
                Ok(n) => panic!("third client served over the limit ({n} bytes)"),
            }
            drop(first);
            third.set_nonblocking(false).unwrap();
            third
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut g = [0u8; 29];
            third.read_exact(&mut g).unwrap();
            assert_eq!(&g[..], director_proto::admin::SERVER_GREETING);
        })
        .await
        .unwrap();
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
