//! One error type for everything the kit can fail at, so tests get a message that says what
//! was being done (and, for Dovecot start failures, the tail of its log).

use std::path::PathBuf;

/// Errors from starting, talking to or stopping a real Dovecot instance.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A filesystem or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the kit was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `dovecot -c CONF` failed or the instance never became ready.
    #[error("dovecot instance {conf} failed: {detail}")]
    Start {
        /// The generated config file.
        conf: PathBuf,
        /// Exit status / stderr / log tail.
        detail: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What the kit waited for.
        what: String,
        /// The bound in seconds.
        secs: u64,
    },
    /// The director admin socket answered something unexpected (or closed).
    #[error("director admin protocol: {0}")]
    Protocol(String),
    /// Sending a signal to a Dovecot master failed.
    #[error("signalling dovecot master {pid}: {source}")]
    Signal {
        /// The master PID read from `master.pid`.
        pid: i32,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
}

impl KitError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        KitError::Io {
            what: what.into(),
            source,
        }
    }
}
