//! IMAP command parser for the pre-login commands: tag, command name and
//! arguments made of atoms, quoted strings (with `\\` and `\"` escapes),
//! literals (`{n}` synchronising, `{n+}` LITERAL+), `NIL` and parenthesised
//! lists (for `ID`).
//!
//! It works on the whole unconsumed input and either finds a complete
//! command, says how much more it needs (and whether a synchronising literal
//! is waiting for its `+ OK`), or reports an error. Re-parsing from the start
//! on every read is fine because a pre-login command is bounded by
//! [`MAX_COMMAND_SIZE`].

/// Longest line part (text outside literals) of a pre-login command. Dovecot's
/// login processes read through a 1 KiB input buffer (`LOGIN_MAX_INBUF_SIZE`)
/// and answer `* BYE Input buffer full, aborting` past it (measured: a `NOOP`
/// line of 1034 bytes with CRLF passed, 1035 did not).
pub const MAX_LINE: usize = 1024 + 10;

/// Largest whole command including literal data. imap-login answered
/// `* BYE Literal size too large` when the command line plus the announced
/// literal exceeded 8192 bytes (`a LOGIN {8178}` passed, `{8179}` did not).
pub const MAX_COMMAND_SIZE: usize = 8192;

/// Deepest list nesting we accept (`ID` needs one level).
pub const MAX_LIST_DEPTH: usize = 4;

/// Most arguments (counting list elements) in one command. `ID` allows 30
/// pairs (RFC 2971), i.e. 60 strings.
pub const MAX_ARGS: usize = 100;

/// One parsed argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A bare atom (`NIL` is reported as [`Arg::Nil`]).
    Atom(Vec<u8>),
    /// A quoted string, unescaped.
    Quoted(Vec<u8>),
    /// Literal data.
    Literal(Vec<u8>),
    /// The atom `NIL`.
    Nil,
    /// A parenthesised list.
    List(Vec<Arg>),
}

/// An argument may be a password (`LOGIN user pass`): its bytes are overwritten when it is
/// dropped, so that freed memory does not keep them.
impl Drop for Arg {
    fn drop(&mut self) {
        match self {
            Arg::Atom(v) | Arg::Quoted(v) | Arg::Literal(v) => zeroize::Zeroize::zeroize(v),
            Arg::Nil | Arg::List(_) => {}
        }
    }
}

impl Arg {
    /// The string value of an atom, quoted string or literal (IMAP `astring`).
    pub fn as_astring(&self) -> Option<&[u8]> {
        match self {
            Arg::Atom(v) | Arg::Quoted(v) | Arg::Literal(v) => Some(v),
            Arg::Nil => Some(b"NIL"),
            Arg::List(_) => None,
        }
    }

    /// The value of a quoted string or literal (IMAP `string`), or `None` for NIL.
    pub fn as_nstring(&self) -> Option<Option<&[u8]>> {
        match self {
            Arg::Quoted(v) | Arg::Literal(v) => Some(Some(v)),
            Arg::Nil => Some(None),
            _ => None,
        }
    }
}

/// A complete command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The client's tag, as sent.
    pub tag: Vec<u8>,
    /// The command name, upper-cased.
    pub name: Vec<u8>,
    /// The arguments.
    pub args: Vec<Arg>,
}

/// Why a command could not be parsed. The command is answered with `BAD`
/// and counts towards the bad-command limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxError {
    /// Generic: `Error in IMAP command received by server.`
    Generic,
    /// An atom contained `"` or `\`: `Invalid characters in atom`.
    InvalidAtom,
}

/// Errors after which the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalError {
    /// [`MAX_LINE`] exceeded: `* BYE Input buffer full, aborting`.
    LineTooLong,
    /// [`MAX_COMMAND_SIZE`] exceeded by a literal: `* BYE Literal size too large`.
    LiteralTooLarge,
}

/// Result of looking at the buffered input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A full command, which used the first `consumed` bytes.
    Complete {
        /// The command.
        cmd: Command,
        /// Bytes used, including the final line end.
        consumed: usize,
    },
    /// More input is needed. `sync_literals` counts the synchronising literal
    /// headers fully received so far whose data is still missing or complete
    /// (the driver sends `+ OK` once per header it has not acknowledged yet).
    Incomplete {
        /// Synchronising literal headers seen so far in this command.
        sync_literals: usize,
    },
    /// A syntax error; the line up to and including its end is `consumed`.
    Error {
        /// The tag, if it was valid.
        tag: Option<Vec<u8>>,
        /// What was wrong.
        error: SyntaxError,
        /// Bytes to drop.
        consumed: usize,
    },
    /// A limit was exceeded; close the connection.
    Fatal(FatalError),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    line_start: usize,
    sync_literals: usize,
    args: usize,
}

enum Stop {
    Incomplete,
    Syntax(SyntaxError),
    Fatal(FatalError),
}

fn is_atom_char(b: u8) -> bool {
    // ATOM-CHAR: any CHAR except atom-specials ( ) { SP CTL % * " \ ]
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

fn is_tag_char(b: u8) -> bool {
    // tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR adds "]"
    (is_atom_char(b) || b == b']') && b != b'+'
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Result<u8, Stop> {
        if self.pos - self.line_start > MAX_LINE {
            return Err(Stop::Fatal(FatalError::LineTooLong));
        }
        match self.buf.get(self.pos) {
            Some(&b) => Ok(b),
            None => Err(Stop::Incomplete),
        }
    }

    fn word(&mut self, ok: fn(u8) -> bool) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        loop {
            let b = self.peek()?;
            if !ok(b) {
                break;
            }
            self.pos += 1;
        }
        Ok(&self.buf[start..self.pos])
    }

    /// At a line end (CRLF or LF)? Consumes it when complete.
    fn eol(&mut self) -> Result<bool, Stop> {
        match self.peek()? {
            b'\n' => {
                self.pos += 1;
                Ok(true)
            }
            b'\r' => {
                self.pos += 1;
                match self.peek()? {
                    b'\n' => {
                        self.pos += 1;
                        Ok(true)
                    }
                    _ => Err(Stop::Syntax(SyntaxError::Generic)),
                }
            }
            _ => Ok(false),
        }
    }

    fn arg(&mut self, depth: usize) -> Result<Arg, Stop> {
        self.args += 1;
        if self.args > MAX_ARGS {
            return Err(Stop::Syntax(SyntaxError::Generic));
        }
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                // Room for the rest of the input: no reallocation leaves a partial copy
                // behind, and an unfinished string is wiped when it is dropped.
                let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
                    self.buf.len().saturating_sub(self.pos),
                ));
                loop {
                    let b = self.peek()?;
                    self.pos += 1;
                    match b {
                        b'"' => return Ok(Arg::Quoted(std::mem::take(&mut *out))),
                        b'\\' => {
                            let e = self.peek()?;
                            if e != b'\\' && e != b'"' {
                                return Err(Stop::Syntax(SyntaxError::Generic));
                            }
                            self.pos += 1;
                            out.push(e);
                        }
                        b'\r' | b'\n' | 0 => return Err(Stop::Syntax(SyntaxError::Generic)),
                        _ => out.push(b),
                    }
                }
            }
            b'{' => {
                self.pos += 1;
                let digits = self.word(|b| b.is_ascii_digit())?;
                let mut sync = true;
                if self.peek()? == b'+' {
                    sync = false;
                    self.pos += 1;
                }
                if self.peek()? != b'}' || digits.is_empty() || digits.len() > 10 {
                    return Err(Stop::Syntax(SyntaxError::Generic));
                }
                self.pos += 1;
                let size: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Stop::Syntax(SyntaxError::Generic))?;
                let header_end = self.pos;
                if !self.eol()? {
                    return Err(Stop::Syntax(SyntaxError::Generic));
                }
                if header_end.saturating_add(size) > MAX_COMMAND_SIZE {
                    return Err(Stop::Fatal(FatalError::LiteralTooLarge));
                }
                if sync {
                    self.sync_literals += 1;
                }
                if self.buf.len() < self.pos + size {
                    return Err(Stop::Incomplete);
                }
                let data = self.buf[self.pos..self.pos + size].to_vec();
                self.pos += size;
                self.line_start = self.pos;
                Ok(Arg::Literal(data))
            }
            b'(' => {
                if depth >= MAX_LIST_DEPTH {
                    return Err(Stop::Syntax(SyntaxError::Generic));
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    match self.peek()? {
                        b')' => {
                            self.pos += 1;
                            return Ok(Arg::List(items));
                        }
                        b' ' if !items.is_empty() => self.pos += 1,
                        _ => {}
                    }
                    if self.peek()? == b')' {
                        continue;
                    }
                    items.push(self.arg(depth + 1)?);
                    match self.peek()? {
                        b' ' | b')' => {}
                        _ => return Err(Stop::Syntax(SyntaxError::Generic)),
                    }
                }
            }
            _ => {
                let start = self.pos;
                loop {
                    let b = self.peek()?;
                    if matches!(b, b' ' | b'\r' | b'\n' | b')' | b'(') {
                        break;
                    }
                    self.pos += 1;
                }
                let atom = &self.buf[start..self.pos];
                if atom.is_empty() {
                    return Err(Stop::Syntax(SyntaxError::Generic));
                }
                if atom.iter().any(|&b| b == b'"' || b == b'\\') {
                    return Err(Stop::Syntax(SyntaxError::InvalidAtom));
                }
                if !atom
                    .iter()
                    .all(|&b| is_atom_char(b) || b == b']' || b == b'%' || b == b'*')
                {
                    return Err(Stop::Syntax(SyntaxError::Generic));
                }
                if atom.eq_ignore_ascii_case(b"NIL") {
                    Ok(Arg::Nil)
                } else {
                    Ok(Arg::Atom(atom.to_vec()))
                }
            }
        }
    }
}

/// Parses the first command in `buf`.
pub fn parse_command(buf: &[u8]) -> Parsed {
    parse_with(buf, Mode::Tagged)
}

/// Parses the first command in `buf` when commands carry no tag
/// (ManageSieve); [`Command::tag`] is then empty.
pub fn parse_untagged(buf: &[u8]) -> Parsed {
    parse_with(buf, Mode::Untagged)
}

/// Parses a line holding exactly one string argument (a ManageSieve SASL
/// response: quoted string or literal); it is returned as the only element of
/// [`Command::args`], with empty tag and name.
pub fn parse_single_arg(buf: &[u8]) -> Parsed {
    parse_with(buf, Mode::SingleArg)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tagged,
    Untagged,
    SingleArg,
}

fn parse_with(buf: &[u8], mode: Mode) -> Parsed {
    let mut c = Cursor {
        buf,
        pos: 0,
        line_start: 0,
        sync_literals: 0,
        args: 0,
    };
    let mut tag: Option<Vec<u8>> = None;
    let result = (|| -> Result<Command, Stop> {
        if mode == Mode::SingleArg {
            tag = Some(Vec::new());
            let arg = c.arg(0)?;
            if !c.eol()? {
                return Err(Stop::Syntax(SyntaxError::Generic));
            }
            return Ok(Command {
                tag: Vec::new(),
                name: Vec::new(),
                args: vec![arg],
            });
        }
        if mode == Mode::Tagged {
            let t = c.word(is_tag_char)?;
            if t.is_empty() || c.peek()? != b' ' {
                return Err(Stop::Syntax(SyntaxError::Generic));
            }
            tag = Some(t.to_vec());
            c.pos += 1;
        } else {
            tag = Some(Vec::new());
        }
        let name = c.word(is_atom_char)?.to_ascii_uppercase();
        if name.is_empty() {
            return Err(Stop::Syntax(SyntaxError::Generic));
        }
        let mut args = Vec::new();
        loop {
            if c.eol()? {
                break;
            }
            if c.peek()? != b' ' {
                // No space between arguments (`"a"b`): Dovecot reads on as an
                // atom, so report what that atom's parse says.
                c.arg(0)?;
                return Err(Stop::Syntax(SyntaxError::Generic));
            }
            c.pos += 1;
            if c.eol()? {
                // Trailing space: Dovecot ignores it for argument-less commands.
                break;
            }
            args.push(c.arg(0)?);
        }
        Ok(Command {
            tag: tag.clone().unwrap_or_default(),
            name,
            args,
        })
    })();
    match result {
        Ok(cmd) => Parsed::Complete {
            cmd,
            consumed: c.pos,
        },
        Err(Stop::Incomplete) => Parsed::Incomplete {
            sync_literals: c.sync_literals,
        },
        Err(Stop::Fatal(f)) => Parsed::Fatal(f),
        Err(Stop::Syntax(error)) => {
            // Skip to the end of the current line; wait for it if needed.
            match buf[c.pos.min(buf.len())..].iter().position(|&b| b == b'\n') {
                Some(off) => Parsed::Error {
                    tag,
                    error,
                    consumed: c.pos.min(buf.len()) + off + 1,
                },
                None if buf.len() - c.line_start > MAX_LINE => {
                    Parsed::Fatal(FatalError::LineTooLong)
                }
                None => Parsed::Incomplete {
                    sync_literals: c.sync_literals,
                },
            }
        }
    }
}

/// Appends `s` as an IMAP quoted string, or `None` when it cannot be quoted
/// (CR, LF, NUL or 8-bit bytes need a literal).
pub fn quote(s: &[u8]) -> Option<Vec<u8>> {
    if s.iter()
        .any(|&b| b == b'\r' || b == b'\n' || b == 0 || b >= 0x80)
    {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> Command {
        match parse_command(input) {
            Parsed::Complete { cmd, consumed } => {
                assert_eq!(consumed, input.len());
                cmd
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn atoms_quoted_literals() {
        let c = complete(b"a1 login user1 \"p\\\"a\\\\ss\"\r\n");
        assert_eq!(c.tag, b"a1");
        assert_eq!(c.name, b"LOGIN");
        assert_eq!(
            c.args,
            vec![
                Arg::Atom(b"user1".to_vec()),
                Arg::Quoted(b"p\"a\\ss".to_vec())
            ]
        );
        let c = complete(b"a LOGIN {5}\r\nuser1 {4+}\r\npass\r\n");
        assert_eq!(
            c.args,
            vec![
                Arg::Literal(b"user1".to_vec()),
                Arg::Literal(b"pass".to_vec())
            ]
        );
        let c = complete(b"f ID (\"name\" \"x\" \"version\" NIL)\n");
        assert_eq!(
            c.args,
            vec![Arg::List(vec![
                Arg::Quoted(b"name".to_vec()),
                Arg::Quoted(b"x".to_vec()),
                Arg::Quoted(b"version".to_vec()),
                Arg::Nil
            ])]
        );
    }

    #[test]
    fn incomplete_and_sync_literal() {
        assert_eq!(
            parse_command(b"a LOGIN {5}\r\n"),
            Parsed::Incomplete { sync_literals: 1 }
        );
        assert_eq!(
            parse_command(b"a LOGIN {5+}\r\nus"),
            Parsed::Incomplete { sync_literals: 0 }
        );
        assert_eq!(
            parse_command(b"a LOGIN {5"),
            Parsed::Incomplete { sync_literals: 0 }
        );
        assert_eq!(
            parse_command(b"a NOOP"),
            Parsed::Incomplete { sync_literals: 0 }
        );
    }

    #[test]
    fn errors() {
        // Recorded: `a LOGIN "us\\"er" "pass"` -> `a BAD Invalid characters in atom`.
        assert_eq!(
            parse_command(b"a LOGIN \"us\\\\\"er\" \"pass\"\r\nb"),
            Parsed::Error {
                tag: Some(b"a".to_vec()),
                error: SyntaxError::InvalidAtom,
                consumed: 26
            }
        );
        assert!(matches!(
            parse_command(b"a+b NOOP\r\n"),
            Parsed::Error { tag: None, .. }
        ));
        assert!(matches!(
            parse_command(b"\r\n"),
            Parsed::Error {
                tag: None,
                consumed: 2,
                ..
            }
        ));
        assert_eq!(
            parse_command(b"a LOGIN {8179}\r\n"),
            Parsed::Fatal(FatalError::LiteralTooLarge)
        );
        assert_eq!(
            parse_command(b"a LOGIN {8178}\r\n"),
            Parsed::Incomplete { sync_literals: 1 }
        );
        let long = [b"a NOOP ".as_slice(), &[b'x'; 2000]].concat();
        assert_eq!(parse_command(&long), Parsed::Fatal(FatalError::LineTooLong));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(b"us\"er"), Some(b"\"us\\\"er\"".to_vec()));
        assert_eq!(quote(b"a\r"), None);
    }
}
