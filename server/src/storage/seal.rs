//! Encryption at rest of the node's local data: the register, signals, statistical records and
//! the access log. Shared and national documents are not sealed: every city holds them anyway.
//!
//! Keys, from the outside in:
//! - the **at-rest key** ([`MasterKey`]): 32 random bytes in a file *outside* the data directory
//!   (`store.key_file`), so a copied data directory or backup reveals nothing without it;
//! - the **keyring** (`<data_dir>/keyring`): one random data key per local document and one for
//!   the access log, the whole file sealed with a key derived from the at-rest key;
//! - every stored value of a local document: [`MAGIC`], the data key's id, the length, a random
//!   nonce and the ChaCha20-Poly1305 ciphertext (the header is authenticated too).
//!
//! **Erasure by destroying keys.** sled never rewrites old values in place; what it once wrote
//! stays in its files until the space is reused. So erasing a record rewrites its document
//! without the record and without history under a *fresh* data key ([`Keyring::rotate`]), and
//! then drops the old key from the keyring ([`Keyring::forget_old`]), which is replaced as a
//! whole file (write, fsync, rename, fsync of the directory). Whatever sled still holds of the
//! older values is then sealed with a key that exists nowhere: unreadable even with the at-rest
//! key. [`readable_plaintexts`] is the auditor's view: everything in a directory or file that
//! the at-rest key can still open.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Marks a sealed value.
pub const MAGIC: &[u8; 4] = b"SFS\x01";
/// Marks the keyring file.
const KEYRING_MAGIC: &[u8; 4] = b"SFK\x01";
/// Key id of the backup key, derived from the at-rest key.
const BACKUP_KEY_ID: u32 = u32::MAX;
/// Magic, key id, ciphertext length, nonce.
const HEADER_LEN: usize = 4 + 4 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;
/// How many bytes sealing adds to a value.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Length of every key.
pub const KEY_LEN: usize = 32;
/// The keyring's file name inside the data directory.
pub const KEYRING_FILE: &str = "keyring";

/// Errors of encryption at rest.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the at-rest key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error(
        "the at-rest key does not open the keyring {path}: this is not the key file of this \
         data directory, or the keyring was tampered with"
    )]
    WrongKey { path: PathBuf },
    #[error("{what} is sealed with data key {id}, which no longer exists (erased)")]
    KeyGone { what: String, id: u32 },
    #[error("{what} does not decrypt: it is damaged or was tampered with")]
    Damaged { what: String },
    #[error("{what} is not sealed; local data must be encrypted at rest")]
    NotSealed { what: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The at-rest key. Its bytes never appear in logs (`Debug` shows nothing of them).
#[derive(Clone)]
pub struct MasterKey(Arc<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random generator works");
    bytes
}

struct KeyLen;
impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

impl MasterKey {
    /// A new random key (for in-memory nodes; real nodes keep theirs in a file).
    pub fn generate() -> MasterKey {
        MasterKey(Arc::new(random_bytes()))
    }

    /// Reads a key file: 64 hexadecimal characters. On Unix the file must not be readable by
    /// group or others.
    pub fn load(path: &Path) -> Result<MasterKey, SealError> {
        let bad = |message: String| SealError::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(io_error(path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "is readable by others (mode {:o}); allow only its owner (chmod 600)",
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let bytes = hex::decode(text.trim())
            .map_err(|_| bad("does not hold a key (64 hexadecimal characters)".into()))?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| bad("does not hold a key (64 hexadecimal characters)".into()))?;
        Ok(MasterKey(Arc::new(key)))
    }

    /// Creates a new key file (never overwriting one), readable by its owner only.
    pub fn create(path: &Path) -> Result<MasterKey, SealError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let key = MasterKey::generate();
        sfs_durable::write_new(
            path,
            format!("{}\n", hex::encode(key.0.as_ref())).as_bytes(),
            sfs_durable::Access::Private,
        )
        .map_err(io_error(path))?;
        Ok(key)
    }

    /// The node's key: read from `key_file`; created there if it does not exist and the data
    /// directory holds no keyring yet (a new node). Refused if the key file lies inside the data
    /// directory. Returns whether the key was created.
    pub fn for_data_dir(key_file: &Path, data_dir: &Path) -> Result<(MasterKey, bool), SealError> {
        check_outside(key_file, data_dir)?;
        if key_file.exists() {
            return Ok((MasterKey::load(key_file)?, false));
        }
        let keyring = data_dir.join(KEYRING_FILE);
        if keyring.exists() {
            return Err(SealError::KeyFile {
                path: key_file.to_path_buf(),
                message: format!(
                    "does not exist, but {} does: the local data of this node cannot be read \
                     without the key it was sealed with; restore the key file",
                    keyring.display()
                ),
            });
        }
        Ok((MasterKey::create(key_file)?, true))
    }

    fn derive(&self, purpose: &[u8]) -> [u8; KEY_LEN] {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"stadforstad at-rest v1");
        let prk = salt.extract(self.0.as_ref());
        let info = [purpose];
        let okm = prk
            .expand(&info, KeyLen)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut out = [0u8; KEY_LEN];
        okm.fill(&mut out).expect("the output has the asked length");
        out
    }

    /// Seals `plaintext` for a backup archive (the key is derived from the at-rest key, so a
    /// restore needs the same key file).
    pub fn seal_backup(&self, plaintext: &[u8]) -> Vec<u8> {
        seal(&self.derive(b"backup"), BACKUP_KEY_ID, plaintext)
    }

    /// Opens what [`MasterKey::seal_backup`] sealed.
    pub fn open_backup(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        match header(sealed) {
            Some((BACKUP_KEY_ID, _)) => {
                open(&self.derive(b"backup"), sealed).ok_or_else(|| SealError::Damaged {
                    what: what.to_string(),
                })
            }
            _ => Err(SealError::NotSealed {
                what: what.to_string(),
            }),
        }
    }
}

/// Refuses a key file inside the data directory (a copy of the directory would carry the key).
/// Refuses an at-rest key file inside the data directory it seals (symbolic links and `..`
/// resolved): a copy of the directory, or a backup of it, must reveal nothing. The one check
/// behind `check-config`, `run` and `restore`.
pub fn check_outside(key_file: &Path, data_dir: &Path) -> Result<(), SealError> {
    let absolute = |p: &Path| -> PathBuf {
        // Canonicalise the deepest existing ancestor, keep the rest as written.
        let mut existing = p.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut full = std::fs::canonicalize(&existing).unwrap_or(existing);
        for name in rest.iter().rev() {
            full.push(name);
        }
        full
    };
    if absolute(key_file).starts_with(absolute(data_dir)) {
        return Err(SealError::KeyFile {
            path: key_file.to_path_buf(),
            message: format!(
                "lies inside the data directory {}; keep it outside, so that a copy of the \
                 directory or its backups reveals nothing",
                data_dir.display()
            ),
        });
    }
    Ok(())
}

fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

/// Seals `plaintext` with `key`, tagged with `key_id`.
fn seal(key: &[u8; KEY_LEN], key_id: u32, plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&((plaintext.len() + TAG_LEN) as u32).to_be_bytes());
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    aead_key(key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&out[..HEADER_LEN]),
            &mut body,
        )
        .expect("sealing cannot fail for values below 4 GiB");
    out.extend_from_slice(&body);
    out
}

/// The key id and ciphertext length of a sealed value, if it starts with a sealed header.
fn header(sealed: &[u8]) -> Option<(u32, usize)> {
    if sealed.len() < HEADER_LEN || &sealed[..4] != MAGIC {
        return None;
    }
    let id = u32::from_be_bytes(sealed[4..8].try_into().ok()?);
    let len = u32::from_be_bytes(sealed[8..12].try_into().ok()?) as usize;
    Some((id, len))
}

/// Opens one sealed value (exactly one, nothing after it).
fn open(key: &[u8; KEY_LEN], sealed: &[u8]) -> Option<Vec<u8>> {
    let (_, len) = header(sealed)?;
    if sealed.len() != HEADER_LEN + len || len < TAG_LEN {
        return None;
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[12..HEADER_LEN]).ok()?;
    let mut body = sealed[HEADER_LEN..].to_vec();
    let plain = aead_key(key)
        .open_in_place(nonce, Aad::from(&sealed[..HEADER_LEN]), &mut body)
        .ok()?;
    Some(plain.to_vec())
}

/// The data key id a sealed value names.
pub fn key_id_of(sealed: &[u8]) -> Option<u32> {
    header(sealed).map(|(id, _)| id)
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct KeyringState {
    next_id: u32,
    /// Key id → (scope, key in hex).
    keys: BTreeMap<u32, (String, String)>,
    /// Scope (a local document id, or `access_log`) → the id of its current key.
    current: BTreeMap<String, u32>,
}

impl KeyringState {
    fn key(&self, id: u32) -> Option<[u8; KEY_LEN]> {
        let (_, text) = self.keys.get(&id)?;
        hex::decode(text).ok()?.try_into().ok()
    }
}

/// The data keys of one data directory, sealed in `<data_dir>/keyring` with the at-rest key.
pub struct Keyring {
    path: PathBuf,
    master: MasterKey,
    state: Mutex<KeyringState>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({})", self.path.display())
    }
}

impl Keyring {
    /// Opens the data directory's keyring, or starts an empty one (written with the first key).
    pub fn open(data_dir: &Path, master: MasterKey) -> Result<Keyring, SealError> {
        let path = data_dir.join(KEYRING_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => read_keyring(&path, &master, &bytes)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => KeyringState::default(),
            Err(source) => return Err(SealError::Io { path, source }),
        };
        Ok(Keyring {
            path,
            master,
            state: Mutex::new(state),
        })
    }

    /// The at-rest key this keyring is sealed with.
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyringState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the keyring as a whole new file and makes it durable.
    fn write(&self, state: &KeyringState) -> Result<(), SealError> {
        let json = serde_json::to_vec(state).expect("the keyring serialises");
        let mut bytes = KEYRING_MAGIC.to_vec();
        bytes.extend_from_slice(&seal(&self.master.derive(b"keyring"), 0, &json));
        sfs_durable::write(&self.path, &bytes, sfs_durable::Access::Private)
            .map_err(io_error(&self.path))
    }

    /// Adds a new key for `scope` as its current key (the old one is kept until
    /// [`Keyring::forget_old`]).
    fn add_key(&self, state: &mut KeyringState, scope: &str) -> Result<u32, SealError> {
        let id = state.next_id;
        let mut next = state.clone();
        next.next_id = id + 1;
        next.keys.insert(
            id,
            (scope.to_string(), hex::encode(random_bytes::<KEY_LEN>())),
        );
        next.current.insert(scope.to_string(), id);
        self.write(&next)?;
        *state = next;
        Ok(id)
    }

    /// Seals a value of `scope` with its current key (made, and made durable, on first use).
    pub fn seal(&self, scope: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut state = self.lock();
        let id = match state.current.get(scope) {
            Some(id) => *id,
            None => self.add_key(&mut state, scope)?,
        };
        let key = state.key(id).expect("a current key is in the keyring");
        Ok(seal(&key, id, plaintext))
    }

    /// Opens a sealed value; `what` names it in errors.
    pub fn open_value(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some((id, _)) = header(sealed) else {
            return Err(SealError::NotSealed {
                what: what.to_string(),
            });
        };
        let key = self.lock().key(id).ok_or_else(|| SealError::KeyGone {
            what: what.to_string(),
            id,
        })?;
        open(&key, sealed).ok_or_else(|| SealError::Damaged {
            what: what.to_string(),
        })
    }

    /// Gives `scope` a fresh current key; values sealed from now on use it.
    pub fn rotate(&self, scope: &str) -> Result<(), SealError> {
        let mut state = self.lock();
        self.add_key(&mut state, scope).map(drop)
    }

    /// Destroys every key of `scope` but its current one. Call it only once nothing stored is
    /// sealed with them any more.
    pub fn forget_old(&self, scope: &str) -> Result<usize, SealError> {
        let mut state = self.lock();
        let current = state.current.get(scope).copied();
        let old: Vec<u32> = state
            .keys
            .iter()
            .filter(|(id, (s, _))| s == scope && Some(**id) != current)
            .map(|(id, _)| *id)
            .collect();
        self.drop_keys(&mut state, &old)
    }

    /// Destroys every key that is neither current nor in `used` (after a crash between
    /// [`Keyring::rotate`] and [`Keyring::forget_old`]).
    pub fn keep_only(&self, used: &BTreeSet<u32>) -> Result<usize, SealError> {
        let mut state = self.lock();
        let current: BTreeSet<u32> = state.current.values().copied().collect();
        let unused: Vec<u32> = state
            .keys
            .keys()
            .filter(|id| !used.contains(id) && !current.contains(id))
            .copied()
            .collect();
        self.drop_keys(&mut state, &unused)
    }

    fn drop_keys(&self, state: &mut KeyringState, ids: &[u32]) -> Result<usize, SealError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut next = state.clone();
        for id in ids {
            next.keys.remove(id);
        }
        self.write(&next)?;
        *state = next;
        Ok(ids.len())
    }

    /// How many data keys exist.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether no data key exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read_keyring(path: &Path, master: &MasterKey, bytes: &[u8]) -> Result<KeyringState, SealError> {
    let wrong = || SealError::WrongKey {
        path: path.to_path_buf(),
    };
    if bytes.len() < 4 || &bytes[..4] != KEYRING_MAGIC {
        return Err(wrong());
    }
    let json = open(&master.derive(b"keyring"), &bytes[4..]).ok_or_else(wrong)?;
    serde_json::from_slice(&json).map_err(|_| wrong())
}

/// Everything the at-rest key can still open in `path` (a data directory or a single file,
/// such as a backup), found by scanning every byte of every file for sealed values: the
/// plaintexts, in the order found. Keys come from the keyring in `path` (if any) and the backup
/// key. This is how an attacker holding the key would read a copied directory, and how the
/// tests prove that an erased record is gone.
pub fn readable_plaintexts(path: &Path, master: &MasterKey) -> Result<Vec<Vec<u8>>, SealError> {
    let mut keys: BTreeMap<u32, [u8; KEY_LEN]> = BTreeMap::new();
    keys.insert(BACKUP_KEY_ID, master.derive(b"backup"));
    if path.is_dir() {
        let keyring = path.join(KEYRING_FILE);
        if let Ok(bytes) = std::fs::read(&keyring) {
            let state = read_keyring(&keyring, master, &bytes)?;
            for id in state.keys.keys() {
                if let Some(key) = state.key(*id) {
                    keys.insert(*id, key);
                }
            }
        }
    }
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    let mut found = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(io_error(&file))?;
        let mut at = 0;
        while let Some(offset) = find(&bytes[at..], MAGIC) {
            let start = at + offset;
            at = start + 1;
            let Some((id, len)) = header(&bytes[start..]) else {
                continue;
            };
            let Some(key) = keys.get(&id) else {
                continue;
            };
            let Some(end) = start.checked_add(HEADER_LEN + len) else {
                continue;
            };
            if end > bytes.len() {
                continue;
            }
            if let Some(plain) = open(key, &bytes[start..end]) {
                found.push(plain);
                at = end;
            }
        }
    }
    Ok(found)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), SealError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_error(path))? {
            collect_files(&entry.map_err(io_error(path))?.path(), out)?;
        }
    } else if meta.is_file() {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::open(dir.path(), MasterKey::generate()).unwrap();
        let sealed = keyring.seal("local/signals", b"a secret").unwrap();
        assert!(find(&sealed, b"a secret").is_none());
        assert_eq!(keyring.open_value("v", &sealed).unwrap(), b"a secret");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            keyring.open_value("v", &tampered),
            Err(SealError::Damaged { .. })
        ));
        let mut relabelled = sealed.clone();
        relabelled[8..12].copy_from_slice(&(100u32).to_be_bytes());
        assert!(keyring.open_value("v", &relabelled).is_err());
        assert!(matches!(
            keyring.open_value("v", b"plain"),
            Err(SealError::NotSealed { .. })
        ));
    }

    #[test]
    fn the_keyring_opens_only_with_its_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let keyring = Keyring::open(dir.path(), master.clone()).unwrap();
        let sealed = keyring.seal("local/network", b"register").unwrap();
        drop(keyring);
        let again = Keyring::open(dir.path(), master).unwrap();
        assert_eq!(again.open_value("v", &sealed).unwrap(), b"register");
        assert!(matches!(
            Keyring::open(dir.path(), MasterKey::generate()),
            Err(SealError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_forgotten_key_makes_its_values_unreadable_even_with_the_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let keyring = Keyring::open(dir.path(), master.clone()).unwrap();
        let old = keyring.seal("local/signals", b"erase me").unwrap();
        // A stray copy of the old value, as sled may keep one in its files.
        std::fs::write(
            dir.path().join("segment"),
            [b"xx".as_slice(), &old].concat(),
        )
        .unwrap();
        let found = readable_plaintexts(dir.path(), &master).unwrap();
        assert_eq!(found, vec![b"erase me".to_vec()]);

        keyring.rotate("local/signals").unwrap();
        let new = keyring.seal("local/signals", b"kept").unwrap();
        assert_eq!(keyring.forget_old("local/signals").unwrap(), 1);
        std::fs::write(dir.path().join("segment2"), &new).unwrap();
        let found = readable_plaintexts(dir.path(), &master).unwrap();
        assert_eq!(found, vec![b"kept".to_vec()]);
        assert!(matches!(
            keyring.open_value("old", &old),
            Err(SealError::KeyGone { .. })
        ));
    }

    #[test]
    fn key_files_are_made_private_and_never_inside_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        assert!(matches!(
            MasterKey::for_data_dir(&data.join("at-rest.key"), &data),
            Err(SealError::KeyFile { .. })
        ));
        let key_file = dir.path().join("keys/at-rest.key");
        let (key, created) = MasterKey::for_data_dir(&key_file, &data).unwrap();
        assert!(created);
        let (again, created) = MasterKey::for_data_dir(&key_file, &data).unwrap();
        assert!(!created);
        assert_eq!(key.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(MasterKey::load(&key_file).is_err());
        }
        // A keyring without its key file is refused, not silently re-keyed.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        Keyring::open(&other, key)
            .unwrap()
            .seal("access_log", b"x")
            .unwrap();
        assert!(MasterKey::for_data_dir(&dir.path().join("missing.key"), &other).is_err());
    }

    #[test]
    fn backups_seal_with_a_key_derived_from_the_master_key() {
        let master = MasterKey::generate();
        let sealed = master.seal_backup(b"local/network data");
        assert_eq!(
            master.open_backup("doc", &sealed).unwrap(),
            b"local/network data"
        );
        assert!(MasterKey::generate().open_backup("doc", &sealed).is_err());
    }
}
