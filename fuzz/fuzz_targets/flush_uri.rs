//! director_flush_socket expansion, URI parsing and the script reply reader.
#![no_main]
use director_proto::flush_script::{expand_flush_socket, parse_flush_uri, ScriptResultReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let expanded = expand_flush_socket(&text, "127.0.1.2", "mail.example");
    let _ = parse_flush_uri(&expanded);
    let _ = parse_flush_uri(&text);
    let mut r = ScriptResultReader::new();
    for part in data.chunks(3) {
        r.feed(part);
    }
    let _ = r.finish();
});
