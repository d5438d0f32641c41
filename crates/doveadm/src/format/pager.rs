//! `-f pager`: `title: value` lines (just `value` for hidden titles);
//! records are separated by a line holding a form feed.

use super::Output;

/// Renders pager output.
pub fn render(out: &Output) -> Vec<u8> {
    let mut buf = Vec::new();
    for (n, row) in out.rows.iter().enumerate() {
        if n > 0 {
            buf.extend_from_slice(b"\x0c\n");
        }
        for (h, v) in out.headers.iter().zip(row) {
            if !h.hide_title {
                buf.extend_from_slice(h.title.as_bytes());
                buf.extend_from_slice(b": ");
            }
            buf.extend_from_slice(v);
            buf.push(b'\n');
        }
    }
    buf
}
