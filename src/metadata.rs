//! A small file-based store under `JOBYARD_DATA_DIR` for what must outlive a process but is
//! not a job: user preferences, tool configurations, cache-warming metadata. One JSON
//! document per name.
//!
//! Writes are atomic (temp file, fsync, rename, fsync of the directory), so a crash leaves the
//! old document or the new one, never half of one. A document that does not parse is reported,
//! moved aside as `<name>.json.corrupt-<unix time>` and read as absent: never a crash.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of the metadata store.
///
/// ```
/// use jobyard::metadata::{MetadataError, MetadataStore};
///
/// let store = MetadataStore::new(std::env::temp_dir().join("jobyard-metadata-example"));
/// // Names are 1 to 64 of [a-z0-9_-]: no path can sneak in.
/// let err = store.save("../etc/passwd", &"x").unwrap_err();
/// assert!(matches!(err, MetadataError::InvalidName(name) if name == "../etc/passwd"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The name is not 1 to 64 lowercase ASCII letters, digits, `_` or `-`; holds the name.
    #[error("metadata name '{0}' is invalid: use 1 to 64 of [a-z0-9_-]")]
    InvalidName(String),
    /// Reading or writing the store failed.
    #[error("metadata store at {path}: {source}")]
    Io {
        /// The document (or the store's directory) involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The value cannot be serialised as JSON.
    #[error("metadata '{name}' cannot be serialised: {message}")]
    Encode {
        /// The document's name.
        name: String,
        /// The serialiser's error.
        message: String,
    },
}

/// The document holding the cache keys to warm at the next start (written by the cache
/// actor); no user document may take its name.
pub const WARMING_DOC: &str = "cache-warming";

/// Checks a document name: 1 to 64 of `[a-z0-9_-]`, so that no path can sneak in.
pub fn validate_name(name: &str) -> Result<(), MetadataError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(MetadataError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// The store: a directory of JSON documents.
///
/// ```
/// use jobyard::metadata::MetadataStore;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Prefs {
///     theme: String,
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A runtime's user documents (`runtime.metadata()`) are kept here, under
/// // `JOBYARD_DATA_DIR`, when it runs without Redis.
/// let dir = std::env::temp_dir().join(format!("jobyard-metadata-{}", std::process::id()));
/// let store = MetadataStore::new(&dir);
/// store.save("prefs", &Prefs { theme: "dark".into() })?;
/// assert_eq!(store.load::<Prefs>("prefs")?, Some(Prefs { theme: "dark".into() }));
/// assert_eq!(store.load::<Prefs>("missing")?, None);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MetadataStore {
    dir: PathBuf,
}

impl MetadataStore {
    /// A store in `dir`; the directory is created on the first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MetadataStore { dir: dir.into() }
    }

    /// The directory the documents are kept in.
    ///
    /// ```
    /// use std::path::Path;
    /// use jobyard::metadata::MetadataStore;
    ///
    /// assert_eq!(MetadataStore::new("/var/lib/jobyard").dir(), Path::new("/var/lib/jobyard"));
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, MetadataError> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Removes the document `name`; true when it existed.
    pub fn delete(&self, name: &str) -> Result<bool, MetadataError> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(MetadataError::Io { path, source }),
        }
    }

    /// The names of the documents in the store, sorted (none when the directory does not
    /// exist yet).
    pub fn names(&self) -> Result<Vec<String>, MetadataError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(MetadataError::Io { path: self.dir.clone(), source }),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|file| file.strip_suffix(".json").map(str::to_owned))
            .filter(|name| validate_name(name).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The document `name`, or `None` when it does not exist (or was corrupt, and set aside).
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, MetadataError> {
        let path = self.path(name)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                let stamp = chrono::Utc::now().timestamp();
                let aside = path.with_extension(format!("json.corrupt-{stamp}"));
                let moved = fs::rename(&path, &aside);
                tracing::warn!(
                    path = %path.display(),
                    aside = %aside.display(),
                    moved = moved.is_ok(),
                    "metadata document is corrupt ({err}); set aside and ignored"
                );
                Ok(None)
            }
        }
    }

    /// Replaces the document `name` with `value`, atomically.
    pub fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), MetadataError> {
        let path = self.path(name)?;
        let bytes = serde_json::to_vec_pretty(value).map_err(|err| MetadataError::Encode {
            name: name.to_owned(),
            message: err.to_string(),
        })?;
        let io = |source| MetadataError::Io { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(io)?;
        // A name of its own per write: two saves of one document may run at once.
        let temp = self.dir.join(format!(
            ".{name}.json.tmp-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            // The rename itself is durable only once the directory is.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&temp);
            io(source)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Prefs {
        theme: String,
    }

    #[test]
    fn a_document_round_trips_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(dir.path().join("nested"));
        assert_eq!(store.load::<Prefs>("prefs").unwrap(), None);
        store.save("prefs", &Prefs { theme: "dark".into() }).unwrap();
        store.save("prefs", &Prefs { theme: "light".into() }).unwrap();
        assert_eq!(store.load::<Prefs>("prefs").unwrap(), Some(Prefs { theme: "light".into() }));
        let leftovers: Vec<_> =
            fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");
    }

    #[test]
    fn a_corrupt_document_is_set_aside_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(dir.path());
        fs::write(dir.path().join("prefs.json"), b"{\"theme\": ").unwrap();
        assert_eq!(store.load::<Prefs>("prefs").unwrap(), None);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("prefs.json.corrupt-")), "{names:?}");
        assert!(!names.contains(&"prefs.json".to_owned()));
    }

    #[test]
    fn io_failures_are_errors_that_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("prefs.json")).unwrap();
        let store = MetadataStore::new(dir.path());
        let err = store.load::<Prefs>("prefs").unwrap_err();
        assert!(err.to_string().contains("prefs.json"), "{err}");
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err =
            MetadataStore::new(&file).save("prefs", &Prefs { theme: "x".into() }).unwrap_err();
        assert!(matches!(err, MetadataError::Io { .. }), "{err}");
        // The rename onto a directory fails after the temp file was written: it is removed.
        let err = store.save("prefs", &Prefs { theme: "x".into() }).unwrap_err();
        assert!(matches!(err, MetadataError::Io { .. }), "{err}");
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!names.iter().any(|n| n.to_string_lossy().contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn a_value_that_cannot_be_serialised_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let odd: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let err = MetadataStore::new(dir.path()).save("odd", &odd).unwrap_err();
        assert!(matches!(err, MetadataError::Encode { .. }), "{err}");
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let store = MetadataStore::new("/tmp/unused");
        assert!(matches!(store.load::<Prefs>("../etc/passwd"), Err(MetadataError::InvalidName(_))));
        assert!(matches!(store.save("", &1), Err(MetadataError::InvalidName(_))));
    }

    #[test]
    fn documents_are_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(dir.path().join("docs"));
        assert_eq!(store.names().unwrap(), Vec::<String>::new());
        store.save("b", &1).unwrap();
        store.save("a", &2).unwrap();
        assert_eq!(store.names().unwrap(), ["a", "b"]);
        assert!(store.delete("a").unwrap());
        assert!(!store.delete("a").unwrap());
        assert_eq!(store.names().unwrap(), ["b"]);
    }
}
