//! API tokens: bearer tokens with a role, stored hashed in `<data_dir>/tokens.jsonl`.
//!
//! The file is append-only (one JSON line per token) so `sfs-node token create` works while the
//! node runs: the node re-reads the file when a presented token is unknown and the file changed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token allows; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Reads shared and national data and the register without signals.
    Reader,
    /// Also writes the register and lessons.
    Editor,
    /// Also signals, progress and publishing.
    Coordinator,
    /// Also tokens and the access log.
    Admin,
}

impl ApiRole {
    /// Parses `reader`, `editor`, `coordinator` or `admin`.
    pub fn parse(text: &str) -> Option<ApiRole> {
        match text {
            "reader" => Some(ApiRole::Reader),
            "editor" => Some(ApiRole::Editor),
            "coordinator" => Some(ApiRole::Coordinator),
            "admin" => Some(ApiRole::Admin),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Reader => "reader",
            ApiRole::Editor => "editor",
            ApiRole::Coordinator => "coordinator",
            ApiRole::Admin => "admin",
        }
    }
}

/// Errors of the token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Damaged {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct TokenRecord {
    sha256: String,
    role: ApiRole,
    label: String,
    created_unix: u64,
}

/// The SHA-256 of a token, hex (what the token file keeps).
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The file of hashed tokens.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens.jsonl")
}

/// Makes a new token with `role`, stores its hash and returns the token itself (shown once).
pub fn create_token(data_dir: &Path, role: ApiRole, label: &str) -> Result<String, TokenError> {
    let path = token_file(data_dir);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!(
        "sfs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let record = TokenRecord {
        sha256: hash(&token),
        role,
        label: label.to_string(),
        created_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let mut line = serde_json::to_string(&record).expect("record serialises");
    line.push('\n');
    sfs_durable::append(&path, line.as_bytes(), sfs_durable::Access::Private).map_err(io)?;
    Ok(token)
}

/// A known token: its role, label and the start of its hash (safe to log).
#[derive(Debug, Clone)]
pub struct FoundToken {
    pub role: ApiRole,
    pub label: String,
    pub hash_prefix: String,
}

/// Size and modification time of the token file when it was last read.
type FileStamp = Option<(u64, SystemTime)>;

/// The node's view of its tokens, re-read when the file changes.
pub struct TokenRegistry {
    path: PathBuf,
    cache: Mutex<(FileStamp, Vec<TokenRecord>)>,
}

impl TokenRegistry {
    /// Reads the tokens of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<TokenRegistry, TokenError> {
        let registry = TokenRegistry {
            path: token_file(data_dir),
            cache: Mutex::new((None, Vec::new())),
        };
        registry.reload()?;
        Ok(registry)
    }

    fn reload(&self) -> Result<(), TokenError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        if stamp == cache.0 && stamp.is_some() {
            return Ok(());
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(TokenError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            records.push(
                serde_json::from_str(line).map_err(|err| TokenError::Damaged {
                    path: self.path.clone(),
                    line: i + 1,
                    message: err.to_string(),
                })?,
            );
        }
        *cache = (stamp, records);
        Ok(())
    }

    fn find(&self, digest: &str) -> Option<FoundToken> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .1
            .iter()
            .find(|r| r.sha256 == digest)
            .map(|r| FoundToken {
                role: r.role,
                label: if r.label.is_empty() {
                    "unlabelled".to_string()
                } else {
                    r.label.clone()
                },
                hash_prefix: r.sha256[..8].to_string(),
            })
    }

    /// The role of a presented token, if it is known.
    pub fn role_of(&self, token: &str) -> Option<ApiRole> {
        self.lookup(token).map(|found| found.role)
    }

    /// What is known of a presented token, if anything.
    pub fn lookup(&self, token: &str) -> Option<FoundToken> {
        let digest = hash(token);
        if let Some(found) = self.find(&digest) {
            return Some(found);
        }
        // The file may have grown since it was read; a failed reload keeps the old view.
        let _ = self.reload();
        self.find(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_found_after_creation() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TokenRegistry::open(dir.path()).unwrap();
        let token = create_token(dir.path(), ApiRole::Editor, "test").unwrap();
        assert_eq!(registry.role_of(&token), Some(ApiRole::Editor));
        assert_eq!(registry.role_of("sfs_wrong"), None);
        let stored = std::fs::read_to_string(token_file(dir.path())).unwrap();
        assert!(!stored.contains(&token), "the token itself is never stored");
    }
}
