//! Signed handbook releases: the statement the national coordinator signs, signing and
//! verifying it with Ed25519 (`ring`), and the coordinator's key files.
//!
//! Both sides use this crate: `sfs handbook release --key` signs on the coordinator's own
//! machine, and every node verifies with the public key only. The statement is a byte string
//! built without I/O or a clock (all integers big-endian, `str` = `u32` length then UTF-8):
//!
//! ```text
//! DOMAIN ‖ u64 number ‖ u32 count ‖ count × 32-byte head (ascending) ‖ str label ‖ str notes
//!        ‖ i64 issue_time_ms ‖ i64 expire_time_ms
//! ```
//!
//! A release of a later generation of the handbook (one written after a redaction at the hub,
//! `generation` ≥ 1) is signed over the same fields with the generation after the number and
//! its own domain, so that the statement of generation 0 (every release made before redaction
//! existed) is unchanged:
//!
//! ```text
//! DOMAIN_V2 ‖ u64 number ‖ u64 generation ‖ u32 count ‖ … (as above)
//! ```
//!
//! The domain prefix keeps a signature over a release from meaning anything else; the length
//! prefixes make the encoding unambiguous; the heads are sorted so that the same release always
//! has the same statement.
//!
//! Key files are PEM: the private key as PKCS#8 (`PRIVATE KEY`, written with mode 0600), the
//! public key as SubjectPublicKeyInfo (`PUBLIC KEY`), so OpenSSL can read and make both.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

use sfs_proto::v1 as pb;

/// The domain-separation prefix of every release statement.
pub const DOMAIN: &[u8] = b"stadforstad/national-method/release/v1\0";

/// The domain-separation prefix of the statement of a release of generation 1 or later.
pub const DOMAIN_V2: &[u8] = b"stadforstad/national-method/release/v2\0";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Errors of release signing and verification and of key files.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("field `version`: {0:?} is not a list of handbook heads")]
    BadVersion(String),
    #[error("field `number`: must be 1 or more, got {0}")]
    BadNumber(i64),
    #[error("field `expire_time_ms`: the release must expire after it was issued")]
    BadTimes,
    #[error("field `signature`: missing; the release is not signed")]
    Unsigned,
    #[error("field `signature`: must be 64 bytes (Ed25519), got {0}")]
    SignatureLength(usize),
    #[error("the signature does not verify with release key {key_id}: the release was signed by another key or altered after signing")]
    BadSignature { key_id: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("{0} exists; refusing to overwrite a release key")]
    Exists(PathBuf),
    #[error("making the key failed")]
    Crypto,
}

/// What the coordinator signs: a release's number, heads, label, notes and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Greater than every earlier release's number.
    pub number: u64,
    /// The generation of the handbook document the heads belong to (0 before any redaction).
    pub generation: u64,
    /// The handbook document's heads at the release, sorted, without duplicates.
    pub heads: Vec<[u8; 32]>,
    /// The version label, as stored.
    pub label: String,
    /// The release notes, as stored.
    pub notes: String,
    /// When it was signed (ms since the Unix epoch).
    pub issue_time_ms: i64,
    /// When it stops being accepted (ms since the Unix epoch).
    pub expire_time_ms: i64,
}

/// Parses a handbook version (heads as hex, joined by `.`) into sorted head bytes.
pub fn parse_heads(version: &str) -> Result<Vec<[u8; 32]>, ReleaseError> {
    let bad = || ReleaseError::BadVersion(version.chars().take(200).collect());
    if version.is_empty() {
        return Err(bad());
    }
    let mut heads = Vec::new();
    for part in version.split('.') {
        let bytes = hex::decode(part).map_err(|_| bad())?;
        heads.push(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad())?);
    }
    heads.sort();
    let count = heads.len();
    heads.dedup();
    if heads.len() != count {
        return Err(bad());
    }
    Ok(heads)
}

impl Statement {
    /// The statement a release makes (its signature is not part of it).
    pub fn of(release: &pb::Release) -> Result<Statement, ReleaseError> {
        if release.number < 1 {
            return Err(ReleaseError::BadNumber(release.number));
        }
        if release.expire_time_ms <= release.issue_time_ms {
            return Err(ReleaseError::BadTimes);
        }
        Ok(Statement {
            number: release.number as u64,
            generation: release.generation,
            heads: parse_heads(&release.version)?,
            label: release.version_label.clone(),
            notes: release.notes.clone(),
            issue_time_ms: release.issue_time_ms,
            expire_time_ms: release.expire_time_ms,
        })
    }

    /// The canonical bytes that are signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn put_str(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut out = Vec::with_capacity(DOMAIN.len() + 64 + 32 * self.heads.len());
        if self.generation == 0 {
            out.extend_from_slice(DOMAIN);
            out.extend_from_slice(&self.number.to_be_bytes());
        } else {
            out.extend_from_slice(DOMAIN_V2);
            out.extend_from_slice(&self.number.to_be_bytes());
            out.extend_from_slice(&self.generation.to_be_bytes());
        }
        out.extend_from_slice(&(self.heads.len() as u32).to_be_bytes());
        let mut heads = self.heads.clone();
        heads.sort();
        for head in &heads {
            out.extend_from_slice(head);
        }
        put_str(&mut out, &self.label);
        put_str(&mut out, &self.notes);
        out.extend_from_slice(&self.issue_time_ms.to_be_bytes());
        out.extend_from_slice(&self.expire_time_ms.to_be_bytes());
        out
    }
}

/// A release verification key: 32 bytes of Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key's id: hex of the first 8 bytes of the SHA-256 of the key.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    /// Checks `release`'s signature over its statement with this key.
    pub fn verify(&self, release: &pb::Release) -> Result<Statement, ReleaseError> {
        if release.signature.is_empty() {
            return Err(ReleaseError::Unsigned);
        }
        if release.signature.len() != 64 {
            return Err(ReleaseError::SignatureLength(release.signature.len()));
        }
        let statement = Statement::of(release)?;
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&statement.to_bytes(), &release.signature)
            .map_err(|_| ReleaseError::BadSignature {
                key_id: self.key_id(),
            })?;
        Ok(statement)
    }

    /// The key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem("PUBLIC KEY", &der)
    }

    /// Parses a PEM `PUBLIC KEY` holding an Ed25519 key.
    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        let der = unpem("PUBLIC KEY", text)?;
        der.strip_prefix(&SPKI_PREFIX)
            .and_then(|key| <[u8; 32]>::try_from(key).ok())
            .map(PublicKey)
            .ok_or_else(|| "not an Ed25519 public key".to_string())
    }

    /// Reads a public key file.
    pub fn read(path: &Path) -> Result<PublicKey, ReleaseError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReleaseError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PublicKey::from_pem(&text).map_err(|message| ReleaseError::Key {
            path: path.to_path_buf(),
            message,
        })
    }
}

/// The coordinator's signing key.
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// Parses a PKCS#8 private key (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(SigningKey)
            .map_err(|err| format!("not an Ed25519 PKCS#8 private key ({err})"))
    }

    /// Reads a private key file (PEM `PRIVATE KEY`).
    pub fn read(path: &Path) -> Result<SigningKey, ReleaseError> {
        let bad = |message: String| ReleaseError::Key {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ReleaseError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SigningKey::from_pkcs8(&unpem("PRIVATE KEY", &text).map_err(bad)?).map_err(bad)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(key)
    }

    /// Signs `release` in place: checks its fields, sets `signature` and `key_id`.
    pub fn sign(&self, release: &mut pb::Release) -> Result<(), ReleaseError> {
        let statement = Statement::of(release)?;
        release.signature = self.0.sign(&statement.to_bytes()).as_ref().to_vec();
        release.key_id = self.public_key().key_id();
        Ok(())
    }
}

/// Makes a new release key: the private key (PKCS#8 PEM, mode 0600) at `private`, the public
/// key (PEM) at `public`. Refuses to overwrite either file.
pub fn generate_key_files(private: &Path, public: &Path) -> Result<PublicKey, ReleaseError> {
    for path in [private, public] {
        if path.exists() {
            return Err(ReleaseError::Exists(path.to_path_buf()));
        }
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| ReleaseError::Crypto)?;
    let key = SigningKey::from_pkcs8(pkcs8.as_ref()).map_err(|_| ReleaseError::Crypto)?;
    let public_key = key.public_key();
    write_new(private, pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(), true)?;
    write_new(public, public_key.to_pem().as_bytes(), false)?;
    Ok(public_key)
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), ReleaseError> {
    let io = |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let access = if private {
        sfs_durable::Access::Private
    } else {
        sfs_durable::Access::Public
    };
    sfs_durable::write_new(path, bytes, access).map_err(io)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(label: &str, text: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no `{begin}` block"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("no `{end}` line"))?
        + start;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "the PEM block is not valid base64".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> pb::Release {
        pb::Release {
            version_label: "2027.1".into(),
            notes: "notes".into(),
            version: format!("{}.{}", "ab".repeat(32), "01".repeat(32)),
            number: 3,
            issue_time_ms: 1_000,
            expire_time_ms: 2_000,
            ..Default::default()
        }
    }

    #[test]
    fn key_files_round_trip_and_the_private_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (
            dir.path().join("k/release.key"),
            dir.path().join("k/release.pub"),
        );
        let made = generate_key_files(&private, &public).unwrap();
        assert_eq!(PublicKey::read(&public).unwrap(), made);
        assert_eq!(SigningKey::read(&private).unwrap().public_key(), made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            generate_key_files(&private, &dir.path().join("other.pub")),
            Err(ReleaseError::Exists(_))
        ));
    }

    #[test]
    fn heads_are_parsed_sorted_and_duplicates_refused() {
        let heads = parse_heads(&release().version).unwrap();
        assert_eq!(heads, vec![[0x01; 32], [0xab; 32]]);
        assert!(parse_heads("").is_err());
        assert!(parse_heads("abc").is_err());
        assert!(parse_heads(&format!("{0}.{0}", "ab".repeat(32))).is_err());
    }

    #[test]
    fn the_statement_is_independent_of_head_order() {
        let mut swapped = release();
        swapped.version = format!("{}.{}", "01".repeat(32), "ab".repeat(32));
        assert_eq!(
            Statement::of(&release()).unwrap().to_bytes(),
            Statement::of(&swapped).unwrap().to_bytes()
        );
        assert!(Statement::of(&release())
            .unwrap()
            .to_bytes()
            .starts_with(DOMAIN));
    }

    #[test]
    fn the_generation_is_signed_and_generation_zero_keeps_the_first_statement() {
        let zero = Statement::of(&release()).unwrap().to_bytes();
        let mut later = release();
        later.generation = 2;
        let two = Statement::of(&later).unwrap().to_bytes();
        assert!(two.starts_with(DOMAIN_V2));
        assert_ne!(zero, two);
        // The v1 statement, byte for byte as before generations existed.
        let mut expected = DOMAIN.to_vec();
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&2u32.to_be_bytes());
        assert!(zero.starts_with(&expected));
        // A signature over one generation does not verify for another.
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("r.key"), dir.path().join("r.pub"));
        let public_key = generate_key_files(&private, &public).unwrap();
        let key = SigningKey::read(&private).unwrap();
        key.sign(&mut later).unwrap();
        assert!(public_key.verify(&later).is_ok());
        let mut moved = later.clone();
        moved.generation = 3;
        assert!(matches!(
            public_key.verify(&moved),
            Err(ReleaseError::BadSignature { .. })
        ));
        moved.generation = 0;
        assert!(public_key.verify(&moved).is_err());
    }
}
