//! Signed-in people: server-side sessions behind an opaque cookie, one-time sign-in codes, and
//! the CSRF token every form carries. Everything lives in the web app's memory; a restart of
//! the node signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// One signed-in person.
#[derive(Clone)]
pub struct Session {
    /// The API client with the person's token.
    pub client: Client,
    /// What the token allows.
    pub role: Role,
    /// The node's id (`helsingborg`, `national`).
    pub node_id: String,
    /// Whether the node is the hub.
    pub hub: bool,
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

/// Sessions and sign-in codes.
pub struct Sessions {
    idle: Duration,
    code_ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    codes: Mutex<HashMap<String, (String, Instant)>>,
    visits: Mutex<HashMap<String, i64>>,
}

impl Sessions {
    pub fn new(idle: Duration, code_ttl: Duration) -> Sessions {
        Sessions {
            idle,
            code_ttl,
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
        hub: bool,
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
            hub,
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
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        let (token, expires) = codes.remove(code)?;
        (expires > Instant::now()).then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_single_use_and_expire() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let code = sessions.mint_code("sfs_token");
        assert_eq!(sessions.take_code(&code).as_deref(), Some("sfs_token"));
        assert_eq!(sessions.take_code(&code), None, "used once");
        assert_eq!(sessions.take_code("made-up"), None);
        let short = Sessions::new(Duration::from_secs(60), Duration::ZERO);
        let code = short.mint_code("sfs_token");
        assert_eq!(short.take_code(&code), None, "expired");
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
