//! `doveadm` binary: a thin shell around [`doveadm::run`], which returns the
//! process exit code (sysexits values, like Dovecot's doveadm).
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(doveadm::run(&args));
}
