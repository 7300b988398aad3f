//! Noticing at once that the process behind an outgoing connection is gone.
//!
//! TCP learns that a peer process died from the reset its host sends; QUIC over UDP learns it
//! only from its idle timeout, seconds later, because the host's "port unreachable" answers go
//! to quinn's unconnected socket, where the kernel drops them. Until then every request sent on
//! the dead connection waits, and a write among them cannot be resent elsewhere (it may have
//! been applied).
//!
//! So an outgoing connection that has heard nothing from its peer for
//! [`TransportConfig::peer_silence`](crate::TransportConfig::peer_silence) has the peer's port
//! checked: one byte from a *connected* UDP socket of our own, to which the kernel does report
//! the ICMP answer (as `ECONNREFUSED` on the next send or receive). The byte is not a QUIC
//! packet (a short header without the fixed bit, shorter than any connection id): a live
//! endpoint drops it unread. A refused port means nothing listens there any more: the
//! connection is closed, requests in flight on it fail at once, and the request about to be
//! sent fails as never sent, so a client may send it to another node.
//!
//! The check runs when a request is about to start on a silent connection, and every silence
//! from a watchdog task while requests are outstanding; a new handshake checks the port before
//! it starts and every silence until it finishes. A host that is down or cut off answers
//! nothing, and is left to the idle timeout.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::frame::CloseCode;

/// The probe: one byte that no QUIC endpoint takes for a packet.
const PROBE: [u8; 1] = [0x00];

/// A connected UDP socket that tells whether anything listens at one address.
#[derive(Debug)]
pub(crate) struct PortCheck {
    socket: UdpSocket,
}

impl PortCheck {
    pub(crate) fn new(addr: SocketAddr) -> io::Result<PortCheck> {
        let any = match addr {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let socket = UdpSocket::bind(any)?;
        socket.connect(addr)?;
        socket.set_nonblocking(true)?;
        Ok(PortCheck { socket })
    }

    /// Sends the probe and reports whether the port refused this probe or an earlier one. On
    /// loopback the refusal arrives before `send` returns; from another host, one round trip
    /// later, so the next check sees it. Never blocks.
    pub(crate) fn refused(&self) -> bool {
        let refused = |result: io::Result<usize>| {
            result.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        };
        let mut buf = [0u8; 16];
        refused(self.socket.recv(&mut buf))
            || refused(self.socket.send(&PROBE))
            || refused(self.socket.recv(&mut buf))
    }
}

/// Resolves once `check` finds its port closed, checking every `silence`; pending for ever
/// without a check.
pub(crate) async fn port_closed(check: Option<(&PortCheck, Duration)>) {
    let Some((check, silence)) = check else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(silence).await;
        if check.refused() {
            return;
        }
    }
}

/// A check of `addr`'s port, if checks are on and a socket can be made.
pub(crate) fn port_check(addr: SocketAddr, silence: Option<Duration>) -> Option<PortCheck> {
    silence?;
    PortCheck::new(addr)
        .inspect_err(|error| tracing::debug!(%addr, %error, "cannot check the peer's port"))
        .ok()
}

/// An established outgoing connection, with what is needed to notice that its peer is gone.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) conn: quinn::Connection,
    addr: SocketAddr,
    /// `None`: never check.
    silence: Option<Duration>,
    /// Requests started and not yet answered or abandoned.
    outstanding: AtomicUsize,
    /// Woken when `outstanding` leaves zero.
    busy: Notify,
    /// The port was found closed and the connection closed for it.
    gone: AtomicBool,
    heard: Mutex<Heard>,
    /// The checking socket, made by the first check.
    check: Mutex<Option<PortCheck>>,
    checks: AtomicU64,
}

/// What is known of when the peer was last heard from.
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// quinn's count of datagrams received on the connection, when last looked at.
    datagrams: u64,
    /// When it was last looked at.
    looked: Instant,
    /// Since when nothing is known to have arrived.
    since: Instant,
    /// When the port was last checked (at most one check per silence).
    checked: Option<Instant>,
}

impl Outgoing {
    pub(crate) fn new(
        conn: quinn::Connection,
        addr: SocketAddr,
        silence: Option<Duration>,
    ) -> Outgoing {
        let datagrams = conn.stats().udp_rx.datagrams;
        let now = Instant::now();
        Outgoing {
            conn,
            addr,
            silence,
            outstanding: AtomicUsize::new(0),
            busy: Notify::new(),
            gone: AtomicBool::new(false),
            heard: Mutex::new(Heard {
                datagrams,
                looked: now,
                since: now,
                checked: None,
            }),
            check: Mutex::new(None),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether the connection was closed because the peer's port was found closed.
    pub(crate) fn peer_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// How many times the peer's port was checked.
    #[cfg(test)]
    pub(crate) fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Counts a request as outstanding until the guard is dropped.
    pub(crate) fn begin(&self) -> Outstanding<'_> {
        if self.outstanding.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy.notify_one();
        }
        Outstanding(self)
    }

    /// A response arrived: the peer was heard from now.
    pub(crate) fn answered(&self) {
        if self.silence.is_some() {
            self.heard().since = Instant::now();
        }
    }

    /// Looks at the connection and, if nothing is known to have arrived from the peer for the
    /// silence, checks the peer's port; if it is closed, closes the connection. Returns whether
    /// the peer is gone. A change in quinn's datagram count counts as hearing the peer only if
    /// the previous look was within the silence (otherwise it may be older news).
    pub(crate) fn peer_found_gone(&self) -> bool {
        if self.peer_gone() {
            return true;
        }
        let Some(silence) = self.silence else {
            return false;
        };
        let now = Instant::now();
        {
            let mut heard = self.heard();
            // Answered within the silence (the common case under load): nothing to look at.
            if now.saturating_duration_since(heard.since) < silence {
                return false;
            }
            let datagrams = self.conn.stats().udp_rx.datagrams;
            if datagrams != heard.datagrams && now.saturating_duration_since(heard.looked) < silence
            {
                heard.since = now;
            }
            heard.datagrams = datagrams;
            heard.looked = now;
            let quiet = now.saturating_duration_since(heard.since) >= silence;
            let due = heard
                .checked
                .is_none_or(|at| now.saturating_duration_since(at) >= silence);
            if !quiet || !due {
                return false;
            }
            heard.checked = Some(now);
        }
        self.checks.fetch_add(1, Ordering::Relaxed);
        let refused = {
            let mut check = self.check.lock().unwrap_or_else(PoisonError::into_inner);
            if check.is_none() {
                *check = port_check(self.addr, self.silence);
            }
            check.as_ref().is_some_and(PortCheck::refused)
        };
        if refused && !self.gone.swap(true, Ordering::AcqRel) {
            tracing::info!(addr = %self.addr, "the peer's port is closed: its process is gone");
            self.conn
                .close(CloseCode::PeerGone.var_int(), CloseCode::PeerGone.reason());
        }
        refused
    }

    fn heard(&self) -> MutexGuard<'_, Heard> {
        // Every update leaves the fields consistent: a poisoned lock is still usable.
        self.heard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One outstanding request on an [`Outgoing`] connection.
#[derive(Debug)]
pub(crate) struct Outstanding<'a>(&'a Outgoing);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Looks at the connection every silence while requests are outstanding, so that requests
/// already sent fail when the peer is gone even if no new request starts; ends with the
/// connection.
pub(crate) async fn watch(out: Arc<Outgoing>) {
    let Some(silence) = out.silence else {
        return;
    };
    loop {
        // Idle: wait for a request (or the end).
        loop {
            let notified = out.busy.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if out.outstanding.load(Ordering::Acquire) > 0 {
                break;
            }
            tokio::select! {
                () = notified => {}
                _ = out.conn.closed() => return,
            }
        }
        while out.outstanding.load(Ordering::Acquire) > 0 {
            tokio::select! {
                () = tokio::time::sleep(silence) => {}
                _ = out.conn.closed() => return,
            }
            if out.peer_found_gone() {
                return;
            }
        }
    }
}
