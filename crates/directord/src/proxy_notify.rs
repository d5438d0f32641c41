//! proxy-notify (§3.4, §7.3): Dovecot login processes that proxy a user write the user's name
//! to a FIFO every `proxy_refresh` seconds while the session is open, and the director
//! refreshes that user's assignment, so users proxied by Dovecot proxies outside `directord`
//! (routed with `contrib/dovecot/director-auth-http.lua`) keep their backend while their
//! sessions last.
//!
//! Served only when configured (`fifo_listener PATH` in `service director`; Dovecot's built-in
//! default `login/proxy-notify` is not created). A login process is chrooted to its
//! `base_dir/login` and writes to `login_proxy_notify_path` (default `proxy-notify`) there, so
//! the path is the proxy's `base_dir/login/proxy-notify`, with a mode its login user may write
//! (`0666`, or `user`/`group`).
//!
//! Each line is a user name, routed as written (Dovecot's director hashes the raw line too);
//! a refresh never creates an assignment. A line longer than [`NOTIFY_MAX_LINE_LEN`] is
//! dropped up to its end.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use director_driver::DirectorHandle;
use director_proto::log_text::LogText;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::admin::listener::{set_owner, ListenerError};

/// Longest user name line accepted (Dovecot's director reads this FIFO with a 1024-byte
/// buffer, like its other connections).
pub const NOTIFY_MAX_LINE_LEN: usize = 1023;

/// Mode of a FIFO directory we create (Dovecot's `base_dir/login` is 0755).
const LOGIN_DIR_MODE: u32 = 0o755;

/// Bytes read at once.
const READ_CHUNK: usize = 4096;

/// One proxy-notify FIFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyFifo {
    /// Where it is created.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// Owner (empty: ours).
    pub user: String,
    /// Group (empty: ours).
    pub group: String,
}

/// Creates the FIFO (or reuses one already there) with its mode and owner, and opens it for
/// reading. It is opened read-write, so it never reports end-of-file when the last writer
/// goes away.
pub fn open(spec: &NotifyFifo) -> Result<tokio::net::unix::pipe::Receiver, ListenerError> {
    let err = |source| ListenerError::Listen {
        what: spec.path.display().to_string(),
        source,
    };
    // Dovecot creates its `base_dir/login` at start; so do we when the FIFO's directory is
    // missing, readable and searchable by all (login processes must reach the FIFO).
    if let Some(parent) = spec.path.parent().filter(|p| !p.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(LOGIN_DIR_MODE)
            .create(parent)
            .map_err(err)?;
    }
    match std::fs::symlink_metadata(&spec.path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a FIFO",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            nix::unistd::mkfifo(&spec.path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| err(std::io::Error::from(e)))?;
        }
        Err(e) => return Err(err(e)),
    }
    std::fs::set_permissions(&spec.path, std::fs::Permissions::from_mode(spec.mode))
        .map_err(err)?;
    set_owner(&spec.path, &spec.user, &spec.group)?;
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&spec.path)
        .map_err(err)
}

/// Splits a byte stream into user names, dropping overlong lines.
#[derive(Debug, Default)]
pub struct NotifyLines {
    buf: Vec<u8>,
    /// Inside an overlong line: drop bytes up to its LF.
    skipping: bool,
}

impl NotifyLines {
    /// Feeds `data`; calls `line` with each complete, non-empty line (without its LF).
    pub fn feed(&mut self, data: &[u8], mut line: impl FnMut(&[u8])) {
        for &b in data {
            if b == b'\n' {
                if !self.skipping && !self.buf.is_empty() {
                    line(&self.buf);
                }
                self.buf.clear();
                self.skipping = false;
            } else if !self.skipping {
                if self.buf.len() == NOTIFY_MAX_LINE_LEN {
                    tracing::warn!(
                        "proxy-notify line longer than {NOTIFY_MAX_LINE_LEN} bytes dropped"
                    );
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
    }
}

/// Reads the FIFO until `shutdown`, refreshing each user named.
pub async fn serve(
    mut fifo: tokio::net::unix::pipe::Receiver,
    path: PathBuf,
    director: DirectorHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut lines = NotifyLines::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = tokio::select! {
            r = fifo.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "proxy-notify read failed");
                    break;
                }
            },
            _ = shutdown.changed() => break,
        };
        let mut stopped = false;
        lines.feed(&buf[..n], |user| {
            tracing::debug!(user = %LogText(user), "proxy-notify: refreshing user");
            stopped |= !director.refresh_user(user);
        });
        if stopped {
            break;
        }
    }
    remove(&path);
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove the proxy-notify FIFO");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut l = NotifyLines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, |u| out.push(u.to_vec()));
        }
        out
    }

    #[test]
    fn names_across_chunks_and_overlong_lines_dropped() {
        assert_eq!(
            lines(&[b"us", b"er1\nuser2\n\nuser", b"3\n"]),
            [b"user1".to_vec(), b"user2".to_vec(), b"user3".to_vec()]
        );
        let long = vec![b'x'; NOTIFY_MAX_LINE_LEN + 5];
        assert_eq!(lines(&[&long, b"\nok\n"]), [b"ok".to_vec()]);
        let exact = vec![b'x'; NOTIFY_MAX_LINE_LEN];
        let got = lines(&[&exact, b"\n"]);
        assert_eq!(got, [exact]);
    }
}
