//! Durable file writes: every file the node and the CLI write outside sled goes through here.
//!
//! A file written with a plain `write` lives in the page cache until the kernel writes it back;
//! a power cut before that leaves it empty or torn, also long after the call returned (a node
//! whose certificates were written so refused to start after a cut). [`write`] writes a
//! temporary file in the same directory, fsyncs it, renames it over the target and fsyncs the
//! directory: after a crash the path holds the old content or the new one, complete. The
//! temporary file is made by `tempfile` (a name no other writer uses, removed on failure).

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Who may read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only its owner (mode 0600): keys, tokens, backups, local data.
    Private,
    /// Anyone (mode 0644): certificates, public keys, configuration.
    Public,
}

impl Access {
    fn permissions(self) -> Permissions {
        Permissions::from_mode(match self {
            Access::Private => 0o600,
            Access::Public => 0o644,
        })
    }
}

/// Writes `bytes` to `path` durably, replacing what was there.
pub fn write(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    put(path, bytes, access, true)
}

/// Writes `bytes` to a new file at `path`, durably; fails with `AlreadyExists` (and changes
/// nothing) if something is there already.
pub fn write_new(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    put(path, bytes, access, false)
}

fn put(path: &Path, bytes: &[u8], access: Access, replace: bool) -> io::Result<()> {
    let dir = parent(path);
    let mut file = tempfile::Builder::new()
        .prefix(".sfs-")
        .suffix(".partial")
        .permissions(access.permissions())
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    if replace {
        file.persist(path).map_err(|err| err.error)?;
    } else {
        file.persist_noclobber(path).map_err(|err| err.error)?;
    }
    sync_dir(dir)
}

/// Appends `bytes` to `path` (created with `access` if missing) and makes them durable.
pub fn append(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    let created = !path.exists();
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, access.permissions().mode());
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if created {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// Fsyncs a directory, so that the names created or renamed in it survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_replace_whole_files_with_their_modes_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        let cert = dir.path().join("node.crt");
        write(&key, b"secret", Access::Private).unwrap();
        write(&cert, b"public", Access::Public).unwrap();
        write(&key, b"secret 2", Access::Private).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"secret 2");
        assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&cert).unwrap().mode() & 0o777, 0o644);
        let err = write_new(&key, b"other", Access::Private).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret 2");
        write_new(&dir.path().join("new"), b"n", Access::Private).unwrap();
        append(&dir.path().join("log"), b"a\n", Access::Private).unwrap();
        append(&dir.path().join("log"), b"b\n", Access::Private).unwrap();
        assert_eq!(std::fs::read(dir.path().join("log")).unwrap(), b"a\nb\n");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["log", "new", "node.crt", "node.key"]);
    }

    #[test]
    fn a_file_in_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/file");
        assert!(write(&path, b"x", Access::Public).is_err());
    }
}
