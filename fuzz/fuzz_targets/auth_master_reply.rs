//! auth-master replies: the line parser and the user-list session.
#![no_main]
use director_proto::auth_master::{parse_reply, UserListSession};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let _ = parse_reply(line);
    }
    let mut s = UserListSession::new(1, None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let n = s.feed(rest);
        rest = &rest[n..];
        loop {
            match s.next_event() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if n == 0 {
            return;
        }
    }
});
