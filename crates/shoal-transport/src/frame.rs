//! Frames on a stream: a u32 big-endian length, then that many bytes. The length is checked
//! against the limit before anything is allocated, and the body grows only as bytes arrive.
//! Reading a request frame has [`Deadlines`]: a peer that stops sending in the middle of a
//! frame is given up on after the progress deadline, not only when the whole frame is late.
//!
//! Not here: the pending-bytes budget a request frame holds while it is read and answered (the
//! endpoint takes it), and what the bytes mean.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ReadError, ReadExactError, RecvStream, SendStream, VarInt, WriteError};
use thiserror::Error;
use tokio::time::Instant;

/// Bytes in a frame's length prefix.
pub(crate) const LENGTH_PREFIX_BYTES: usize = 4;

/// The most a frame body buffer reserves before bytes arrive.
const INITIAL_BODY_CAPACITY_BYTES: usize = 64 * 1024;

/// What is wrong with a frame a peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix announces more bytes than the limit allows.
    #[error("frame announces {len} bytes, the limit is {max}")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The configured limit.
        max: u32,
    },
    /// The stream ended inside the frame.
    #[error("stream ended after {received} of {expected} frame bytes")]
    Truncated {
        /// Bytes the frame needed (prefix included).
        expected: u64,
        /// Bytes that arrived.
        received: u64,
    },
    /// More bytes followed the frame; a stream carries exactly one frame each way.
    #[error("bytes follow the frame")]
    TrailingBytes,
}

/// Application error codes this crate puts on the streams it resets, so the other side can tell
/// why its request or response was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetCode {
    /// The frame was over the size limit or truncated; it was not delivered.
    BadFrame,
    /// The request was delivered, but the application dropped it without responding.
    NoResponse,
    /// The request frame did not arrive in time; it was not delivered.
    ReadTimeout,
    /// The endpoint is shutting down; the request was not delivered.
    ShuttingDown,
    /// The request's stream was abandoned before the request was handled: the sender gave up
    /// (timeout, cancellation), or its half of the stream failed while the request was read.
    Cancelled,
    /// The request was handled and answered, but the response could not be delivered within
    /// `frame_timeout`: a write it carried may have been applied.
    Undelivered,
    /// The request was handled, but its response was over the size limit, so it was not
    /// sent: a write it carried may have been applied, and the peer is there.
    ResponseTooLarge,
    /// A code this crate does not know.
    Other(u64),
}

impl ResetCode {
    /// The code on the wire.
    pub fn to_u64(self) -> u64 {
        match self {
            ResetCode::BadFrame => 0x10,
            ResetCode::NoResponse => 0x11,
            ResetCode::ReadTimeout => 0x12,
            ResetCode::ShuttingDown => 0x13,
            ResetCode::Cancelled => 0x14,
            ResetCode::Undelivered => 0x15,
            ResetCode::ResponseTooLarge => 0x16,
            ResetCode::Other(code) => code,
        }
    }

    /// The code read from the wire.
    pub fn from_u64(code: u64) -> ResetCode {
        match code {
            0x10 => ResetCode::BadFrame,
            0x11 => ResetCode::NoResponse,
            0x12 => ResetCode::ReadTimeout,
            0x13 => ResetCode::ShuttingDown,
            0x14 => ResetCode::Cancelled,
            0x15 => ResetCode::Undelivered,
            0x16 => ResetCode::ResponseTooLarge,
            other => ResetCode::Other(other),
        }
    }

    /// Whether a request reset with this code may have been handed to the peer's application.
    pub fn may_have_reached_peer(self) -> bool {
        matches!(
            self,
            ResetCode::NoResponse
                | ResetCode::Undelivered
                | ResetCode::ResponseTooLarge
                | ResetCode::Other(_)
        )
    }

    pub(crate) fn var_int(self) -> VarInt {
        VarInt::from_u64(self.to_u64()).unwrap_or(VarInt::MAX)
    }
}

impl fmt::Display for ResetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetCode::BadFrame => f.write_str("bad frame"),
            ResetCode::NoResponse => f.write_str("no response"),
            ResetCode::ReadTimeout => f.write_str("request frame timed out"),
            ResetCode::ShuttingDown => f.write_str("shutting down"),
            ResetCode::Cancelled => f.write_str("cancelled before it was handled"),
            ResetCode::Undelivered => {
                f.write_str("handled, but the response was not delivered in time")
            }
            ResetCode::ResponseTooLarge => {
                f.write_str("handled, but the response was over the frame limit")
            }
            ResetCode::Other(code) => write!(f, "code {code:#x}"),
        }
    }
}

/// Application error codes this crate closes connections with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The endpoint is shutting down.
    Shutdown,
    /// The peer sent more bad frames than `max_bad_frames_per_connection`.
    TooManyBadFrames,
    /// The peer's certificate carries no usable Shoal identity.
    BadIdentity,
    /// The peer is not the node that was expected.
    UnexpectedPeer,
    /// Nothing listens at the peer's address any more: its process is gone (closed locally; the
    /// peer cannot hear it).
    PeerGone,
}

impl CloseCode {
    /// The code on the wire.
    pub fn to_u64(self) -> u64 {
        match self {
            CloseCode::Shutdown => 0x0,
            CloseCode::TooManyBadFrames => 0x20,
            CloseCode::BadIdentity => 0x21,
            CloseCode::UnexpectedPeer => 0x22,
            CloseCode::PeerGone => 0x23,
        }
    }

    pub(crate) fn var_int(self) -> VarInt {
        VarInt::from_u64(self.to_u64()).unwrap_or(VarInt::MAX)
    }

    pub(crate) fn reason(self) -> &'static [u8] {
        match self {
            CloseCode::Shutdown => b"endpoint shutting down",
            CloseCode::TooManyBadFrames => b"too many bad frames",
            CloseCode::BadIdentity => b"certificate carries no Shoal identity",
            CloseCode::UnexpectedPeer => b"not the expected peer",
            CloseCode::PeerGone => b"the peer's port is closed",
        }
    }
}

/// A frame could not be read: either the peer sent a bad one, or too slowly, or the stream
/// failed under it.
#[derive(Debug)]
pub(crate) enum ReadFrameError {
    /// The peer's bytes are not a valid frame.
    Frame(FrameError),
    /// No byte arrived within the progress deadline, or the frame's deadline passed while it
    /// was being read.
    Stalled,
    /// The stream or connection failed (reset by the peer, connection lost).
    Read(ReadError),
}

/// When reading a request frame gives up: each read must bring bytes within `progress`, and
/// the whole frame must be in by `frame`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) progress: Duration,
    pub(crate) frame: Instant,
}

impl Deadlines {
    /// Runs one read under the deadlines (none: as long as it takes).
    async fn read<T>(
        deadlines: Option<Deadlines>,
        read: impl Future<Output = T>,
    ) -> Result<T, ReadFrameError> {
        let Some(d) = deadlines else {
            return Ok(read.await);
        };
        let at = Instant::now()
            .checked_add(d.progress)
            .map_or(d.frame, |progress| progress.min(d.frame));
        tokio::time::timeout_at(at, read)
            .await
            .map_err(|_| ReadFrameError::Stalled)
    }
}

/// Writes one frame. The caller has checked that `body` fits the limit.
pub(crate) async fn write_frame(send: &mut SendStream, body: Bytes) -> Result<(), WriteError> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut chunks = [Bytes::copy_from_slice(&len.to_be_bytes()), body];
    send.write_all_chunks(&mut chunks).await
}

/// Reads the length prefix of one frame and checks it against `max_bytes`.
pub(crate) async fn read_frame_len(
    recv: &mut RecvStream,
    max_bytes: u32,
    deadlines: Option<Deadlines>,
) -> Result<u32, ReadFrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    match Deadlines::read(deadlines, recv.read_exact(&mut prefix)).await? {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(received)) => {
            return Err(ReadFrameError::Frame(FrameError::Truncated {
                expected: LENGTH_PREFIX_BYTES as u64,
                received: received as u64,
            }));
        }
        Err(ReadExactError::ReadError(e)) => return Err(ReadFrameError::Read(e)),
    }
    let len = u32::from_be_bytes(prefix);
    if len > max_bytes {
        return Err(ReadFrameError::Frame(FrameError::TooLarge {
            len,
            max: max_bytes,
        }));
    }
    Ok(len)
}

/// Reads a frame body of `len` bytes (already checked against the limit).
pub(crate) async fn read_frame_body(
    recv: &mut RecvStream,
    len: u32,
    deadlines: Option<Deadlines>,
) -> Result<Bytes, ReadFrameError> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut body = BytesMut::new();
    while body.len() < len {
        let wanted = len - body.len();
        match Deadlines::read(deadlines, recv.read_chunk(wanted, true)).await? {
            // The common case: the whole body in one chunk, kept without a copy.
            Ok(Some(chunk)) if body.is_empty() && chunk.bytes.len() == len => {
                return Ok(chunk.bytes);
            }
            Ok(Some(chunk)) => {
                if body.capacity() == 0 {
                    body.reserve(len.min(INITIAL_BODY_CAPACITY_BYTES));
                }
                body.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => {
                return Err(ReadFrameError::Frame(FrameError::Truncated {
                    expected: (LENGTH_PREFIX_BYTES + len) as u64,
                    received: (LENGTH_PREFIX_BYTES + body.len()) as u64,
                }));
            }
            Err(e) => return Err(ReadFrameError::Read(e)),
        }
    }
    Ok(body.freeze())
}

/// Checks that the stream ends right after the frame. The sender finishes the stream with its
/// last bytes, so this does not wait; reading the end also spares quinn a STOP_SENDING.
pub(crate) async fn read_frame_end(
    recv: &mut RecvStream,
    deadlines: Option<Deadlines>,
) -> Result<(), ReadFrameError> {
    match Deadlines::read(deadlines, recv.read_chunk(1, true)).await? {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(ReadFrameError::Frame(FrameError::TrailingBytes)),
        Err(e) => Err(ReadFrameError::Read(e)),
    }
}

/// Reads one whole frame and the end of the stream, with no deadline of its own (a response:
/// the caller's request timeout bounds it).
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    max_bytes: u32,
) -> Result<Bytes, ReadFrameError> {
    let len = read_frame_len(recv, max_bytes, None).await?;
    let body = read_frame_body(recv, len, None).await?;
    read_frame_end(recv, None).await?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_codes_round_trip_through_their_wire_value() {
        for code in [
            ResetCode::BadFrame,
            ResetCode::NoResponse,
            ResetCode::ReadTimeout,
            ResetCode::ShuttingDown,
            ResetCode::Cancelled,
            ResetCode::Undelivered,
            ResetCode::ResponseTooLarge,
            ResetCode::Other(0x99),
        ] {
            assert_eq!(ResetCode::from_u64(code.to_u64()), code);
        }
    }

    #[test]
    fn only_handled_or_unanswered_requests_count_as_maybe_delivered() {
        assert!(ResetCode::NoResponse.may_have_reached_peer());
        assert!(ResetCode::Undelivered.may_have_reached_peer());
        assert!(ResetCode::ResponseTooLarge.may_have_reached_peer());
        assert!(!ResetCode::BadFrame.may_have_reached_peer());
        assert!(!ResetCode::ReadTimeout.may_have_reached_peer());
        assert!(!ResetCode::ShuttingDown.may_have_reached_peer());
        assert!(!ResetCode::Cancelled.may_have_reached_peer());
    }
}
