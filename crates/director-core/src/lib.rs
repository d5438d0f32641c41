//! director-core
#![forbid(unsafe_code)]
