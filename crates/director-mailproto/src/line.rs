//! Bounded line framing shared by every text protocol here.
//!
//! Lines end in LF; a CR before the LF is dropped (Dovecot accepts bare LF on
//! all of its login protocols, checked against `imap-login`). A line longer
//! than the limit is an error and the caller answers with its protocol's
//! "line too long" reply and closes: a login process must never buffer
//! unbounded input from an unauthenticated peer.

/// The framer found a line longer than its limit (no LF within `max` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max} bytes")]
pub struct LineTooLong {
    /// The limit that was exceeded.
    pub max: usize,
    /// The whole line (through its LF) was received and dropped; when false,
    /// the bytes so far were dropped and the rest of the line is still to come.
    pub complete: bool,
}

/// An input buffer that hands out complete lines and keeps the rest.
#[derive(Debug, Clone, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max: usize,
    /// Bytes up to the next LF are dropped on arrival (the tail of an
    /// over-long line, see [`LineBuffer::skip_rest_of_line`]).
    skipping: bool,
}

impl LineBuffer {
    /// A buffer that refuses lines longer than `max` bytes (without the line end).
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// Changes the limit (e.g. SASL responses may be longer than commands).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Appends received bytes (minus the tail of a line being skipped).
    pub fn feed(&mut self, data: &[u8]) {
        let mut data = data;
        if self.skipping {
            let Some(p) = data.iter().position(|&b| b == b'\n') else {
                return;
            };
            self.skipping = false;
            data = &data[p + 1..];
        }
        append_wiping(&mut self.buf, data);
    }

    /// Drops the rest of the current line as it arrives, through its LF.
    /// For protocols that answer an over-long line and go on (SMTP, LMTP:
    /// `500 5.5.2 Line too long`) after [`LineTooLong::complete`] was false.
    pub fn skip_rest_of_line(&mut self) {
        self.skipping = true;
    }

    /// The next complete line without its CRLF/LF, `Ok(None)` if none is
    /// complete yet, or an error when the pending line exceeds the limit (its
    /// bytes are dropped, see [`LineTooLong::complete`]).
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let mut line = take_front(&mut self.buf, pos + 1);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max {
                    return Err(LineTooLong {
                        max: self.max,
                        complete: true,
                    });
                }
                Ok(Some(line))
            }
            None if self.buf.len() > self.max + 1 => {
                zeroize::Zeroize::zeroize(&mut self.buf);
                Err(LineTooLong {
                    max: self.max,
                    complete: false,
                })
            }
            None => Ok(None),
        }
    }

    /// Takes everything still buffered (bytes after the last line handed out).
    pub fn take_rest(&mut self) -> Vec<u8> {
        take_all(&mut self.buf)
    }

    /// Drops everything buffered (used after STARTTLS: plaintext sent after the
    /// command must not be interpreted as if it came over TLS).
    pub fn clear(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
        self.skipping = false;
    }

    /// Bytes currently buffered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Appends `data` to `buf`; when `buf` must grow, the old allocation is zeroed before it is
/// freed (a plain reallocation would leave its bytes, maybe part of a password, in freed
/// memory).
pub fn append_wiping(buf: &mut Vec<u8>, data: &[u8]) {
    if buf.capacity() - buf.len() < data.len() {
        let mut grown = Vec::with_capacity((buf.len() + data.len()).max(buf.capacity() * 2));
        grown.extend_from_slice(buf);
        zeroize::Zeroize::zeroize(buf);
        *buf = grown;
    }
    buf.extend_from_slice(data);
}

/// Removes the first `n` bytes of `buf` and returns them; the bytes the removal left behind
/// in `buf`'s spare capacity are zeroed. Pre-login input may hold a password, and it must
/// not linger in a buffer that lives as long as the connection.
pub fn take_front(buf: &mut Vec<u8>, n: usize) -> Vec<u8> {
    let n = n.min(buf.len());
    let head = buf[..n].to_vec();
    discard_front(buf, n);
    head
}

/// Takes all of `buf` and zeroes it, spare capacity included (see [`take_front`]).
pub fn take_all(buf: &mut Vec<u8>) -> Vec<u8> {
    let all = buf.clone();
    zeroize::Zeroize::zeroize(buf);
    all
}

/// Removes the first `n` bytes of `buf`, zeroing what the removal left behind (see
/// [`take_front`]).
pub fn discard_front(buf: &mut Vec<u8>, n: usize) {
    let n = n.min(buf.len());
    buf.copy_within(n.., 0);
    let len = buf.len() - n;
    buf[len..].fill(0);
    buf.truncate(len);
}

/// `line` with CRLF appended (a line to relay or send).
pub(crate) fn with_crlf(line: &[u8]) -> Vec<u8> {
    [line, b"\r\n"].concat()
}

/// Splits a line at the first space: `(word, rest)`; `rest` excludes the space.
pub fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn consumed_bytes_leave_nothing_behind() {
        let mut v = b"a LOGIN u secret\r\nb NOOP\r\n".to_vec();
        let cap = v.capacity();
        let head = take_front(&mut v, 18);
        assert_eq!(head, b"a LOGIN u secret\r\n");
        assert_eq!(v, b"b NOOP\r\n");
        assert_eq!(v.capacity(), cap, "same allocation");
        // What was moved out of the way is zero in the spare capacity.
        v.resize(cap, 9);
        assert!(!v.windows(6).any(|w| w == b"secret"));
        let mut b = LineBuffer::new(100);
        b.feed(b"PASS secret\r\nrest");
        assert_eq!(b.next_line(), Ok(Some(b"PASS secret".to_vec())));
        assert_eq!(b.take_rest(), b"rest");
        assert!(b.is_empty());
    }

    #[test]
    fn crlf_and_lf_lines() {
        let mut b = LineBuffer::new(10);
        b.feed(b"ab\r\ncd\nef");
        assert_eq!(b.next_line(), Ok(Some(b"ab".to_vec())));
        assert_eq!(b.next_line(), Ok(Some(b"cd".to_vec())));
        assert_eq!(b.next_line(), Ok(None));
        assert_eq!(b.take_rest(), b"ef".to_vec());
    }

    #[test]
    fn too_long_complete_and_partial() {
        let mut b = LineBuffer::new(3);
        b.feed(b"abcd\r\n");
        assert_eq!(
            b.next_line(),
            Err(LineTooLong {
                max: 3,
                complete: true
            })
        );
        let mut b = LineBuffer::new(3);
        b.feed(b"abc\r");
        assert_eq!(b.next_line(), Ok(None));
        b.feed(b"x");
        assert_eq!(
            b.next_line(),
            Err(LineTooLong {
                max: 3,
                complete: false
            })
        );
        assert!(b.is_empty());
    }

    #[test]
    fn skips_the_rest_of_a_long_line() {
        let mut b = LineBuffer::new(3);
        b.feed(b"abcdef");
        assert!(b.next_line().is_err());
        b.skip_rest_of_line();
        b.feed(b"gh");
        assert!(b.is_empty());
        b.feed(b"ij\r\nok\r\n");
        assert_eq!(b.next_line(), Ok(Some(b"ok".to_vec())));
    }
}
