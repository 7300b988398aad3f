//! The cluster's certificates: a CA made once per cluster, and Ed25519 certificates it issues to
//! nodes, clients and admins, all kept as PEM files in one directory.
//!
//! Layout of a certificate directory:
//!
//! | file | what |
//! | --- | --- |
//! | `ca.pem`, `ca.key` | the cluster CA (self-signed, Ed25519) and its key |
//! | `<role>-<name>.pem`, `<role>-<name>.key` | a certificate issued to `name` for `role`, and its key |
//!
//! Key files are written with mode 0600, and a key file that its group or others may read is
//! refused when loaded. Directories this module creates are 0700. Nothing is overwritten unless
//! [`IfExists::Replace`] says so.
//!
//! The CA's key mints any identity, so it belongs with the operator, not on the nodes:
//! [`issue_into`] signs with the CA of one directory and writes the certificate, its key and a
//! copy of `ca.pem` (never `ca.key`) into another, the one a node or client is given.
//! [`issue`] keeps everything in one directory, as `shoal dev` does; [`ca_key_in`] tells a
//! server that its certificate directory holds the CA key.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use shoal_types::NodeId;

use crate::error::CertError;
use crate::peer::{ANY_NODE_NAME, PeerIdentity, certificate_name, dns_name};
use crate::tls;
use shoal_types::Role;

/// The CA certificate's file name.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY_FILE: &str = "ca.key";

/// The CA's subject. Issuing rebuilds it from this constant, so it must never change.
const CA_COMMON_NAME: &str = "Shoal cluster CA";
/// How long the CA is valid.
const CA_VALIDITY_YEARS: i32 = 100;
/// How long an issued certificate is valid. There is no revocation: re-issue to rotate.
const LEAF_VALIDITY_YEARS: i32 = 10;
/// Permission bits of key files.
#[cfg(unix)]
const KEY_FILE_MODE: u32 = 0o600;
/// Permission bits of certificate files.
#[cfg(unix)]
const CERT_FILE_MODE: u32 = 0o644;
/// Permission bits of directories made here: they hold private keys.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;

/// What to do when a file to be written exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Fail with [`CertError::Exists`]; write nothing.
    Refuse,
    /// Replace the files.
    Replace,
}

/// The two files of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8), mode 0600.
    pub key: PathBuf,
}

impl CertFiles {
    /// The CA's files in `dir`.
    pub fn ca(dir: &Path) -> CertFiles {
        CertFiles {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }

    /// The files of `name`'s certificate for `role` in `dir`.
    pub fn issued(dir: &Path, role: Role, name: &NodeId) -> CertFiles {
        let stem = format!("{role}-{name}");
        CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// Makes a new cluster CA in `dir` (created if missing): `ca.pem` and `ca.key`.
pub fn init_ca(dir: &Path, if_exists: IfExists) -> Result<CertFiles, CertError> {
    let files = CertFiles::ca(dir);
    create_dir(dir)?;
    refuse_existing(&files, if_exists)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate_error)?;
    let cert = ca_params(CA_VALIDITY_YEARS)
        .self_signed(&key)
        .map_err(generate_error)?;
    write_file(
        &files.key,
        key.serialize_pem().as_bytes(),
        FileKind::Key,
        if_exists,
    )?;
    write_file(
        &files.cert,
        cert.pem().as_bytes(),
        FileKind::Cert,
        if_exists,
    )?;
    Ok(files)
}

/// Issues a certificate for `name` in `role`, signed by the CA in `dir`: writes
/// `<role>-<name>.pem` and `<role>-<name>.key` beside the CA. [`issue_into`] keeps the CA key
/// out of the directory the certificate goes to.
///
/// The certificate carries the DNS name `<name>.<role>.shoal` (and `node.shoal` for nodes), and
/// the extended key usages of its role: nodes both serve and connect, clients and admins only
/// connect, so a client certificate is refused wherever a server is expected.
pub fn issue(
    dir: &Path,
    role: Role,
    name: &str,
    if_exists: IfExists,
) -> Result<CertFiles, CertError> {
    issue_into(dir, dir, role, name, if_exists)
}

/// Issues a certificate as [`issue`] does, signed by the CA in `ca_dir` (`ca.pem`, `ca.key`),
/// and writes it, its key and a copy of `ca.pem` into `out_dir` (made, mode 0700, if missing),
/// which then holds everything [`Identity::load`] needs and not the CA key. An `out_dir` that
/// already holds another CA's `ca.pem` is refused ([`CertError::OtherCa`]), even when replacing:
/// its other certificates would stop being trusted.
pub fn issue_into(
    ca_dir: &Path,
    out_dir: &Path,
    role: Role,
    name: &str,
    if_exists: IfExists,
) -> Result<CertFiles, CertError> {
    let name = certificate_name(name)?;
    let files = CertFiles::issued(out_dir, role, &name);
    refuse_existing(&files, if_exists)?;
    let ca = CertFiles::ca(ca_dir);
    let ca_key_pem = read_key_file(&ca.key)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError::Pem {
        path: ca.key.clone(),
        reason: format!("not a usable CA key: {e}"),
    })?;
    // The CA certificate must exist: issuing without it would make certificates no one trusts.
    read_certificates(&ca.cert)?;
    create_dir(out_dir)?;
    copy_ca_certificate(&ca.cert, &out_dir.join(CA_CERT_FILE))?;
    let issuer = Issuer::new(ca_params(CA_VALIDITY_YEARS), ca_key);

    let mut dns_names = vec![dns_name(role, &name)];
    if role == Role::Node {
        dns_names.push(ANY_NODE_NAME.to_owned());
    }
    let mut params = CertificateParams::new(dns_names).map_err(generate_error)?;
    params.distinguished_name = distinguished_name(&dns_name(role, &name));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY_YEARS);

    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate_error)?;
    write_file(
        &files.key,
        key.serialize_pem().as_bytes(),
        FileKind::Key,
        if_exists,
    )?;
    write_file(
        &files.cert,
        cert.pem().as_bytes(),
        FileKind::Cert,
        if_exists,
    )?;
    Ok(files)
}

/// The CA's private key file in `dir`, if it is there. A node's or client's certificate
/// directory should not hold it: whoever can read the directory could mint any identity.
pub fn ca_key_in(dir: &Path) -> Option<PathBuf> {
    let key = CertFiles::ca(dir).key;
    key.exists().then_some(key)
}

/// A loaded and checked identity: the cluster CA, this process's certificate and its key.
pub struct Identity {
    role: Role,
    name: NodeId,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads the certificate of `role` named `name` from `dir`, or with `None` the single
    /// certificate of that role there.
    ///
    /// Checks that the key file is not readable by group or others, that the key belongs to the
    /// certificate, that the certificate names this role and name, and that the cluster CA
    /// (`ca.pem`) accepts it.
    pub fn load(dir: &Path, role: Role, name: Option<&str>) -> Result<Identity, CertError> {
        let name = match name {
            Some(name) => certificate_name(name)?,
            None => only_certificate(dir, role)?,
        };
        let files = CertFiles::issued(dir, role, &name);
        let ca_path = dir.join(CA_CERT_FILE);
        let ca = read_certificates(&ca_path)?.remove(0);
        let chain = read_certificates(&files.cert)?;
        let key_pem = read_key_file(&files.key)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::Pem {
                path: files.key.clone(),
                reason: format!("no private key: {e}"),
            })?;

        let found = PeerIdentity::from_certificate(&chain[0])?;
        let expected = PeerIdentity {
            role,
            name: name.clone(),
        };
        if found != expected {
            return Err(CertError::IdentityMismatch {
                path: files.cert,
                expected: expected.dns_name(),
                found: found.dns_name(),
            });
        }
        let provider = tls::provider();
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| CertError::KeyMismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
                reason: e.to_string(),
            },
        )?;
        let identity = Identity {
            role,
            name,
            ca,
            chain,
            key,
        };
        identity.check_against_ca(&files.cert, &ca_path)?;
        Ok(identity)
    }

    /// What the certificate allows.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The name the certificate carries (the node id for a node).
    pub fn name(&self) -> &NodeId {
        &self.name
    }

    /// The identity as a peer sees it.
    pub fn peer_identity(&self) -> PeerIdentity {
        PeerIdentity {
            role: self.role,
            name: self.name.clone(),
        }
    }

    pub(crate) fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// This identity with another identity's CA as its root: a stranger that trusts our CA but
    /// holds a certificate of its own CA, which `load` would refuse to build.
    #[cfg(test)]
    pub(crate) fn trusting_ca_of(mut self, other: &Identity) -> Identity {
        self.ca = other.ca.clone();
        self
    }

    /// Verifies the certificate as a peer would: against the CA alone, as a client certificate
    /// (every role may connect).
    fn check_against_ca(&self, cert_path: &Path, ca_path: &Path) -> Result<(), CertError> {
        let not_valid = |reason: String| CertError::NotSignedByCa {
            path: cert_path.to_owned(),
            ca: ca_path.to_owned(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| not_valid(format!("unusable CA certificate: {e}")))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
                .build()
                .map_err(|e| not_valid(e.to_string()))?;
        let (leaf, intermediates) = self
            .chain
            .split_first()
            .ok_or_else(|| not_valid("empty certificate chain".to_owned()))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| not_valid(e.to_string()))?;
        Ok(())
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            role: self.role,
            name: self.name.clone(),
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Identity")
            .field("role", &self.role)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum FileKind {
    Key,
    Cert,
}

fn ca_params(validity_years: i32) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, validity_years);
    params
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Shoal");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from the start of last year (tolerates clocks a little behind) for `years` years.
fn set_validity(params: &mut CertificateParams, years: i32) {
    const SECONDS_PER_YEAR: u64 = 31_556_952; // the mean Gregorian year
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let this_year = 1970 + i32::try_from(since_epoch / SECONDS_PER_YEAR).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(this_year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(this_year + years, 1, 1);
}

fn generate_error(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes `dir` and its missing parents, mode 0700; an existing directory is left as it is.
fn create_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// Puts the CA certificate `from` at `to`, unless `to` is the same file or holds the same
/// certificate already; refuses a `to` that holds another one.
fn copy_ca_certificate(from: &Path, to: &Path) -> Result<(), CertError> {
    let pem = fs::read(from).map_err(io_error(from))?;
    match fs::read(to) {
        Ok(existing) if same_certificates(&existing, &pem) => Ok(()),
        Ok(_) => Err(CertError::OtherCa {
            path: to.to_owned(),
            ca: from.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_file(to, &pem, FileKind::Cert, IfExists::Refuse)
        }
        Err(e) => Err(io_error(to)(e)),
    }
}

/// Whether two PEM files hold the same certificates (whatever their line endings).
fn same_certificates(a: &[u8], b: &[u8]) -> bool {
    let parse = |pem: &[u8]| {
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
    };
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if !a.is_empty() && a == b)
}

fn refuse_existing(files: &CertFiles, if_exists: IfExists) -> Result<(), CertError> {
    if if_exists == IfExists::Replace {
        return Ok(());
    }
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    Ok(())
}

fn write_file(
    path: &Path,
    contents: &[u8],
    kind: FileKind,
    if_exists: IfExists,
) -> Result<(), CertError> {
    let mut options = OpenOptions::new();
    options.write(true);
    match if_exists {
        IfExists::Refuse => options.create_new(true),
        IfExists::Replace => options.create(true).truncate(true),
    };
    #[cfg(unix)]
    let mode = match kind {
        FileKind::Key => KEY_FILE_MODE,
        FileKind::Cert => CERT_FILE_MODE,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = kind;
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => CertError::Exists {
            path: path.to_owned(),
        },
        _ => io_error(path)(e),
    })?;
    // A replaced file keeps its old mode when opened; set it before writing the secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_error(path))?;
    }
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Reads a private key file, refusing one that group or others may read. The mode is checked
/// on the open file, so it is the file that is read.
fn read_key_file(path: &Path) -> Result<String, CertError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(CertError::KeyPermissions {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
    }
    let mut pem = String::new();
    file.read_to_string(&mut pem).map_err(io_error(path))?;
    Ok(pem)
}

/// Reads the certificates of a PEM file; there is at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = fs::read(path).map_err(io_error(path))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_owned(),
            reason: format!("unreadable PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            path: path.to_owned(),
            reason: "no certificate in the file".to_owned(),
        });
    }
    Ok(certs)
}

/// The name of the one `<role>-<name>.pem` in `dir`.
fn only_certificate(dir: &Path, role: Role) -> Result<NodeId, CertError> {
    let prefix = format!("{role}-");
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if let Some(name) = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".pem"))
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    match names.as_slice() {
        [] => Err(CertError::NoCertificate {
            dir: dir.to_owned(),
            role,
        }),
        [name] => certificate_name(name),
        _ => Err(CertError::SeveralCertificates {
            dir: dir.to_owned(),
            role,
            names,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn issued_keys_are_private_and_certificates_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), IfExists::Refuse).unwrap();
        let node = issue(dir.path(), Role::Node, "n1", IfExists::Refuse).unwrap();
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&node.key), 0o600);
        assert_eq!(mode(&node.cert), 0o644);
        assert_eq!(node.cert, dir.path().join("node-n1.pem"));
    }

    #[test]
    fn a_group_readable_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), IfExists::Refuse).unwrap();
        let files = issue(dir.path(), Role::Client, "app", IfExists::Refuse).unwrap();
        fs::set_permissions(&files.key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(dir.path(), Role::Client, Some("app")).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, CertError::KeyPermissions { mode: 0o644, .. }),
            "{err:?}"
        );
        assert!(message.contains("client-app.key"), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }

    #[test]
    fn a_readable_ca_key_is_refused_when_issuing() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), IfExists::Refuse).unwrap();
        fs::set_permissions(&ca.key, fs::Permissions::from_mode(0o640)).unwrap();
        let err = issue(dir.path(), Role::Node, "n1", IfExists::Refuse).unwrap_err();
        assert!(matches!(err, CertError::KeyPermissions { .. }), "{err:?}");
    }

    #[test]
    fn existing_files_are_kept_unless_replacing_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), IfExists::Refuse).unwrap();
        let before = fs::read(&ca.cert).unwrap();
        let err = init_ca(dir.path(), IfExists::Refuse).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(&ca.cert).unwrap(), before);

        issue(dir.path(), Role::Node, "n1", IfExists::Refuse).unwrap();
        let err = issue(dir.path(), Role::Node, "n1", IfExists::Refuse).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err:?}");

        let files = CertFiles::issued(dir.path(), Role::Node, &NodeId::new("n1").unwrap());
        fs::set_permissions(&files.key, fs::Permissions::from_mode(0o644)).unwrap();
        issue(dir.path(), Role::Node, "n1", IfExists::Replace).unwrap();
        assert_eq!(mode(&files.key), 0o600, "a replaced key is private again");
        Identity::load(dir.path(), Role::Node, Some("n1")).unwrap();
    }

    #[test]
    fn loads_the_single_certificate_of_a_role() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), IfExists::Refuse).unwrap();
        let err = Identity::load(dir.path(), Role::Admin, None).unwrap_err();
        assert!(matches!(err, CertError::NoCertificate { .. }), "{err:?}");

        issue(dir.path(), Role::Admin, "ops", IfExists::Refuse).unwrap();
        issue(dir.path(), Role::Node, "n1", IfExists::Refuse).unwrap();
        let admin = Identity::load(dir.path(), Role::Admin, None).unwrap();
        assert_eq!(admin.role(), Role::Admin);
        assert_eq!(admin.name().as_str(), "ops");

        issue(dir.path(), Role::Admin, "ops2", IfExists::Refuse).unwrap();
        let err = Identity::load(dir.path(), Role::Admin, None).unwrap_err();
        assert!(
            matches!(err, CertError::SeveralCertificates { ref names, .. } if names.len() == 2)
        );
    }

    #[test]
    fn a_certificate_renamed_to_another_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), IfExists::Refuse).unwrap();
        let client = issue(dir.path(), Role::Client, "app", IfExists::Refuse).unwrap();
        fs::copy(&client.cert, dir.path().join("node-n1.pem")).unwrap();
        fs::copy(&client.key, dir.path().join("node-n1.key")).unwrap();
        let err = Identity::load(dir.path(), Role::Node, Some("n1")).unwrap_err();
        assert!(matches!(err, CertError::IdentityMismatch { .. }), "{err:?}");
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused_when_loading() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        init_ca(ours.path(), IfExists::Refuse).unwrap();
        init_ca(theirs.path(), IfExists::Refuse).unwrap();
        let foreign = issue(theirs.path(), Role::Node, "n1", IfExists::Refuse).unwrap();
        fs::copy(&foreign.cert, ours.path().join("node-n1.pem")).unwrap();
        fs::copy(&foreign.key, ours.path().join("node-n1.key")).unwrap();
        let err = Identity::load(ours.path(), Role::Node, Some("n1")).unwrap_err();
        assert!(matches!(err, CertError::NotSignedByCa { .. }), "{err:?}");
    }

    #[test]
    fn a_certificate_issued_into_another_directory_takes_the_ca_certificate_but_not_its_key() {
        let root = tempfile::tempdir().unwrap();
        let (ca_dir, out) = (root.path().join("ca"), root.path().join("nodes/n1"));
        init_ca(&ca_dir, IfExists::Refuse).unwrap();
        let files = issue_into(&ca_dir, &out, Role::Node, "n1", IfExists::Refuse).unwrap();
        assert_eq!(
            files,
            CertFiles::issued(&out, Role::Node, &NodeId::new("n1").unwrap())
        );
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(
            fs::read(out.join(CA_CERT_FILE)).unwrap(),
            fs::read(ca_dir.join(CA_CERT_FILE)).unwrap()
        );
        assert_eq!(ca_key_in(&out), None);
        assert_eq!(ca_key_in(&ca_dir), Some(ca_dir.join(CA_KEY_FILE)));
        // The directory is all a node needs; a second certificate shares its ca.pem.
        Identity::load(&out, Role::Node, Some("n1")).unwrap();
        issue_into(&ca_dir, &out, Role::Client, "app", IfExists::Refuse).unwrap();
        Identity::load(&out, Role::Client, Some("app")).unwrap();
    }

    #[test]
    fn issuing_into_a_directory_of_another_ca_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (ours, theirs) = (root.path().join("ours"), root.path().join("theirs"));
        init_ca(&ours, IfExists::Refuse).unwrap();
        init_ca(&theirs, IfExists::Refuse).unwrap();
        issue(&theirs, Role::Node, "n1", IfExists::Refuse).unwrap();
        for if_exists in [IfExists::Refuse, IfExists::Replace] {
            let err = issue_into(&ours, &theirs, Role::Node, "n2", if_exists).unwrap_err();
            assert!(matches!(err, CertError::OtherCa { .. }), "{err:?}");
        }
        // Their node keeps working.
        Identity::load(&theirs, Role::Node, Some("n1")).unwrap();
    }

    #[test]
    fn issued_certificates_carry_their_identity() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), IfExists::Refuse).unwrap();
        for role in Role::ALL {
            issue(dir.path(), role, "x1", IfExists::Refuse).unwrap();
            let identity = Identity::load(dir.path(), role, Some("x1")).unwrap();
            let peer = PeerIdentity::from_certificate(&identity.chain()[0]).unwrap();
            assert_eq!(peer, identity.peer_identity());
        }
    }

    #[test]
    fn names_that_cannot_be_dns_labels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), IfExists::Refuse).unwrap();
        let err = issue(dir.path(), Role::Node, "-n1", IfExists::Refuse).unwrap_err();
        assert!(matches!(err, CertError::InvalidName { .. }), "{err:?}");
    }
}
