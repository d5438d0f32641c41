//! Helpers shared by the doveadm integration tests (each test file is its
//! own crate and uses only some of them, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// A recording under `tests/data/` (lab transcripts and table pairs).
pub fn data(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a doveadm run is compared on: stdout, stderr (lossy UTF-8) and the
/// exit code (-1 when killed by a signal).
pub fn texts(out: Output) -> (String, String, i32) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}
