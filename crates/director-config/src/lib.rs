//! director-config
#![forbid(unsafe_code)]
