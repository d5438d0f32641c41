//! The admin-socket client: connect over UNIX (`-a` contains a `/`) or TCP
//! (`host:port`), exchange the VERSION lines (waiting at most
//! [`HANDSHAKE_TIMEOUT`] for the director's), then send request lines and
//! read reply lines. Failures print doveadm's exact texts and map to its
//! exit codes; the caller gets the exit code back as `Err`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use director_proto::admin::{check_server_greeting, CLIENT_HANDSHAKE};
use director_proto::line::LineBuffer;

use crate::exit;
use crate::resolve::{ip_text, strerror};
use crate::ui::Ui;

/// doveadm waits this long for the director's VERSION line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Size doveadm reports in its `read(size=…)` error texts.
const READ_SIZE_TEXT: usize = 8192;
/// Longest reply line we accept; the director never sends more than its
/// own input limit per field, but list lines can carry long usernames.
/// Far above anything real, it only bounds memory.
pub const MAX_REPLY_LINE: usize = 1024 * 1024;

trait Stream: Read + Write {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
}
impl Stream for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)
    }
}
impl Stream for TcpStream {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)
    }
}

/// An open, handshaken admin connection.
pub struct Connection {
    /// How doveadm names the socket in messages: the `-a` value as given,
    /// or the default path.
    pub name: String,
    stream: Box<dyn Stream>,
    lines: LineBuffer,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .finish()
    }
}

/// Why a reply could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection.
    Disconnected,
    /// A read failed.
    Io(std::io::Error),
}

/// `host:port` (`[v6]:port`, or a bare host: port 0); `None` when a port is present but
/// invalid.
fn split_host_port(spec: &str) -> Option<(String, u16)> {
    let (host, port) = director_proto::value::split_host_port(spec).ok()?;
    Some((host.to_owned(), port.unwrap_or(0)))
}

/// `ip:port` as doveadm prints it in connect errors (IPv6 without brackets).
fn sock_text(ip: &IpAddr, port: u16) -> String {
    format!("{}:{port}", ip_text(ip))
}

impl Connection {
    /// Connects to `spec` (a path with `/`, else `host:port`) and does the
    /// handshake. On failure the message is printed and the exit code
    /// returned.
    pub fn open(spec: &str, ui: &mut Ui) -> Result<Self, i32> {
        let stream: Box<dyn Stream> = if spec.contains('/') {
            match UnixStream::connect(spec) {
                Ok(s) => Box::new(s),
                Err(e) => {
                    return Err(ui.fatal(
                        format!("net_connect_unix({spec}) failed: {}", strerror(&e)),
                        exit::TEMPFAIL,
                    ))
                }
            }
        } else {
            let Some((host, port)) = split_host_port(spec) else {
                return Err(ui.fatal(
                    format!("Port not known for {spec}. Either set proxy_port or use {spec}:port"),
                    exit::TEMPFAIL,
                ));
            };
            let ip = match crate::resolve::lookup(host.as_bytes()) {
                Ok(ips) => ips[0],
                Err(e) => {
                    return Err(
                        ui.fatal(format!("Lookup of host {host} failed: {e}"), exit::TEMPFAIL)
                    )
                }
            };
            match TcpStream::connect(SocketAddr::new(ip, port)) {
                Ok(s) => Box::new(s),
                Err(e) => {
                    return Err(ui.fatal(
                        format!("connect({}) failed: {}", sock_text(&ip, port), strerror(&e)),
                        exit::TEMPFAIL,
                    ))
                }
            }
        };
        let mut conn = Connection {
            name: spec.to_owned(),
            stream,
            lines: LineBuffer::new(MAX_REPLY_LINE),
        };
        conn.handshake(ui)?;
        Ok(conn)
    }

    fn handshake(&mut self, ui: &mut Ui) -> Result<(), i32> {
        self.send(CLIENT_HANDSHAKE, ui)?;
        // Failing to set a timeout only loses the 5 s bound, not correctness.
        let _ = self.stream.set_timeout(Some(HANDSHAKE_TIMEOUT));
        let line = match self.read_line() {
            Ok(l) => l,
            Err(ReadError::Disconnected) => {
                return Err(ui.fatal(format!("{} disconnected", self.name), exit::TEMPFAIL))
            }
            Err(ReadError::Io(e)) => {
                let why = if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    "Interrupted system call".to_owned()
                } else {
                    strerror(&e)
                };
                return Err(ui.fatal(
                    format!(
                        "read({}) failed: read(size={READ_SIZE_TEXT}) failed: {why}",
                        self.name
                    ),
                    exit::TEMPFAIL,
                ));
            }
        };
        let _ = self.stream.set_timeout(None);
        if check_server_greeting(&line).is_err() {
            return Err(ui.fatal(
                format!("{} not a compatible director-doveadm socket", self.name),
                exit::PROTOCOL,
            ));
        }
        Ok(())
    }

    /// Sends raw bytes (one or more complete lines).
    pub fn send(&mut self, bytes: &[u8], ui: &mut Ui) -> Result<(), i32> {
        match self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
        {
            Ok(()) => Ok(()),
            Err(e) => Err(ui.fatal(
                format!("write({}) failed: {}", self.name, strerror(&e)),
                exit::TEMPFAIL,
            )),
        }
    }

    /// Sends one request line (LF appended).
    pub fn send_line(&mut self, line: &[u8], ui: &mut Ui) -> Result<(), i32> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.send(&buf, ui)
    }

    /// Reads one line (without the LF).
    pub fn read_line(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => {}
                Err(_) => return Err(ReadError::Io(std::io::Error::other("line too long"))),
            }
            let spare = self.lines.spare_mut();
            match self.stream.read(spare) {
                Ok(0) => return Err(ReadError::Disconnected),
                Ok(n) => self.lines.commit(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Reads a reply line; on failure prints doveadm's
    /// `<socket> unexpectedly disconnected` and returns exit code 75.
    pub fn reply(&mut self, ui: &mut Ui) -> Result<Vec<u8>, i32> {
        match self.read_line() {
            Ok(l) => Ok(l),
            Err(_) => Err(self.disconnected(ui)),
        }
    }

    /// Prints the disconnect error; returns its exit code.
    pub fn disconnected(&self, ui: &mut Ui) -> i32 {
        ui.error(format!("{} unexpectedly disconnected", self.name));
        ui.set_exit(exit::TEMPFAIL);
        exit::TEMPFAIL
    }

    /// Reads list lines up to the empty terminator line. `Err` (after the
    /// message) when the connection ends first; lines read so far are
    /// returned alongside so they can still be printed.
    pub fn read_list(&mut self, ui: &mut Ui) -> (Vec<Vec<u8>>, Result<(), i32>) {
        let mut lines = Vec::new();
        loop {
            match self.read_line() {
                Ok(l) if l.is_empty() => return (lines, Ok(())),
                Ok(l) => lines.push(l),
                Err(_) => {
                    let code = self.disconnected(ui);
                    return (lines, Err(code));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("127.0.0.1:10"),
            Some(("127.0.0.1".into(), 10))
        );
        assert_eq!(split_host_port("127.0.0.1"), Some(("127.0.0.1".into(), 0)));
        assert_eq!(split_host_port("[::1]:10"), Some(("::1".into(), 10)));
        assert_eq!(split_host_port("::1:10"), Some(("::1:10".into(), 0)));
        assert_eq!(split_host_port("a:"), None);
        assert_eq!(split_host_port("a:0"), None);
        assert_eq!(split_host_port("a:99999"), None);
    }
}
