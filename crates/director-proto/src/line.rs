//! Bounded LF-line framing, the way Dovecot's `i_stream_next_line()` with a
//! fixed input buffer behaves.
//!
//! Dovecot gives each director connection a fixed-size input buffer (1024
//! bytes on the admin socket and on ring connections). A line therefore may be
//! at most 1023 bytes plus its LF; when the buffer fills up without an LF the
//! connection is closed (lab/admin/NOTES.md §4: nothing is replied and nothing
//! is logged). A trailing CR is tolerated and stripped (`\r\n` worked in the
//! lab).
//!
//! [`LineBuffer`] never holds more than `max_line_len + 1` bytes: it accepts
//! only as many bytes as fit ([`LineBuffer::feed`] returns how many it took),
//! or lets the caller read straight into its spare space
//! ([`LineBuffer::spare_mut`] + [`LineBuffer::commit`]).
//!
//! A partial line left at EOF is not a line (Dovecot drops it too).

use thiserror::Error;

/// Longest line content (without LF) Dovecot accepts on the admin socket:
/// its input buffer is 1024 bytes, one of which the LF needs.
pub const ADMIN_MAX_LINE_LEN: usize = 1023;

/// Longest line content on ring (director ↔ director) connections: the same
/// 1024-byte buffer (spec §10.2).
pub const RING_MAX_LINE_LEN: usize = 1023;

/// The framer's only error: the buffer is full and holds no LF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("line longer than {max_line_len} bytes")]
pub struct LineTooLong {
    /// The configured limit that was exceeded.
    pub max_line_len: usize,
}

/// A bounded buffer that turns a byte stream into LF-terminated lines.
#[derive(Debug, Clone)]
pub struct LineBuffer {
    /// Fixed storage of `max_line_len + 1` bytes.
    buf: Box<[u8]>,
    /// Start of unconsumed data in `buf`.
    start: usize,
    /// End of valid data in `buf`.
    end: usize,
    /// Bytes of `buf[start..end]` already known to contain no LF.
    scanned: usize,
    max_line_len: usize,
}

impl LineBuffer {
    /// A framer accepting lines of at most `max_line_len` bytes (CR included,
    /// LF excluded). Use [`ADMIN_MAX_LINE_LEN`] for Dovecot's admin socket.
    pub fn new(max_line_len: usize) -> Self {
        Self {
            buf: vec![0u8; max_line_len.saturating_add(1)].into_boxed_slice(),
            start: 0,
            end: 0,
            scanned: 0,
            max_line_len,
        }
    }

    /// The configured maximum line length.
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    /// Bytes currently held (not yet returned as lines).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Moves pending data to the front so the free space is contiguous.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Copies as many bytes of `data` as fit in the buffer and returns how
    /// many were taken. The caller keeps the rest and feeds it again after
    /// popping lines with [`next_line`](Self::next_line). Returns 0 when the
    /// buffer is full.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let spare = self.spare_mut();
        let n = spare.len().min(data.len());
        spare[..n].copy_from_slice(&data[..n]);
        self.commit(n);
        n
    }

    /// The free space at the end of the buffer, for reading straight into it
    /// (e.g. `socket.read(lb.spare_mut())`); then call
    /// [`commit`](Self::commit) with the number of bytes written. Empty when
    /// the buffer is full (pop lines first; if none, the line is too long).
    pub fn spare_mut(&mut self) -> &mut [u8] {
        self.compact();
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes written into [`spare_mut`](Self::spare_mut) as data.
    /// `n` larger than the spare space is clamped.
    pub fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// Pops the next complete line, without its LF and without one trailing
    /// CR. `Ok(None)` means "need more bytes". `Err(LineTooLong)` means the
    /// buffer is full without an LF: the caller must close the connection.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        let pending = &self.buf[self.start..self.end];
        let from = self.scanned.min(pending.len());
        if let Some(pos) = pending[from..].iter().position(|&b| b == b'\n') {
            let lf = from + pos;
            let mut line = pending[..lf].to_vec();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.start += lf + 1;
            self.scanned = 0;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            return Ok(Some(line));
        }
        self.scanned = pending.len();
        if pending.len() >= self.buf.len() {
            return Err(LineTooLong {
                max_line_len: self.max_line_len,
            });
        }
        Ok(None)
    }
}

/// The part of `line` before its first NUL byte.
///
/// Dovecot handles lines as C strings, so a NUL ends the line as far as the
/// command parser sees it: `HOST-\0LIST` is logged as unknown command `HOST-`.
pub fn cut_at_nul(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == 0) {
        Some(pos) => &line[..pos],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(lb: &mut LineBuffer, mut data: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        loop {
            let n = lb.feed(data);
            data = &data[n..];
            while let Some(line) = lb.next_line()? {
                lines.push(line);
            }
            if data.is_empty() {
                return Ok(lines);
            }
        }
    }

    #[test]
    fn admin_limit_is_1023_plus_lf() {
        let mut ok = vec![b'A'; 1023];
        ok.push(b'\n');
        let mut lb = LineBuffer::new(ADMIN_MAX_LINE_LEN);
        assert_eq!(feed_all(&mut lb, &ok).unwrap(), vec![vec![b'A'; 1023]]);

        let mut too_long = vec![b'A'; 1024];
        too_long.push(b'\n');
        let mut lb = LineBuffer::new(ADMIN_MAX_LINE_LEN);
        assert!(feed_all(&mut lb, &too_long).is_err());
    }

    #[test]
    fn crlf_is_stripped_and_pipelining_works() {
        let mut lb = LineBuffer::new(ADMIN_MAX_LINE_LEN);
        let lines = feed_all(&mut lb, b"VERSION\tx\r\nHOST-LIST\nDIRECTOR-LIST\n\npart").unwrap();
        assert_eq!(
            lines,
            vec![
                b"VERSION\tx".to_vec(),
                b"HOST-LIST".to_vec(),
                b"DIRECTOR-LIST".to_vec(),
                Vec::new()
            ]
        );
        assert_eq!(lb.buffered(), 4);
    }

    #[test]
    fn spare_and_commit() {
        let mut lb = LineBuffer::new(8);
        let spare = lb.spare_mut();
        assert_eq!(spare.len(), 9);
        spare[..3].copy_from_slice(b"ab\n");
        lb.commit(3);
        assert_eq!(lb.next_line().unwrap(), Some(b"ab".to_vec()));
        assert_eq!(lb.next_line().unwrap(), None);
    }

    #[test]
    fn nul_cuts() {
        assert_eq!(cut_at_nul(b"HOST-\0LIST"), b"HOST-");
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..40), max in 0usize..64) {
            let mut lb = LineBuffer::new(max);
            for chunk in chunks {
                let mut data = &chunk[..];
                loop {
                    let n = lb.feed(data);
                    data = &data[n..];
                    prop_assert!(lb.buffered() <= max + 1);
                    match lb.next_line() {
                        Ok(Some(line)) => prop_assert!(line.len() <= max),
                        Ok(None) => {}
                        Err(_) => return Ok(()),
                    }
                    if data.is_empty() { break; }
                }
            }
        }

        #[test]
        fn chunking_does_not_matter(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a')], 0..200), split in 1usize..16) {
            let mut whole = LineBuffer::new(1000);
            let expected = feed_all(&mut whole, &data).unwrap();
            let mut chunked = LineBuffer::new(1000);
            let mut got = Vec::new();
            for chunk in data.chunks(split) {
                got.extend(feed_all(&mut chunked, chunk).unwrap());
            }
            prop_assert_eq!(got, expected);
        }
    }
}
