//! The national certificate authority and node certificates, made with rcgen.
//!
//! `pki init` makes the CA (`ca.crt`, `ca.key`); `pki issue` makes one certificate and key per
//! node (`nodes/<role>-<id>.crt`, `.key`). A node's identity is the SPIFFE URI in its
//! certificate's SAN (`spiffe://stadforstad/city/<id>`, `…/county/<id>` for a county hub,
//! `…/hub/<id>` for the national hub), and its DNS name `<id>.<role>.stadforstad` lets TLS
//! server-name checks pin that a city really reached its county hub or the national hub, and a
//! county hub the national hub.

use std::fs;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use sfs_sync::{NodeId, ScopeError};
use time::{Duration, OffsetDateTime};

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("a CA already exists in {0}; refusing to overwrite it")]
    CaExists(PathBuf),
    #[error("no CA in {0}: run `sfs-node pki init --dir {0}` first")]
    NoCa(PathBuf),
    #[error("certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("certificate carries no stadforstad identity (expected one spiffe://stadforstad/... URI in its SAN)")]
    NoIdentity,
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

/// Paths of the files that make up a CA directory.
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The revocation list: one line per revoked certificate, `<serial> <identity> <unix time>`.
    pub revoked: PathBuf,
}

impl CaFiles {
    /// The CA files inside `dir`.
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            revoked: dir.join("revoked.txt"),
        }
    }
}

/// The serial number of a certificate (DER), as lower-case hex.
pub fn serial_of(der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| PkiError::BadCertificate(err.to_string()))?;
    Ok(hex::encode(cert.raw_serial()))
}

/// Revokes the certificate `pki issue` last made for `node` in the CA directory `dir`: adds its
/// serial to the revocation list there and returns the serial. A certificate issued afterwards
/// (rotation) has a new random serial and is not affected.
pub fn revoke(dir: &Path, node: &NodeId) -> Result<String, PkiError> {
    let cert_path = NodeFiles::in_dir(dir, node).cert;
    let pem = std::fs::read(&cert_path).map_err(|source| PkiError::Io {
        path: cert_path.clone(),
        source,
    })?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|err| PkiError::BadCertificate(err.to_string()))?;
    let serial = serial_of(&pem.contents)?;
    let path = CaFiles::in_dir(dir).revoked;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let line = format!("{serial} {} {now}\n", node.spiffe_uri());
    sfs_durable::append(&path, line.as_bytes(), sfs_durable::Access::Public)
        .map_err(|source| PkiError::Io { path, source })?;
    Ok(serial)
}

/// The serials in a revocation list; a missing file is an empty list.
pub fn read_revoked(path: &Path) -> Result<std::collections::BTreeSet<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|serial| !serial.starts_with('#'))
            .map(str::to_lowercase)
            .collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Paths of one node's certificate and key.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeFiles {
    /// Where `pki issue` puts the files for `node` inside the CA directory.
    pub fn in_dir(dir: &Path, node: &NodeId) -> NodeFiles {
        let base = dir
            .join("nodes")
            .join(format!("{}-{}", node.role(), node.name()));
        NodeFiles {
            cert: base.with_extension("crt"),
            key: base.with_extension("key"),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f; // keep the serial positive
    SerialNumber::from_slice(&bytes)
}

/// Writes a file readable only by its owner (for keys), durably.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    sfs_durable::write(path, contents.as_bytes(), sfs_durable::Access::Private)
        .map_err(io_err(path))
}

/// Writes a certificate (readable by anyone), durably.
fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    sfs_durable::write(path, contents.as_bytes(), sfs_durable::Access::Public).map_err(io_err(path))
}

/// Makes the national CA in `dir`. Refuses to overwrite an existing one.
pub fn init_ca(dir: &Path) -> Result<CaFiles, PkiError> {
    let files = CaFiles::in_dir(dir);
    if files.cert.exists() || files.key.exists() {
        return Err(PkiError::CaExists(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "stadforstad national CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    write_public(&files.cert, &cert.pem())?;
    write_private(&files.key, &key.serialize_pem())?;
    Ok(files)
}

/// Issues a certificate for `node`, signed by the CA in `dir`, valid for `days` days.
/// `extra_names` are further DNS names or IP addresses the node's listeners answer on.
pub fn issue(
    dir: &Path,
    node: &NodeId,
    extra_names: &[String],
    days: i64,
) -> Result<NodeFiles, PkiError> {
    let ca = CaFiles::in_dir(dir);
    if !ca.cert.exists() || !ca.key.exists() {
        return Err(PkiError::NoCa(dir.to_path_buf()));
    }
    let ca_cert_pem = fs::read_to_string(&ca.cert).map_err(io_err(&ca.cert))?;
    let ca_key_pem = fs::read_to_string(&ca.key).map_err(io_err(&ca.key))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;

    let mut names = vec![
        node.dns_name(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(extra_names.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params
        .subject_alt_names
        .push(SanType::URI(node.spiffe_uri().try_into()?));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, node.to_string());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let files = NodeFiles::in_dir(dir, node);
    let nodes_dir = files.cert.parent().expect("nodes dir").to_path_buf();
    fs::create_dir_all(&nodes_dir).map_err(io_err(&nodes_dir))?;
    write_public(&files.cert, &cert.pem())?;
    write_private(&files.key, &key.serialize_pem())?;
    Ok(files)
}

/// How many days before a certificate expires the node and `pki status` warn.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The end of a PEM certificate's validity, in seconds since the Unix epoch.
pub fn not_after_of_pem(pem: &[u8]) -> Result<i64, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|err| PkiError::BadCertificate(err.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
        .map_err(|err| PkiError::BadCertificate(err.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The end of a DER certificate's validity, in seconds since the Unix epoch.
pub fn not_after_of_der(der: &[u8]) -> Result<i64, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| PkiError::BadCertificate(err.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Whole days from `now_unix` until `not_after_unix` (negative once expired).
pub fn days_left(not_after_unix: i64, now_unix: i64) -> i64 {
    (not_after_unix - now_unix).div_euclid(86_400)
}

/// One certificate in a CA directory, as `pki status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// `ca` or the node's SPIFFE identity.
    pub identity: String,
    pub serial: String,
    pub not_after_unix: i64,
    /// On the directory's revocation list.
    pub revoked: bool,
}

/// The CA certificate and every node certificate `pki issue` made in `dir` (the last one of
/// each node), with expiry and revocation, sorted by expiry.
pub fn status(dir: &Path) -> Result<Vec<CertStatus>, PkiError> {
    let ca = CaFiles::in_dir(dir);
    if !ca.cert.exists() {
        return Err(PkiError::NoCa(dir.to_path_buf()));
    }
    let revoked = read_revoked(&ca.revoked)?;
    let mut paths = vec![ca.cert.clone()];
    let nodes = dir.join("nodes");
    if nodes.exists() {
        for entry in fs::read_dir(&nodes).map_err(io_err(&nodes))? {
            let path = entry.map_err(io_err(&nodes))?.path();
            if path.extension().is_some_and(|e| e == "crt") {
                paths.push(path);
            }
        }
    }
    let mut list = Vec::new();
    for path in paths {
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let bad = |err: PkiError| PkiError::BadCertificate(format!("{}: {err}", path.display()));
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
            .map_err(|err| bad(PkiError::BadCertificate(err.to_string())))?;
        let serial = serial_of(&pem.contents).map_err(bad)?;
        let identity = if path == ca.cert {
            "ca".to_string()
        } else {
            identity_of(&pem.contents).map_err(bad)?.spiffe_uri()
        };
        list.push(CertStatus {
            revoked: revoked.contains(&serial),
            identity,
            serial,
            not_after_unix: not_after_of_pem(&bytes).map_err(bad)?,
        });
    }
    list.sort_by(|a, b| (a.not_after_unix, &a.identity).cmp(&(b.not_after_unix, &b.identity)));
    Ok(list)
}

/// The stadforstad identity in a DER certificate (already verified by TLS against the CA).
pub fn identity_of(der: &[u8]) -> Result<NodeId, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| PkiError::BadCertificate(err.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|err| PkiError::BadCertificate(err.to_string()))?
        .ok_or(PkiError::NoIdentity)?;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                Some(*uri)
            }
            _ => None,
        });
    let uri = ids.next().ok_or(PkiError::NoIdentity)?;
    if ids.next().is_some() {
        return Err(PkiError::BadCertificate(
            "more than one SPIFFE identity".to_string(),
        ));
    }
    Ok(NodeId::from_spiffe_uri(uri)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_every_certificate_with_expiry_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        let lund = NodeId::city("lund").unwrap();
        issue(dir.path(), &NodeId::hub("national").unwrap(), &[], 365).unwrap();
        issue(dir.path(), &lund, &[], 10).unwrap();
        revoke(dir.path(), &lund).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let list = status(dir.path()).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].identity, lund.spiffe_uri(), "the soonest first");
        assert!(list[0].revoked);
        assert!((9..=10).contains(&days_left(list[0].not_after_unix, now)));
        assert!(!list[1].revoked && list[1].identity.ends_with("/hub/national"));
        assert!((364..=365).contains(&days_left(list[1].not_after_unix, now)));
        assert_eq!(list[2].identity, "ca");
        assert!(days_left(0, now) < 0);
        assert!(matches!(
            status(&dir.path().join("none")),
            Err(PkiError::NoCa(_))
        ));
    }

    #[test]
    fn issued_certificates_carry_the_node_identity() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        assert!(matches!(init_ca(dir.path()), Err(PkiError::CaExists(_))));
        let node = NodeId::city("lund").unwrap();
        let files = issue(dir.path(), &node, &[], 30).unwrap();
        let pem = fs::read_to_string(&files.cert).unwrap();
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        assert_eq!(identity_of(&der).unwrap(), node);
    }

    #[test]
    fn a_county_hub_certificate_carries_the_county_identity_and_dns_name() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        let county = NodeId::county("skane").unwrap();
        let files = issue(dir.path(), &county, &[], 30).unwrap();
        assert!(files.cert.ends_with("nodes/county-skane.crt"));
        let pem = fs::read_to_string(&files.cert).unwrap();
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let id = identity_of(&der).unwrap();
        assert_eq!(id, county);
        assert_eq!(id.spiffe_uri(), "spiffe://stadforstad/county/skane");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(san.value.general_names.iter().any(|name| matches!(
            name,
            x509_parser::extensions::GeneralName::DNSName("skane.county.stadforstad")
        )));
        // Not a city's, nor the national hub's name: a city pinning its county hub by
        // `skane.county.stadforstad` cannot be answered by another kind of node.
        assert_ne!(county.dns_name(), NodeId::city("skane").unwrap().dns_name());
        assert_ne!(county.dns_name(), NodeId::hub("skane").unwrap().dns_name());
        revoke(dir.path(), &county).unwrap();
        assert!(status(dir.path())
            .unwrap()
            .iter()
            .any(|c| c.identity == county.spiffe_uri() && c.revoked));
    }
}
