//! Small JSON documents every instance must see alike: user metadata (preferences, dashboard
//! layouts), tool configurations and tool state. In Redis when Redis is configured (one hash
//! per [`Namespace`], so every instance sharing the prefix reads the same documents), in the
//! file-based [`MetadataStore`] under `JOBYARD_DATA_DIR` otherwise (one directory per
//! namespace; user metadata at its root, where [`MetadataStore`] has always kept it).
//!
//! It stores JSON values and knows nothing of what they mean: the tools and the HTTP API
//! give them their types. Names follow the metadata store's rule (1 to 64 of `[a-z0-9_-]`).

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::metadata::{validate_name, MetadataError, MetadataStore};
#[cfg(feature = "redis")]
use crate::redis::{Keys, RedisClient, RedisError};

/// Errors of the document store.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The name breaks the naming rule (see [`validate_name`]).
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// Redis, where the documents live, could not be used.
    #[cfg(feature = "redis")]
    #[error("document store: {0}")]
    Redis(#[from] RedisError),
    /// A stored document does not decode as the type asked for.
    #[error("document '{name}' is unreadable: {message}")]
    Decode {
        /// The document's name.
        name: String,
        /// The decoder's error.
        message: String,
    },
}

/// The kinds of documents, each in a space of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// `/v1/metadata/{name}` and `Runtime::metadata()`.
    Metadata,
    /// Tool configurations.
    Tools,
    /// What each tool's refreshes found out (see `tools::state`).
    ToolState,
}

impl Namespace {
    fn as_str(self) -> &'static str {
        match self {
            Namespace::Metadata => "meta",
            Namespace::Tools => "tools",
            Namespace::ToolState => "tool-state",
        }
    }
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Documents {
    backend: Backend,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents").field("backend", &self.backend()).finish()
    }
}

#[derive(Clone)]
enum Backend {
    File(PathBuf),
    #[cfg(feature = "redis")]
    Redis(RedisClient, Keys),
}

impl Documents {
    /// Documents in files under `dir` (`JOBYARD_DATA_DIR`).
    pub fn files(dir: impl Into<PathBuf>) -> Self {
        Documents { backend: Backend::File(dir.into()) }
    }

    /// Documents in Redis under `prefix` (`JOBYARD_REDIS_PREFIX`).
    #[cfg(feature = "redis")]
    pub fn redis(client: RedisClient, prefix: &str) -> Self {
        Documents { backend: Backend::Redis(client, Keys::new(prefix)) }
    }

    /// `"redis"` or `"file"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::File(_) => "file",
            #[cfg(feature = "redis")]
            Backend::Redis(..) => "redis",
        }
    }

    fn store(dir: &std::path::Path, ns: Namespace) -> MetadataStore {
        match ns {
            Namespace::Metadata => MetadataStore::new(dir),
            other => MetadataStore::new(dir.join(other.as_str())),
        }
    }

    /// The document `name`, or `None`.
    pub async fn get_value(
        &self,
        ns: Namespace,
        name: &str,
    ) -> Result<Option<Value>, DocumentError> {
        validate_name(name)?;
        match &self.backend {
            Backend::File(dir) => {
                let store = Self::store(dir, ns);
                let name = name.to_owned();
                Ok(blocking(move || store.load::<Value>(&name)).await?)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(client, keys) => {
                let cmd = ::redis::cmd("HGET").arg(keys.documents(ns.as_str())).arg(name).clone();
                let raw: Option<String> = client.cmd(&cmd, true).await?;
                raw.map(|raw| decode(name, &raw)).transpose()
            }
        }
    }

    /// Stores `value` as the document `name`; true when it was created.
    pub async fn put_value(
        &self,
        ns: Namespace,
        name: &str,
        value: &Value,
    ) -> Result<bool, DocumentError> {
        validate_name(name)?;
        reserved(ns, name)?;
        match &self.backend {
            Backend::File(dir) => {
                let store = Self::store(dir, ns);
                let (name, value) = (name.to_owned(), value.clone());
                Ok(blocking(move || {
                    let existed = store.load::<Value>(&name)?.is_some();
                    store.save(&name, &value).map(|()| !existed)
                })
                .await?)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(client, keys) => {
                let key = keys.documents(ns.as_str());
                let cmd = ::redis::cmd("HSET").arg(key).arg(name).arg(value.to_string()).clone();
                let added: i64 = client.cmd(&cmd, true).await?;
                Ok(added == 1)
            }
        }
    }

    /// Removes the document `name`; true when it existed.
    pub async fn delete(&self, ns: Namespace, name: &str) -> Result<bool, DocumentError> {
        validate_name(name)?;
        reserved(ns, name)?;
        match &self.backend {
            Backend::File(dir) => {
                let store = Self::store(dir, ns);
                let name = name.to_owned();
                Ok(blocking(move || store.delete(&name)).await?)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(client, keys) => {
                let cmd = ::redis::cmd("HDEL").arg(keys.documents(ns.as_str())).arg(name).clone();
                let removed: i64 = client.cmd(&cmd, true).await?;
                Ok(removed == 1)
            }
        }
    }

    /// Every document of `ns`, by name.
    pub async fn list_values(&self, ns: Namespace) -> Result<Vec<(String, Value)>, DocumentError> {
        match &self.backend {
            Backend::File(dir) => {
                let store = Self::store(dir, ns);
                Ok(blocking(move || {
                    let mut docs = Vec::new();
                    for name in store.names()? {
                        if let Some(value) = store.load::<Value>(&name)? {
                            docs.push((name, value));
                        }
                    }
                    Ok(docs)
                })
                .await?)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(client, keys) => {
                let cmd = ::redis::cmd("HGETALL").arg(keys.documents(ns.as_str())).clone();
                let raw: std::collections::BTreeMap<String, String> =
                    client.cmd(&cmd, true).await?;
                raw.into_iter()
                    .map(|(name, raw)| Ok((name.clone(), decode(&name, &raw)?)))
                    .collect()
            }
        }
    }

    /// The document `name` as a `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        ns: Namespace,
        name: &str,
    ) -> Result<Option<T>, DocumentError> {
        self.get_value(ns, name).await?.map(|value| typed(name, value)).transpose()
    }

    /// Stores `value` as the document `name`; true when it was created.
    pub async fn put<T: Serialize>(
        &self,
        ns: Namespace,
        name: &str,
        value: &T,
    ) -> Result<bool, DocumentError> {
        let value = serde_json::to_value(value).map_err(|err| MetadataError::Encode {
            name: name.to_owned(),
            message: err.to_string(),
        })?;
        self.put_value(ns, name, &value).await
    }

    /// Every document of `ns` as a `T`, by name; one that does not decode is logged and left
    /// out (a newer instance may have stored it).
    pub async fn list<T: DeserializeOwned>(
        &self,
        ns: Namespace,
    ) -> Result<Vec<(String, T)>, DocumentError> {
        let mut docs = Vec::new();
        for (name, value) in self.list_values(ns).await? {
            match typed(&name, value) {
                Ok(doc) => docs.push((name, doc)),
                Err(err) => tracing::warn!("{err}"),
            }
        }
        Ok(docs)
    }
}

/// The user metadata documents (preferences, dashboard layouts) as the embedding API reads and
/// writes them: the same documents `/v1/metadata/{name}` serves, so in Redis when it is
/// configured (every instance reads the same), in files under `JOBYARD_DATA_DIR` otherwise.
///
/// ```no_run
/// # async fn demo(runtime: jobyard::Runtime) -> Result<(), jobyard::documents::DocumentError> {
/// let prefs = serde_json::json!({"theme": "dark"});
/// runtime.metadata().save("preferences", &prefs).await?;
/// assert_eq!(runtime.metadata().load::<serde_json::Value>("preferences").await?, Some(prefs));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Metadata(Documents);

impl Metadata {
    /// The metadata documents of `docs`.
    pub fn new(docs: Documents) -> Self {
        Metadata(docs)
    }

    /// The document `name` as a `T`, or `None`.
    pub async fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, DocumentError> {
        self.0.get(Namespace::Metadata, name).await
    }

    /// Replaces the document `name` with `value`; true when it was created.
    pub async fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<bool, DocumentError> {
        self.0.put(Namespace::Metadata, name, value).await
    }

    /// Removes the document `name`; true when it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, DocumentError> {
        self.0.delete(Namespace::Metadata, name).await
    }
}

/// User metadata shares the data directory with the cache warming's own document: its name is
/// not one a user may write.
fn reserved(ns: Namespace, name: &str) -> Result<(), DocumentError> {
    if ns == Namespace::Metadata && name == crate::metadata::WARMING_DOC {
        return Err(MetadataError::InvalidName(name.to_owned()).into());
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, DocumentError> {
    serde_json::from_value(value)
        .map_err(|err| DocumentError::Decode { name: name.to_owned(), message: err.to_string() })
}

#[cfg(feature = "redis")]
fn decode(name: &str, raw: &str) -> Result<Value, DocumentError> {
    serde_json::from_str(raw)
        .map_err(|err| DocumentError::Decode { name: name.to_owned(), message: err.to_string() })
}

/// File I/O off the async threads (an fsync per write).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MetadataError> + Send + 'static,
) -> Result<T, MetadataError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) => Err(MetadataError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(format!("the file task failed: {err}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_documents_round_trip_by_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let docs = Documents::files(dir.path());
        let value = serde_json::json!({"theme": "dark"});
        assert!(docs.put_value(Namespace::Metadata, "prefs", &value).await.unwrap());
        assert!(!docs.put_value(Namespace::Metadata, "prefs", &value).await.unwrap());
        assert!(docs.get_value(Namespace::Tools, "prefs").await.unwrap().is_none());
        assert_eq!(docs.get_value(Namespace::Metadata, "prefs").await.unwrap(), Some(value));
        // User metadata is where `MetadataStore` keeps it.
        assert!(dir.path().join("prefs.json").exists());
        docs.put(Namespace::Tools, "gh", &1).await.unwrap();
        assert_eq!(docs.list::<u32>(Namespace::Tools).await.unwrap(), [("gh".to_owned(), 1)]);
        assert!(docs.delete(Namespace::Tools, "gh").await.unwrap());
        assert!(!docs.delete(Namespace::Tools, "gh").await.unwrap());
        let one = serde_json::json!(1);
        let warming = docs.put_value(Namespace::Metadata, "cache-warming", &one).await;
        assert!(warming.is_err(), "reserved");
        assert!(matches!(
            docs.get_value(Namespace::Tools, "../x").await,
            Err(DocumentError::Metadata(MetadataError::InvalidName(_)))
        ));
    }
}
