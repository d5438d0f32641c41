//! The `director_flush_socket` program client (spec §11.3).
//!
//! After a user was moved away from a host, the director can run a script that flushes the
//! user's state on the old backend. The setting is a program-client URI (the core expands
//! `%i`/`%{ip}` and `%h`/`%{host}` before asking us to run it):
//! * `exec:<program> [args…]` runs the program with the flush arguments appended; exit
//!   status 0 means success;
//! * `unix:<path>` and `tcp:<host>:<port>` speak Dovecot's script protocol
//!   (`VERSION\tscript\t4\t0`, `-`, one tab-escaped argument per line, an empty line), and
//!   succeed when the server's output ends with `+\n`.
//!
//! The arguments are `FLUSH <hash> <old ip> <new ip> <up|down> <old vhost count>`.
//! Connects time out after [`FLUSH_CONNECT_TIMEOUT`] (Dovecot: 10 s) and the whole run after
//! [`FLUSH_TOTAL_TIMEOUT`].

use std::path::PathBuf;
use std::process::Stdio;

use director_proto::tabescape::escape;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::{FLUSH_CONNECT_TIMEOUT, FLUSH_MAX_OUTPUT, FLUSH_TOTAL_TIMEOUT};

/// Where the flush script lives, parsed from the expanded setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushTarget {
    /// `exec:<program> [args…]`.
    Exec {
        /// Program path.
        program: PathBuf,
        /// Fixed arguments from the setting (before the flush arguments).
        args: Vec<String>,
    },
    /// `unix:<path>`.
    Unix(PathBuf),
    /// `tcp:<host>:<port>`.
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Why a flush failed; the core only learns "failed", the log gets the reason.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The setting is not `exec:`, `unix:` or `tcp:host:port`.
    #[error("invalid director_flush_socket {0:?}")]
    BadSetting(String),
    /// Connecting, writing or reading failed.
    #[error("flush script I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Connect or the whole run took too long.
    #[error("flush script timed out")]
    Timeout,
    /// The program exited non-zero or the remote said `-`.
    #[error("flush script reported failure")]
    Failed,
}

/// Parses an expanded `director_flush_socket` value.
pub fn parse_target(value: &str) -> Result<FlushTarget, FlushError> {
    let bad = || FlushError::BadSetting(value.to_string());
    if let Some(cmd) = value.strip_prefix("exec:") {
        let mut words = cmd.split_whitespace();
        let program = words.next().ok_or_else(bad)?;
        return Ok(FlushTarget::Exec {
            program: PathBuf::from(program),
            args: words.map(str::to_string).collect(),
        });
    }
    if let Some(path) = value.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(FlushTarget::Unix(PathBuf::from(path)));
    }
    if let Some(hp) = value.strip_prefix("tcp:") {
        let (host, port) = hp.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        return Ok(FlushTarget::Tcp {
            host: host.to_string(),
            port,
        });
    }
    Err(bad())
}

/// The request a remote script server receives (script protocol 4.0).
pub fn encode_script_request(argv: &[String]) -> Vec<u8> {
    let mut out = b"VERSION\tscript\t4\t0\n-\n".to_vec();
    for a in argv {
        out.extend_from_slice(&escape(a.as_bytes()));
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Runs one flush with `argv` (`FLUSH hash old new up|down vhosts`); `Ok(())` on success.
pub async fn run(target: &FlushTarget, argv: &[String]) -> Result<(), FlushError> {
    match tokio::time::timeout(FLUSH_TOTAL_TIMEOUT, run_inner(target, argv)).await {
        Ok(r) => r,
        Err(_) => Err(FlushError::Timeout),
    }
}

async fn run_inner(target: &FlushTarget, argv: &[String]) -> Result<(), FlushError> {
    match target {
        FlushTarget::Exec { program, args } => {
            let status = tokio::process::Command::new(program)
                .args(args)
                .args(argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await?;
            if status.success() {
                Ok(())
            } else {
                Err(FlushError::Failed)
            }
        }
        FlushTarget::Unix(path) => {
            let stream = connect_timeout(tokio::net::UnixStream::connect(path)).await?;
            talk_script(stream, argv).await
        }
        FlushTarget::Tcp { host, port } => {
            let stream =
                connect_timeout(tokio::net::TcpStream::connect((host.as_str(), *port))).await?;
            talk_script(stream, argv).await
        }
    }
}

async fn connect_timeout<S>(
    fut: impl std::future::Future<Output = std::io::Result<S>>,
) -> Result<S, FlushError> {
    match tokio::time::timeout(FLUSH_CONNECT_TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(FlushError::Timeout),
    }
}

async fn talk_script<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    argv: &[String],
) -> Result<(), FlushError> {
    stream.write_all(&encode_script_request(argv)).await?;
    stream.shutdown().await?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > FLUSH_MAX_OUTPUT {
            // Keep only the tail: the verdict is the last line.
            let cut = out.len() - 2;
            out.drain(..cut);
        }
    }
    if out.ends_with(b"+\n") {
        Ok(())
    } else {
        Err(FlushError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(up: &str) -> Vec<String> {
        ["FLUSH", "7", "127.0.1.1", "127.0.1.2", up, "100"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn parses_targets() {
        assert_eq!(
            parse_target("tcp:127.0.0.1:4000").unwrap(),
            FlushTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 4000
            }
        );
        assert_eq!(
            parse_target("unix:/x").unwrap(),
            FlushTarget::Unix("/x".into())
        );
        assert!(matches!(
            parse_target("exec:/bin/true a").unwrap(),
            FlushTarget::Exec { .. }
        ));
        assert!(parse_target("ftp:x").is_err());
        assert!(parse_target("tcp:host").is_err());
    }

    #[test]
    fn encodes_script_protocol() {
        assert_eq!(
            encode_script_request(&argv("up")),
            b"VERSION\tscript\t4\t0\n-\nFLUSH\n7\n127.0.1.1\n127.0.1.2\nup\n100\n\n".to_vec()
        );
    }

    #[tokio::test]
    async fn unix_script_success_and_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flush.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            for verdict in [&b"+\n"[..], b"-\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                assert!(got.starts_with(b"VERSION\tscript\t4\t0\n-\nFLUSH\n"));
                s.write_all(verdict).await.unwrap();
            }
        });
        let t = FlushTarget::Unix(path);
        assert!(run(&t, &argv("down")).await.is_ok());
        assert!(matches!(
            run(&t, &argv("down")).await,
            Err(FlushError::Failed)
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn exec_script_exit_status() {
        let ok = FlushTarget::Exec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "test \"$0\" = FLUSH -a \"$4\" = up".into()],
        };
        assert!(run(&ok, &argv("up")).await.is_ok());
        assert!(matches!(
            run(&ok, &argv("down")).await,
            Err(FlushError::Failed)
        ));
        let fail = FlushTarget::Exec {
            program: "/bin/false".into(),
            args: vec![],
        };
        assert!(matches!(
            run(&fail, &argv("up")).await,
            Err(FlushError::Failed)
        ));
    }
}
