//! Exit codes doveadm uses (BSD sysexits plus Dovecot's fatal default), so
//! scripts that test `$?` behave the same with our binary.

/// Success.
pub const OK: i32 = 0;
/// `EX_USAGE`: bad command line (usage text printed).
pub const USAGE: i32 = 64;
/// `EX_NOHOST`: the host/director does not exist (`NOTFOUND`).
pub const NOHOST: i32 = 68;
/// `EX_TEMPFAIL`: connection failures, errors from the director, `TRYAGAIN`.
pub const TEMPFAIL: i32 = 75;
/// `EX_PROTOCOL`: the director answered something we cannot parse.
pub const PROTOCOL: i32 = 76;
/// Dovecot's `FATAL_DEFAULT`: global option errors.
pub const FATAL_DEFAULT: i32 = 89;
