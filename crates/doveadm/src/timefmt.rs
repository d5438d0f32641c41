//! Times as doveadm prints them: local time (honouring `TZ`) as
//! `%Y-%m-%d %H:%M:%S`, and Dovecot's `str_to_time` for parsing.

use chrono::{Local, TimeZone};

/// Formats a Unix time in local time. Times the calendar cannot represent
/// print as the raw number.
pub fn local(t: i64) -> String {
    match Local.timestamp_opt(t, 0).earliest() {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => t.to_string(),
    }
}

/// Dovecot's `str_to_time`: a signed decimal `time_t`.
pub fn parse(s: &[u8]) -> Option<i64> {
    crate::args::str_to_int64(s)
}
