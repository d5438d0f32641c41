//! Logging setup: `tracing` routed to Dovecot's three log destinations.
//!
//! Dovecot has `log_path` (errors and warnings), `info_log_path` (info; empty = same as
//! `log_path`) and `debug_log_path` (debug; empty = same as `info_log_path`). We honour them the
//! same way: a path is opened in append mode. The value `syslog` (Dovecot's default for
//! `log_path`) is not implemented: those events go to stderr, which a supervisor such as
//! systemd forwards to the journal anyway. `/dev/stderr` also means stderr.
//!
//! The maximum level comes from the `DIRECTORD_LOG` environment variable (an `EnvFilter`
//! directive, e.g. `debug` or `directord=debug`), default `info`.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Environment variable holding the log filter directive.
pub const LOG_FILTER_ENV: &str = "DIRECTORD_LOG";

/// The three Dovecot log destinations, as configured (unresolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTargets {
    /// `log_path`: errors and warnings (and everything else unless overridden).
    pub log_path: String,
    /// `info_log_path`: info messages; empty = `log_path`.
    pub info_log_path: String,
    /// `debug_log_path`: debug messages; empty = info destination.
    pub debug_log_path: String,
}

impl Default for LogTargets {
    fn default() -> Self {
        LogTargets {
            log_path: "syslog".into(),
            info_log_path: String::new(),
            debug_log_path: String::new(),
        }
    }
}

impl LogTargets {
    /// Resolves Dovecot's "empty means the previous one" chain.
    fn resolved(&self) -> (&str, &str, &str) {
        let err = self.log_path.as_str();
        let info = if self.info_log_path.is_empty() {
            err
        } else {
            self.info_log_path.as_str()
        };
        let debug = if self.debug_log_path.is_empty() {
            info
        } else {
            self.debug_log_path.as_str()
        };
        (err, info, debug)
    }
}

fn make_writer(path: &str) -> anyhow::Result<BoxMakeWriter> {
    if path.is_empty() || path == "syslog" || path == "/dev/stderr" {
        return Ok(BoxMakeWriter::new(std::io::stderr));
    }
    let file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(path))
        .with_context(|| format!("open log file {path}"))?;
    Ok(BoxMakeWriter::new(Arc::new(file)))
}

/// Installs the global subscriber. Call once, before the runtime starts.
pub fn init(targets: &LogTargets) -> anyhow::Result<()> {
    let (err_path, info_path, debug_path) = targets.resolved();
    let env = EnvFilter::try_from_env(LOG_FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let errors = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(make_writer(err_path)?)
        .with_filter(filter_fn(|m| *m.level() <= Level::WARN));
    let infos = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(make_writer(info_path)?)
        .with_filter(filter_fn(|m| *m.level() == Level::INFO));
    let debugs = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(make_writer(debug_path)?)
        .with_filter(filter_fn(|m| *m.level() >= Level::DEBUG));
    tracing_subscriber::registry()
        .with(env)
        .with(errors)
        .with(infos)
        .with(debugs)
        .try_init()
        .context("install the tracing subscriber")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_paths_fall_back_in_dovecot_order() {
        let t = LogTargets {
            log_path: "/a".into(),
            info_log_path: String::new(),
            debug_log_path: String::new(),
        };
        assert_eq!(t.resolved(), ("/a", "/a", "/a"));
        let t = LogTargets {
            log_path: "/a".into(),
            info_log_path: "/b".into(),
            debug_log_path: String::new(),
        };
        assert_eq!(t.resolved(), ("/a", "/b", "/b"));
    }
}
