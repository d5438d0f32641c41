//! Side effects the director core asks for and the driver carries out: stopping local
//! sessions ([`sessions`]) and running the `director_flush_socket` script ([`flush`]). Slow
//! ones run in their own tasks and report back through the driver's channel, so the driver
//! never waits on I/O while it holds the state.

pub mod flush;
pub mod sessions;
