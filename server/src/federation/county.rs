//! The cities a county hub serves: those its configuration names (`county.cities`) and those
//! the county coordinator onboarded since through the API (`Directory.CreateCity` at the county
//! hub), kept in `county-cities.json` in the data directory and written durably. The federation
//! listener admits exactly these cities; the county's directory, adoption view and figures
//! count exactly these.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// File in the data directory holding the cities onboarded through the API.
pub const MEMBERS_FILE: &str = "county-cities.json";

/// Why the county's list of cities could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum CountyError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a list of city ids: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{0} is named in county.cities of this county hub's configuration; remove it there \
         (and restart) to stop serving it"
    )]
    Configured(String),
}

/// The cities a county hub serves. See the module documentation.
#[derive(Debug)]
pub struct CountyMembers {
    file: PathBuf,
    configured: BTreeSet<String>,
    onboarded: RwLock<BTreeSet<String>>,
}

impl CountyMembers {
    /// The configured cities and those onboarded before, read from `data_dir`.
    pub fn open(data_dir: &Path, configured: &[String]) -> Result<CountyMembers, CountyError> {
        let file = data_dir.join(MEMBERS_FILE);
        let onboarded = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| CountyError::Format {
                path: file.clone(),
                source,
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => return Err(CountyError::Io { path: file, source }),
        };
        Ok(CountyMembers {
            file,
            configured: configured.iter().cloned().collect(),
            onboarded: RwLock::new(onboarded),
        })
    }

    fn onboarded(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<String>> {
        self.onboarded.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the county hub serves `city`.
    pub fn contains(&self, city: &str) -> bool {
        self.configured.contains(city) || self.onboarded().contains(city)
    }

    /// Every city the county hub serves.
    pub fn list(&self) -> BTreeSet<String> {
        let mut all = self.configured.clone();
        all.extend(self.onboarded().iter().cloned());
        all
    }

    /// Onboards `city`; `false` if it was served already. Durable when it returns.
    pub fn add(&self, city: &str) -> Result<bool, CountyError> {
        let mut onboarded = self.onboarded.write().unwrap_or_else(|p| p.into_inner());
        if self.configured.contains(city) || onboarded.contains(city) {
            return Ok(false);
        }
        let mut next = onboarded.clone();
        next.insert(city.to_string());
        self.store(&next)?;
        *onboarded = next;
        Ok(true)
    }

    /// Stops serving `city`, onboarded through the API; `false` if it was not served. A city
    /// of the configuration is refused ([`CountyError::Configured`]).
    pub fn remove(&self, city: &str) -> Result<bool, CountyError> {
        if self.configured.contains(city) {
            return Err(CountyError::Configured(city.to_string()));
        }
        let mut onboarded = self.onboarded.write().unwrap_or_else(|p| p.into_inner());
        if !onboarded.contains(city) {
            return Ok(false);
        }
        let mut next = onboarded.clone();
        next.remove(city);
        self.store(&next)?;
        *onboarded = next;
        Ok(true)
    }

    fn store(&self, cities: &BTreeSet<String>) -> Result<(), CountyError> {
        let bytes = serde_json::to_vec_pretty(cities).expect("a set of strings serialises");
        sfs_durable::write(&self.file, &bytes, sfs_durable::Access::Private).map_err(|source| {
            CountyError::Io {
                path: self.file.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onboarded_cities_are_kept_across_a_restart_and_configured_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let members = CountyMembers::open(dir.path(), &["malmo".to_string()]).unwrap();
        assert!(members.contains("malmo") && !members.contains("lund"));
        assert!(members.add("lund").unwrap());
        assert!(!members.add("lund").unwrap());
        assert!(!members.add("malmo").unwrap());
        let reopened = CountyMembers::open(dir.path(), &["malmo".to_string()]).unwrap();
        assert_eq!(
            reopened.list().into_iter().collect::<Vec<_>>(),
            ["lund", "malmo"]
        );
        assert!(matches!(
            reopened.remove("malmo"),
            Err(CountyError::Configured(_))
        ));
        assert!(reopened.remove("lund").unwrap());
        assert!(!reopened.remove("lund").unwrap());
        let again = CountyMembers::open(dir.path(), &[]).unwrap();
        assert!(again.list().is_empty());
    }

    #[test]
    fn a_damaged_list_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MEMBERS_FILE), b"not json").unwrap();
        let err = CountyMembers::open(dir.path(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(MEMBERS_FILE), "{err}");
    }
}
