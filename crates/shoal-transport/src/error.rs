use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::Role;
use crate::frame::{FrameError, ResetCode};

/// Why certificates or keys could not be made, loaded or checked.
#[derive(Debug, Error)]
pub enum CertError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file exists and replacing it was not asked for.
    #[error("{} already exists: refusing to overwrite it (ask to replace it explicitly)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A private key file may be read by its group or by others.
    #[error(
        "private key {} is readable by group or others (mode {mode:o}): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The name cannot be put in a certificate.
    #[error(
        "invalid certificate name {name:?}: {reason} (use 1 to 63 characters from A-Z, a-z, 0-9, \
         '_', '-' and '.', with no empty label and no '-' at either end of a label)"
    )]
    InvalidName {
        /// The name that was offered.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A PEM file holds nothing usable.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// No certificate of the role is in the directory.
    #[error("no {role} certificate in {}: issue one with `shoal certs {role} NAME`", dir.display())]
    NoCertificate {
        /// The directory searched.
        dir: PathBuf,
        /// The role looked for.
        role: Role,
    },
    /// Several certificates of the role are in the directory and none was named.
    #[error("several {role} certificates in {} ({}): name the one to use", dir.display(), names.join(", "))]
    SeveralCertificates {
        /// The directory searched.
        dir: PathBuf,
        /// The role looked for.
        role: Role,
        /// The names found.
        names: Vec<String>,
    },
    /// The certificate names another role or name than its file says.
    #[error("{} names {found}, expected {expected}", path.display())]
    IdentityMismatch {
        /// The certificate file.
        path: PathBuf,
        /// The identity the file name promises, as `name.role.shoal`.
        expected: String,
        /// The identity the certificate carries.
        found: String,
    },
    /// The certificate is not accepted by the cluster CA (another CA, expired, wrong usage).
    #[error("{} is not valid under the cluster CA {}: {reason}", path.display(), ca.display())]
    NotSignedByCa {
        /// The certificate file.
        path: PathBuf,
        /// The CA certificate file.
        ca: PathBuf,
        /// What the verifier said.
        reason: String,
    },
    /// The directory a certificate is issued into holds another cluster CA's certificate.
    #[error(
        "{} holds another cluster CA than {}: issue into a directory of its own, or remove it",
        path.display(),
        ca.display()
    )]
    OtherCa {
        /// The `ca.pem` found in the output directory.
        path: PathBuf,
        /// The CA certificate that signs.
        ca: PathBuf,
    },
    /// The private key does not belong to the certificate.
    #[error("{} does not match the certificate {}: {reason}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A certificate does not carry exactly one Shoal identity (`NAME.ROLE.shoal`).
    #[error("certificate carries no usable Shoal identity: {0}")]
    NoIdentity(String),
}

/// Why an endpoint could not be built or a request failed.
///
/// [`TransportError::may_have_reached_peer`] tells a caller whether retrying elsewhere could
/// apply the request twice.
#[derive(Debug, Error)]
pub enum TransportError {
    /// Certificates or keys could not be loaded or checked.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The configuration holds a value that cannot work.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// The TLS or QUIC configuration could not be built from the identity.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The identity's role cannot do this (only node certificates may listen).
    #[error("a {role} certificate cannot {action}: use a node certificate")]
    WrongRole {
        /// The role of the identity that was offered.
        role: Role,
        /// What was attempted.
        action: &'static str,
    },
    /// Endpoints are built inside a tokio runtime, which runs their tasks.
    #[error("no tokio runtime: build endpoints from within one")]
    NoRuntime,
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The endpoint is closed or closing; nothing was sent.
    #[error("endpoint is closed")]
    Closed,
    /// The request frame is larger than `max_frame_bytes`; nothing was sent.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: u64,
        /// The configured limit.
        max: u32,
    },
    /// No connection could be made (no answer, network error); nothing was sent.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The peer's address.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// We refused the peer's certificate (another CA, not a node, another node id than
    /// expected); nothing was sent.
    #[error("refused the certificate of {addr}: {reason}")]
    PeerRejected {
        /// The peer's address.
        addr: SocketAddr,
        /// Why the certificate was refused.
        reason: String,
    },
    /// The peer refused our certificate or the connection (TLS alert, connection limit); nothing
    /// reached its application.
    #[error("{addr} refused the connection: {reason}")]
    RejectedByPeer {
        /// The peer's address.
        addr: SocketAddr,
        /// What the peer said.
        reason: String,
        /// The refusal was a TLS alert (the peer does not accept our certificate), not a
        /// refused connection (its connection limit, shutting down).
        tls_alert: bool,
    },
    /// The connection broke while the request was in flight; it may have reached the peer.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// The peer's address.
        addr: SocketAddr,
        /// What happened to the connection.
        reason: String,
    },
    /// The peer reset the request stream with a code (bad frame, no response, shutting down...).
    #[error("{addr} reset the request: {code}")]
    Reset {
        /// The peer's address.
        addr: SocketAddr,
        /// The peer's reason.
        code: ResetCode,
    },
    /// The response was not a valid frame (too large, truncated); the request reached the peer.
    #[error("bad response from {addr}: {source}")]
    BadResponse {
        /// The peer's address.
        addr: SocketAddr,
        /// What was wrong with it.
        source: FrameError,
    },
    /// No response arrived in time. `sent` says whether the request had started to go out.
    #[error("request to {addr} timed out after {after:?} ({})", if *sent { "request sent" } else { "nothing sent" })]
    Timeout {
        /// The peer's address.
        addr: SocketAddr,
        /// The timeout that expired.
        after: Duration,
        /// Whether the request had started to go out (and so may have reached the peer).
        sent: bool,
    },
}

impl TransportError {
    /// Whether the peer's application may have received the request. `false` means it surely
    /// did not, so the caller may send it elsewhere without risking a double application.
    pub fn may_have_reached_peer(&self) -> bool {
        if self.is_local() {
            return false;
        }
        match self {
            TransportError::Unreachable { .. }
            | TransportError::PeerRejected { .. }
            | TransportError::RejectedByPeer { .. } => false,
            TransportError::ConnectionLost { .. } | TransportError::BadResponse { .. } => true,
            TransportError::Reset { code, .. } => code.may_have_reached_peer(),
            TransportError::Timeout { sent, .. } => *sent,
            // The local failures were answered above; a variant added later is taken as
            // possibly delivered, the direction that never resends a write twice.
            _ => true,
        }
    }

    /// A failure of this process (its certificates, configuration, runtime or endpoint, or a
    /// frame it would not send), not of the peer: another peer would do no better, and nothing
    /// went out.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            TransportError::Cert(_)
                | TransportError::InvalidConfig(_)
                | TransportError::Tls(_)
                | TransportError::WrongRole { .. }
                | TransportError::NoRuntime
                | TransportError::Bind { .. }
                | TransportError::Closed
                | TransportError::FrameTooLarge { .. }
        )
    }
}
