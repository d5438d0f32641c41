//! Dovecot's tab-escaping (`str_tabescape` / `t_strsplit_tabescaped`), on bytes.
//!
//! Every director socket (ring, admin, notify, auth-reply, flush script) sends
//! lines of TAB-separated fields. A field may itself contain TAB, CR, LF or the
//! escape byte, so those are escaped with `0x01` (spec §0):
//!
//! | byte | escaped as |
//! |------|------------|
//! | `0x01` | `0x01 '1'` |
//! | TAB  | `0x01 't'` |
//! | CR   | `0x01 'r'` |
//! | LF   | `0x01 'n'` |
//! | NUL  | `0x01 '0'` |
//!
//! Decoding is lenient exactly like Dovecot: `0x01` followed by any other byte
//! yields that byte, and a trailing lone `0x01` is dropped. Splitting happens on
//! raw TABs first, then each field is unescaped. An empty line has **zero**
//! fields (so "the command name is missing" can be told apart from an empty
//! command name).
//!
//! Everything works on bytes: usernames are hashed byte-for-byte and need not
//! be UTF-8.

/// The escape byte.
pub const ESCAPE_BYTE: u8 = 0x01;

/// Escapes `input` and appends the result to `out`.
///
/// NUL is escaped too (`0x01 '0'`): Dovecot reads lines as C strings, so a raw
/// NUL would silently cut the line on the receiving side.
pub fn escape_into(out: &mut Vec<u8>, input: &[u8]) {
    out.reserve(input.len());
    for &b in input {
        match b {
            0x00 => out.extend_from_slice(&[ESCAPE_BYTE, b'0']),
            ESCAPE_BYTE => out.extend_from_slice(&[ESCAPE_BYTE, b'1']),
            b'\t' => out.extend_from_slice(&[ESCAPE_BYTE, b't']),
            b'\r' => out.extend_from_slice(&[ESCAPE_BYTE, b'r']),
            b'\n' => out.extend_from_slice(&[ESCAPE_BYTE, b'n']),
            other => out.push(other),
        }
    }
}

/// Escapes `input` into a new buffer (see [`escape_into`]).
pub fn escape(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    escape_into(&mut out, input);
    out
}

/// Reverses [`escape`], with Dovecot's leniency: `0x01 X` for an unknown `X`
/// gives `X`, and a trailing lone `0x01` is dropped.
pub fn unescape(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut iter = input.iter();
    while let Some(&b) = iter.next() {
        if b != ESCAPE_BYTE {
            out.push(b);
            continue;
        }
        match iter.next() {
            None => break,
            Some(b'0') => out.push(0x00),
            Some(b'1') => out.push(ESCAPE_BYTE),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(&other) => out.push(other),
        }
    }
    out
}

/// Splits a line (without its LF) on TAB and unescapes each field.
///
/// An empty line gives zero fields; `"a\t"` gives `["a", ""]`.
pub fn split_fields(line: &[u8]) -> Vec<Vec<u8>> {
    if line.is_empty() {
        return Vec::new();
    }
    line.split(|&b| b == b'\t').map(unescape).collect()
}

/// Joins fields into one line: each field escaped, TAB-separated, **without**
/// the trailing LF.
pub fn join_fields<I, F>(fields: I) -> Vec<u8>
where
    I: IntoIterator<Item = F>,
    F: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        escape_into(&mut out, field.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_the_five_special_bytes() {
        assert_eq!(
            escape(b"a\x01b\tc\rd\ne\0f"),
            b"a\x011b\x01tc\x01rd\x01ne\x010f"
        );
    }

    #[test]
    fn observed_kick_escape_matches_doveadm() {
        // The real doveadm sends `k<0x01><TAB>here` as `k\0011\001there` (checked live in
        // crates/doveadm/tests/protocol_errors.rs).
        assert_eq!(escape(b"k\x01\there"), b"k\x011\x01there");
    }

    #[test]
    fn unknown_escape_yields_the_char_and_lone_trailing_escape_is_dropped() {
        assert_eq!(unescape(b"a\x01xb"), b"axb");
        assert_eq!(unescape(b"ab\x01"), b"ab");
        assert_eq!(unescape(b"\x01"), b"");
        assert_eq!(unescape(b"\x01\x01"), b"\x01");
    }

    #[test]
    fn split_rules() {
        assert!(split_fields(b"").is_empty());
        assert_eq!(split_fields(b"a\t"), vec![b"a".to_vec(), Vec::new()]);
        assert_eq!(split_fields(b"\t"), vec![Vec::<u8>::new(), Vec::new()]);
        assert_eq!(
            split_fields(b"USER-LOOKUP\ta\x01tb\t"),
            vec![b"USER-LOOKUP".to_vec(), b"a\tb".to_vec(), Vec::new()]
        );
    }

    proptest! {
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let esc = escape(&data);
            prop_assert!(!esc.contains(&b'\t') && !esc.contains(&b'\n') && !esc.contains(&b'\r') && !esc.contains(&0));
            prop_assert_eq!(unescape(&esc), data);
        }

        #[test]
        fn fields_roundtrip(fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..8)) {
            // A single empty field encodes as an empty line, which has zero fields.
            prop_assume!(!(fields.len() == 1 && fields[0].is_empty()));
            let line = join_fields(&fields);
            prop_assert_eq!(split_fields(&line), fields);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = split_fields(&data);
            let _ = unescape(&data);
        }
    }
}
