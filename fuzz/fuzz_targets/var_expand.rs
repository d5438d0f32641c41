//! director_username_hash formats (director-core's var_expand subset): the
//! first line is the format, the rest the username.
#![no_main]
use director_core::{user_hash, HashFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (format, user) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"user@example.com"[..]),
    };
    let format = String::from_utf8_lossy(format);
    if let Ok(f) = HashFormat::parse_lenient(&format) {
        let _ = user_hash(user, &f);
    }
    if let Ok(f) = HashFormat::parse(&format) {
        let _ = user_hash(user, &f);
    }
});
