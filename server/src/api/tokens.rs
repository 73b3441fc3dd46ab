//! API tokens: bearer tokens with a role, stored hashed in `<data_dir>/tokens.jsonl`.
//!
//! One JSON line per token. `sfs-node token create` appends a line while the node runs;
//! `token revoke` (and `Node.RevokeToken`) rewrites the file with the token marked revoked
//! (a new file, fsynced, renamed over the old one). Writers take an exclusive lock on
//! `tokens.lock` so a creation and a revocation never lose each other's line. The node looks at
//! the file's size, modification time and inode on every request and re-reads it when it
//! changed, so a revocation or a deleted line is effective at the next request.
//!
//! Labels may name people ("Anna's phone"), so a label is never stored: the file keeps a
//! salted SHA-256 of it, enough to find a token again by its label (`token list --label`).
//! Tokens are named by their id, the first 8 hex digits of the token's hash.
//!
//! When each token was last used is kept in memory and written to `tokens-used.json` at most
//! once a minute (and when the node stops), so a request costs no disk write.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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
    #[error("{path} is not a node's data directory: {reason} (pass the `data_dir` of the node's configuration)")]
    NotADataDir { path: PathBuf, reason: String },
    #[error("no token has the id {0:?} (see `token list`)")]
    Unknown(String),
    #[error("the id {id:?} matches {count} tokens; give more of it")]
    Ambiguous { id: String, count: usize },
    #[error("a token id is 8 to 64 hex digits, not {0:?}")]
    BadId(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    sha256: String,
    role: ApiRole,
    /// A plain label, as files written before labels were hashed have them; never written now.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    label: String,
    /// SHA-256 (hex) of `label_salt` followed by the label.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    label_sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    label_salt: String,
    created_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_unix: Option<u64>,
}

impl TokenRecord {
    fn id(&self) -> &str {
        &self.sha256[..8.min(self.sha256.len())]
    }

    fn label_matches(&self, label: &str) -> bool {
        if !self.label.is_empty() {
            return self.label == label;
        }
        !self.label_sha256.is_empty() && label_hash(&self.label_salt, label) == self.label_sha256
    }

    /// Moves a plain label of an older file to its salted hash.
    fn hide_label(&mut self) {
        if !self.label.is_empty() {
            let salt = new_salt();
            self.label_sha256 = label_hash(&salt, &self.label);
            self.label_salt = salt;
            self.label.clear();
        }
    }

    fn info(&self, last_used_unix: Option<u64>) -> TokenInfo {
        TokenInfo {
            id: self.id().to_string(),
            role: self.role,
            labelled: !self.label.is_empty() || !self.label_sha256.is_empty(),
            created_unix: self.created_unix,
            expires_unix: self.expires_unix,
            revoked_unix: self.revoked_unix,
            last_used_unix,
        }
    }
}

/// What may be shown of a token: never its secret, its hash or its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The first 8 hex digits of the token's SHA-256; names the token in logs and commands.
    pub id: String,
    pub role: ApiRole,
    /// Whether the token was created with a label.
    pub labelled: bool,
    pub created_unix: u64,
    pub expires_unix: Option<u64>,
    pub revoked_unix: Option<u64>,
    /// When it was last accepted (as last written, or live from a running node).
    pub last_used_unix: Option<u64>,
}

impl TokenInfo {
    /// `active`, `expired` or `revoked`, at `now_unix`.
    pub fn state(&self, now_unix: u64) -> &'static str {
        if self.revoked_unix.is_some() {
            "revoked"
        } else if self.expires_unix.is_some_and(|at| at <= now_unix) {
            "expired"
        } else {
            "active"
        }
    }
}

/// The SHA-256 of a token, hex (what the token file keeps).
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn label_hash(salt: &str, label: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(label.as_bytes());
    hex::encode(hasher.finalize())
}

fn new_salt() -> String {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    hex::encode(salt)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The file of hashed tokens.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens.jsonl")
}

/// The file of last-use times.
fn used_file(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens-used.json")
}

/// Files a node keeps in its data directory; one of them marks a directory as a node's.
const DATA_DIR_MARKERS: [&str; 4] = ["store", "keyring", "tokens.jsonl", "running-release.pb"];

/// Refuses `data_dir` unless it is a node's data directory: an existing directory that holds a
/// node's files, or an empty one a node is about to start in.
pub fn check_data_dir(data_dir: &Path) -> Result<(), TokenError> {
    let refuse = |reason: &str| TokenError::NotADataDir {
        path: data_dir.to_path_buf(),
        reason: reason.to_string(),
    };
    let meta = std::fs::metadata(data_dir).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => refuse("it does not exist"),
        _ => refuse(&err.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(refuse("it is not a directory"));
    }
    if DATA_DIR_MARKERS.iter().any(|m| data_dir.join(m).exists()) {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(data_dir).map_err(|err| refuse(&err.to_string()))?;
    if entries.next().is_none() {
        return Ok(());
    }
    Err(refuse(
        "it holds other files but no node store, keyring or token file",
    ))
}

/// Holds `tokens.lock` exclusively while the token file is changed. The lock file is opened
/// for reading when it exists, so one made by root does not keep the service user out.
fn lock(data_dir: &Path) -> Result<File, TokenError> {
    let path = data_dir.join("tokens.lock");
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io)?;
            owned_like_dir(&path, data_dir).map_err(io)?;
            file
        }
        Err(err) => return Err(io(err)),
    };
    file.lock().map_err(io)?;
    Ok(file)
}

/// Gives `path` the owner and group of `dir`, so a file written by root (`sudo sfs-node token
/// create`) stays readable by the service user that owns the data directory. Changing the
/// owner fails for anyone else than root; it is needed only when the owners differ.
fn owned_like_dir(path: &Path, dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let want = std::fs::metadata(dir)?;
        let have = std::fs::metadata(path)?;
        if (have.uid(), have.gid()) != (want.uid(), want.gid()) {
            std::os::unix::fs::chown(path, Some(want.uid()), Some(want.gid())).map_err(|err| {
                std::io::Error::new(
                    err.kind(),
                    format!(
                        "the data directory belongs to user {} and this file would not: run the command as that user ({err})",
                        want.uid()
                    ),
                )
            })?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, dir);
    Ok(())
}

/// Replaces `path` with `bytes`, readable by the owner only and owned like its directory
/// (durably: see `sfs_durable::write`).
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), TokenError> {
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    sfs_durable::write(path, bytes, sfs_durable::Access::Private).map_err(io)?;
    if let Some(dir) = path.parent() {
        owned_like_dir(path, dir).map_err(io)?;
        // The new owner is part of the file's metadata: make it durable too.
        File::open(path).and_then(|f| f.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Writes a token file from a backup, readable by the owner only.
pub fn restore_file(data_dir: &Path, bytes: &[u8]) -> Result<(), TokenError> {
    replace_file(&token_file(data_dir), bytes)
}

fn read_records(path: &Path) -> Result<Vec<TokenRecord>, TokenError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(TokenError::Io {
                path: path.to_path_buf(),
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
                path: path.to_path_buf(),
                line: i + 1,
                message: err.to_string(),
            })?,
        );
    }
    Ok(records)
}

fn read_used(data_dir: &Path) -> HashMap<String, u64> {
    std::fs::read(used_file(data_dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Makes a new token with `role`, stores its hash and returns the token itself (shown once).
pub fn create_token(data_dir: &Path, role: ApiRole, label: &str) -> Result<String, TokenError> {
    create_token_expiring(data_dir, role, label, None)
}

/// Like [`create_token`], and the token is refused after `expires_in`, if given.
pub fn create_token_expiring(
    data_dir: &Path,
    role: ApiRole,
    label: &str,
    expires_in: Option<Duration>,
) -> Result<String, TokenError> {
    let path = token_file(data_dir);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let _lock = lock(data_dir)?;
    if !path.exists() {
        // A new file is made owned like the data directory before the first line goes in.
        replace_file(&path, b"")?;
    }
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!(
        "sfs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let created_unix = now_unix();
    let salt = new_salt();
    let record = TokenRecord {
        sha256: hash(&token),
        role,
        label: String::new(),
        label_sha256: if label.is_empty() {
            String::new()
        } else {
            label_hash(&salt, label)
        },
        label_salt: if label.is_empty() {
            String::new()
        } else {
            salt
        },
        created_unix,
        expires_unix: expires_in.map(|d| created_unix.saturating_add(d.as_secs())),
        revoked_unix: None,
    };
    let mut line = serde_json::to_string(&record).expect("record serialises");
    line.push('\n');
    sfs_durable::append(&path, line.as_bytes(), sfs_durable::Access::Private).map_err(io)?;
    Ok(token)
}

/// Every token of `data_dir` (revoked and expired ones included), oldest first, with the last
/// use as last written by the node; only those whose label is `label`, if given.
pub fn list_tokens(data_dir: &Path, label: Option<&str>) -> Result<Vec<TokenInfo>, TokenError> {
    let used = read_used(data_dir);
    Ok(read_records(&token_file(data_dir))?
        .iter()
        .filter(|r| label.is_none_or(|l| r.label_matches(l)))
        .map(|r| r.info(used.get(&r.sha256).copied()))
        .collect())
}

/// Marks the token whose id starts with `id` revoked (at once for a running node, which
/// re-reads the file on its next request). Revoking a revoked token changes nothing.
pub fn revoke_token(data_dir: &Path, id: &str) -> Result<TokenInfo, TokenError> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::BadId(id));
    }
    let path = token_file(data_dir);
    let _lock = lock(data_dir)?;
    let mut records = read_records(&path)?;
    let matching: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].sha256.starts_with(&id))
        .collect();
    let index = match matching.as_slice() {
        [] => return Err(TokenError::Unknown(id)),
        [one] => *one,
        many => {
            return Err(TokenError::Ambiguous {
                id,
                count: many.len(),
            })
        }
    };
    if records[index].revoked_unix.is_none() {
        records[index].revoked_unix = Some(now_unix());
        let mut text = String::new();
        for record in &mut records {
            record.hide_label();
            text.push_str(&serde_json::to_string(record).expect("record serialises"));
            text.push('\n');
        }
        replace_file(&path, text.as_bytes())?;
    }
    Ok(records[index].info(read_used(data_dir).get(&records[index].sha256).copied()))
}

/// A known token: its role, label and the start of its hash (safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    pub role: ApiRole,
    /// What names the caller in logs: `token <id>` (labels are not kept in clear).
    pub label: String,
    pub hash_prefix: String,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("unknown API token (create one with `sfs-node token create`)")]
    Unknown,
    #[error("API token {0} was revoked")]
    Revoked(String),
    #[error("API token {0} has expired")]
    Expired(String),
}

/// Size, modification time and inode of the token file when it was last read.
type FileStamp = Option<(u64, SystemTime, u64)>;

/// How often last-use times are written at most.
pub const LAST_USED_FLUSH: Duration = Duration::from_secs(60);

/// The node's view of its tokens, re-read when the file changes.
pub struct TokenRegistry {
    data_dir: PathBuf,
    path: PathBuf,
    cache: Mutex<(FileStamp, Vec<TokenRecord>)>,
    last_used: Mutex<HashMap<String, u64>>,
    used_dirty: AtomicBool,
}

fn stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        inode,
    ))
}

impl TokenRegistry {
    /// Reads the tokens of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<TokenRegistry, TokenError> {
        let registry = TokenRegistry {
            data_dir: data_dir.to_path_buf(),
            path: token_file(data_dir),
            cache: Mutex::new((None, Vec::new())),
            last_used: Mutex::new(read_used(data_dir)),
            used_dirty: AtomicBool::new(false),
        };
        registry.reload()?;
        Ok(registry)
    }

    /// Re-reads the file if its size, modification time or inode changed (one `stat`).
    fn reload(&self) -> Result<(), TokenError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = stamp(&self.path);
        if stamp == cache.0 && stamp.is_some() {
            return Ok(());
        }
        let records = read_records(&self.path)?;
        *cache = (stamp, records);
        Ok(())
    }

    /// The role of a presented token, if it is accepted.
    pub fn role_of(&self, token: &str) -> Option<ApiRole> {
        self.lookup(token).map(|found| found.role)
    }

    /// What is known of a presented token, if it is accepted.
    pub fn lookup(&self, token: &str) -> Option<FoundToken> {
        self.check(token).ok()
    }

    /// Accepts a presented token, or says why not. The file is checked for changes first, so
    /// a revocation, a deleted line or a new token counts from the next request on; a failed
    /// re-read (a line being appended) keeps the old view.
    pub fn check(&self, token: &str) -> Result<FoundToken, Refused> {
        let _ = self.reload();
        let digest = hash(token);
        let now = now_unix();
        let found = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let record = cache
                .1
                .iter()
                .find(|r| r.sha256 == digest)
                .ok_or(Refused::Unknown)?;
            let id = record.id().to_string();
            if record.revoked_unix.is_some() {
                return Err(Refused::Revoked(id));
            }
            if record.expires_unix.is_some_and(|at| at <= now) {
                return Err(Refused::Expired(id));
            }
            FoundToken {
                role: record.role,
                label: format!("token {id}"),
                hash_prefix: id,
            }
        };
        let mut used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        if used.get(&digest) != Some(&now) {
            used.insert(digest, now);
            self.used_dirty.store(true, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Every token with its last use as this node saw it (never a secret, hash or label).
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        self.reload()?;
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cache
            .1
            .iter()
            .map(|r| r.info(used.get(&r.sha256).copied()))
            .collect())
    }

    /// Revokes a token by id (see [`revoke_token`]); refused from the next request on.
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, TokenError> {
        self.flush_last_used()?;
        let info = revoke_token(&self.data_dir, id)?;
        self.reload()?;
        Ok(info)
    }

    /// Writes the last-use times if any changed since the last write (durably; call it at
    /// most every [`LAST_USED_FLUSH`] and when the node stops).
    pub fn flush_last_used(&self) -> Result<(), TokenError> {
        if !self.used_dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = {
            let used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*used).expect("map serialises")
        };
        replace_file(&used_file(&self.data_dir), &bytes).inspect_err(|_| {
            self.used_dirty.store(true, Ordering::Relaxed);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_found_after_creation() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TokenRegistry::open(dir.path()).unwrap();
        let token = create_token(dir.path(), ApiRole::Editor, "Anna Svensson").unwrap();
        assert_eq!(registry.role_of(&token), Some(ApiRole::Editor));
        assert_eq!(registry.role_of("sfs_wrong"), None);
        let stored = std::fs::read_to_string(token_file(dir.path())).unwrap();
        assert!(!stored.contains(&token), "the token itself is never stored");
        assert!(!stored.contains("Anna"), "labels are never stored in clear");
        let found = list_tokens(dir.path(), Some("Anna Svensson")).unwrap();
        assert_eq!(found.len(), 1);
        assert!(list_tokens(dir.path(), Some("Anna")).unwrap().is_empty());
    }

    #[test]
    fn a_revoked_token_is_refused_at_once_and_others_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TokenRegistry::open(dir.path()).unwrap();
        let leaked = create_token(dir.path(), ApiRole::Coordinator, "").unwrap();
        let other = create_token(dir.path(), ApiRole::Reader, "").unwrap();
        assert!(registry.check(&leaked).is_ok());
        let id = hash(&leaked)[..8].to_string();
        let info = revoke_token(dir.path(), &id).unwrap();
        assert_eq!(info.state(now_unix()), "revoked");
        assert_eq!(registry.check(&leaked), Err(Refused::Revoked(id.clone())));
        assert_eq!(registry.role_of(&other), Some(ApiRole::Reader));
        // Revoking again changes nothing; a token created afterwards works.
        revoke_token(dir.path(), &id).unwrap();
        let later = create_token(dir.path(), ApiRole::Admin, "").unwrap();
        assert_eq!(registry.role_of(&later), Some(ApiRole::Admin));
        assert_eq!(registry.check(&leaked), Err(Refused::Revoked(id)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_file(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_deleted_line_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TokenRegistry::open(dir.path()).unwrap();
        let gone = create_token(dir.path(), ApiRole::Admin, "").unwrap();
        let kept = create_token(dir.path(), ApiRole::Reader, "").unwrap();
        assert!(registry.check(&gone).is_ok());
        let text = std::fs::read_to_string(token_file(dir.path())).unwrap();
        let kept_line: String = text
            .lines()
            .filter(|l| !l.contains(&hash(&gone)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(token_file(dir.path()), kept_line).unwrap();
        assert_eq!(registry.check(&gone).unwrap_err(), Refused::Unknown);
        assert!(registry.check(&kept).is_ok());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TokenRegistry::open(dir.path()).unwrap();
        let token =
            create_token_expiring(dir.path(), ApiRole::Admin, "", Some(Duration::ZERO)).unwrap();
        assert!(matches!(registry.check(&token), Err(Refused::Expired(_))));
        let long = create_token_expiring(
            dir.path(),
            ApiRole::Admin,
            "",
            Some(Duration::from_secs(90 * 86400)),
        )
        .unwrap();
        assert!(registry.check(&long).is_ok());
    }

    #[test]
    fn ids_must_be_long_enough_and_unambiguous() {
        let dir = tempfile::tempdir().unwrap();
        create_token(dir.path(), ApiRole::Admin, "").unwrap();
        assert!(matches!(
            revoke_token(dir.path(), "abc"),
            Err(TokenError::BadId(_))
        ));
        assert!(matches!(
            revoke_token(dir.path(), "zzzzzzzz"),
            Err(TokenError::BadId(_))
        ));
        let absent = if list_tokens(dir.path(), None).unwrap()[0].id == "00000000" {
            "11111111"
        } else {
            "00000000"
        };
        assert!(matches!(
            revoke_token(dir.path(), absent),
            Err(TokenError::Unknown(_))
        ));
    }

    #[test]
    fn last_use_is_kept_in_memory_and_written_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TokenRegistry::open(dir.path()).unwrap();
        let token = create_token(dir.path(), ApiRole::Reader, "").unwrap();
        assert_eq!(
            list_tokens(dir.path(), None).unwrap()[0].last_used_unix,
            None
        );
        registry.check(&token).unwrap();
        assert!(registry.list().unwrap()[0].last_used_unix.is_some());
        assert!(!used_file(dir.path()).exists(), "no write per request");
        registry.flush_last_used().unwrap();
        assert!(list_tokens(dir.path(), None).unwrap()[0]
            .last_used_unix
            .is_some());
    }

    #[cfg(unix)]
    #[test]
    fn files_made_by_root_belong_to_the_owner_of_the_data_directory() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, "").unwrap();
        if std::fs::metadata(&probe).unwrap().uid() != 0 {
            return; // only root can hand a file to another user
        }
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        let token = create_token(&data, ApiRole::Admin, "").unwrap();
        for name in ["tokens.jsonl", "tokens.lock"] {
            let meta = std::fs::metadata(data.join(name)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{name}");
        }
        revoke_token(&data, &hash(&token)[..8]).unwrap();
        let meta = std::fs::metadata(token_file(&data)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (65534, 65534, 0o600)
        );
    }

    #[test]
    fn only_a_node_data_directory_takes_tokens() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_data_dir(dir.path()).is_ok(), "an empty directory");
        assert!(check_data_dir(&dir.path().join("missing")).is_err());
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert!(check_data_dir(dir.path()).is_err(), "someone else's files");
        assert!(check_data_dir(&dir.path().join("notes.txt")).is_err());
        std::fs::create_dir(dir.path().join("store")).unwrap();
        assert!(check_data_dir(dir.path()).is_ok(), "a node's directory");
    }
}
