//! The data directory and the database file as files: made private to the node's user before
//! redb opens them, since the database holds every value the node stores.
//!
//! A directory this makes is mode 0700 (its missing parents too), the database file 0600. An
//! existing directory or database file that its group or others may access is tightened to the
//! owner's bits alone, with a warning naming the old mode, rather than refused: directories made
//! before this check (0755 under the usual umask) keep working. What cannot be tightened (not
//! ours to chmod) is refused with [`OpenError::DataDir`].
//!
//! Not here: what is inside the file (`redb_storage`, `record`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::OpenError;
use crate::redb_storage::DATABASE_FILE;

/// Permission bits of a data directory this makes.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Permission bits of a database file this makes.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;
/// The bits that let the group or others in.
#[cfg(unix)]
const OTHERS_BITS: u32 = 0o077;

/// Makes `dir` (or takes it as it is) and the empty database file in it if there is none, both
/// private; returns the database file's path.
pub(crate) fn prepare(dir: &Path) -> Result<PathBuf, OpenError> {
    let failed = |path: &Path, source: std::io::Error| OpenError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir).map_err(|e| failed(dir, e))?;
    make_private(dir)?;

    let file = dir.join(DATABASE_FILE);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    // redb initialises an empty file as a new database.
    match options.open(&file) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed(&file, e)),
    }
    make_private(&file)?;
    Ok(file)
}

/// Takes the group's and others' bits off `path` if it has any.
#[cfg(unix)]
fn make_private(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::PermissionsExt;
    let refuse = |source: std::io::Error| OpenError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path).map_err(refuse)?.permissions().mode() & 0o7777;
    if mode & OTHERS_BITS == 0 {
        return Ok(());
    }
    let private = mode & !OTHERS_BITS;
    fs::set_permissions(path, fs::Permissions::from_mode(private)).map_err(|e| {
        refuse(std::io::Error::new(
            e.kind(),
            format!(
                "its group or others may access it (mode {mode:o}) and it cannot be made \
                 private ({e}): run `chmod go-rwx {}`",
                path.display()
            ),
        ))
    })?;
    tracing::warn!(
        path = %path.display(),
        was = %format!("{mode:o}"),
        now = %format!("{private:o}"),
        "the data directory or database was open to group or others: made private"
    );
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> Result<(), OpenError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use shoal_types::{Incarnation, NodeId, PartitionCount};

    use super::*;
    use crate::RedbStorage;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn open(dir: &Path) -> RedbStorage {
        let node = NodeId::new("n1").unwrap();
        let q = PartitionCount::new(4).unwrap();
        RedbStorage::open(dir, &node, q, Incarnation::new(1))
            .unwrap()
            .0
    }

    #[test]
    fn a_new_data_directory_and_its_database_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data/n1");
        let storage = open(&dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("data")), 0o700);
        assert_eq!(mode(&dir.join(DATABASE_FILE)), 0o600);
        storage.close_clean().unwrap();
        // And it opens again as the same database.
        let storage = open(&dir);
        assert!(!storage.run_start().after_unclean_stop());
        storage.close_clean().unwrap();
    }

    #[test]
    fn an_existing_data_directory_open_to_others_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("n1");
        open(&dir).close_clean().unwrap();
        let file = dir.join(DATABASE_FILE);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
        let storage = open(&dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        storage.close_clean().unwrap();
    }
}
