//! The endpoint: one quinn endpoint per process, an accept loop that turns request streams into
//! [`IncomingRequest`]s, and a connection cache for outgoing requests.
//!
//! Tasks: one accept loop per listening endpoint; per accepted connection one task accepting
//! request streams; per request stream one task reading the request frame; per response one task
//! writing it. Every task ends when its connection does or when the endpoint closes.
//!
//! A request frame holds its announced length in two budgets from when its prefix is read until
//! it is answered: its peer's (`max_pending_request_bytes_per_peer`, all connections of one
//! certificate together) and the endpoint's (`max_pending_request_bytes`). A frame whose bytes
//! stop arriving is reset after `frame_progress_timeout`; bad frames, stalled frames and
//! requests the application reports malformed count toward closing their connection.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use quinn::{ConnectionError, ReadError, RecvStream, SendStream, TransportErrorCode, WriteError};
use rustls::pki_types::CertificateDer;
use tokio::runtime::Handle as Runtime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::certs::Identity;
use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::frame::{
    CloseCode, Deadlines, FrameError, ReadFrameError, ResetCode, read_frame, read_frame_body,
    read_frame_end, read_frame_len, write_frame,
};
use crate::liveness::{self, Outgoing, PortCheck};
use crate::peer::{ExpectedPeer, PeerIdentity};
use crate::tls;
use shoal_types::Role;

/// Send-stream priority of bulk transfers; client traffic keeps quinn's default of 0.
const BULK_STREAM_PRIORITY: i32 = -1;

/// One process's QUIC endpoint: listens (nodes) and sends requests (everyone).
///
/// Cheap to clone; all clones share the socket, the connection cache and the counters. When the
/// last clone is dropped the endpoint closes at once; [`Endpoint::close`] closes it gracefully.
#[derive(Clone)]
pub struct Endpoint {
    handle: Arc<Handle>,
}

/// How urgently a stream's bytes are sent, relative to the other streams of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Client requests and replica traffic.
    #[default]
    Normal,
    /// Handoff and anti-entropy transfers: sent when normal streams have nothing to send.
    Bulk,
}

/// Counters for metrics, cumulative since the endpoint was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Outgoing connections established (handshake done, peer accepted).
    pub connections_opened: u64,
    /// Incoming connections established.
    pub connections_accepted: u64,
    /// Incoming connections refused before the handshake: over `max_incoming_connections`, or
    /// the endpoint was closing.
    pub connections_refused: u64,
    /// Incoming handshakes that failed: certificate refused (other CA, none), no Shoal
    /// identity, wrong ALPN, timeouts.
    pub incoming_handshakes_failed: u64,
    /// Outgoing handshakes that failed, including peers that were not the expected node.
    pub outgoing_handshakes_failed: u64,
    /// Request frames refused as too large, truncated or followed by bytes.
    pub bad_frames: u64,
    /// Request frames given up on because their bytes stopped arriving
    /// (`frame_progress_timeout`) or did not all arrive within `frame_timeout`.
    pub slow_frames: u64,
    /// Requests the application reported malformed ([`Responder::report_malformed`]).
    pub malformed_requests: u64,
    /// Responses reset with [`ResetCode::Undelivered`]: the request was handled, but the
    /// response was not delivered within `frame_timeout`.
    pub responses_undelivered: u64,
    /// Connections closed because their bad frames, slow frames and malformed requests together
    /// exceeded `max_bad_frames_per_connection`.
    pub connections_closed_for_bad_frames: u64,
    /// Requests this endpoint sent.
    pub requests_sent: u64,
    /// Requests this endpoint read and handed to the application.
    pub requests_received: u64,
    /// Connections open now, both directions.
    pub open_connections: u64,
}

/// The requests arriving at a listening endpoint, from all connections.
pub struct Incoming {
    requests: mpsc::Receiver<IncomingRequest>,
}

/// One request read from a peer. Answer it with [`IncomingRequest::respond`]; dropping it resets
/// the peer's stream with [`ResetCode::NoResponse`].
pub struct IncomingRequest {
    /// Who sent it, from its verified certificate.
    pub peer: PeerIdentity,
    /// Where it came from.
    pub remote: SocketAddr,
    /// The request frame's body.
    pub frame: Bytes,
    responder: Responder,
}

/// The answering half of a request: respond once, or drop it to reset the peer's stream with
/// [`ResetCode::NoResponse`]. Holds the request's place in the endpoint's in-flight count and
/// its bytes in the pending-bytes budgets until then.
pub struct Responder {
    inner: Arc<Inner>,
    ctx: StreamContext,
    send: Option<SendStream>,
    recv: Option<RecvStream>,
    budget: Option<RequestBudget>,
    in_flight: Option<InFlight>,
    /// Whether the request was put in the application's queue.
    delivered: bool,
}

impl Endpoint {
    /// A node's endpoint: listens on `addr` (port 0 picks one) and also sends requests. The
    /// identity must be a node certificate. Must be called inside a tokio runtime.
    pub fn server(
        addr: SocketAddr,
        identity: Identity,
        config: TransportConfig,
    ) -> Result<(Endpoint, Incoming), TransportError> {
        if identity.role() != Role::Node {
            return Err(TransportError::WrongRole {
                role: identity.role(),
                action: "listen",
            });
        }
        Endpoint::listen(addr, identity, config)
    }

    /// [`Endpoint::server`] without the role check, so tests can stand up an impostor.
    pub(crate) fn listen(
        addr: SocketAddr,
        identity: Identity,
        config: TransportConfig,
    ) -> Result<(Endpoint, Incoming), TransportError> {
        config.validate()?;
        let runtime = Runtime::try_current().map_err(|_| TransportError::NoRuntime)?;
        let server = tls::server_config(&identity, &config)?;
        let client = tls::client_config(&identity, &config)?;
        let bind_error = |source| TransportError::Bind { addr, source };
        let socket = UdpSocket::bind(addr).map_err(bind_error)?;
        let quinn = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let (requests, incoming) = mpsc::channel(config.incoming_queue);
        let inner = Inner::new(quinn, client, config, &identity, runtime)?;
        inner.runtime.spawn(accept_loop(inner.clone(), requests));
        let endpoint = Endpoint {
            handle: Arc::new(Handle { inner }),
        };
        Ok((endpoint, Incoming { requests: incoming }))
    }

    /// A client's or an admin's endpoint: sends requests only, from an ephemeral port (IPv6
    /// dual-stack where the system allows, else IPv4). Must be called inside a tokio runtime.
    pub fn client(identity: Identity, config: TransportConfig) -> Result<Endpoint, TransportError> {
        config.validate()?;
        let runtime = Runtime::try_current().map_err(|_| TransportError::NoRuntime)?;
        let client = tls::client_config(&identity, &config)?;
        let any_v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        let any_v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let quinn = quinn::Endpoint::client(any_v6)
            .or_else(|_| quinn::Endpoint::client(any_v4))
            .map_err(|source| TransportError::Bind {
                addr: any_v4,
                source,
            })?;
        let inner = Inner::new(quinn, client, config, &identity, runtime)?;
        Ok(Endpoint {
            handle: Arc::new(Handle { inner }),
        })
    }

    /// The address the socket is bound to (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.inner.local_addr
    }

    /// This endpoint's own identity.
    pub fn identity(&self) -> &PeerIdentity {
        &self.handle.inner.identity
    }

    /// The configuration the endpoint runs with.
    pub fn config(&self) -> &TransportConfig {
        &self.handle.inner.config
    }

    /// Sends one request frame on a new stream of a cached connection to `addr` (connecting
    /// first if needed, the server's certificate checked against `expect`) and waits up to
    /// `timeout` for the one response frame.
    ///
    /// Errors tell whether the request may have reached the peer
    /// ([`TransportError::may_have_reached_peer`]): a failed connection or handshake sent
    /// nothing, so the request may safely go elsewhere.
    pub async fn request(
        &self,
        addr: SocketAddr,
        expect: ExpectedPeer,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        self.request_with_priority(addr, expect, frame, timeout, Priority::Normal)
            .await
    }

    /// [`Endpoint::request`] with a stream priority: [`Priority::Bulk`] for transfers that must
    /// not delay client traffic on the same connection.
    pub async fn request_with_priority(
        &self,
        addr: SocketAddr,
        expect: ExpectedPeer,
        frame: Bytes,
        timeout: Duration,
        priority: Priority,
    ) -> Result<Bytes, TransportError> {
        let inner = &self.handle.inner;
        let max = inner.config.max_frame_bytes;
        if frame.len() as u64 > u64::from(max) {
            return Err(TransportError::FrameTooLarge {
                len: frame.len() as u64,
                max,
            });
        }
        // A draining endpoint still sends: the requests it is finishing may need other nodes.
        if inner.state() == State::Closed {
            return Err(TransportError::Closed);
        }
        let mut sent = false;
        let exchange = inner.exchange(addr, expect, frame, priority, &mut sent);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                addr,
                after: timeout,
                sent,
            }),
        }
    }

    /// Closes gracefully: stops accepting connections and request streams, waits (up to
    /// `close_timeout`) for the requests already read to be answered and their responses
    /// delivered, then closes every connection with [`CloseCode::Shutdown`] and waits (up to
    /// `close_timeout`) for peers to acknowledge. Requests still in flight after that fail;
    /// [`Incoming::next`] returns `None` once the remaining requests are taken.
    pub async fn close(&self) {
        let inner = &self.handle.inner;
        inner.state.send_if_modified(|state| {
            let open = *state == State::Open;
            if open {
                *state = State::Draining;
            }
            open
        });
        let mut in_flight = inner.in_flight.subscribe();
        let drained = in_flight.wait_for(|n| *n == 0);
        if tokio::time::timeout(inner.config.close_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = *inner.in_flight.borrow(),
                "closing with requests still unanswered"
            );
        }
        inner.shut_down();
        let _ = tokio::time::timeout(inner.config.close_timeout, inner.quinn.wait_idle()).await;
    }

    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        let inner = &self.handle.inner;
        let c = &inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            connections_opened: load(&c.connections_opened),
            connections_accepted: load(&c.connections_accepted),
            connections_refused: load(&c.connections_refused),
            incoming_handshakes_failed: load(&c.incoming_handshakes_failed),
            outgoing_handshakes_failed: load(&c.outgoing_handshakes_failed),
            bad_frames: load(&c.bad_frames),
            slow_frames: load(&c.slow_frames),
            malformed_requests: load(&c.malformed_requests),
            responses_undelivered: load(&c.responses_undelivered),
            connections_closed_for_bad_frames: load(&c.connections_closed_for_bad_frames),
            requests_sent: load(&c.requests_sent),
            requests_received: load(&c.requests_received),
            open_connections: inner.quinn.open_connections() as u64,
        }
    }

    /// Watches the endpoint's state, for tests that act while it closes.
    #[cfg(test)]
    pub(crate) fn state_watch(&self) -> watch::Receiver<State> {
        self.handle.inner.state.subscribe()
    }

    /// Bytes of the endpoint's pending-bytes budget not held by any request frame.
    #[cfg(test)]
    pub(crate) fn pending_budget_available(&self) -> usize {
        self.handle.inner.pending_bytes.available_permits()
    }

    /// How many times the ports of peers at `addr` were checked (see [`crate::liveness`]).
    #[cfg(test)]
    pub(crate) fn peer_checks(&self, addr: SocketAddr) -> u64 {
        self.handle
            .inner
            .cache()
            .iter()
            .filter(|(key, _)| key.addr == addr)
            .map(|(_, slot)| match slot {
                Slot::Ready(out) => out.checks(),
                Slot::Connecting(_) => 0,
            })
            .sum()
    }

    /// Opens a raw request stream, for tests that send what a well-behaved peer never would.
    #[cfg(test)]
    pub(crate) async fn open_raw_stream(
        &self,
        addr: SocketAddr,
        expect: ExpectedPeer,
    ) -> Result<(SendStream, RecvStream), TransportError> {
        let inner = &self.handle.inner;
        let out = inner.connection(addr, expect).await?;
        out.conn
            .open_bi()
            .await
            .map_err(|e| connection_error(addr, &e, false))
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.handle.inner;
        f.debug_struct("Endpoint")
            .field("local_addr", &inner.local_addr)
            .field("identity", &inner.identity)
            .field("state", &inner.state())
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// The next request; `None` once the endpoint is closed and every request was taken.
    pub async fn next(&mut self) -> Option<IncomingRequest> {
        self.requests.recv().await
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("queued", &self.requests.len())
            .finish()
    }
}

impl IncomingRequest {
    /// Sends the response frame and finishes the stream. Returns at once; a task writes it.
    ///
    /// A frame over `max_frame_bytes` is not sent: the stream is reset with
    /// [`ResetCode::ResponseTooLarge`] (and a warning logged), which tells the peer that its
    /// request was handled and that this endpoint is there.
    pub fn respond(self, frame: Bytes) {
        self.responder.send_response(frame, Priority::Normal);
    }

    /// [`IncomingRequest::respond`] with a stream priority, for bulk responses.
    pub fn respond_with_priority(self, frame: Bytes, priority: Priority) {
        self.responder.send_response(frame, priority);
    }

    /// Splits the request into its parts and the [`Responder`] that answers it, for a server
    /// that decodes the frame and answers later from elsewhere.
    pub fn into_parts(self) -> (PeerIdentity, SocketAddr, Bytes, Responder) {
        (self.peer, self.remote, self.frame, self.responder)
    }
}

impl Responder {
    /// Sends the response frame and finishes the stream; see [`IncomingRequest::respond`].
    pub fn respond(self, frame: Bytes) {
        self.send_response(frame, Priority::Normal);
    }

    /// Counts the request against its connection as malformed: a frame the application could
    /// not decode. Like a bad frame, it counts toward `max_bad_frames_per_connection`, past
    /// which the connection is closed. Answer the request as usual afterwards.
    pub fn report_malformed(&self) {
        self.inner.strike(&self.ctx, Strike::Malformed);
    }

    /// [`Responder::respond`] with a stream priority, for bulk responses.
    pub fn respond_with_priority(self, frame: Bytes, priority: Priority) {
        self.send_response(frame, priority);
    }

    /// Whether the requester has given up on the answer: it stopped reading (it dropped the
    /// request, or reset its stream) or its connection is gone. Looks without waiting, so a
    /// server can check before it works on a request and before it encodes an answer.
    pub fn is_cancelled(&self) -> bool {
        let Some(send) = &self.send else {
            return false;
        };
        let mut stopped = std::pin::pin!(send.stopped());
        let mut cx = Context::from_waker(Waker::noop());
        stopped.as_mut().poll(&mut cx).is_ready()
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("answered", &self.send.is_none())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("peer", &self.peer)
            .field("remote", &self.remote)
            .field("frame_len", &self.frame.len())
            .finish_non_exhaustive()
    }
}

/// The user-facing owner: when the last `Endpoint` clone goes, the endpoint closes, so its
/// tasks (which hold `Inner`, not `Handle`) end.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.shut_down();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Serving and sending.
    Open,
    /// Closing gracefully: no new connections or request streams; requests already read are
    /// answered; outgoing requests still allowed.
    Draining,
    /// Closed: nothing is sent or accepted.
    Closed,
}

struct Inner {
    quinn: quinn::Endpoint,
    client: quinn::ClientConfig,
    config: TransportConfig,
    identity: PeerIdentity,
    local_addr: SocketAddr,
    runtime: Runtime,
    state: watch::Sender<State>,
    /// Outgoing connections by (address, expected peer).
    cache: Mutex<HashMap<CacheKey, Slot>>,
    /// Requests read and not yet answered, plus responses being delivered.
    in_flight: watch::Sender<usize>,
    /// Bytes of request frames being read or waiting for an answer, all peers together.
    pending_bytes: Arc<Semaphore>,
    /// The same per peer certificate, for peers with a connection open.
    peer_budgets: Mutex<HashMap<PeerIdentity, PeerBudget>>,
    /// Incoming connections being served, for `max_incoming_connections`.
    live_connections: AtomicUsize,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    connections_opened: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    incoming_handshakes_failed: AtomicU64,
    outgoing_handshakes_failed: AtomicU64,
    bad_frames: AtomicU64,
    slow_frames: AtomicU64,
    malformed_requests: AtomicU64,
    responses_undelivered: AtomicU64,
    connections_closed_for_bad_frames: AtomicU64,
    requests_sent: AtomicU64,
    requests_received: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    addr: SocketAddr,
    expect: ExpectedPeer,
}

type HandshakeOutcome = Option<Result<Arc<Outgoing>, HandshakeFailure>>;

enum Slot {
    /// An established connection; used while quinn has not reported it closed.
    Ready(Arc<Outgoing>),
    /// A handshake in progress; every request for the key waits for its outcome.
    Connecting(watch::Receiver<HandshakeOutcome>),
}

/// Why a handshake failed, shareable between the requests that waited for it.
#[derive(Debug, Clone)]
enum HandshakeFailure {
    Closed,
    Unreachable(String),
    PeerRejected(String),
    RejectedByPeer { reason: String, tls_alert: bool },
}

/// What a request stream shares with its connection.
#[derive(Clone)]
struct StreamContext {
    conn: quinn::Connection,
    peer: PeerIdentity,
    /// Bad frames, slow frames and malformed requests so far.
    strikes: Arc<AtomicU32>,
    /// The peer's pending-bytes budget, shared by all its connections.
    budget: Arc<Semaphore>,
}

/// What a connection did wrong, counted toward `max_bad_frames_per_connection`.
#[derive(Debug, Clone, Copy)]
enum Strike {
    /// A frame over the limit, truncated, or followed by bytes.
    BadFrame(FrameError),
    /// A frame whose bytes stopped arriving or came too slowly.
    Slow,
    /// A request the application could not decode.
    Malformed,
}

impl fmt::Display for Strike {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strike::BadFrame(error) => write!(f, "bad frame: {error}"),
            Strike::Slow => f.write_str("request frame stalled"),
            Strike::Malformed => f.write_str("malformed request"),
        }
    }
}

/// Why a request frame was not read.
#[derive(Debug)]
enum ReadRequestError {
    /// The peer's fault (bad, stalled) or the stream's (reset, connection lost).
    Frame(ReadFrameError),
    /// The budgets stayed full until the frame's deadline: the endpoint is overloaded, which is
    /// not this peer's fault.
    NoBudget,
}

impl From<ReadFrameError> for ReadRequestError {
    fn from(error: ReadFrameError) -> Self {
        ReadRequestError::Frame(error)
    }
}

/// A request frame's bytes in its peer's budget and in the endpoint's, held until it is
/// answered.
#[derive(Debug)]
struct RequestBudget {
    _peer: OwnedSemaphorePermit,
    _endpoint: OwnedSemaphorePermit,
}

/// One peer certificate's share of the pending-bytes budget, and how many of its connections
/// are open.
struct PeerBudget {
    bytes: Arc<Semaphore>,
    connections: usize,
}

/// A connection's hold on its peer's budget entry; the entry goes with the peer's last
/// connection (requests still being answered keep their permits of it).
struct PeerBudgetSlot {
    inner: Arc<Inner>,
    peer: PeerIdentity,
}

impl PeerBudgetSlot {
    fn new(inner: Arc<Inner>, peer: &PeerIdentity) -> (PeerBudgetSlot, Arc<Semaphore>) {
        let bytes = {
            let mut budgets = inner.peer_budgets();
            let entry = budgets.entry(peer.clone()).or_insert_with(|| PeerBudget {
                bytes: Arc::new(Semaphore::new(permits(
                    inner.config.max_pending_request_bytes_per_peer,
                ))),
                connections: 0,
            });
            entry.connections += 1;
            entry.bytes.clone()
        };
        let slot = PeerBudgetSlot {
            inner,
            peer: peer.clone(),
        };
        (slot, bytes)
    }
}

impl Drop for PeerBudgetSlot {
    fn drop(&mut self) {
        let mut budgets = self.inner.peer_budgets();
        if let Some(entry) = budgets.get_mut(&self.peer) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                budgets.remove(&self.peer);
            }
        }
    }
}

/// A byte budget as semaphore permits (at most what a semaphore holds).
fn permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

impl Inner {
    fn new(
        quinn: quinn::Endpoint,
        client: quinn::ClientConfig,
        config: TransportConfig,
        identity: &Identity,
        runtime: Runtime,
    ) -> Result<Arc<Inner>, TransportError> {
        let local_addr = quinn.local_addr().map_err(|source| TransportError::Bind {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            source,
        })?;
        let pending = permits(config.max_pending_request_bytes);
        Ok(Arc::new(Inner {
            quinn,
            client,
            identity: identity.peer_identity(),
            local_addr,
            runtime,
            state: watch::Sender::new(State::Open),
            cache: Mutex::new(HashMap::new()),
            in_flight: watch::Sender::new(0),
            pending_bytes: Arc::new(Semaphore::new(pending)),
            peer_budgets: Mutex::new(HashMap::new()),
            live_connections: AtomicUsize::new(0),
            counters: Counters::default(),
            config,
        }))
    }

    fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Closes everything at once.
    fn shut_down(&self) {
        self.state.send_replace(State::Closed);
        self.quinn
            .close(CloseCode::Shutdown.var_int(), CloseCode::Shutdown.reason());
        self.cache().clear();
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<CacheKey, Slot>> {
        // The map stays consistent even if a holder panicked: every update is one insert/remove.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn peer_budgets(&self) -> MutexGuard<'_, HashMap<PeerIdentity, PeerBudget>> {
        // As the cache: every update leaves the map consistent.
        self.peer_budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn exchange(
        self: &Arc<Self>,
        addr: SocketAddr,
        expect: ExpectedPeer,
        frame: Bytes,
        priority: Priority,
        sent: &mut bool,
    ) -> Result<Bytes, TransportError> {
        let out = self.connection(addr, expect).await?;
        let _outstanding = out.begin();
        // A peer silent past `peer_silence` may be gone: check before sending anything.
        if out.peer_found_gone() {
            return Err(peer_gone(addr, false));
        }
        let result = self.exchange_on(&out, addr, frame, priority, sent).await;
        match result {
            Ok(response) => {
                out.answered();
                Ok(response)
            }
            // Our own close, made because the peer's port was found closed.
            Err(TransportError::Closed | TransportError::ConnectionLost { .. })
                if out.peer_gone() =>
            {
                Err(peer_gone(addr, *sent))
            }
            Err(e) => Err(e),
        }
    }

    async fn exchange_on(
        &self,
        out: &Outgoing,
        addr: SocketAddr,
        frame: Bytes,
        priority: Priority,
        sent: &mut bool,
    ) -> Result<Bytes, TransportError> {
        let (send, mut recv) = out
            .conn
            .open_bi()
            .await
            .map_err(|e| connection_error(addr, &e, false))?;
        let mut send = CancelOnDrop(Some(send));
        let stream = send.stream()?;
        if priority == Priority::Bulk {
            let _ = stream.set_priority(BULK_STREAM_PRIORITY);
        }
        *sent = true;
        self.counters.requests_sent.fetch_add(1, Ordering::Relaxed);
        write_frame(stream, frame)
            .await
            .map_err(|e| write_error(addr, e))?;
        let _ = stream.finish();
        let response = read_frame(&mut recv, self.config.max_frame_bytes)
            .await
            .map_err(|e| read_error(addr, e))?;
        send.completed();
        Ok(response)
    }

    /// A live connection for the key: cached, being made by another request, or new.
    async fn connection(
        self: &Arc<Self>,
        addr: SocketAddr,
        expect: ExpectedPeer,
    ) -> Result<Arc<Outgoing>, TransportError> {
        let key = CacheKey { addr, expect };
        let mut outcome = {
            let mut cache = self.cache();
            match cache.get(&key) {
                Some(Slot::Ready(out)) if out.conn.close_reason().is_none() => {
                    return Ok(out.clone());
                }
                // A live handshake: wait for it. (A dead one, whose task is gone, is replaced.)
                Some(Slot::Connecting(outcome)) if outcome.has_changed().is_ok() => outcome.clone(),
                _ => {
                    if self.state() == State::Closed {
                        return Err(TransportError::Closed);
                    }
                    let (tx, rx) = watch::channel(None);
                    cache.insert(key.clone(), Slot::Connecting(rx.clone()));
                    self.runtime.spawn(self.clone().connect(key, tx));
                    rx
                }
            }
        };
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        match result {
            Some(Ok(out)) => Ok(out),
            Some(Err(failure)) => Err(failure.into_error(addr)),
            None => Err(TransportError::Unreachable {
                addr,
                reason: "connection attempt abandoned".to_owned(),
            }),
        }
    }

    /// Runs one handshake for the key and publishes its outcome to everyone waiting.
    async fn connect(self: Arc<Self>, key: CacheKey, outcome: watch::Sender<HandshakeOutcome>) {
        let result = self.handshake(key.addr, &key.expect).await.map(|conn| {
            let out = Arc::new(Outgoing::new(conn, key.addr, self.config.peer_silence));
            self.runtime.spawn(liveness::watch(out.clone()));
            out
        });
        {
            let mut cache = self.cache();
            let ours = matches!(cache.get(&key),
                Some(Slot::Connecting(rx)) if rx.same_channel(&outcome.subscribe()));
            match &result {
                Ok(conn) if ours && self.state() != State::Closed => {
                    cache.insert(key.clone(), Slot::Ready(conn.clone()));
                }
                _ if ours => {
                    cache.remove(&key);
                }
                _ => {}
            }
        }
        if let (Ok(out), State::Closed) = (&result, self.state()) {
            close(&out.conn, CloseCode::Shutdown);
        }
        outcome.send_replace(Some(result));
    }

    async fn handshake(
        &self,
        addr: SocketAddr,
        expect: &ExpectedPeer,
    ) -> Result<quinn::Connection, HandshakeFailure> {
        let failed = |failure| {
            self.counters
                .outgoing_handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            failure
        };
        // A closed port (on loopback the refusal is immediate) is not worth a handshake, which
        // would wait out the idle timeout; from afar the refusal arrives during the handshake.
        let check = liveness::port_check(addr, self.config.peer_silence);
        let port_closed = || {
            failed(HandshakeFailure::Unreachable(
                "nothing listens there: the port is closed".to_owned(),
            ))
        };
        if check.as_ref().is_some_and(PortCheck::refused) {
            return Err(port_closed());
        }
        let connecting = self
            .quinn
            .connect_with(self.client.clone(), addr, &expect.server_name())
            .map_err(|e| match e {
                quinn::ConnectError::EndpointStopping => HandshakeFailure::Closed,
                other => failed(HandshakeFailure::Unreachable(other.to_string())),
            })?;
        let watch = check.as_ref().zip(self.config.peer_silence);
        let handshake = tokio::select! {
            handshake = connecting => handshake,
            () = liveness::port_closed(watch) => return Err(port_closed()),
        };
        let conn = handshake.map_err(|e| {
            failed(match classify(&e) {
                Refusal::OursTls(reason) => HandshakeFailure::PeerRejected(reason),
                Refusal::Theirs { reason, tls_alert } => {
                    HandshakeFailure::RejectedByPeer { reason, tls_alert }
                }
                Refusal::LocallyClosed => HandshakeFailure::Closed,
                Refusal::Other(reason) => HandshakeFailure::Unreachable(reason),
            })
        })?;
        let peer = match peer_identity(&conn) {
            Ok(peer) => peer,
            Err(reason) => {
                close(&conn, CloseCode::BadIdentity);
                return Err(failed(HandshakeFailure::PeerRejected(reason)));
            }
        };
        if !expect.accepts(&peer) {
            close(&conn, CloseCode::UnexpectedPeer);
            return Err(failed(HandshakeFailure::PeerRejected(format!(
                "expected {expect}, the certificate names {peer}"
            ))));
        }
        self.counters
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%addr, %peer, "connected");
        Ok(conn)
    }

    /// Reads a request frame within `frame_timeout`, each read within
    /// `frame_progress_timeout`, holding its announced length in the peer's budget and the
    /// endpoint's from when the prefix is read (waiting for them does not count as the peer's
    /// lack of progress).
    async fn read_request(
        &self,
        ctx: &StreamContext,
        recv: &mut RecvStream,
    ) -> Result<(Bytes, RequestBudget), ReadRequestError> {
        let frame = Instant::now() + self.config.frame_timeout;
        let deadlines = Some(Deadlines {
            progress: self.config.frame_progress_timeout,
            frame,
        });
        let len = read_frame_len(recv, self.config.max_frame_bytes, deadlines).await?;
        // A closed connection ends the wait: nothing would be read after it.
        let budget = tokio::select! {
            budget = tokio::time::timeout_at(frame, self.take_budget(ctx, len)) => {
                budget.map_err(|_| ReadRequestError::NoBudget)??
            }
            error = ctx.conn.closed() => {
                return Err(ReadFrameError::Read(ReadError::ConnectionLost(error)).into());
            }
        };
        let body = read_frame_body(recv, len, deadlines).await?;
        read_frame_end(recv, deadlines).await?;
        Ok((body, budget))
    }

    /// Takes `len` bytes of the peer's budget, then of the endpoint's: a peer that has used up
    /// its own share waits on it alone, and never holds endpoint bytes while it waits.
    async fn take_budget(
        &self,
        ctx: &StreamContext,
        len: u32,
    ) -> Result<RequestBudget, ReadFrameError> {
        // The semaphores are never closed; treat it like a closed stream if one were.
        let closed = |_| ReadFrameError::Read(ReadError::ClosedStream);
        let peer = ctx
            .budget
            .clone()
            .acquire_many_owned(len)
            .await
            .map_err(closed)?;
        let endpoint = self
            .pending_bytes
            .clone()
            .acquire_many_owned(len)
            .await
            .map_err(closed)?;
        Ok(RequestBudget {
            _peer: peer,
            _endpoint: endpoint,
        })
    }

    /// Counts what a connection did wrong, and closes it past `max_bad_frames_per_connection`.
    fn strike(&self, ctx: &StreamContext, strike: Strike) {
        let counter = match strike {
            Strike::BadFrame(_) => &self.counters.bad_frames,
            Strike::Slow => &self.counters.slow_frames,
            Strike::Malformed => &self.counters.malformed_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let count = ctx
            .strikes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        tracing::warn!(peer = %ctx.peer, remote = %ctx.conn.remote_address(), %strike, count, "request refused");
        if count == self.config.max_bad_frames_per_connection.saturating_add(1) {
            tracing::warn!(peer = %ctx.peer, "closing connection: too many bad frames");
            self.counters
                .connections_closed_for_bad_frames
                .fetch_add(1, Ordering::Relaxed);
            close(&ctx.conn, CloseCode::TooManyBadFrames);
        }
    }
}

/// Accepts connections until the endpoint closes, refusing those over the limit.
async fn accept_loop(inner: Arc<Inner>, requests: mpsc::Sender<IncomingRequest>) {
    let mut state = inner.state.subscribe();
    let max = usize::try_from(inner.config.max_incoming_connections).unwrap_or(usize::MAX);
    loop {
        let incoming = tokio::select! {
            _ = state.wait_for(|s| *s == State::Closed) => break,
            incoming = inner.quinn.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        if inner.state() != State::Open || inner.live_connections.load(Ordering::Acquire) >= max {
            tracing::debug!(remote = %incoming.remote_address(), "refusing connection");
            inner
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        let slot = LiveConnection::new(inner.clone());
        inner.runtime.spawn(serve_connection(
            inner.clone(),
            incoming,
            requests.clone(),
            slot,
        ));
    }
}

/// Serves one incoming connection: completes the handshake, then accepts request streams.
async fn serve_connection(
    inner: Arc<Inner>,
    incoming: quinn::Incoming,
    requests: mpsc::Sender<IncomingRequest>,
    _slot: LiveConnection,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(error) => {
            inner
                .counters
                .incoming_handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, %error, "incoming handshake failed");
            return;
        }
    };
    let peer = match peer_identity(&conn) {
        Ok(peer) => peer,
        Err(reason) => {
            inner
                .counters
                .incoming_handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, %reason, "refusing peer certificate");
            close(&conn, CloseCode::BadIdentity);
            return;
        }
    };
    inner
        .counters
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%remote, %peer, "accepted connection");
    let (_budget_slot, budget) = PeerBudgetSlot::new(inner.clone(), &peer);
    let ctx = StreamContext {
        conn: conn.clone(),
        peer,
        strikes: Arc::new(AtomicU32::new(0)),
        budget,
    };
    let mut state = inner.state.subscribe();
    loop {
        let (send, recv) = tokio::select! {
            _ = state.wait_for(|s| *s != State::Open) => break,
            stream = conn.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(_) => break,
            },
        };
        inner.runtime.spawn(serve_stream(
            inner.clone(),
            ctx.clone(),
            send,
            recv,
            requests.clone(),
        ));
    }
}

/// Reads one request frame and hands it to the application.
async fn serve_stream(
    inner: Arc<Inner>,
    ctx: StreamContext,
    mut send: SendStream,
    mut recv: RecvStream,
    requests: mpsc::Sender<IncomingRequest>,
) {
    let (frame, budget) = match inner.read_request(&ctx, &mut recv).await {
        Ok(request) => request,
        Err(ReadRequestError::Frame(ReadFrameError::Frame(error))) => {
            inner.strike(&ctx, Strike::BadFrame(error));
            reset(&mut send, &mut recv, ResetCode::BadFrame);
            return;
        }
        Err(ReadRequestError::Frame(ReadFrameError::Stalled)) => {
            inner.strike(&ctx, Strike::Slow);
            reset(&mut send, &mut recv, ResetCode::ReadTimeout);
            return;
        }
        // The peer reset the stream or the connection went: nobody to answer.
        Err(ReadRequestError::Frame(ReadFrameError::Read(error))) => {
            tracing::debug!(peer = %ctx.peer, %error, "request stream failed");
            // Dropping would finish the stream, an empty answer; say it was abandoned instead.
            let _ = send.reset(ResetCode::Cancelled.var_int());
            return;
        }
        Err(ReadRequestError::NoBudget) => {
            tracing::debug!(peer = %ctx.peer, "no pending-bytes budget for a request in time");
            reset(&mut send, &mut recv, ResetCode::ReadTimeout);
            return;
        }
    };
    inner
        .counters
        .requests_received
        .fetch_add(1, Ordering::Relaxed);
    let mut request = IncomingRequest {
        peer: ctx.peer.clone(),
        remote: ctx.conn.remote_address(),
        frame,
        responder: Responder::new(inner.clone(), ctx, send, recv, budget),
    };
    let mut state = inner.state.subscribe();
    tokio::select! {
        slot = requests.reserve() => match slot {
            Ok(slot) => {
                request.responder.delivered = true;
                slot.send(request);
            }
            // The application dropped `Incoming`: the responder resets the stream.
            Err(_) => drop(request),
        },
        _ = state.wait_for(|s| *s == State::Closed) => drop(request),
    }
}

impl Responder {
    fn new(
        inner: Arc<Inner>,
        ctx: StreamContext,
        send: SendStream,
        recv: RecvStream,
        budget: RequestBudget,
    ) -> Responder {
        let in_flight = InFlight::new(inner.clone());
        Responder {
            inner,
            ctx,
            send: Some(send),
            recv: Some(recv),
            budget: Some(budget),
            in_flight: Some(in_flight),
            delivered: false,
        }
    }

    fn send_response(mut self, frame: Bytes, priority: Priority) {
        let (Some(mut send), Some(recv)) = (self.send.take(), self.recv.take()) else {
            return;
        };
        // The transport is done with the request's bytes.
        self.budget.take();
        let in_flight = self.in_flight.take();
        let max = self.inner.config.max_frame_bytes;
        if frame.len() as u64 > u64::from(max) {
            tracing::warn!(
                len = frame.len(),
                max,
                "response frame over the limit; resetting"
            );
            let _ = send.reset(ResetCode::ResponseTooLarge.var_int());
            return;
        }
        let timeout = self.inner.config.frame_timeout;
        let inner = self.inner.clone();
        self.inner.runtime.spawn(async move {
            let _in_flight = in_flight;
            let _recv = recv;
            if priority == Priority::Bulk {
                let _ = send.set_priority(BULK_STREAM_PRIORITY);
            }
            let delivery = async {
                write_frame(&mut send, frame)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = send.finish();
                // Closing the connection drops unacknowledged data: wait for the peer's ack.
                send.stopped().await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(timeout, delivery).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::debug!(%error, "response not delivered"),
                // The request was handled: say so, so that the caller does not take it for
                // one that never was (a write it carried may have been applied).
                Err(_) => {
                    tracing::debug!("response delivery timed out");
                    inner
                        .counters
                        .responses_undelivered
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = send.reset(ResetCode::Undelivered.var_int());
                }
            }
        });
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let code = if !self.delivered || self.inner.state() == State::Closed {
            ResetCode::ShuttingDown
        } else {
            ResetCode::NoResponse
        };
        if let Some(send) = &mut self.send {
            let _ = send.reset(code.var_int());
        }
        if let Some(recv) = &mut self.recv {
            let _ = recv.stop(code.var_int());
        }
    }
}

/// Counts one request (or response) in flight while it lives.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(inner: Arc<Inner>) -> InFlight {
        inner.in_flight.send_modify(|n| *n += 1);
        InFlight(inner)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Holds one place under `max_incoming_connections` while a connection is served.
struct LiveConnection(Arc<Inner>);

impl LiveConnection {
    fn new(inner: Arc<Inner>) -> LiveConnection {
        inner.live_connections.fetch_add(1, Ordering::AcqRel);
        LiveConnection(inner)
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.live_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's send stream that is reset with [`ResetCode::Cancelled`] if the request is
/// abandoned (timeout, error), so the peer does not take a cut-off frame for a bad one.
struct CancelOnDrop(Option<SendStream>);

impl CancelOnDrop {
    fn stream(&mut self) -> Result<&mut SendStream, TransportError> {
        // Only `completed` empties it, and nothing uses the stream after that.
        self.0.as_mut().ok_or(TransportError::Closed)
    }

    fn completed(mut self) {
        self.0.take();
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(send) = &mut self.0 {
            let _ = send.reset(ResetCode::Cancelled.var_int());
        }
    }
}

impl HandshakeFailure {
    fn into_error(self, addr: SocketAddr) -> TransportError {
        match self {
            HandshakeFailure::Closed => TransportError::Closed,
            HandshakeFailure::Unreachable(reason) => TransportError::Unreachable { addr, reason },
            HandshakeFailure::PeerRejected(reason) => TransportError::PeerRejected { addr, reason },
            HandshakeFailure::RejectedByPeer { reason, tls_alert } => {
                TransportError::RejectedByPeer {
                    addr,
                    reason,
                    tls_alert,
                }
            }
        }
    }
}

/// How a connection error reads to a caller.
enum Refusal {
    /// Our TLS stack refused the peer (its certificate, its ALPN).
    OursTls(String),
    /// The peer refused us: a TLS alert (our certificate), or the connection limit. Its
    /// application saw nothing of this connection.
    Theirs { reason: String, tls_alert: bool },
    /// Our own endpoint closed the connection.
    LocallyClosed,
    /// Anything else: timeouts, resets, application closes.
    Other(String),
}

fn classify(error: &ConnectionError) -> Refusal {
    match error {
        ConnectionError::TransportError(e) if is_tls_alert(e.code) => {
            Refusal::OursTls(e.to_string())
        }
        ConnectionError::ConnectionClosed(close)
            if is_tls_alert(close.error_code)
                || close.error_code == TransportErrorCode::CONNECTION_REFUSED =>
        {
            Refusal::Theirs {
                reason: close.to_string(),
                tls_alert: is_tls_alert(close.error_code),
            }
        }
        ConnectionError::LocallyClosed => Refusal::LocallyClosed,
        other => Refusal::Other(other.to_string()),
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100 to 0x1ff.
fn is_tls_alert(code: TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// A request on a connection closed because the peer's port was found closed.
fn peer_gone(addr: SocketAddr, sent: bool) -> TransportError {
    let reason = "the peer's port is closed: its process is gone".to_owned();
    if sent {
        TransportError::ConnectionLost { addr, reason }
    } else {
        TransportError::Unreachable { addr, reason }
    }
}

/// A connection error met while sending a request; `sent` says whether the request had started
/// to go out.
fn connection_error(addr: SocketAddr, error: &ConnectionError, sent: bool) -> TransportError {
    match classify(error) {
        Refusal::OursTls(reason) => TransportError::PeerRejected { addr, reason },
        // A refused handshake never reached the peer's application, whatever we had written.
        Refusal::Theirs { reason, tls_alert } => TransportError::RejectedByPeer {
            addr,
            reason,
            tls_alert,
        },
        Refusal::LocallyClosed if !sent => TransportError::Closed,
        Refusal::LocallyClosed => TransportError::ConnectionLost {
            addr,
            reason: "endpoint closed".to_owned(),
        },
        Refusal::Other(reason) if !sent => TransportError::Unreachable { addr, reason },
        Refusal::Other(reason) => TransportError::ConnectionLost { addr, reason },
    }
}

fn write_error(addr: SocketAddr, error: WriteError) -> TransportError {
    match error {
        WriteError::Stopped(code) => TransportError::Reset {
            addr,
            code: ResetCode::from_u64(code.into_inner()),
        },
        WriteError::ConnectionLost(e) => connection_error(addr, &e, true),
        other => TransportError::ConnectionLost {
            addr,
            reason: other.to_string(),
        },
    }
}

/// What a requester makes of a response it could not read.
pub(crate) fn read_error(addr: SocketAddr, error: ReadFrameError) -> TransportError {
    match error {
        ReadFrameError::Frame(source) => TransportError::BadResponse { addr, source },
        ReadFrameError::Read(ReadError::Reset(code)) => TransportError::Reset {
            addr,
            code: ResetCode::from_u64(code.into_inner()),
        },
        ReadFrameError::Read(ReadError::ConnectionLost(e)) => connection_error(addr, &e, true),
        // Responses are read without deadlines of their own; were one given up on, the request
        // had been sent.
        ReadFrameError::Stalled => TransportError::ConnectionLost {
            addr,
            reason: "the response stopped arriving".to_owned(),
        },
        ReadFrameError::Read(other) => TransportError::ConnectionLost {
            addr,
            reason: other.to_string(),
        },
    }
}

fn reset(send: &mut SendStream, recv: &mut RecvStream, code: ResetCode) {
    let _ = send.reset(code.var_int());
    let _ = recv.stop(code.var_int());
}

fn close(conn: &quinn::Connection, code: CloseCode) {
    conn.close(code.var_int(), code.reason());
}

/// The identity in the peer's certificate, which the TLS handshake has verified.
fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, String> {
    let certs = conn
        .peer_identity()
        .ok_or("the peer presented no certificate")?
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type")?;
    let leaf = certs.first().ok_or("empty certificate chain")?;
    PeerIdentity::from_certificate(leaf).map_err(|e| e.to_string())
}
