//! `-f tab`: a title line (always, even for hidden titles, and an empty
//! line when there are no columns at all), then values joined by TAB.
//! Values are printed raw, without escaping.

use super::Output;

/// Renders tab-separated output.
pub fn render(out: &Output) -> Vec<u8> {
    let mut buf = Vec::new();
    let titles: Vec<&[u8]> = out.headers.iter().map(|h| h.title.as_bytes()).collect();
    buf.extend_from_slice(&titles.join(&b'\t'));
    buf.push(b'\n');
    for row in &out.rows {
        buf.extend_from_slice(&row.join(&b'\t'));
        buf.push(b'\n');
    }
    buf
}
