//! Config errors. Every error that comes from a file names the file and the
//! line (`path:line: message`), so an operator can jump straight to it.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// Where a setting or section came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// File path as given (or an origin name such as `<override>` or
    /// `<builtin>`).
    pub file: Arc<str>,
    /// 1-based line number; 0 when not from a file line (overrides).
    pub line: u32,
}

impl Location {
    /// A location for values that come from `-o key=value`.
    pub fn override_origin() -> Self {
        Self {
            file: Arc::from("<override>"),
            line: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// A configuration error: a message and, when known, where it happened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigError {
    /// Where (file and line), if the error is tied to a place.
    pub location: Option<Location>,
    /// What went wrong (Dovecot's wording where Dovecot has one).
    pub message: String,
}

impl ConfigError {
    /// An error at `location`.
    pub fn at(location: &Location, message: impl Into<String>) -> Self {
        Self {
            location: Some(location.clone()),
            message: message.into(),
        }
    }

    /// An error not tied to a line.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            location: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}
