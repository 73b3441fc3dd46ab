//! Signed-in people: server-side sessions behind an opaque cookie, one-time sign-in codes, and
//! the CSRF token every form carries. Sessions live in the web app's memory; a restart of the
//! node signs everyone out.
//!
//! Sign-in codes come from two places: the running node mints them in memory (the demo), and
//! an operator's `sfs-node web sign-in-link` writes one as a file into the node's data
//! directory ([`CODE_DIR`]), named by the code's SHA-256 and holding the token and the code's
//! expiry. The web app takes such a file once: it renames it away before reading it, so two
//! requests with the same code cannot both sign in, and it is gone afterwards.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rand::RngCore;
use sfs_client::Client;

/// What a token allows, as the API reports it (`NodeStatus.caller_role`); each includes the
/// ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Editor,
    Coordinator,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "reader" => Some(Role::Reader),
            "editor" => Some(Role::Editor),
            "coordinator" => Some(Role::Coordinator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The translation id of the role's name.
    pub fn label_id(self) -> &'static str {
        match self {
            Role::Reader => "role-reader",
            Role::Editor => "role-editor",
            Role::Coordinator => "role-coordinator",
            Role::Admin => "role-admin",
        }
    }
}

/// Which kind of node the web app serves, as the API reports it (`NodeStatus.role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A city node: the city's own register, signals, statistics and lessons.
    City,
    /// A county hub: the county coordinator's view of its cities.
    County,
    /// The national hub (or its standby).
    Hub,
}

impl NodeKind {
    pub fn parse(text: &str) -> Option<NodeKind> {
        match text {
            "city" => Some(NodeKind::City),
            "county" => Some(NodeKind::County),
            "hub" => Some(NodeKind::Hub),
            _ => None,
        }
    }
}

/// One signed-in person.
#[derive(Clone)]
pub struct Session {
    /// The API client with the person's token.
    pub client: Client,
    /// What the token allows.
    pub role: Role,
    /// The node's id (`helsingborg`, `skane`, `national`).
    pub node_id: String,
    /// The kind of node.
    pub kind: NodeKind,
    /// At a county hub, the county's name as people read it (`Skåne län`, from the national
    /// directory's entries of its cities), else empty.
    pub county_name: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The previous visit of the same token (milliseconds since the epoch), for the start page.
    pub previous_visit_ms: i64,
    /// Which token (hash prefix), to remember visits by.
    pub token_key: String,
    last_seen: Instant,
}

/// A random, URL-safe secret of 32 bytes.
pub fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The folder of the node's data directory that holds sign-in codes written by
/// `sfs-node web sign-in-link`.
pub const CODE_DIR: &str = "web-sign-in";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The file name of a code: its SHA-256 in hex (the code itself is never on disk).
fn code_file_name(code: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(code.as_bytes()))
}

/// Writes a one-time sign-in code for `token` into `dir` (made if missing, readable by its
/// owner only), valid for `ttl`; returns the code. Expired codes in `dir` are removed.
pub fn write_code_file(dir: &Path, token: &str, ttl: Duration) -> std::io::Result<String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let now = unix_now();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let expired = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| text.lines().next()?.parse::<u64>().ok())
                .is_some_and(|expires| expires <= now);
            if expired {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let code = secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let path = dir.join(code_file_name(&code));
    let mut file = options.open(&path)?;
    let expires = now.saturating_add(ttl.as_secs());
    file.write_all(format!("{expires}\n{token}\n").as_bytes())?;
    file.sync_all()?;
    Ok(code)
}

/// Takes the code file of `code` from `dir`, once: the token, if the file exists and the code
/// has not expired.
fn take_code_file(dir: &Path, code: &str) -> Option<String> {
    // A code is 43 URL-safe characters; anything else never reaches the file system.
    if code.len() != 43
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let path = dir.join(code_file_name(code));
    let taken = dir.join(format!("{}.taken-{}", code_file_name(code), secret()));
    std::fs::rename(&path, &taken).ok()?;
    let text = std::fs::read_to_string(&taken);
    let _ = std::fs::remove_file(&taken);
    let text = text.ok()?;
    let mut lines = text.lines();
    let expires: u64 = lines.next()?.parse().ok()?;
    let token = lines.next()?.trim();
    (expires > unix_now() && !token.is_empty()).then(|| token.to_string())
}

/// Sessions and sign-in codes.
pub struct Sessions {
    idle: Duration,
    code_ttl: Duration,
    code_dir: Option<PathBuf>,
    sessions: Mutex<HashMap<String, Session>>,
    codes: Mutex<HashMap<String, (String, Instant)>>,
    visits: Mutex<HashMap<String, i64>>,
}

impl Sessions {
    /// Sessions that end after `idle`, codes minted in memory valid for `code_ttl`, and codes
    /// written by `sfs-node web sign-in-link` taken from `code_dir`.
    pub fn new(idle: Duration, code_ttl: Duration, code_dir: Option<PathBuf>) -> Sessions {
        Sessions {
            idle,
            code_ttl,
            code_dir,
            sessions: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            visits: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session; returns its id (the cookie value).
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        client: Client,
        role: Role,
        node_id: String,
        kind: NodeKind,
        county_name: String,
        token_key: String,
        now_ms: i64,
    ) -> String {
        let previous_visit_ms = self
            .visits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token_key.clone(), now_ms)
            .unwrap_or(0);
        let id = secret();
        let session = Session {
            client,
            role,
            node_id,
            kind,
            county_name,
            csrf: secret(),
            previous_visit_ms,
            token_key,
            last_seen: Instant::now(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        sessions.insert(id.clone(), session);
        id
    }

    /// The live session with this id, its idle timer restarted; none if unknown or idle too long.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get_mut(id) {
            Some(s) if s.last_seen.elapsed() < self.idle => {
                s.last_seen = Instant::now();
                Some(s.clone())
            }
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Whether the session is still live, without restarting its idle timer (a live page's
    /// event stream is no sign that someone is there).
    pub fn peek(&self, id: &str) -> Option<()> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(id)
            .filter(|s| s.last_seen.elapsed() < self.idle)
            .map(|_| ())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Mints a single-use sign-in code for `token`, valid for the code lifetime.
    pub fn mint_code(&self, token: &str) -> String {
        let code = secret();
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes.retain(|_, (_, expires)| *expires > Instant::now());
        codes.insert(
            code.clone(),
            (token.to_string(), Instant::now() + self.code_ttl),
        );
        code
    }

    /// The token behind a code, once: the code is gone afterwards, used or expired.
    pub fn take_code(&self, code: &str) -> Option<String> {
        let minted = self
            .codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(code);
        match minted {
            Some((token, expires)) => (expires > Instant::now()).then_some(token),
            None => take_code_file(self.code_dir.as_deref()?, code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_single_use_and_expire() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60), None);
        let code = sessions.mint_code("sfs_token");
        assert_eq!(sessions.take_code(&code).as_deref(), Some("sfs_token"));
        assert_eq!(sessions.take_code(&code), None, "used once");
        assert_eq!(sessions.take_code("made-up"), None);
        let short = Sessions::new(Duration::from_secs(60), Duration::ZERO, None);
        let code = short.mint_code("sfs_token");
        assert_eq!(short.take_code(&code), None, "expired");
    }

    #[test]
    fn code_files_are_single_use_expire_and_hold_no_code() {
        let dir = std::env::temp_dir().join(format!("sfs-web-codes-{}", secret()));
        let sessions = Sessions::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Some(dir.clone()),
        );
        let code = write_code_file(&dir, "sfs_token", Duration::from_secs(600)).unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            [code_file_name(&code)],
            "named by the hash, not the code"
        );
        assert_eq!(sessions.take_code(&code).as_deref(), Some("sfs_token"));
        assert_eq!(sessions.take_code(&code), None, "used once");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "gone once used"
        );
        let expired = write_code_file(&dir, "sfs_old", Duration::ZERO).unwrap();
        assert_eq!(sessions.take_code(&expired), None, "expired");
        assert_eq!(sessions.take_code("../../etc/passwd"), None);
        // Writing a code sweeps expired ones away.
        write_code_file(&dir, "sfs_a", Duration::ZERO).unwrap();
        write_code_file(&dir, "sfs_b", Duration::from_secs(600)).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_compare_whole() {
        let a = secret();
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &secret()));
        assert!(!same_secret(&a, &a[..10]));
        assert_eq!(a.len(), 43);
    }
}
