//! Which signed handbook release this node runs, kept in step with `national/method`:
//! [`ReleaseTracker`] stores the verified running release in `<data_dir>/running-release.pb`
//! (fsynced) before adopting it, re-evaluates ([`crate::domain::release::evaluate`]) whenever
//! the handbook changes ([`track`]), and a city reports the release it runs in its own
//! `shared/progress/{city}`. The rules themselves are pure, in [`crate::domain::release`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;
use sfs_proto::v1 as pb;
use sfs_release::PublicKey;
use sfs_sync::Role;

use crate::domain::method;
use automerge::Automerge;

use crate::domain::release::{evaluate, reported_release, same, Refusal, ReleaseStateError};
use crate::federation::sync::SyncHandle;

#[derive(Default)]
struct TrackerState {
    running: Option<pb::Release>,
    /// Whether the running release's content is in the handbook this node holds; `None` until
    /// the first refresh (readers then check the heads themselves, as `GetHandbook` does).
    content: Option<bool>,
    not_running: Vec<(pb::Release, Refusal)>,
    /// Releases already logged as not run (name and reason), so each is logged once.
    logged: HashSet<(String, String)>,
}

/// The release this node runs, kept in memory and in `<data_dir>/running-release.pb`.
pub struct ReleaseTracker {
    key: Option<PublicKey>,
    path: PathBuf,
    state: Mutex<TrackerState>,
    /// Held for a whole refresh, so two refreshes never interleave (the later document wins).
    refreshing: Mutex<()>,
}

impl ReleaseTracker {
    /// The file that holds the running release.
    pub fn file(data_dir: &Path) -> PathBuf {
        data_dir.join("running-release.pb")
    }

    /// Opens the tracker; the stored running release is re-verified at the first refresh.
    pub fn open(
        key: Option<PublicKey>,
        data_dir: &Path,
    ) -> Result<ReleaseTracker, ReleaseStateError> {
        let path = ReleaseTracker::file(data_dir);
        let running = match std::fs::read(&path) {
            Ok(bytes) => match pb::Release::decode(bytes.as_slice()) {
                Ok(release) => Some(release),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "the stored running release is damaged; choosing again");
                    None
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ReleaseStateError::Io { path, source }),
        };
        Ok(ReleaseTracker {
            key,
            path,
            state: Mutex::new(TrackerState {
                running,
                ..Default::default()
            }),
            refreshing: Mutex::new(()),
        })
    }

    /// The configured release key, if any.
    pub fn key(&self) -> Option<&PublicKey> {
        self.key.as_ref()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verified release whose content this node serves (only with a key configured; none
    /// while its content is not in the handbook this node holds, see [`Self::awaiting`]).
    pub fn running(&self) -> Option<pb::Release> {
        self.key.as_ref()?;
        let state = self.state();
        state
            .running
            .clone()
            .filter(|_| state.content != Some(false))
    }

    /// Whether this node ran a release whose content it no longer holds (the handbook was
    /// redacted at the hub since): it serves no handbook until a release of the new generation
    /// arrives.
    pub fn awaiting(&self) -> bool {
        let state = self.state();
        self.key.is_some() && state.running.is_some() && state.content == Some(false)
    }

    /// Looks at the handbook again; a newly chosen release is stored durably before it runs.
    pub fn refresh(&self, sync: &SyncHandle, now_ms: i64) -> Result<(), ReleaseStateError> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.state().running.clone();
        let evaluation = sync.read(|engine| {
            let empty = Automerge::new();
            let doc = engine.document(&method::method_doc()).unwrap_or(&empty);
            evaluate(doc, key, previous.as_ref(), now_ms)
        });
        let changed = match (&previous, &evaluation.running) {
            (Some(a), Some(b)) => !same(a, b),
            (None, None) => false,
            _ => true,
        };
        if changed {
            self.store(evaluation.running.as_ref())?;
            match &evaluation.running {
                Some(r) => tracing::info!(
                    release = %r.name, label = %r.version_label, number = r.number,
                    "running a new verified handbook release"
                ),
                None => {
                    tracing::warn!("the stored running release no longer verifies; running none")
                }
            }
        }
        let mut state = self.state();
        if let (Some(r), false) = (&evaluation.running, evaluation.content) {
            if state.content != Some(false) || changed {
                tracing::warn!(
                    release = %r.name, label = %r.version_label, number = r.number,
                    generation = r.generation,
                    "the running handbook release's content is not in this node's handbook \
                     (redacted at the hub); serving no handbook until a signed release of the \
                     new generation arrives"
                );
            }
        }
        state.content = Some(evaluation.content);
        for (release, refusal) in &evaluation.not_running {
            let reason = refusal.to_string();
            if state.logged.insert((release.name.clone(), reason.clone())) {
                if refusal.older() {
                    tracing::info!(release = %release.name, label = %release.version_label, number = release.number, %reason, "not running an older handbook release");
                } else {
                    tracing::warn!(release = %release.name, label = %release.version_label, number = release.number, %reason, "refused a handbook release");
                }
            }
        }
        state.running = evaluation.running;
        state.not_running = evaluation.not_running;
        let running = state.running.clone();
        drop(state);
        if sync.me().role() == Role::City {
            report_to_hub(sync, running.as_ref());
        }
        Ok(())
    }

    fn store(&self, release: Option<&pb::Release>) -> Result<(), ReleaseStateError> {
        let io = |source| ReleaseStateError::Io {
            path: self.path.clone(),
            source,
        };
        match release {
            None => match std::fs::remove_file(&self.path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io(err)),
                _ => Ok(()),
            },
            Some(release) => sfs_durable::write(
                &self.path,
                &release.encode_to_vec(),
                sfs_durable::Access::Public,
            )
            .map_err(io),
        }
    }

    /// What `Method.GetRunningRelease` answers. Without a key, the newest release, unverified.
    pub fn report(&self, doc: &Automerge, now_ms: i64) -> pb::RunningRelease {
        let Some(key) = &self.key else {
            return pb::RunningRelease {
                release: method::releases(doc).into_iter().next(),
                handbook_generation: sfs_sync::engine::generation_of(doc),
                ..Default::default()
            };
        };
        let state = self.state();
        pb::RunningRelease {
            expired: state
                .running
                .as_ref()
                .is_some_and(|r| r.expire_time_ms <= now_ms),
            verified: state.running.is_some() && state.content != Some(false),
            release: state.running.clone(),
            key_configured: true,
            key_id: key.key_id(),
            not_running: state
                .not_running
                .iter()
                .map(|(release, refusal)| pb::ReleaseCheck {
                    release: Some(release.clone()),
                    reason: refusal.to_string(),
                    older: refusal.older(),
                })
                .collect(),
            awaiting_release: state.running.is_some() && state.content == Some(false),
            handbook_generation: sfs_sync::engine::generation_of(doc),
        }
    }
}

/// Writes the running release into the city's own `shared/progress/{city}` (only the city can
/// change it, so the hub cannot misstate it to other nodes), if it changed.
fn report_to_hub(sync: &SyncHandle, running: Option<&pb::Release>) {
    use automerge::transaction::Transactable;
    let Ok(doc) = crate::domain::progress::progress_doc(sync.me().name()) else {
        return;
    };
    let now = running
        .map(|r| (r.version_label.clone(), r.number))
        .unwrap_or_default();
    let recorded = sync.read(|engine| engine.document(&doc).map(reported_release));
    if recorded.as_ref() == Some(&now) || (recorded.is_none() && running.is_none()) {
        return;
    }
    let result = sync.edit(&doc, |tx| {
        tx.put(automerge::ROOT, "running_release", now.0.as_str())?;
        tx.put(automerge::ROOT, "running_release_number", now.1)
    });
    if let Err(err) = result {
        tracing::warn!(error = %err, "recording the running handbook release in the progress document failed");
    }
}

/// Re-evaluates the releases at start and whenever `national/method` changes, until shutdown.
pub async fn track(
    sync: Arc<SyncHandle>,
    tracker: Arc<ReleaseTracker>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    if tracker.key().is_none() {
        return;
    }
    let mut changes = sync.subscribe_changes();
    let mut first = true;
    loop {
        let relevant = if std::mem::take(&mut first) {
            true
        } else {
            tokio::select! {
                changed = changes.recv() => match changed {
                    Ok(doc) => doc == method::method_doc(),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            }
        };
        if !relevant {
            continue;
        }
        let (sync, tracker) = (sync.clone(), tracker.clone());
        let result = tokio::task::spawn_blocking(move || {
            tracker.refresh(&sync, crate::domain::model::now_ms())
        })
        .await;
        if let Ok(Err(err)) = result {
            tracing::error!(error = %err, "storing the running handbook release failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::release::tests::{key, signed};

    #[test]
    fn the_running_release_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let release = signed(&k, &"ab".repeat(32), 7, "7");
        let tracker = ReleaseTracker::open(Some(k.public_key()), dir.path()).unwrap();
        tracker.store(Some(&release)).unwrap();
        let reopened = ReleaseTracker::open(Some(k.public_key()), dir.path()).unwrap();
        assert_eq!(reopened.running(), Some(release));
        let without_key = ReleaseTracker::open(None, dir.path()).unwrap();
        assert_eq!(without_key.running(), None);
    }
}
