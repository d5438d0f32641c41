//! The admin server (spec §8): listeners and per-connection protocol handling.

pub mod connection;
pub mod listener;
pub mod tcp;
