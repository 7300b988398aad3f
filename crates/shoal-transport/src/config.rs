use std::time::Duration;

use crate::error::TransportError;

/// Limits and timeouts of an endpoint. [`TransportConfig::default`] suits a LAN cluster; every
/// value is checked when an endpoint is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// The largest frame (request or response body) accepted or sent. Default 16 MiB.
    pub max_frame_bytes: u32,
    /// A connection with no traffic for this long is closed. Default 10 s.
    pub idle_timeout: Duration,
    /// Pings keep a quiet connection alive at this interval; below `idle_timeout`. Default 3 s.
    pub keep_alive_interval: Duration,
    /// Request streams a peer may have open at once on one connection. Default 1024.
    pub max_concurrent_bidi_streams: u32,
    /// Bytes a peer may send on one stream before it must wait for us to read. Default 1 MiB.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on one connection before it must wait for us to read: what quinn
    /// buffers per connection at most. Default 2 MiB.
    pub connection_receive_window: u32,
    /// Incoming connections served at once; more are refused. Default 512.
    pub max_incoming_connections: u32,
    /// A connection that sends more than this many bad frames, stalled frames and requests the
    /// application reports malformed ([`crate::Responder::report_malformed`]) is closed.
    /// Default 8.
    pub max_bad_frames_per_connection: u32,
    /// Bytes of request frames being read or waiting for an answer, across all connections. A
    /// frame holds its announced length from when its prefix is read until it is answered;
    /// when the budget is full, new frames wait (and time out). Default 256 MiB; at least
    /// `max_pending_request_bytes_per_peer`.
    pub max_pending_request_bytes: u64,
    /// The same, for all connections of one peer certificate together, so that one peer cannot
    /// hold the whole endpoint's budget. Default 64 MiB; at least `max_frame_bytes`.
    pub max_pending_request_bytes_per_peer: u64,
    /// Requests read and waiting for the application in [`crate::Incoming`]. Default 1024.
    pub incoming_queue: usize,
    /// How long a request frame may take to arrive (waiting for the pending-bytes budget
    /// included), and a response to be delivered. Default 10 s.
    pub frame_timeout: Duration,
    /// How long a request stream may go without a byte of its frame arriving before it is reset
    /// (and counted toward `max_bad_frames_per_connection`): a peer that announces a frame and
    /// stops sending holds its budget this long, not `frame_timeout`. Waiting for the budget
    /// does not count. Default 2 s; at most `frame_timeout`.
    pub frame_progress_timeout: Duration,
    /// An outgoing connection from which nothing has arrived for this long has its peer's port
    /// checked, when a request starts on it and while requests are outstanding; a closed port
    /// (the peer's process is gone) fails them at once instead of after the idle timeout. See
    /// the `liveness` module. `None`: never check. Default 1 ms.
    pub peer_silence: Option<Duration>,
    /// How long [`crate::Endpoint::close`] waits for answers in flight and for peers to
    /// acknowledge the close, each. Default 5 s.
    pub close_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(3),
            max_concurrent_bidi_streams: 1024,
            stream_receive_window: 1024 * 1024,
            connection_receive_window: 2 * 1024 * 1024,
            max_incoming_connections: 512,
            max_bad_frames_per_connection: 8,
            max_pending_request_bytes: 256 * 1024 * 1024,
            max_pending_request_bytes_per_peer: 64 * 1024 * 1024,
            incoming_queue: 1024,
            frame_timeout: Duration::from_secs(10),
            frame_progress_timeout: Duration::from_secs(2),
            peer_silence: Some(Duration::from_millis(1)),
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl TransportConfig {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), TransportError> {
        let fail = |reason: &str| Err(TransportError::InvalidConfig(reason.to_owned()));
        if self.idle_timeout.is_zero() {
            return fail("idle_timeout must be positive");
        }
        if self.idle_timeout > Duration::from_secs(3600) {
            return fail("idle_timeout must be at most one hour");
        }
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.idle_timeout {
            return fail("keep_alive_interval must be positive and below idle_timeout");
        }
        if self.max_concurrent_bidi_streams == 0 {
            return fail("max_concurrent_bidi_streams must be positive");
        }
        if self.stream_receive_window == 0 || self.connection_receive_window == 0 {
            return fail("receive windows must be positive");
        }
        if self.max_incoming_connections == 0 {
            return fail("max_incoming_connections must be positive");
        }
        if self.max_pending_request_bytes_per_peer < u64::from(self.max_frame_bytes) {
            return fail("max_pending_request_bytes_per_peer must be at least max_frame_bytes");
        }
        if self.max_pending_request_bytes < self.max_pending_request_bytes_per_peer {
            return fail(
                "max_pending_request_bytes must be at least max_pending_request_bytes_per_peer",
            );
        }
        if self.incoming_queue == 0 {
            return fail("incoming_queue must be positive");
        }
        if self.frame_timeout.is_zero() {
            return fail("frame_timeout must be positive");
        }
        if self.frame_timeout > Duration::from_secs(3600) {
            return fail("frame_timeout must be at most one hour");
        }
        if self.frame_progress_timeout.is_zero() || self.frame_progress_timeout > self.frame_timeout
        {
            return fail("frame_progress_timeout must be positive and at most frame_timeout");
        }
        if let Some(silence) = self.peer_silence
            && (silence.is_zero() || silence >= self.idle_timeout)
        {
            return fail("peer_silence must be positive and below idle_timeout");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        TransportConfig::default().validate().unwrap();
    }

    #[test]
    fn keep_alive_must_come_before_the_idle_timeout() {
        let config = TransportConfig {
            keep_alive_interval: Duration::from_secs(10),
            ..TransportConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_pending_budget_must_hold_one_frame() {
        let config = TransportConfig {
            max_pending_request_bytes: 1024,
            ..TransportConfig::default()
        };
        assert!(config.validate().is_err());
        let config = TransportConfig {
            max_pending_request_bytes_per_peer: 1024,
            ..TransportConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn one_peer_cannot_be_given_more_than_the_whole_budget() {
        let config = TransportConfig {
            max_pending_request_bytes_per_peer: 512 * 1024 * 1024,
            ..TransportConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_defaults_bound_what_peers_can_make_a_node_buffer() {
        // docs/security.md, "Memory": what quinn may buffer for every connection at once, plus
        // what the endpoint holds in request frames, stays under 1.3 GiB.
        let c = TransportConfig::default();
        let per_connection = u64::from(c.connection_receive_window)
            .min(u64::from(c.max_concurrent_bidi_streams) * u64::from(c.stream_receive_window));
        let bound =
            u64::from(c.max_incoming_connections) * per_connection + c.max_pending_request_bytes;
        assert_eq!(bound, 1280 * 1024 * 1024);
        assert!(c.max_pending_request_bytes_per_peer * 4 <= c.max_pending_request_bytes);
    }
}
