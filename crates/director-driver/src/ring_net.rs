//! The ring's connections: the sockets behind `director_ring::Ring`.
//!
//! The ring state machine decides everything (whom to connect to, what to send, when to
//! close); this module only carries it out. Each connection has a reader task, which frames
//! and parses lines with `RingDecoder` and hands every message to the driver task, and a
//! writer task, which writes the lines the driver queued. The bytes queued for one peer are
//! counted: past `director_output_buffer_size` the peer is disconnected, as Dovecot does,
//! instead of letting a stalled peer grow our memory. Bytes in and out, the peak of the
//! queue and the last `PING` round trip are counted here too, for `DIRECTOR-LIST`. When
//! the ring asks (`Output::NotifyWritten`: a handshake sends its users a round at a time),
//! the connection reports once its queue is written out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use director_proto::ring::{DirectorAddr, RingDecodeError, RingDecoder, RingMessage};
use director_ring::{stamp_buffered, ConnCounters, ConnId, Output, Ring, CONNECT_TIMEOUT_SECS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Where the ring dials a director: the address `director_servers` lists for it, unless a
/// test puts something in between.
///
/// A ring member is dialed at its listed address and checked by its IP when it connects, so
/// nothing can sit between two directors on one machine. Dovecot's own ring test
/// (`director-test`) gave its director a test-only option to dial elsewhere so that a relay
/// could delay, bunch and cut the ring's traffic; this is ours, set only by code (it is no
/// setting). Connections are still made from our own ring address, so a relay can tell who
/// dialed and connect onwards from that same address, and the peer's check still holds.
#[derive(Clone, Default)]
pub struct RingDialer(Option<Arc<DialFn>>);

/// A dialer's mapping from a listed director to the address actually dialed.
type DialFn = dyn Fn(DirectorAddr) -> SocketAddr + Send + Sync;

impl RingDialer {
    /// Dials every director at its listed address (the only choice outside tests).
    pub fn listed() -> Self {
        RingDialer(None)
    }

    /// Dials director `addr` at `target(addr)` instead.
    pub fn via(target: impl Fn(DirectorAddr) -> SocketAddr + Send + Sync + 'static) -> Self {
        RingDialer(Some(Arc::new(target)))
    }

    /// The address to dial for `addr`.
    fn target(&self, addr: DirectorAddr) -> SocketAddr {
        match &self.0 {
            Some(f) => f(addr),
            None => SocketAddr::new(addr.ip, addr.port),
        }
    }
}

impl std::fmt::Debug for RingDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "RingDialer(custom)",
            None => "RingDialer(listed)",
        })
    }
}

/// Connects to `target` from `from` (port chosen by the kernel); from anywhere when `from`
/// is the any-address or of the other family.
async fn connect_from(from: std::net::IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if !from.is_unspecified() && from.is_ipv4() == target.is_ipv4() {
        socket.bind(SocketAddr::new(from, 0))?;
    }
    socket.connect(target).await
}

/// Most bytes of queued lines a connection's writer puts into one write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Bytes a connection's reader asks the socket for at once: a handshake brings tens of
/// megabytes, which a read per ring line length (1 KiB) would cost a system call per
/// thirty lines.
const READ_BYTES: usize = 64 * 1024;
/// Most lines a reader hands the driver in one event: fewer events mean fewer channel
/// hand-overs and wake-ups per line, and the bound keeps what waits in the channel small
/// (at most [`RING_EVENT_QUEUE_CAPACITY`](crate::limits::RING_EVENT_QUEUE_CAPACITY) events).
pub(crate) const LINES_PER_EVENT: usize = 256;

/// What a ring connection's tasks tell the driver.
pub(crate) enum RingEvent {
    /// A connection we opened is up.
    Connected {
        addr: DirectorAddr,
        stream: TcpStream,
    },
    /// A connection we tried to open failed.
    ConnectFailed { addr: DirectorAddr },
    /// A peer connected to our ring listener.
    Accepted { stream: TcpStream, peer: SocketAddr },
    /// Lines arrived (at most [`LINES_PER_EVENT`]), in order.
    Lines {
        conn: ConnId,
        messages: Vec<RingMessage>,
    },
    /// A line did not parse (or was too long).
    DecodeError {
        conn: ConnId,
        error: RingDecodeError,
    },
    /// Everything queued for the connection was written, and the ring asked to know.
    Written { conn: ConnId },
    /// The connection ended (EOF or an I/O error).
    Closed { conn: ConnId },
}

/// How the connection tasks reach the driver: a bounded channel, so that a peer that sends
/// faster than the driver handles its lines waits in TCP, not in our memory.
pub(crate) type EventSink = mpsc::Sender<RingEvent>;

struct Peer {
    lines: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes queued and not yet written; shared with the writer task.
    queued: Arc<AtomicUsize>,
    /// The ring wants [`RingEvent::Written`] when `queued` reaches 0; whoever turns it off
    /// (the writer task, or [`RingNet::execute`] finding the queue empty) reports it.
    notify_written: Arc<AtomicBool>,
    peak_queued: usize,
    /// Bytes read and written; shared with the reader and writer tasks.
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    /// When our unanswered `PING` was queued.
    ping_sent: Option<Instant>,
    last_ping_msecs: u64,
    reader: tokio::task::AbortHandle,
}

/// What [`RingNet::execute`] leaves for the driver to tell the ring.
#[derive(Default)]
pub(crate) struct Executed {
    /// Dropped because their output buffer overflowed.
    pub overflowed: Vec<ConnId>,
    /// Everything queued was written already.
    pub written: Vec<ConnId>,
}

/// The ring and its open connections.
pub(crate) struct RingNet {
    pub ring: Ring,
    peers: HashMap<ConnId, Peer>,
    next_id: u64,
    output_limit: usize,
    sink: EventSink,
    dialer: RingDialer,
}

impl RingNet {
    pub fn new(ring: Ring, output_limit: usize, sink: EventSink, dialer: RingDialer) -> Self {
        RingNet {
            ring,
            peers: HashMap::new(),
            next_id: 1,
            output_limit,
            sink,
            dialer,
        }
    }

    /// Starts the tasks of a new connection and returns its id.
    pub fn attach(&mut self, stream: TcpStream) -> ConnId {
        let conn = ConnId(self.next_id);
        self.next_id += 1;
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (lines, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = Arc::clone(&queued);
        let notify_written = Arc::new(AtomicBool::new(false));
        let notify = Arc::clone(&notify_written);
        let bytes_out = Arc::new(AtomicU64::new(0));
        let out_count = Arc::clone(&bytes_out);
        let bytes_in = Arc::new(AtomicU64::new(0));
        let in_count = Arc::clone(&bytes_in);
        let sink = self.sink.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(line) = queue.recv().await {
                // Whatever else is queued goes out in the same write: a handshake's million
                // users would otherwise cost a system call each, here and at the reader.
                batch.clear();
                batch.extend_from_slice(&line);
                while batch.len() < WRITE_BATCH_BYTES {
                    match queue.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                let n = batch.len();
                let ok = write.write_all(&batch).await.is_ok();
                let left = written.fetch_sub(n, Ordering::AcqRel) - n;
                if ok {
                    out_count.fetch_add(n as u64, Ordering::Relaxed);
                    if left == 0
                        && notify.swap(false, Ordering::AcqRel)
                        && sink.send(RingEvent::Written { conn }).await.is_err()
                    {
                        return;
                    }
                }
                if !ok {
                    // The reader notices too; one Closed is enough, and the driver ignores
                    // a second one for a connection it no longer has.
                    let _ = sink.send(RingEvent::Closed { conn }).await;
                    return;
                }
            }
            // The driver dropped the connection: what was queued is written, now close.
            let _ = write.shutdown().await;
        });
        let sink = self.sink.clone();
        let reader = tokio::spawn(async move {
            let mut decoder = RingDecoder::new();
            let mut buf = vec![0u8; READ_BYTES];
            let mut batch: Vec<RingMessage> = Vec::with_capacity(LINES_PER_EVENT);
            loop {
                let n = match read.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = sink.send(RingEvent::Closed { conn }).await;
                        return;
                    }
                    Ok(n) => n,
                };
                in_count.fetch_add(n as u64, Ordering::Relaxed);
                let mut rest = &buf[..n];
                loop {
                    let taken = decoder.feed(rest);
                    rest = &rest[taken..];
                    loop {
                        match decoder.next_message() {
                            Ok(Some(message)) => {
                                batch.push(message);
                                if batch.len() == LINES_PER_EVENT {
                                    let messages = std::mem::replace(
                                        &mut batch,
                                        Vec::with_capacity(LINES_PER_EVENT),
                                    );
                                    let event = RingEvent::Lines { conn, messages };
                                    if sink.send(event).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(error) => {
                                let messages = std::mem::take(&mut batch);
                                if !messages.is_empty() {
                                    let _ = sink.send(RingEvent::Lines { conn, messages }).await;
                                }
                                let _ = sink.send(RingEvent::DecodeError { conn, error }).await;
                                return;
                            }
                        }
                    }
                    if rest.is_empty() {
                        break;
                    }
                }
                if !batch.is_empty() {
                    let messages =
                        std::mem::replace(&mut batch, Vec::with_capacity(LINES_PER_EVENT));
                    if sink
                        .send(RingEvent::Lines { conn, messages })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        })
        .abort_handle();
        self.peers.insert(
            conn,
            Peer {
                lines,
                queued,
                notify_written,
                peak_queued: 0,
                bytes_in,
                bytes_out,
                ping_sent: None,
                last_ping_msecs: 0,
                reader,
            },
        );
        conn
    }

    /// Notes what the socket owner measures of a line that arrived: a `PONG`'s round trip.
    pub fn observe(&mut self, conn: ConnId, message: &RingMessage) {
        if let (RingMessage::Pong(_), Some(peer)) = (message, self.peers.get_mut(&conn)) {
            if let Some(sent) = peer.ping_sent.take() {
                peer.last_ping_msecs =
                    u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
            }
        }
    }

    /// `DIRECTOR-LIST`'s counters of `conn` (zeros for a connection we no longer have).
    pub fn counters(&self, conn: ConnId) -> ConnCounters {
        self.peers
            .get(&conn)
            .map_or_else(ConnCounters::default, |p| ConnCounters {
                last_ping_msecs: p.last_ping_msecs,
                bytes_in: p.bytes_in.load(Ordering::Relaxed),
                bytes_out: p.bytes_out.load(Ordering::Relaxed),
                buffered: p.queued.load(Ordering::Relaxed) as u64,
                peak_buffered: p.peak_queued as u64,
            })
    }

    /// Whether `conn` is open.
    pub fn knows(&self, conn: ConnId) -> bool {
        self.peers.contains_key(&conn)
    }

    /// Forgets a connection the driver learnt was closed.
    pub fn forget(&mut self, conn: ConnId) -> bool {
        match self.peers.remove(&conn) {
            Some(peer) => {
                peer.reader.abort();
                true
            }
            None => false,
        }
    }

    /// Carries out what the ring asked for. Returns connections that had to be dropped
    /// because their output buffer overflowed (the ring must be told they closed), and
    /// connections whose queue was already written when the ring asked to know.
    pub fn execute(&mut self) -> Executed {
        let mut done = Executed::default();
        // Consecutive lines for one connection go to its writer as one buffer: a handshake
        // queues a million, and a hand-over each would cost more than encoding them.
        let mut pending: Option<(ConnId, Vec<u8>)> = None;
        while let Some(out) = self.ring.poll_output() {
            if let Some((c, _)) = &pending {
                let same_conn_send = matches!(&out, Output::Send { conn, .. } if conn == c);
                if !same_conn_send {
                    self.hand_over(pending.take());
                }
            }
            match out {
                Output::Send { conn, mut message } => {
                    let Some(peer) = self.peers.get_mut(&conn) else {
                        continue;
                    };
                    if matches!(message, RingMessage::Ping(_)) {
                        peer.ping_sent = Some(Instant::now());
                    }
                    stamp_buffered(&mut message, peer.queued.load(Ordering::Relaxed) as u64);
                    let (_, buf) = pending.get_or_insert_with(|| (conn, Vec::new()));
                    let before = buf.len();
                    message.encode_into(buf);
                    let len = buf.len() - before;
                    let queued = peer.queued.fetch_add(len, Ordering::Relaxed) + len;
                    peer.peak_queued = peer.peak_queued.max(queued);
                    if queued > self.output_limit {
                        tracing::error!(
                            conn = conn.0,
                            queued,
                            limit = self.output_limit,
                            "Director output buffer full, disconnecting"
                        );
                        pending = None;
                        self.forget(conn);
                        done.overflowed.push(conn);
                        continue;
                    }
                    if buf.len() >= WRITE_BATCH_BYTES {
                        self.hand_over(pending.take());
                    }
                }
                Output::NotifyWritten { conn } => {
                    if let Some(peer) = self.peers.get(&conn) {
                        peer.notify_written.store(true, Ordering::Release);
                        if peer.queued.load(Ordering::Acquire) == 0
                            && peer.notify_written.swap(false, Ordering::AcqRel)
                        {
                            done.written.push(conn);
                        }
                    }
                }
                Output::Connect { addr } => self.connect(addr),
                Output::Disconnect { conn, reason } => {
                    // The ring logged why (a refused stranger's drops rate-limited).
                    tracing::debug!(conn = conn.0, reason = %reason, "closing ring connection");
                    // Dropping the queue lets the writer flush and close.
                    self.forget(conn);
                }
            }
        }
        self.hand_over(pending);
        done
    }

    /// Gives a connection's writer the lines encoded for it (counted in its queue already).
    fn hand_over(&self, pending: Option<(ConnId, Vec<u8>)>) {
        if let Some((conn, buf)) = pending {
            if let Some(peer) = self.peers.get(&conn) {
                let _ = peer.lines.send(buf);
            }
        }
    }

    fn connect(&self, addr: DirectorAddr) {
        let sink = self.sink.clone();
        // From our own ring address, as Dovecot does: the peer accepts only listed IPs.
        let from = self.ring.me().ip;
        let target = self.dialer.target(addr);
        tokio::spawn(async move {
            let limit = Duration::from_secs(CONNECT_TIMEOUT_SECS);
            match tokio::time::timeout(limit, connect_from(from, target)).await {
                Ok(Ok(stream)) => {
                    let _ = sink.send(RingEvent::Connected { addr, stream }).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(director = %target, error = %e, "ring connect failed");
                    let _ = sink.send(RingEvent::ConnectFailed { addr }).await;
                }
                Err(_) => {
                    tracing::debug!(director = %target, "ring connect timed out");
                    let _ = sink.send(RingEvent::ConnectFailed { addr }).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use director_core::{CoreSettings, Director};
    use director_ring::{Direction, RingConfig};
    use tokio::io::AsyncBufReadExt;

    #[tokio::test]
    async fn a_reader_hands_over_lines_in_order_in_bounded_batches() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut theirs, _) = listener.accept().await.unwrap();
        let (sink, mut events) = mpsc::channel(4);
        let me = DirectorAddr {
            ip: "127.0.0.1".parse().unwrap(),
            port: 9090,
        };
        let mut net = RingNet::new(
            Ring::new(RingConfig::new(me, vec![me])),
            1 << 20,
            sink,
            RingDialer::listed(),
        );
        let conn = net.attach(ours);
        const N: u32 = 10_000;
        let peer = tokio::spawn(async move {
            let mut bytes = Vec::new();
            for i in 0..N {
                bytes.extend_from_slice(format!("U\t{i}\t127.0.1.1\t1795896443\n").as_bytes());
            }
            bytes.extend_from_slice(b"SYNC\tnot an address\n");
            // Odd-sized writes: lines are split across reads.
            for chunk in bytes.chunks(1000 + 7) {
                theirs.write_all(chunk).await.unwrap();
            }
            theirs
        });
        let mut hashes = Vec::new();
        loop {
            match events.recv().await.expect("an event") {
                RingEvent::Lines { conn: c, messages } => {
                    assert_eq!(c, conn);
                    assert!(!messages.is_empty() && messages.len() <= LINES_PER_EVENT);
                    for m in messages {
                        match m {
                            RingMessage::HandshakeUser(u) => hashes.push(u.hash),
                            other => panic!("{other:?}"),
                        }
                    }
                }
                RingEvent::DecodeError { conn: c, .. } => {
                    assert_eq!(c, conn);
                    break;
                }
                _ => panic!("unexpected event"),
            }
        }
        assert_eq!(hashes, (0..N).collect::<Vec<_>>());
        drop(peer.await.unwrap());
    }

    #[tokio::test]
    async fn a_pong_carries_the_bytes_queued_before_it() {
        let me = DirectorAddr {
            ip: "127.0.0.1".parse().unwrap(),
            port: 9090,
        };
        let peer_addr = DirectorAddr {
            ip: "127.0.0.2".parse().unwrap(),
            port: 9090,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        let (sink, _events) = mpsc::channel(16);
        let ring = Ring::new(RingConfig::new(me, vec![me, peer_addr]));
        let mut net = RingNet::new(ring, 1 << 20, sink, RingDialer::listed());
        let mut dir = Director::new(CoreSettings::default()).unwrap();
        let conn = net.attach(ours);
        // Nothing yields to the writer task until the PONG is queued, so VERSION and ME
        // are still in the queue when it is.
        let now = Duration::from_secs(1_795_896_443);
        net.ring
            .connected(conn, peer_addr.ip, Direction::Incoming, now, &mut dir);
        let greeting_len =
            "VERSION\tdirector\t1\t9\n".len() + "ME\t127.0.0.1\t9090\t1795896443\n".len();
        for line in [
            "VERSION\tdirector\t1\t9",
            "ME\t127.0.0.2\t9090\t1795896443",
            "PING\t1795896443\t0",
        ] {
            let msg = director_proto::ring::parse(line.as_bytes()).unwrap();
            net.ring.line(conn, msg, now, &mut dir);
        }
        net.execute();
        let mut lines = tokio::io::BufReader::new(theirs).lines();
        let pong = loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.starts_with("PONG") {
                break line;
            }
        };
        assert_eq!(pong, format!("PONG\t1795896443\t{greeting_len}"));
    }

    #[test]
    fn a_dialer_dials_the_listed_address_unless_told_otherwise() {
        let listed = DirectorAddr {
            ip: "127.0.0.7".parse().unwrap(),
            port: 9090,
        };
        assert_eq!(
            RingDialer::listed().target(listed),
            "127.0.0.7:9090".parse().unwrap()
        );
        assert_eq!(
            RingDialer::default().target(listed),
            "127.0.0.7:9090".parse().unwrap()
        );
        let relay: SocketAddr = "127.0.0.9:4000".parse().unwrap();
        let via = RingDialer::via(move |a| SocketAddr::new(relay.ip(), relay.port() + a.port % 10));
        assert_eq!(via.target(listed), "127.0.0.9:4000".parse().unwrap());
    }
}
