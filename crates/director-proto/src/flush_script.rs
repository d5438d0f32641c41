//! `director_flush_socket` (spec §11.3): the URI of a program run when a
//! user is moved, and Dovecot's "script" protocol used to call it over a
//! UNIX or TCP socket.
//!
//! * [`expand_flush_socket`] expands `%i`/`%{ip}` and `%h`/`%{host}` (the
//!   user's **new** host's IP and hostname — checked with a real director:
//!   the hostname is empty for hosts configured by IP) and `%%`.
//! * [`parse_flush_uri`] turns the result into a [`FlushTarget`]:
//!   `unix:<path>`, `tcp:<host>:<port>` or `exec:<program> [args]`.
//! * [`FlushArgs`] are the arguments: `FLUSH <hash> <old ip> <new ip>
//!   down|up <old vhost count>`.
//! * [`encode_script_request`] writes the request (`VERSION\tscript\t4\t0`,
//!   `-`, one tab-escaped argument per line, an empty line);
//!   [`ScriptResultReader`] reads the reply, whose output ends with `+\n`
//!   (success) or `-\n` (failure).

use std::net::IpAddr;

use thiserror::Error;

use crate::tabescape::escape_into;
use crate::value::{format_ip, parse_port};

/// The first line a script client sends.
pub const SCRIPT_HANDSHAKE: &[u8] = b"VERSION\tscript\t4\t0\n";

/// Most output bytes [`ScriptResultReader`] keeps for logging; the rest is
/// counted and dropped so a chatty script cannot exhaust memory.
pub const MAX_SCRIPT_OUTPUT_KEPT: usize = 4096;

/// Longest `director_flush_socket` value accepted after expansion.
pub const MAX_FLUSH_URI_LEN: usize = 4096;

/// Connect timeout Dovecot uses for remote scripts (seconds).
pub const SCRIPT_CONNECT_TIMEOUT_SECS: u64 = 10;

/// Expands `%i`, `%{ip}`, `%h`, `%{host}` and `%%`. Any other `%` sequence
/// is kept as written.
pub fn expand_flush_socket(template: &str, ip: &str, host: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (replacement, consumed) = if after.starts_with('i') {
            (Some(ip), 1)
        } else if after.starts_with('h') {
            (Some(host), 1)
        } else if after.starts_with('%') {
            (Some("%"), 1)
        } else if after.starts_with("{ip}") {
            (Some(ip), 4)
        } else if after.starts_with("{host}") {
            (Some(host), 6)
        } else {
            (None, 0)
        };
        match replacement {
            Some(r) => {
                out.push_str(r);
                rest = &after[consumed..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Where the flush program is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FlushTarget {
    /// `unix:<path>`: a script-protocol server on a UNIX socket. A relative
    /// path is relative to `base_dir` (the director runs chrooted/chdir'd
    /// there; checked with a real director).
    Unix {
        /// Socket path as written.
        path: String,
    },
    /// `tcp:<host>:<port>`: a script-protocol server over TCP.
    Tcp {
        /// Host name or IP (IPv6 in brackets when followed by the port).
        host: String,
        /// Port (1–65535).
        port: u16,
    },
    /// `exec:<program> [args...]`: run locally; success = exit status 0.
    Exec {
        /// Program path.
        program: String,
        /// Leading arguments (before the FLUSH arguments).
        args: Vec<String>,
    },
}

/// A `director_flush_socket` value that is not a usable URI.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlushUriError {
    /// Not one of the three schemes.
    #[error("invalid director_flush_socket URI {0:?}: must begin with unix:, tcp: or exec:")]
    UnknownScheme(String),
    /// `unix:` or `exec:` with nothing after it.
    #[error("invalid director_flush_socket URI {0:?}: missing path")]
    MissingPath(String),
    /// `tcp:` without a valid `host:port`.
    #[error("invalid director_flush_socket URI {0:?}: expected tcp:<host>:<port>")]
    BadTcp(String),
    /// Longer than [`MAX_FLUSH_URI_LEN`].
    #[error("director_flush_socket URI longer than {MAX_FLUSH_URI_LEN} bytes")]
    TooLong,
}

/// Parses an (expanded) `director_flush_socket` value.
pub fn parse_flush_uri(uri: &str) -> Result<FlushTarget, FlushUriError> {
    if uri.len() > MAX_FLUSH_URI_LEN {
        return Err(FlushUriError::TooLong);
    }
    if let Some(path) = uri.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(FlushUriError::MissingPath(uri.to_owned()));
        }
        return Ok(FlushTarget::Unix {
            path: path.to_owned(),
        });
    }
    if let Some(hostport) = uri.strip_prefix("tcp:") {
        let bad = || FlushUriError::BadTcp(uri.to_owned());
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
            (h, p)
        } else {
            hostport.rsplit_once(':').ok_or_else(bad)?
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = parse_port(port.as_bytes()).ok_or_else(bad)?;
        return Ok(FlushTarget::Tcp {
            host: host.to_owned(),
            port,
        });
    }
    if let Some(cmd) = uri.strip_prefix("exec:") {
        let mut words = cmd.split(' ').filter(|w| !w.is_empty()).map(str::to_owned);
        let program = words
            .next()
            .ok_or_else(|| FlushUriError::MissingPath(uri.to_owned()))?;
        return Ok(FlushTarget::Exec {
            program,
            args: words.collect(),
        });
    }
    Err(FlushUriError::UnknownScheme(uri.to_owned()))
}

/// The arguments of one flush call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlushArgs {
    /// The moved user's hash.
    pub user_hash: u32,
    /// Host the user was on.
    pub old_ip: IpAddr,
    /// Host the user goes to.
    pub new_ip: IpAddr,
    /// Whether the old host was down.
    pub old_host_down: bool,
    /// The old host's vhost count.
    pub old_vhost_count: u32,
}

impl FlushArgs {
    /// `FLUSH <hash> <old ip> <new ip> down|up <old vhost count>`.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "FLUSH".to_owned(),
            self.user_hash.to_string(),
            format_ip(&self.old_ip),
            format_ip(&self.new_ip),
            if self.old_host_down { "down" } else { "up" }.to_owned(),
            self.old_vhost_count.to_string(),
        ]
    }
}

/// The whole request a script client sends: handshake, `-` (no "noreply"
/// flag), each argument tab-escaped on its own line, an empty line.
pub fn encode_script_request<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = SCRIPT_HANDSHAKE.to_vec();
    out.extend_from_slice(b"-\n");
    for arg in args {
        escape_into(&mut out, arg.as_ref());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// The outcome of a script call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptResult {
    /// Output ended with `+\n`.
    Success,
    /// Output ended with `-\n`.
    Failure,
}

/// The script's reply did not end with a result line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("script reply ended without a +/- result line ({total_len} bytes)")]
pub struct ScriptReplyError {
    /// Bytes received in total.
    pub total_len: u64,
}

/// Reads a script server's reply until EOF, with bounded memory.
#[derive(Debug, Clone, Default)]
pub struct ScriptResultReader {
    kept: Vec<u8>,
    tail: [u8; 3],
    tail_len: usize,
    total_len: u64,
}

impl ScriptResultReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.total_len = self.total_len.saturating_add(data.len() as u64);
        let room = MAX_SCRIPT_OUTPUT_KEPT.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
        for &b in data.iter().rev().take(3).rev() {
            if self.tail_len < 3 {
                self.tail[self.tail_len] = b;
                self.tail_len += 1;
            } else {
                self.tail.rotate_left(1);
                self.tail[2] = b;
            }
        }
    }

    /// The first [`MAX_SCRIPT_OUTPUT_KEPT`] bytes of output (with the result line).
    pub fn output(&self) -> &[u8] {
        &self.kept
    }

    /// Call at EOF: the result from the last line.
    pub fn finish(&self) -> Result<ScriptResult, ScriptReplyError> {
        let tail = &self.tail[..self.tail_len];
        // The result line is the whole last line: "+\n" / "-\n" at the very
        // start or after a previous "\n".
        let at_line_start =
            |n: usize| tail.len() == n || tail.get(tail.len() - n - 1) == Some(&b'\n');
        match tail {
            [.., b'+', b'\n'] if at_line_start(2) => Ok(ScriptResult::Success),
            [.., b'-', b'\n'] if at_line_start(2) => Ok(ScriptResult::Failure),
            _ => Err(ScriptReplyError {
                total_len: self.total_len,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expansion() {
        assert_eq!(
            expand_flush_socket(
                "unix:/run/flush-%i-%{host}-%h-%{ip}-%%-%x",
                "10.0.0.1",
                "mail1"
            ),
            "unix:/run/flush-10.0.0.1-mail1-mail1-10.0.0.1-%-%x"
        );
        assert_eq!(expand_flush_socket("%", "a", "b"), "%");
        assert_eq!(expand_flush_socket("%{", "a", "b"), "%{");
    }

    #[test]
    fn uris() {
        assert_eq!(
            parse_flush_uri("unix:flush"),
            Ok(FlushTarget::Unix {
                path: "flush".into()
            })
        );
        assert_eq!(
            parse_flush_uri("tcp:127.0.0.1:2000"),
            Ok(FlushTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 2000
            })
        );
        assert_eq!(
            parse_flush_uri("tcp:[::1]:2000"),
            Ok(FlushTarget::Tcp {
                host: "::1".into(),
                port: 2000
            })
        );
        assert_eq!(
            parse_flush_uri("exec:/usr/bin/flush -v  x"),
            Ok(FlushTarget::Exec {
                program: "/usr/bin/flush".into(),
                args: vec!["-v".into(), "x".into()]
            })
        );
        assert!(parse_flush_uri("tcp:host").is_err());
        assert!(parse_flush_uri("tcp:host:0").is_err());
        assert!(parse_flush_uri("unix:").is_err());
        assert!(parse_flush_uri("exec:").is_err());
        assert!(parse_flush_uri("/path").is_err());
    }

    #[test]
    fn request_bytes() {
        let args = FlushArgs {
            user_hash: 617210206,
            old_ip: "127.0.1.1".parse().unwrap(),
            new_ip: "127.0.1.2".parse().unwrap(),
            old_host_down: true,
            old_vhost_count: 100,
        };
        assert_eq!(
            encode_script_request(&args.to_args()),
            b"VERSION\tscript\t4\t0\n-\nFLUSH\n617210206\n127.0.1.1\n127.0.1.2\ndown\n100\n\n"
        );
    }

    #[test]
    fn results() {
        let run = |chunks: &[&[u8]]| {
            let mut r = ScriptResultReader::new();
            for c in chunks {
                r.feed(c);
            }
            r.finish()
        };
        assert_eq!(run(&[b"+\n"]), Ok(ScriptResult::Success));
        assert_eq!(run(&[b"-\n"]), Ok(ScriptResult::Failure));
        assert_eq!(
            run(&[b"some output\n", b"+", b"\n"]),
            Ok(ScriptResult::Success)
        );
        assert!(run(&[b"x+\n"]).is_err());
        assert!(run(&[b""]).is_err());
        assert!(run(&[b"+"]).is_err());
    }

    /// Recorded 2026-11-28 from Dovecot 2.3.19.1's `script` service
    /// (`service flushtest { executable = script flush.sh }`) where flush.sh
    /// prints "some output" and exits 1 when its 5th argument is `down`; and
    /// from a real director with `director_flush_socket =
    /// unix:flushtest-%i-%{host}` moving hash 12345 from 127.0.1.1 to
    /// 127.0.1.2: it connected to `flushtest-127.0.1.2-` (new host's IP, empty
    /// hostname, relative to base_dir) and the script got
    /// `FLUSH 12345 127.0.1.1 127.0.1.2 up 100`.
    #[test]
    fn recorded_script_service_exchange() {
        let args = FlushArgs {
            user_hash: 12345,
            old_ip: "127.0.1.1".parse().unwrap(),
            new_ip: "127.0.1.2".parse().unwrap(),
            old_host_down: false,
            old_vhost_count: 100,
        };
        assert_eq!(
            args.to_args().join(" "),
            "FLUSH 12345 127.0.1.1 127.0.1.2 up 100"
        );
        assert_eq!(
            expand_flush_socket("unix:flushtest-%i-%{host}", "127.0.1.2", ""),
            "unix:flushtest-127.0.1.2-"
        );
        for (reply, want) in [
            (&b"some output\n+\n"[..], Ok(ScriptResult::Success)),
            (b"some output\n-\n", Ok(ScriptResult::Failure)),
            // With the `noreply` flag the server sends no result line.
            (b"some output\n", Err(ScriptReplyError { total_len: 12 })),
        ] {
            let mut r = ScriptResultReader::new();
            r.feed(reply);
            assert_eq!(r.finish(), want);
        }
    }

    proptest! {
        #[test]
        fn never_panics(uri in "\\PC{0,40}", data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..10), 0..10)) {
            let _ = parse_flush_uri(&uri);
            let _ = expand_flush_socket(&uri, "1.2.3.4", "h");
            let mut r = ScriptResultReader::new();
            for d in &data { r.feed(d); }
            let _ = r.finish();
        }

        #[test]
        fn chunking_does_not_change_result(data in proptest::collection::vec(prop_oneof![Just(b'+'), Just(b'-'), Just(b'\n'), Just(b'x')], 0..20), split in 1usize..5) {
            let mut whole = ScriptResultReader::new();
            whole.feed(&data);
            let mut parts = ScriptResultReader::new();
            for c in data.chunks(split) { parts.feed(c); }
            prop_assert_eq!(whole.finish(), parts.finish());
        }
    }
}
