//! The LMTP driver: every `RCPT TO` is routed on its own (the core decides per recipient
//! user). At `DATA` a session is opened to each backend holding recipients, up to the point
//! where it takes the body; the body is then streamed to all of them as it arrives, and the
//! per-recipient replies come back in RCPT order.
//!
//! Memory stays bounded whatever the message: the client is read one chunk at a time, and
//! read again only once every backend took the chunk (a slow backend slows the client, it
//! does not fill the proxy). The whole body must arrive within `director_lmtp_data_timeout`.
//! The envelope's recipients beyond a small fixed share come from the buffer budget.
//!
//! LMTP deliveries are not registered as sessions: they are short, and Dovecot's director
//! does not kick them either (kicks act on login proxies).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use director_mailproto::lmtp::{
    merge_replies, plan_fanout, DotStuffer, LmtpAction, LmtpBackendAction, LmtpBackendConfig,
    LmtpBackendSession, LmtpServer, LmtpServerConfig, Recipient, SessionPlan, Transaction,
    REPLY_DATA_TIMEOUT, REPLY_SESSION_FAILED, REPLY_TOO_BIG,
};
use director_mailproto::ConnInfo;
use director_proto::log_text::LogText;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::budget::Reservation;
use crate::metrics::RecipientResult;
use crate::router::{BackendFailureKind, Route};
use director_mailproto::routing::is_routable;

use crate::session::{
    connect_backend, forget_unproven_user, report_backend_failure, route_user, watch_client,
    BackendErr, Client, End, Shared, IO_BUF,
};
use crate::settings::Protocol;
use crate::stream::Stream;

/// Envelope bytes (sender and recipients) a transaction holds without asking the budget:
/// about a hundred ordinary recipients.
const ENVELOPE_FIXED_SHARE: usize = 16 * 1024;
/// Read buffer towards a backend (its replies are short lines).
const BACKEND_BUF: usize = 4 * 1024;
/// How long a finished backend session may take to say goodbye.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one LMTP client connection.
pub(crate) async fn run(shared: Arc<Shared>, mut client: Client) {
    let s = &shared.settings;
    let cfg = LmtpServerConfig {
        hostname: s.hostname.clone(),
        max_message_size: usize::try_from(s.limits.max_lmtp_message).unwrap_or(usize::MAX),
        stream_body: true,
        ..LmtpServerConfig::default()
    };
    let mut m: LmtpServer<Route> =
        LmtpServer::new(cfg).with_trusted(s.is_trusted(client.peer.ip()));
    let mut queue: VecDeque<LmtpAction<Route>> = m.start().into();
    let mut buf = vec![0u8; IO_BUF];
    let mut envelope = Reservation::new(Arc::clone(&shared.budget));
    let mut delivery: Option<Delivery> = None;
    let mut data_deadline: Option<Instant> = None;
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
                LmtpAction::Resolve { user, address } => {
                    let held =
                        m.held_bytes() + address.len() + std::mem::size_of::<Recipient<Route>>();
                    let route = if !envelope.resize(held.saturating_sub(ENVELOPE_FIXED_SHARE)) {
                        tracing::warn!(client = %client.peer, recipient = %LogText(&address), "recipient refused: the proxy's buffer memory is spent");
                        shared.metrics.recipient(RecipientResult::Deferred);
                        None
                    } else {
                        let route = if is_routable(&user) {
                            route_user(&shared, &user).await.ok()
                        } else {
                            None
                        };
                        if route.is_none() {
                            shared.metrics.recipient(RecipientResult::NoBackend);
                        }
                        route
                    };
                    queue.extend(m.recipient_resolved(route));
                }
                LmtpAction::OpenData(tx) => {
                    let helo = m.helo().map(<[u8]>::to_vec);
                    data_deadline = Some(Instant::now() + s.limits.lmtp_data_timeout);
                    delivery =
                        Some(Delivery::open(&shared, client.peer, client.local, helo, tx).await);
                    queue.extend(m.data_opened());
                }
                LmtpAction::BodyChunk(chunk) => {
                    if let Some(d) = &mut delivery {
                        d.body(&shared, &chunk).await;
                    }
                }
                LmtpAction::Deliver(tx) => {
                    data_deadline = None;
                    let total = tx.recipients.len();
                    let mut early = Vec::new();
                    let replies = match delivery.take() {
                        // Abandoned unfinished: the backends drop what they got.
                        _ if tx.too_big => vec![REPLY_TOO_BIG.as_bytes().to_vec(); total],
                        None => vec![REPLY_SESSION_FAILED.as_bytes().to_vec(); total],
                        Some(d) => {
                            tokio::select! {
                                r = d.finish(&shared) => r,
                                gone = watch_client(&mut client.stream, &mut early) => {
                                    tracing::debug!(client = %client.peer, reason = %gone, "LMTP client left during the delivery");
                                    return;
                                }
                            }
                        }
                    };
                    for reply in &replies {
                        shared.metrics.recipient(RecipientResult::of_reply(reply));
                    }
                    forget_refused_new_users(&shared, &m, &tx, &replies);
                    queue.extend(m.delivered(replies));
                    if !early.is_empty() {
                        queue.extend(m.feed(&early));
                    }
                }
            }
        }
        // What a finished or reset transaction held goes back (shrinking always succeeds).
        let held = m.held_bytes().saturating_sub(ENVELOPE_FIXED_SHARE);
        if held < envelope.bytes() {
            envelope.resize(held);
        }
        // LMTP sessions are long-lived: the login timeout acts as an idle timeout. A body has
        // a deadline of its own, however busy the client looks.
        let idle = Instant::now() + s.limits.login_timeout;
        client.deadline = data_deadline.map_or(idle, |d| d.min(idle));
        match client.read(&mut buf).await {
            Ok(n) => queue.extend(m.feed(&buf[..n])),
            Err(End::Timeout) => {
                let text = if data_deadline.is_some_and(|d| d <= Instant::now()) {
                    tracing::info!(client = %client.peer, "LMTP message body not received within director_lmtp_data_timeout");
                    [REPLY_DATA_TIMEOUT.as_bytes(), b"\r\n"].concat()
                } else {
                    Protocol::Lmtp.idle_disconnect().to_vec()
                };
                client.close_with(&text).await;
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

/// A recipient the backend refused, whose assignment this transaction's lookup created, and
/// who has no proxied session: nothing real depends on the assignment, so it is dropped (a
/// stranger's made-up recipients cost nothing).
fn forget_refused_new_users(
    shared: &Shared,
    m: &LmtpServer<Route>,
    tx: &Transaction<Route>,
    replies: &[Vec<u8>],
) {
    for (r, reply) in tx.recipients.iter().zip(replies) {
        if !r.backend.new_user || RecipientResult::of_reply(reply) == RecipientResult::Delivered {
            continue;
        }
        let user = m.routing_user(&r.address);
        forget_unproven_user(shared, &user, &r.backend, 0, "refused new recipient");
    }
}

/// One transaction's backend sessions.
struct Delivery {
    total: usize,
    plans: Vec<SessionPlan<Route>>,
    legs: Vec<Leg>,
    stuffer: DotStuffer,
}

/// One backend session of a delivery.
struct Leg {
    session: LmtpBackendSession,
    /// The connection, while it is good.
    stream: Option<Stream>,
    /// The session's replies, once it is over; until then it takes the body.
    replies: Option<Vec<Vec<u8>>>,
    route: Route,
    /// The first recipient's address, for the failure report.
    user: Vec<u8>,
}

impl Delivery {
    /// Opens a session to every backend of `tx`, in parallel, up to the body.
    async fn open(
        shared: &Arc<Shared>,
        peer: SocketAddr,
        local: SocketAddr,
        helo: Option<Vec<u8>>,
        tx: Transaction<Route>,
    ) -> Delivery {
        let total = tx.recipients.len();
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
                let leg = Leg::open(&shared, peer, local, helo.as_deref(), &tx, &plan).await;
                (k, leg)
            });
        }
        let mut slots: Vec<Option<Leg>> = plans.iter().map(|_| None).collect();
        while let Some(r) = set.join_next().await {
            if let Ok((k, leg)) = r {
                if let Some(slot) = slots.get_mut(k) {
                    *slot = Some(leg);
                }
            }
        }
        // A plan without a leg (its task failed) keeps no slot in `legs`; `merge_replies`
        // gives its recipients the session failure.
        let (plans, legs) = plans
            .into_iter()
            .zip(slots)
            .filter_map(|(p, l)| l.map(|l| (p, l)))
            .unzip();
        Delivery {
            total,
            plans,
            legs,
            stuffer: DotStuffer::default(),
        }
    }

    /// The next part of the body, to every session taking it.
    async fn body(&mut self, shared: &Shared, chunk: &[u8]) {
        let stuffed = self.stuffer.stuff(chunk);
        for leg in &mut self.legs {
            leg.write(shared, &stuffed).await;
        }
    }

    /// Ends the body and collects the replies, in RCPT order.
    async fn finish(mut self, shared: &Shared) -> Vec<Vec<u8>> {
        let end = std::mem::take(&mut self.stuffer).finish();
        // Every backend gets the end first, so that they deliver in parallel.
        for leg in &mut self.legs {
            leg.write(shared, &end).await;
        }
        let mut results = Vec::with_capacity(self.legs.len());
        let mut finished = Vec::new();
        for leg in &mut self.legs {
            results.push(leg.replies(shared).await);
            if let Some(s) = leg.stream.take() {
                finished.push(s);
            }
        }
        // Goodbyes need no waiting for.
        tokio::spawn(async move {
            for mut s in finished {
                let _ = tokio::time::timeout(QUIT_TIMEOUT, async {
                    s.write_all(b"QUIT\r\n").await?;
                    s.shutdown().await
                })
                .await;
            }
        });
        merge_replies(self.total, &self.plans, &results)
    }
}

impl Leg {
    /// Connects to the plan's backend and runs the session up to the body (or its end, when
    /// the backend refused every recipient or failed).
    async fn open(
        shared: &Shared,
        peer: SocketAddr,
        local: SocketAddr,
        helo: Option<&[u8]>,
        tx: &Transaction<Route>,
        plan: &SessionPlan<Route>,
    ) -> Leg {
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
        let mut leg = Leg {
            session: LmtpBackendSession::new_streaming(cfg, conn, helo, tx, plan),
            stream: None,
            replies: None,
            route: plan.backend.clone(),
            user: plan
                .recipients
                .first()
                .and_then(|i| tx.recipients.get(*i))
                .map(|r| r.address.clone())
                .unwrap_or_default(),
        };
        match connect_backend(shared, &leg.route, Protocol::Lmtp, peer, local).await {
            Ok(b) => leg.stream = Some(b),
            Err(e) => {
                report_backend_failure(shared, &leg.user, &leg.route, &e);
                leg.replies = Some(done_replies(leg.session.failed()));
                return leg;
            }
        }
        leg.run(shared, true).await;
        leg
    }

    /// Writes body bytes, if the session takes them. A backend that takes none for the
    /// idle timeout is given up; the others go on.
    async fn write(&mut self, shared: &Shared, bytes: &[u8]) {
        if self.replies.is_some() {
            return;
        }
        let Some(stream) = &mut self.stream else {
            return;
        };
        let written = tokio::time::timeout(shared.settings.limits.login_timeout, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
        let detail = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the backend took no message data for the idle timeout".to_string(),
        };
        self.fail(shared, detail);
    }

    /// The replies, reading the rest of the session if needed.
    async fn replies(&mut self, shared: &Shared) -> Vec<Vec<u8>> {
        if self.replies.is_none() {
            self.run(shared, false).await;
        }
        self.replies.clone().unwrap_or_default()
    }

    /// Feeds backend replies to the session until it is over, or (with `until_body`) until
    /// it takes the body.
    async fn run(&mut self, shared: &Shared, until_body: bool) {
        let timeout = shared.settings.limits.connect_timeout;
        let mut buf = vec![0u8; BACKEND_BUF];
        loop {
            let Some(stream) = &mut self.stream else {
                return;
            };
            let n = match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                other => {
                    let detail = match other {
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".to_string(),
                        _ => "backend closed the connection".to_string(),
                    };
                    return self.fail(shared, detail);
                }
            };
            for action in self.session.feed(&buf[..n]) {
                match action {
                    LmtpBackendAction::Send(b) => {
                        if let Err(e) = stream.write_all(&b).await {
                            return self.fail(shared, e.to_string());
                        }
                    }
                    LmtpBackendAction::SendBody if until_body => return,
                    LmtpBackendAction::SendBody => {
                        return self.fail(shared, "unexpected body request".to_string());
                    }
                    LmtpBackendAction::Done(replies) => {
                        self.replies = Some(replies);
                        return;
                    }
                }
            }
        }
    }

    /// The backend broke the LMTP conversation: report it; every recipient of this backend
    /// gets the session's temporary failure (or the replies the session already had).
    fn fail(&mut self, shared: &Shared, detail: String) {
        self.stream = None;
        if self.replies.is_some() {
            return;
        }
        report_backend_failure(
            shared,
            &self.user,
            &self.route,
            &BackendErr::new(BackendFailureKind::Protocol, detail),
        );
        self.replies = Some(done_replies(self.session.failed()));
    }
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
