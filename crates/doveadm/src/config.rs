//! The settings doveadm needs from the Dovecot config: `base_dir` (for the
//! default `director-admin` and `auth-userdb` sockets) and
//! `director_username_hash` (for client-side hashing in `move` and `map`).
//! Parsing is `director_config::Config`; this module only applies doveadm's
//! defaults, `-o` overrides and error wording.

use std::path::Path;

use crate::resolve::strerror;

/// Config file read when `-c` is not given (doveadm's default).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dovecot/dovecot.conf";

/// What doveadm takes from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `base_dir`.
    pub base_dir: String,
    /// `director_username_hash`.
    pub username_hash: String,
}

impl Settings {
    /// The default admin socket, `<base_dir>/director-admin`.
    pub fn admin_socket(&self) -> String {
        format!("{}/director-admin", self.base_dir)
    }
    /// The userdb socket, `<base_dir>/auth-userdb`.
    pub fn auth_userdb_socket(&self) -> String {
        format!("{}/auth-userdb", self.base_dir)
    }
}

/// Why the config could not be used; each variant says how doveadm
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// `Fatal: Error reading configuration: <text>`, exit 75 (missing
    /// file, bad `-o`).
    #[error("Error reading configuration: {0}")]
    Read(String),
    /// A syntax error: doveadm shows doveconf's
    /// `doveconf: Fatal: Error in configuration file F line N: …`, exit 89.
    #[error("{0}")]
    Syntax(String),
}

fn syntax(e: &director_config::ConfigError) -> LoadError {
    match &e.location {
        Some(loc) if loc.line == 0 => LoadError::Syntax(format!(
            "doveconf: Fatal: Error in configuration file {}: {}",
            loc.file, e.message
        )),
        Some(loc) => LoadError::Syntax(format!(
            "doveconf: Fatal: Error in configuration file {} line {}: {}",
            loc.file, loc.line, e.message
        )),
        None => LoadError::Syntax(format!("doveconf: Fatal: {}", e.message)),
    }
}

/// Loads `path` (or [`DEFAULT_CONFIG_PATH`]) and applies `overrides`.
pub fn load(path: Option<&[u8]>, overrides: &[Vec<u8>]) -> Result<Settings, LoadError> {
    let path = match path {
        Some(p) => String::from_utf8_lossy(p).into_owned(),
        None => DEFAULT_CONFIG_PATH.to_owned(),
    };
    if let Err(e) = std::fs::metadata(&path) {
        return Err(LoadError::Read(format!(
            "stat({path}) failed: {}",
            strerror(&e)
        )));
    }
    let mut config = director_config::Config::load(Path::new(&path)).map_err(|e| syntax(&e))?;
    // doveconf rejects unknown top-level settings in the file (not in -o).
    if let Some(bad) = config
        .root()
        .settings()
        .find(|s| !director_config::is_dovecot_setting(&s.key))
    {
        return Err(LoadError::Syntax(format!(
            "doveconf: Fatal: Error in configuration file {} line {}: Unknown setting: {}",
            bad.location.file, bad.location.line, bad.key
        )));
    }
    for o in overrides {
        let o = String::from_utf8_lossy(o);
        if !o.contains('=') {
            return Err(LoadError::Read(format!(
                "Invalid -o parameter {o}: Missing '='"
            )));
        }
        config
            .apply_override(&o)
            .map_err(|e| LoadError::Read(format!("Invalid -o parameter {o}: {}", e.message)))?;
    }
    Ok(Settings {
        base_dir: setting(&config, "base_dir"),
        username_hash: setting(&config, "director_username_hash"),
    })
}

/// A top-level setting, else Dovecot 2.3.19's default for it (the table
/// `director_config` keeps from `doveconf -d`; `base_dir` is
/// `/run/dovecot`, `director_username_hash` is `%Lu`).
fn setting(config: &director_config::Config, key: &str) -> String {
    config
        .get(key)
        .or_else(|| director_config::dovecot_default(key))
        .unwrap_or_default()
        .to_owned()
}
