//! Side effects the director core asks for and the daemon carries out: kicking sessions and
//! running the `director_flush_socket` script. Both run in their own tasks and report back
//! to the actor through its channel, so the actor never waits on I/O.

pub mod flush;
pub mod kick;
