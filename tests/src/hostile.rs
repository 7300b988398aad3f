//! What no well-behaved peer sends: raw UDP garbage, and QUIC streams carrying garbage,
//! truncated or oversized frames over a properly authenticated connection.
//!
//! The raw connection is built with quinn and rustls directly (the transport crate only sends
//! well-formed frames), with the same TLS settings as the transport: TLS 1.3, the ring
//! provider, the cluster CA as the only root, ALPN `shoal/1`, a certificate from the cluster's
//! directory.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shoal_transport::{CertFiles, Role};
use shoal_types::NodeId;

use crate::HarnessError;

/// The ALPN every Shoal endpoint speaks.
const ALPN: &[u8] = b"shoal/1";

/// What came back on a raw request stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawOutcome {
    /// The peer answered with these bytes (a frame: length prefix and body) and finished.
    Answer(Vec<u8>),
    /// The peer reset the stream with this application code.
    Reset(u64),
    /// The connection was closed or lost.
    ConnectionLost(String),
    /// Nothing within the timeout.
    TimedOut,
}

/// A QUIC connection to a node over which the caller writes whatever bytes it likes.
#[derive(Debug)]
pub struct RawConnection {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
}

impl RawConnection {
    /// Connects to the node `node` at `addr` with the certificate `<role>-<name>` of `certs`
    /// (which also holds the cluster CA).
    pub async fn connect(
        certs: &Path,
        role: Role,
        name: &str,
        addr: SocketAddr,
        node: &NodeId,
    ) -> Result<RawConnection, HarnessError> {
        let name = NodeId::new(name).map_err(|e| HarnessError::Invalid(e.to_string()))?;
        let files = CertFiles::issued(certs, role, &name);
        let pem_error = |what: &str, e: rustls::pki_types::pem::Error| {
            HarnessError::Invalid(format!("cannot read {what}: {e}"))
        };
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| pem_error("the certificate", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error("the certificate", e))?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error("the key", e))?;
        let ca = CertificateDer::from_pem_file(CertFiles::ca(certs).cert)
            .map_err(|e| pem_error("the CA", e))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).map_err(tls)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(Arc::new(config)).map_err(tls)?;
        let bind = if addr.is_ipv4() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
        } else {
            SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| HarnessError::io("binding a raw QUIC endpoint", e))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let server_name = format!("{node}.node.shoal");
        let connecting = endpoint
            .connect(addr, &server_name)
            .map_err(|e| HarnessError::Invalid(format!("cannot connect: {e}")))?;
        let connection = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| HarnessError::Invalid(format!("handshake with {addr} timed out")))?
            .map_err(|e| HarnessError::Invalid(format!("handshake with {addr} failed: {e}")))?;
        Ok(RawConnection {
            endpoint,
            connection,
        })
    }

    /// Opens a request stream, writes `bytes` (finishing the stream when `finish`), and waits
    /// up to `timeout` for what the node does with it.
    pub async fn exchange(&self, bytes: &[u8], finish: bool, timeout: Duration) -> RawOutcome {
        let exchange = async {
            let (mut send, mut recv) = match self.connection.open_bi().await {
                Ok(streams) => streams,
                Err(e) => return RawOutcome::ConnectionLost(e.to_string()),
            };
            // The node may reset the stream before reading everything; what it answers is
            // what matters, so write errors are not outcomes.
            let _ = send.write_all(bytes).await;
            if finish {
                let _ = send.finish();
            }
            match recv.read_to_end(64 * 1024 * 1024).await {
                Ok(answer) => RawOutcome::Answer(answer),
                Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                    RawOutcome::Reset(code.into_inner())
                }
                Err(e) => RawOutcome::ConnectionLost(e.to_string()),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(RawOutcome::TimedOut)
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.connection.close_reason().map(|r| r.to_string())
    }

    /// Closes the connection and the endpoint.
    pub async fn close(self) {
        self.connection.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// A frame: `body`'s length as a u32 big-endian, then `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + body.len());
    bytes.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// Random bytes.
pub fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random::<u8>()).collect()
}

/// Sends `count` datagrams of garbage to `addr` from a fresh socket: random bytes of random
/// sizes, and bytes dressed as QUIC long-header packets (Initial, Handshake, unknown versions)
/// with random contents. Returns how many were sent.
pub async fn udp_garbage(addr: SocketAddr, count: usize, seed: u64) -> Result<usize, HarnessError> {
    let bind = if addr.is_ipv4() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| HarnessError::io("binding a garbage socket", e))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = 0;
    for i in 0..count {
        let len = rng.random_range(1..=1500);
        let mut datagram = random_bytes(&mut rng, len);
        if i % 3 == 0 && datagram.len() >= 7 {
            // A long header: form bit, fixed bit, a packet type; version 1 or a made-up one;
            // connection id lengths that may point past the end.
            datagram[0] = 0xc0 | (rng.random::<u8>() & 0x3f);
            let version: u32 = if rng.random_bool(0.7) {
                1
            } else {
                rng.random()
            };
            datagram[1..5].copy_from_slice(&version.to_be_bytes());
        }
        if socket.send_to(&datagram, addr).await.is_ok() {
            sent += 1;
        }
    }
    Ok(sent)
}

fn tls(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Invalid(format!("TLS: {e}"))
}
