//! Command-line parsing for `directord`.
//!
//! The flags mirror Dovecot's own master binary (`dovecot -c FILE -n -F`), so an operator's
//! muscle memory carries over. We do not daemonize: `-F` (foreground) is the only mode and is
//! accepted for compatibility; run the daemon under a supervisor (systemd, runit, …) instead.

use std::path::PathBuf;

/// What the user asked `directord` to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cli {
    /// `-c FILE`: the Dovecot-syntax configuration file. `None` runs on the embedded default
    /// configuration (standalone director, mail servers 127.0.1.1-127.0.1.3).
    pub config_path: Option<PathBuf>,
    /// `-n`: print the effective settings (like `doveconf -n`) and exit.
    pub print_settings: bool,
    /// `-o key=value` overrides, applied after the file in the order given.
    pub overrides: Vec<(String, String)>,
    /// `--version`: print the version and exit.
    pub version: bool,
    /// `-h`/`--help`: print the usage and exit.
    pub help: bool,
    /// `--settings-table PART`: print the README's settings table of one
    /// [`director_config::Part`] (Markdown) and exit.
    pub settings_table: Option<director_config::Part>,
}

/// Usage text printed by `--help` and on argument errors.
pub const USAGE: &str =
    "usage: directord [-F] [-c <config file>] [-n] [-o <key>=<value>]... [--version]
  -c FILE     read the Dovecot-syntax configuration FILE (default: embedded standalone config)
  -n          print the effective director settings and exit
  -o KEY=VAL  override a setting (may be repeated)
  -F          run in the foreground (the only mode; directord never daemonizes)
  --version   print the version and exit
  --settings-table director|proxy|admin|auth-http|metrics
              print the settings of that part, their defaults and meanings (Markdown)
";

/// An argument the parser could not accept; the message is printed with [`USAGE`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// An option that needs a value was last on the line.
    #[error("option {0} requires an argument")]
    MissingValue(&'static str),
    /// `-o` value without `=`.
    #[error("-o expects KEY=VALUE, got {0:?}")]
    BadOverride(String),
    /// `--settings-table` with a part that does not exist.
    #[error("--settings-table takes director, proxy, admin, auth-http or metrics, not {0:?}")]
    UnknownPart(String),
    /// Anything we do not know.
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

impl Cli {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<Cli, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cli = Cli::default();
        let mut it = args.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "-F" => {}
                "-n" => cli.print_settings = true,
                "--version" | "-V" => cli.version = true,
                "-h" | "--help" => cli.help = true,
                "--settings-table" => {
                    let v = it
                        .next()
                        .ok_or(CliError::MissingValue("--settings-table"))?;
                    let part =
                        director_config::Part::from_name(&v).ok_or(CliError::UnknownPart(v))?;
                    cli.settings_table = Some(part);
                }
                "-c" => {
                    let v = it.next().ok_or(CliError::MissingValue("-c"))?;
                    cli.config_path = Some(PathBuf::from(v));
                }
                "-o" => {
                    let v = it.next().ok_or(CliError::MissingValue("-o"))?;
                    cli.overrides.push(split_override(&v)?);
                }
                other => {
                    if let Some(v) = other.strip_prefix("-c").filter(|v| !v.is_empty()) {
                        cli.config_path = Some(PathBuf::from(v));
                    } else if let Some(v) = other.strip_prefix("-o").filter(|v| !v.is_empty()) {
                        cli.overrides.push(split_override(v)?);
                    } else {
                        return Err(CliError::Unknown(other.to_string()));
                    }
                }
            }
        }
        Ok(cli)
    }
}

fn split_override(v: &str) -> Result<(String, String), CliError> {
    match v.split_once('=') {
        Some((k, val)) if !k.trim().is_empty() => {
            Ok((k.trim().to_string(), val.trim().to_string()))
        }
        _ => Err(CliError::BadOverride(v.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_flags() {
        let cli = Cli::parse(["-F", "-c", "/etc/d.conf", "-n", "-o", "a = b", "-ox=y"]).unwrap();
        assert_eq!(cli.config_path, Some(PathBuf::from("/etc/d.conf")));
        assert!(cli.print_settings);
        assert_eq!(
            cli.overrides,
            vec![("a".into(), "b".into()), ("x".into(), "y".into())]
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Cli::parse(["-c"]), Err(CliError::MissingValue("-c")));
        assert_eq!(
            Cli::parse(["-o", "novalue"]),
            Err(CliError::BadOverride("novalue".into()))
        );
        assert_eq!(Cli::parse(["-x"]), Err(CliError::Unknown("-x".into())));
    }
}
