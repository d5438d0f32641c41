//! How client-supplied bytes appear in log lines.
//!
//! User names, IMAP `ID` values, admin arguments and commands come from whoever connects.
//! Written into a log as they are, a CR or LF would start a forged log line and an ESC
//! would drive the operator's terminal. [`LogText`] shows printable text as it is and
//! escapes everything else, so one value is always one unambiguous piece of one line.

use std::fmt::{self, Write};

/// Displays bytes for a log line: printable characters as they are; `\` as `\\`; CR, LF and
/// TAB as `\r`, `\n`, `\t`; other control and bidirectional-formatting characters as
/// `\u{…}`; bytes that are not UTF-8 as `\xNN`.
#[derive(Clone, Copy)]
pub struct LogText<'a>(pub &'a [u8]);

/// Characters that reorder the display of what follows them (a log line could show text
/// other than what it holds).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for LogText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\r' => f.write_str("\\r")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() || is_bidi_control(c) => {
                        write!(f, "\\u{{{:x}}}", u32::from(c))?
                    }
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for LogText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::LogText;

    fn shown(b: &[u8]) -> String {
        LogText(b).to_string()
    }

    #[test]
    fn a_value_cannot_break_or_forge_a_line() {
        assert_eq!(
            shown(b"bob\r\n2026-12-04 Info: admin logged in"),
            "bob\\r\\n2026-12-04 Info: admin logged in"
        );
        assert_eq!(shown(b"\x1b[2Jx"), "\\u{1b}[2Jx");
        assert_eq!(shown(b"a\0b"), "a\\u{0}b");
        assert_eq!(shown("\u{202e}gnp.exe".as_bytes()), "\\u{202e}gnp.exe");
        assert_eq!(
            shown(b"\\x41"),
            "\\\\x41",
            "a backslash cannot fake an escape"
        );
    }

    #[test]
    fn printable_text_stays_as_it_is() {
        assert_eq!(shown(b"user@example.com"), "user@example.com");
        assert_eq!(shown("jürgen@müller.de".as_bytes()), "jürgen@müller.de");
        assert_eq!(shown(b"\xff\xfeok"), "\\xff\\xfeok");
    }

    proptest::proptest! {
        /// Whatever the bytes, the text has no control character at all.
        #[test]
        fn never_a_control_character(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let s = shown(&bytes);
            proptest::prop_assert!(!s.chars().any(|c| c.is_control()));
        }
    }
}
