//! A minimal raw client for the director admin protocol (doveadm ⇄ director), used to wait
//! for `ring synced` and by tests that want to compare our director's replies with Dovecot's
//! byte for byte. It does no escaping: tests send exactly the bytes they mean.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::KitError;

/// Longest request line the real director accepts (1023 bytes plus LF); longer lines make it
/// close the connection silently (lab finding).
pub const ADMIN_LINE_MAX: usize = 1023;
/// Commands whose reply is a list of lines terminated by an empty line.
pub const ADMIN_MULTILINE_COMMANDS: [&str; 4] = [
    "HOST-LIST",
    "HOST-LIST-REMOVED",
    "DIRECTOR-LIST",
    "USER-LIST",
];
/// The handshake line both sides send.
const HANDSHAKE: &str = "VERSION\tdirector-doveadm\t1\t0\n";
/// Prefix the server's greeting must have.
const GREETING_PREFIX: &str = "VERSION\tdirector-doveadm\t1\t";
/// Bound on one reply line (a USER-LIST line is short; this only stops runaway reads).
const REPLY_LINE_MAX: u64 = 1 << 20;
/// Bound on the lines of one list reply.
const REPLY_LINES_MAX: usize = 1_000_000;
/// Read/write/connect timeout of the client.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected, handshaken admin-protocol client.
pub struct AdminClient {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    greeting: String,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("greeting", &self.greeting)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// Connects to a TCP admin listener (`inet_listener director-doveadm`).
    pub fn connect_tcp(addr: SocketAddr) -> Result<Self, KitError> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| KitError::io(format!("connecting to admin {addr}"), e))?;
        let io = |e| KitError::io("configuring admin socket", e);
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let reader = stream.try_clone().map_err(io)?;
        Self::handshake(Box::new(reader), Box::new(stream))
    }

    /// Connects to a UNIX admin socket (`base_dir/director-admin`).
    pub fn connect_unix(path: &Path) -> Result<Self, KitError> {
        let stream = UnixStream::connect(path)
            .map_err(|e| KitError::io(format!("connecting to admin {}", path.display()), e))?;
        let io = |e| KitError::io("configuring admin socket", e);
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let reader = stream.try_clone().map_err(io)?;
        Self::handshake(Box::new(reader), Box::new(stream))
    }

    fn handshake(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
    ) -> Result<Self, KitError> {
        let mut client = AdminClient {
            reader: BufReader::new(reader),
            writer,
            greeting: String::new(),
        };
        let greeting = client.read_line()?;
        if !greeting.starts_with(GREETING_PREFIX) {
            return Err(KitError::Protocol(format!(
                "unexpected greeting {greeting:?}"
            )));
        }
        client.greeting = greeting;
        client.send_raw(HANDSHAKE.as_bytes())?;
        Ok(client)
    }

    /// The server's greeting line, without LF.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Writes bytes as they are (no LF added, no escaping).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), KitError> {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .map_err(|e| KitError::io("writing to admin socket", e))
    }

    /// Reads one reply line, without its LF. EOF is an error.
    pub fn read_line(&mut self) -> Result<String, KitError> {
        let mut buf = Vec::new();
        (&mut self.reader)
            .take(REPLY_LINE_MAX)
            .read_until(b'\n', &mut buf)
            .map_err(|e| KitError::io("reading from admin socket", e))?;
        if buf.last() != Some(&b'\n') {
            return Err(KitError::Protocol(format!(
                "connection closed or line too long after {} bytes",
                buf.len()
            )));
        }
        buf.pop();
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads lines up to (not including) the empty terminator line of a list reply.
    pub fn read_list(&mut self) -> Result<Vec<String>, KitError> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok(lines);
            }
            if lines.len() >= REPLY_LINES_MAX {
                return Err(KitError::Protocol("list reply too long".into()));
            }
            lines.push(line);
        }
    }

    /// Sends `line` + LF and reads its reply: all lines of a list command (see
    /// [`ADMIN_MULTILINE_COMMANDS`]), otherwise the single reply line.
    pub fn command(&mut self, line: &str) -> Result<Vec<String>, KitError> {
        self.send_raw(format!("{line}\n").as_bytes())?;
        let name = line.split('\t').next().unwrap_or_default();
        if ADMIN_MULTILINE_COMMANDS.contains(&name) {
            self.read_list()
        } else {
            Ok(vec![self.read_line()?])
        }
    }
}
