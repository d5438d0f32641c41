//! director-proto
#![forbid(unsafe_code)]
