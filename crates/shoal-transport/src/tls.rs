//! rustls and quinn configuration: TLS 1.3 only, the ring provider passed explicitly, the
//! cluster CA as the only root in both directions, client certificates mandatory, no 0-RTT.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;

use crate::certs::Identity;
use crate::config::TransportConfig;
use crate::error::TransportError;

/// The ALPN protocol name; a peer that does not speak it fails the handshake.
pub(crate) const ALPN: &[u8] = b"shoal/1";

/// The crypto provider every configuration uses, never a process-wide default.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: presents the identity's certificate, requires a client certificate that the
/// cluster CA accepts.
pub(crate) fn server_config(
    identity: &Identity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain(), identity.key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT data can be replayed; requests must not be.
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(Arc::new(tls)).map_err(tls_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport(config, true)?));
    // Connections waiting for the accept loop; the accept loop itself enforces
    // `max_incoming_connections` on live ones.
    server.max_incoming(usize::try_from(config.max_incoming_connections).unwrap_or(usize::MAX));
    Ok(server)
}

/// The client side: trusts the cluster CA only, authenticates with the identity's certificate.
pub(crate) fn client_config(
    identity: &Identity,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.chain(), identity.key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let crypto = QuicClientConfig::try_from(Arc::new(tls)).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport(config, false)?));
    Ok(client)
}

fn roots(identity: &Identity) -> Result<Arc<rustls::RootCertStore>, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca().clone()).map_err(tls_error)?;
    Ok(Arc::new(roots))
}

/// Packets a peer may receive before it must acknowledge (it acknowledges sooner when it has
/// anything else to send, or after [`MAX_ACK_DELAY`]). Request/response traffic piggybacks
/// acknowledgements on the next frame; acknowledging every other packet, QUIC's default, sent
/// about one datagram in three carrying nothing but an ACK.
const ACK_ELICITING_THRESHOLD: u32 = 8;
/// The longest a peer may hold back an acknowledgement.
const MAX_ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// QUIC limits. Only the server side accepts request streams; the peer of an outgoing
/// connection may open none, and no side accepts unidirectional streams or datagrams.
fn transport(
    config: &TransportConfig,
    accepts_requests: bool,
) -> Result<quinn::TransportConfig, TransportError> {
    let mut transport = quinn::TransportConfig::default();
    let idle = IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| TransportError::InvalidConfig("idle_timeout is too large".to_owned()))?;
    let streams = if accepts_requests {
        config.max_concurrent_bidi_streams
    } else {
        0
    };
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_concurrent_bidi_streams(VarInt::from_u32(streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_receive_window))
        .receive_window(VarInt::from_u32(config.connection_receive_window))
        .datagram_receive_buffer_size(None);
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD))
        .max_ack_delay(Some(MAX_ACK_DELAY));
    transport.ack_frequency_config(Some(acks));
    Ok(transport)
}

fn tls_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}
