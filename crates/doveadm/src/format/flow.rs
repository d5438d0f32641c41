//! `-f flow`: one line per record, `title=value` pairs joined by a space
//! (just `value` for hidden titles). Values are printed raw.

use super::Output;

/// Renders flow output.
pub fn render(out: &Output) -> Vec<u8> {
    let mut buf = Vec::new();
    for row in &out.rows {
        for (i, (h, v)) in out.headers.iter().zip(row).enumerate() {
            if i > 0 {
                buf.push(b' ');
            }
            if !h.hide_title {
                buf.extend_from_slice(h.title.as_bytes());
                buf.push(b'=');
            }
            buf.extend_from_slice(v);
        }
        buf.push(b'\n');
    }
    buf
}
