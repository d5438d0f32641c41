//! The saved-state file decoder; what decodes re-encodes to a file that decodes the same,
//! and restoring it into a director never panics.
#![no_main]
use director_core::{CoreSettings, Director};
use director_proto::state_file::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = decode(data) {
        assert_eq!(decode(&encode(&snapshot)).as_ref(), Ok(&snapshot));
        if let Ok(mut d) = Director::new(CoreSettings::default()) {
            let _ = d.restore(&snapshot, snapshot.saved_at);
        }
    }
});
