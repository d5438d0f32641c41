//! The `director_flush_socket` program client (spec §11.3).
//!
//! After a user was moved away from a host, the director can run a script that flushes the
//! user's state on the old backend. The core expands the setting (`%i`/`%{ip}`, `%h`/`%{host}`)
//! and hands us the URI and the arguments (`FLUSH <hash> <old ip> <new ip> <up|down> <old vhost
//! count>`). Parsing the URI, the request bytes and the reply's verdict are
//! `director_proto::flush_script`'s; here is only the I/O:
//! * `exec:<program> [args…]` runs the program with the flush arguments appended; exit
//!   status 0 means success;
//! * `unix:<path>` and `tcp:<host>:<port>` speak Dovecot's script protocol and succeed when
//!   the server's last output line is `+`.
//!
//! Connects time out after [`FLUSH_CONNECT_TIMEOUT`] (Dovecot: 10 s) and the whole run after
//! [`FLUSH_TOTAL_TIMEOUT`].

use std::process::Stdio;

use director_proto::flush_script::{
    encode_script_request, parse_flush_uri, FlushTarget, FlushUriError, ScriptReplyError,
    ScriptResult, ScriptResultReader,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::{FLUSH_CONNECT_TIMEOUT, FLUSH_TOTAL_TIMEOUT};

/// Why a flush failed; the core only learns "failed", the log gets the reason.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The setting is not `exec:`, `unix:` or `tcp:host:port`.
    #[error(transparent)]
    BadSetting(#[from] FlushUriError),
    /// Connecting, writing or reading failed.
    #[error("flush script I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Connect or the whole run took too long.
    #[error("flush script timed out")]
    Timeout,
    /// The remote script's output did not end with a `+`/`-` line.
    #[error("flush script: {0}")]
    NoResult(#[from] ScriptReplyError),
    /// The program exited non-zero or the remote said `-`.
    #[error("flush script reported failure")]
    Failed,
}

/// Runs the flush script named by the expanded `director_flush_socket` value `uri` with `argv`
/// (`FLUSH hash old new up|down vhosts`); `Ok(())` on success.
pub async fn run_uri(uri: &str, argv: &[String]) -> Result<(), FlushError> {
    run(&parse_flush_uri(uri)?, argv).await
}

/// Runs one flush against an already parsed target; `Ok(())` on success.
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
        FlushTarget::Unix { path } => {
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

/// Sends the request, half-closes, and reads the reply to EOF (memory bounded by the reader).
async fn talk_script<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    argv: &[String],
) -> Result<(), FlushError> {
    stream.write_all(&encode_script_request(argv)).await?;
    stream.shutdown().await?;
    let mut reply = ScriptResultReader::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        reply.feed(&chunk[..n]);
    }
    match reply.finish()? {
        ScriptResult::Success => Ok(()),
        ScriptResult::Failure => Err(FlushError::Failed),
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
            parse_flush_uri("tcp:127.0.0.1:4000").unwrap(),
            FlushTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 4000
            }
        );
        assert_eq!(
            parse_flush_uri("unix:/x").unwrap(),
            FlushTarget::Unix { path: "/x".into() }
        );
        assert!(matches!(
            parse_flush_uri("exec:/bin/true a").unwrap(),
            FlushTarget::Exec { .. }
        ));
        assert!(parse_flush_uri("ftp:x").is_err());
        assert!(parse_flush_uri("tcp:host").is_err());
    }

    #[tokio::test]
    async fn bad_setting_fails_without_io() {
        assert!(matches!(
            run_uri("ftp:x", &argv("up")).await,
            Err(FlushError::BadSetting(_))
        ));
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
            for verdict in [&b"+\n"[..], b"-\n", b"output without a verdict\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                assert!(got.starts_with(b"VERSION\tscript\t4\t0\n-\nFLUSH\n"));
                s.write_all(verdict).await.unwrap();
            }
        });
        let uri = format!("unix:{}", path.display());
        assert!(run_uri(&uri, &argv("down")).await.is_ok());
        assert!(matches!(
            run_uri(&uri, &argv("down")).await,
            Err(FlushError::Failed)
        ));
        assert!(matches!(
            run_uri(&uri, &argv("down")).await,
            Err(FlushError::NoResult(_))
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
