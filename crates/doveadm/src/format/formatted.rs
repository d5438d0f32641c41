//! The "formatted" printer: each row expands a template where `%{key}` is
//! replaced by that column's value. doveadm uses it for `director dump`
//! when no `-f` is given.

use super::Output;

/// Renders every row through `template`.
pub fn render(out: &Output, template: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let t = template.as_bytes();
    for row in &out.rows {
        let mut i = 0;
        while i < t.len() {
            if t[i] == b'%' && t.get(i + 1) == Some(&b'{') {
                if let Some(end) = t[i + 2..].iter().position(|&b| b == b'}') {
                    let key = &t[i + 2..i + 2 + end];
                    if let Some(col) = out.headers.iter().position(|h| h.key.as_bytes() == key) {
                        buf.extend_from_slice(&row[col]);
                    }
                    i += end + 3;
                    continue;
                }
            }
            buf.push(t[i]);
            i += 1;
        }
    }
    buf
}
