//! The LMTP driver: every `RCPT TO` is routed on its own (the core decides per recipient
//! user), and after `DATA` the message goes to each backend holding recipients, in parallel,
//! one backend session per backend. The per-recipient replies come back in RCPT order.
//!
//! LMTP deliveries are not registered as sessions: they are short, and Dovecot's director
//! does not kick them either (kicks act on login proxies).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use director_mailproto::lmtp::{
    merge_replies, plan_fanout, LmtpAction, LmtpBackendAction, LmtpBackendConfig,
    LmtpBackendSession, LmtpServer, LmtpServerConfig, SessionPlan, Transaction, REPLY_TOO_BIG,
};
use director_mailproto::ConnInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::router::{BackendFailureKind, Route};
use director_mailproto::routing::is_routable;

use crate::session::{
    connect_backend, report_backend_failure, route_user, BackendErr, Client, End, Shared, IO_BUF,
};
use crate::settings::Protocol;

/// Runs one LMTP client connection.
pub(crate) async fn run(shared: Arc<Shared>, mut client: Client) {
    let s = &shared.settings;
    let cfg = LmtpServerConfig {
        hostname: s.hostname.clone(),
        max_message_size: usize::try_from(s.limits.max_lmtp_message).unwrap_or(usize::MAX),
        ..LmtpServerConfig::default()
    };
    let mut m: LmtpServer<Route> =
        LmtpServer::new(cfg).with_trusted(s.is_trusted(client.peer.ip()));
    let mut queue: VecDeque<LmtpAction<Route>> = m.start().into();
    let mut buf = vec![0u8; IO_BUF];
    loop {
        while let Some(a) = queue.pop_front() {
            match a {
                LmtpAction::Send(b) => {
                    if client.write(&b).await.is_err() {
                        return;
                    }
                }
                LmtpAction::Close => {
                    client.close_with(&[]).await;
                    return;
                }
                LmtpAction::Resolve { user, .. } => {
                    let route = if is_routable(&user) {
                        route_user(&shared, &user).await.ok()
                    } else {
                        None
                    };
                    queue.extend(m.recipient_resolved(route));
                }
                LmtpAction::BodyChunk(_) => {}
                LmtpAction::Deliver(tx) => {
                    let helo = m.helo().map(<[u8]>::to_vec);
                    let replies = deliver(&shared, client.peer, client.local, helo, tx).await;
                    queue.extend(m.delivered(replies));
                }
            }
        }
        // LMTP sessions are long-lived: the login timeout acts as an idle timeout.
        client.deadline = Instant::now() + s.limits.login_timeout;
        match client.read(&mut buf).await {
            Ok(n) => queue.extend(m.feed(&buf[..n])),
            Err(End::Timeout) => {
                client.close_with(Protocol::Lmtp.idle_disconnect()).await;
                return;
            }
            Err(End::Shutdown) => {
                client.close_with(Protocol::Lmtp.shutting_down()).await;
                return;
            }
            Err(End::Eof) | Err(End::Io(_)) => return,
        }
    }
}

/// Delivers `tx` to every backend involved, in parallel; one reply per recipient, in order.
async fn deliver(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    helo: Option<Vec<u8>>,
    tx: Transaction<Route>,
) -> Vec<Vec<u8>> {
    let total = tx.recipients.len();
    if tx.too_big {
        return vec![REPLY_TOO_BIG.as_bytes().to_vec(); total];
    }
    let plans = plan_fanout(&tx.recipients);
    let tx = Arc::new(tx);
    let helo = Arc::new(helo);
    let mut set = JoinSet::new();
    for (k, plan) in plans.iter().enumerate() {
        let shared = Arc::clone(shared);
        let tx = Arc::clone(&tx);
        let helo = Arc::clone(&helo);
        let plan = plan.clone();
        set.spawn(async move {
            (
                k,
                deliver_one(&shared, peer, local, helo.as_deref(), &tx, &plan).await,
            )
        });
    }
    let mut results: Vec<Vec<Vec<u8>>> = vec![Vec::new(); plans.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((k, replies)) = r {
            if let Some(slot) = results.get_mut(k) {
                *slot = replies;
            }
        }
    }
    merge_replies(total, &plans, &results)
}

/// One backend session of a fan-out.
async fn deliver_one(
    shared: &Shared,
    peer: SocketAddr,
    local: SocketAddr,
    helo: Option<&[u8]>,
    tx: &Transaction<Route>,
    plan: &SessionPlan<Route>,
) -> Vec<Vec<u8>> {
    let route = &plan.backend;
    let first_user = plan
        .recipients
        .first()
        .and_then(|i| tx.recipients.get(*i))
        .map(|r| r.address.clone())
        .unwrap_or_default();
    let conn = ConnInfo {
        client_ip: peer.ip(),
        client_port: peer.port(),
        local_ip: local.ip(),
        local_port: local.port(),
        session_id: None,
        proxy_ttl: tx.proxy_ttl,
    };
    let cfg = LmtpBackendConfig {
        lhlo_name: shared.settings.hostname.clone(),
        ..LmtpBackendConfig::default()
    };
    let mut session = LmtpBackendSession::new(cfg, conn, helo, tx, plan);
    let mut backend = match connect_backend(shared, route, Protocol::Lmtp, peer, local).await {
        Ok(b) => b,
        Err(e) => {
            report_backend_failure(shared, &first_user, route, &e);
            return done_replies(session.failed());
        }
    };
    let timeout = shared.settings.limits.connect_timeout;
    let mut buf = vec![0u8; IO_BUF];
    loop {
        let n = match tokio::time::timeout(timeout, backend.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            other => {
                let detail = match other {
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                    _ => "backend closed the connection".to_string(),
                };
                return protocol_failure(shared, &first_user, route, detail, &mut session);
            }
        };
        for action in session.feed(&buf[..n]) {
            match action {
                LmtpBackendAction::Send(b) => {
                    if let Err(e) = backend.write_all(&b).await {
                        let detail = e.to_string();
                        return protocol_failure(shared, &first_user, route, detail, &mut session);
                    }
                }
                LmtpBackendAction::SendBody => {
                    // Only streaming sessions ask for this; ours carry the whole body.
                    let detail = "unexpected streaming body request".to_string();
                    return protocol_failure(shared, &first_user, route, detail, &mut session);
                }
                LmtpBackendAction::Done(replies) => {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                        backend.write_all(b"QUIT\r\n").await?;
                        backend.shutdown().await
                    })
                    .await;
                    return replies;
                }
            }
        }
    }
}

/// The backend broke the LMTP conversation: report it, and every recipient of this backend
/// gets the session's temporary failure.
fn protocol_failure(
    shared: &Shared,
    user: &[u8],
    route: &Route,
    detail: String,
    session: &mut LmtpBackendSession,
) -> Vec<Vec<u8>> {
    report_backend_failure(
        shared,
        user,
        route,
        &BackendErr::new(BackendFailureKind::Protocol, detail),
    );
    done_replies(session.failed())
}

fn done_replies(actions: Vec<LmtpBackendAction>) -> Vec<Vec<u8>> {
    actions
        .into_iter()
        .find_map(|a| match a {
            LmtpBackendAction::Done(r) => Some(r),
            LmtpBackendAction::Send(_) | LmtpBackendAction::SendBody => None,
        })
        .unwrap_or_default()
}
