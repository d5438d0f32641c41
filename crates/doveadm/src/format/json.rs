//! `-f json`: one array of objects keyed by column key, all values strings,
//! no trailing newline. Escaping follows Dovecot's `json_append_escaped`:
//! `"` `\` and `\b \f \n \r \t` get backslash escapes, other control
//! characters `\u00xx` (lowercase hex), and bytes that are not valid UTF-8
//! become U+FFFD, one per byte.

use super::Output;

/// Appends `s` JSON-escaped (without quotes).
pub fn escape_into(buf: &mut Vec<u8>, s: &[u8]) {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            match b {
                b'"' => buf.extend_from_slice(b"\\\""),
                b'\\' => buf.extend_from_slice(b"\\\\"),
                0x08 => buf.extend_from_slice(b"\\b"),
                0x0c => buf.extend_from_slice(b"\\f"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\r' => buf.extend_from_slice(b"\\r"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                c if c < 0x20 => buf.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
                c => buf.push(c),
            }
            i += 1;
            continue;
        }
        let len = utf8_char_len(&s[i..]);
        if len == 0 {
            buf.extend_from_slice("\u{fffd}".as_bytes());
            i += 1;
        } else {
            buf.extend_from_slice(&s[i..i + len]);
            i += len;
        }
    }
}

/// Length of the valid UTF-8 character at the start of `s`, 0 if invalid.
fn utf8_char_len(s: &[u8]) -> usize {
    let want = match s.first() {
        Some(0xc2..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf4) => 4,
        _ => return 0,
    };
    match s.get(..want).map(std::str::from_utf8) {
        Some(Ok(_)) => want,
        _ => 0,
    }
}

/// Renders JSON output.
pub fn render(out: &Output) -> Vec<u8> {
    let mut buf = vec![b'['];
    for (n, row) in out.rows.iter().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        buf.push(b'{');
        for (i, (h, v)) in out.headers.iter().zip(row).enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.push(b'"');
            escape_into(&mut buf, h.key.as_bytes());
            buf.extend_from_slice(b"\":\"");
            escape_into(&mut buf, v);
            buf.push(b'"');
        }
        buf.push(b'}');
    }
    buf.push(b']');
    buf
}
