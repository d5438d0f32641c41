//! nginx auth_http request reader: arbitrary bytes in arbitrary chunks, then the login
//! headers read from whatever request came out.
#![no_main]
use director_proto::auth_http::{AuthRequest, RequestReader, MAX_REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split).max(1);
    let mut r = RequestReader::new();
    for part in rest.chunks(step) {
        if let Ok(Some(req)) = r.feed(part) {
            let _ = AuthRequest::from_request(&req);
        }
        assert!(r.buffered() <= MAX_REQUEST_LEN);
    }
    let _ = r.finish();
});
