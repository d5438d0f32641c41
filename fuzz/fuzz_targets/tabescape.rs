//! Tab-escaping: unescape/split never panic; escape round-trips.
#![no_main]
use director_proto::tabescape::{escape, join_fields, split_fields, unescape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields = split_fields(data);
    let _ = unescape(data);
    assert_eq!(unescape(&escape(data)), data);
    if !(fields.len() == 1 && fields[0].is_empty()) {
        assert_eq!(split_fields(&join_fields(&fields)), fields);
    }
});
