//! `-f table` (the default): aligned columns, as doveadm 2.3.19 lays them
//! out (model checked byte for byte in `lab/scripts/table_model_check.py`):
//!
//! * widths come from the titles and the first [`MAX_BUFFER_LINES`] rows,
//!   counted in UTF-8 characters the way Dovecot's `utf8_strlen` counts;
//! * too wide for the terminal: columns shrink from the right (never below
//!   their shortest value), values are never truncated;
//! * narrower: the first "expand" column (else the last) gains half the
//!   spare width;
//! * every cell is left-justified and space-padded, cells joined by one
//!   space; no title line when every title is hidden.

use super::Output;

/// Rows used to compute column widths (Dovecot's buffer size).
pub const MAX_BUFFER_LINES: usize = 100;
/// Width used when stdout is not a terminal.
pub const DEFAULT_COLUMNS: usize = 80;
/// Smallest width used on a terminal.
pub const MIN_COLUMNS: usize = 30;

/// The table width: the terminal's column count (at least
/// [`MIN_COLUMNS`], even when the terminal reports 0) when the
/// `TIOCGWINSZ` ioctl works on stdout, else [`DEFAULT_COLUMNS`]. Only the
/// columns matter (a terminal with 0 rows still counts).
pub fn terminal_width() -> usize {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(ws) => usize::from(ws.ws_col).max(MIN_COLUMNS),
        Err(_) => DEFAULT_COLUMNS,
    }
}

/// Dovecot's `utf8_strlen`: a lead byte starts a character whose length
/// comes from the lead byte alone (continuation bytes are not checked).
pub fn utf8_strlen(s: &[u8]) -> usize {
    let mut i = 0;
    let mut n = 0;
    while i < s.len() {
        let step = match s[i] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            0xf8..=0xfb => 5,
            0xfc..=0xfd => 6,
            _ => 1,
        };
        i += step;
        n += 1;
    }
    n
}

/// Column widths for `titles` and `rows` within `width`.
pub fn column_widths(
    titles: &[usize],
    rows: &[Vec<usize>],
    expand: Option<usize>,
    width: usize,
) -> Vec<usize> {
    let n = titles.len();
    let mut lo = titles.to_vec();
    let mut hi = titles.to_vec();
    let mut len = titles.to_vec();
    for row in rows.iter().take(MAX_BUFFER_LINES) {
        for (i, &l) in row.iter().enumerate().take(n) {
            lo[i] = lo[i].min(l);
            if l > hi[i] {
                hi[i] = l;
                len[i] = l;
            }
        }
    }
    if n == 0 {
        return len;
    }
    let mut total: usize = hi.iter().sum::<usize>() + n - 1;
    while total > width {
        let orig = total;
        for i in (0..n).rev() {
            let diff = len[i] - lo[i];
            if total - diff <= width {
                let d = total - width;
                len[i] -= d;
                total -= d;
                break;
            }
            if diff > 0 {
                len[i] -= if diff == 1 { 1 } else { diff / 2 };
            }
        }
        if total == orig {
            break;
        }
    }
    if total < width {
        let j = expand.unwrap_or(n - 1);
        len[j] += (width - total) / 2;
    }
    len
}

/// Renders a table `width` columns wide.
pub fn render(out: &Output, width: usize) -> Vec<u8> {
    let titles: Vec<usize> = out.headers.iter().map(|h| h.title.len()).collect();
    let lens: Vec<Vec<usize>> = out
        .rows
        .iter()
        .map(|r| r.iter().map(|v| utf8_strlen(v)).collect())
        .collect();
    let expand = out.headers.iter().position(|h| h.expand);
    let widths = column_widths(&titles, &lens, expand, width);
    let mut buf = Vec::new();
    if out.headers.is_empty() {
        return buf;
    }
    if !out.headers.iter().all(|h| h.hide_title) {
        for (i, h) in out.headers.iter().enumerate() {
            cell(
                &mut buf,
                h.title.as_bytes(),
                h.title.len(),
                widths[i],
                i + 1 == out.headers.len(),
            );
        }
    }
    for (row, row_lens) in out.rows.iter().zip(&lens) {
        for (i, v) in row.iter().enumerate() {
            cell(&mut buf, v, row_lens[i], widths[i], i + 1 == row.len());
        }
    }
    buf
}

fn cell(buf: &mut Vec<u8>, v: &[u8], len: usize, width: usize, last: bool) {
    buf.extend_from_slice(v);
    buf.resize(buf.len() + width.saturating_sub(len), b' ');
    buf.push(if last { b'\n' } else { b' ' });
}
