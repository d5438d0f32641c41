//! Fuzz target: LMTP server machine, and a backend session, on arbitrary
//! bytes in arbitrary chunks. Must never panic.
#![no_main]

use director_mailproto::lmtp::{
    plan_fanout, LmtpAction, LmtpBackendConfig, LmtpBackendSession, LmtpServer, LmtpServerConfig,
    Recipient, Transaction, LMTP_PROXY_DEFAULT_TTL,
};
use director_mailproto::ConnInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let chunk = usize::from(ctl % 17) + 1;
    let mut s: LmtpServer<u8> = LmtpServer::new(LmtpServerConfig {
        max_message_size: 4096,
        stream_body: ctl & 1 != 0,
        ..LmtpServerConfig::default()
    })
    // Trusted: the upstream's XCLIENT is parsed.
    .with_trusted(ctl & 0x40 != 0);
    let _ = s.start();
    for c in rest.chunks(chunk) {
        let mut pending = s.feed(c);
        // Answer the driver requests the way a driver would, bounded.
        for _ in 0..64 {
            let Some(a) = pending.pop() else { break };
            match a {
                LmtpAction::Resolve { user, .. } => {
                    let b = user.first().copied().filter(|_| ctl & 2 != 0);
                    pending.extend(s.recipient_resolved(b));
                }
                LmtpAction::OpenData(_) => pending.extend(s.data_opened()),
                LmtpAction::Deliver(t) => {
                    let n = t.recipients.len();
                    pending.extend(s.delivered(vec![b"250 ok".to_vec(); n]));
                }
                _ => {}
            }
        }
    }
    let tx = Transaction {
        mail_from: b"<a@b>".to_vec(),
        recipients: vec![
            Recipient { address: b"x".to_vec(), params: Vec::new(), backend: 1u8 },
            Recipient { address: b"y".to_vec(), params: Vec::new(), backend: 1u8 },
        ],
        data: b"body\r\n".to_vec(),
        too_big: false,
        proxy_ttl: LMTP_PROXY_DEFAULT_TTL,
    };
    let plans = plan_fanout(&tx.recipients);
    let conn = ConnInfo {
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        client_port: 1,
        local_ip: std::net::IpAddr::from([127, 0, 0, 2]),
        local_port: 24,
        session_id: None,
        proxy_ttl: ConnInfo::DEFAULT_TTL,
    };
    let mut b = LmtpBackendSession::new(LmtpBackendConfig::default(), conn, None, &tx, &plans[0]);
    for c in rest.chunks(chunk) {
        let _ = b.feed(c);
    }
    let _ = b.failed();
});
