//! A raw IMAP client for proxied sessions held open across admin commands.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use testkit::BACKEND_PASSWORD;

use super::WAIT;

/// Longer than a login held back by a move (kick delay) or the core's 30 s request timeout;
/// a hang guard only.
const READ_TIMEOUT: Duration = Duration::from_secs(45);

pub struct Imap {
    r: BufReader<TcpStream>,
}

impl Imap {
    /// Connects and reads the greeting, which must be `* OK`.
    pub fn connect(addr: SocketAddr) -> Imap {
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the proxy");
        s.set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        let mut c = Imap {
            r: BufReader::new(s),
        };
        let greeting = c.line().expect("greeting");
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    pub fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(l.trim_end().to_string()),
        }
    }

    /// Sends a tagged command and returns every line up to the tagged reply.
    pub fn cmd(&mut self, tag: &str, cmd: &str) -> Vec<String> {
        self.r
            .get_mut()
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .expect("write");
        let mut out = Vec::new();
        loop {
            let l = self
                .line()
                .unwrap_or_else(|| panic!("EOF after {cmd}: {out:?}"));
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    /// Logs in through the proxy; returns the session and the backend that served it, from
    /// `ID` (testkit backends send `imap_id_send = backend-ip …`).
    pub fn login(addr: SocketAddr, user: &str) -> (Imap, IpAddr) {
        let mut c = Imap::connect(addr);
        let r = c.cmd("a", &format!("LOGIN {user} {BACKEND_PASSWORD}"));
        assert!(
            r.last().expect("reply").starts_with("a OK"),
            "{user}: {r:?}"
        );
        let r = c.cmd("b", "ID NIL");
        let ip = r
            .iter()
            .find(|l| l.starts_with("* ID"))
            .and_then(|l| l.split('"').find_map(|w| w.parse::<IpAddr>().ok()))
            .unwrap_or_else(|| panic!("no backend-ip in {r:?}"));
        (c, ip)
    }

    pub fn noop_ok(&mut self) -> bool {
        let r = self.cmd("n", "NOOP");
        r.last().is_some_and(|l| l.starts_with("n OK"))
    }

    /// True when the proxy closed the session (a BYE may come first). A read timeout is
    /// not a close: the session is still open then.
    pub fn closed(&mut self) -> bool {
        for _ in 0..100 {
            let mut l = String::new();
            match self.r.read_line(&mut l) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("session still open ({e})"),
            }
        }
        false
    }

    pub fn logout(mut self) {
        self.cmd("z", "LOGOUT");
    }
}
