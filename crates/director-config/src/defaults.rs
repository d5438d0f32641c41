//! Built-in defaults: Dovecot's own setting defaults (for `$name` and for
//! telling known settings from typos) and the embedded standalone config.

use std::path::PathBuf;

/// `doveconf -d` top-level `key = value` lines of Dovecot 2.3.19.1.
const DOVECOT_DEFAULTS: &str = include_str!("dovecot_defaults.txt");

/// Dovecot 2.3.19.1's default for a top-level setting, if it has one.
pub fn dovecot_default(key: &str) -> Option<&'static str> {
    DOVECOT_DEFAULTS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(" =")?;
            (k == key).then(|| v.strip_prefix(' ').unwrap_or(v))
        })
}

/// Whether `key` is a top-level setting Dovecot 2.3.19.1 knows.
pub fn is_dovecot_setting(key: &str) -> bool {
    dovecot_default(key).is_some()
}

/// The configuration `directord` uses when started without a config file:
/// a standalone director (no ring peers) in front of three local mail
/// servers, with only the admin UNIX socket.
///
/// `base_dir` is deliberately not set here: Dovecot's default
/// (`/run/dovecot`) is usually not writable by an unprivileged user, so the
/// daemon applies [`default_standalone_base_dir`] as an override (see
/// [`crate::Config::default_standalone`]).
pub const DEFAULT_CONFIG: &str = "\
# Built-in configuration of directord (used when no config file is given).
# A standalone director: no ring peers, three mail servers on loopback.
director_servers =
director_mail_servers = 127.0.1.1 127.0.1.2 127.0.1.3
director_username_hash = %Lu
director_user_expire = 15 min

service director {
  unix_listener director-admin {
    mode = 0600
  }
}
";

/// A writable `base_dir` for the standalone default config:
/// `$XDG_RUNTIME_DIR/director` when that variable is set to an absolute
/// path, else `/tmp/director-<uid>`.
pub fn default_standalone_base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir.join("director");
        }
    }
    PathBuf::from(format!("/tmp/director-{}", current_uid()))
}

/// The real uid of this process, read from `/proc/self` ownership (no
/// libc call needed); 0 if unknown.
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_defaults() {
        assert_eq!(dovecot_default("default_login_user"), Some("dovenull"));
        assert_eq!(dovecot_default("base_dir"), Some("/run/dovecot"));
        assert_eq!(dovecot_default("director_user_expire"), Some("15 mins"));
        assert_eq!(dovecot_default("director_servers"), Some(""));
        assert_eq!(dovecot_default("master_user_separator"), Some(""));
        assert_eq!(dovecot_default("no_such_setting"), None);
    }
}
