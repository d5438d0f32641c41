//! Admin client: arbitrary server bytes after the greeting, for every kind
//! of request; a decoded reply must re-encode to bytes that decode to the
//! same reply.
#![no_main]
use director_proto::admin::{AdminClientSession, AdminReply, AdminRequest, SERVER_GREETING};
use libfuzzer_sys::fuzz_target;

fn decode(req: &AdminRequest, body: &[u8]) -> Option<AdminReply> {
    let mut s = AdminClientSession::new(req);
    let mut input = SERVER_GREETING.to_vec();
    input.extend_from_slice(body);
    let mut rest = &input[..];
    loop {
        let n = s.feed(rest);
        rest = &rest[n..];
        match s.poll_reply() {
            Ok(Some(r)) => return Some(r),
            Ok(None) if n > 0 && !rest.is_empty() => continue,
            _ => return None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    let req = match kind % 5 {
        0 => AdminRequest::HostList,
        1 => AdminRequest::HostListRemoved,
        2 => AdminRequest::DirectorList,
        3 => AdminRequest::UserList { ip: None },
        _ => AdminRequest::UserLookup { user: Vec::new(), tag: String::new() },
    };
    if let Some(reply) = decode(&req, body) {
        let again = decode(&req, &reply.encode()).expect("re-encoded reply must decode");
        assert_eq!(again, reply);
    }
});
