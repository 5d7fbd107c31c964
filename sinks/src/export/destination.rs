//! Where an export's files go: an object-store prefix (`s3://`, `gs://`, `az://`,
//! `file://`, `memory://`), or an HTTPS endpoint ([`super::http`]). Writing a name again
//! replaces it.

use std::sync::Arc;

use super::http::HttpTarget;
use crate::{Error, Result};
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// Where an export's files go.
#[derive(Clone)]
pub enum Destination {
    /// An object-store prefix (`s3://`, `gs://`, `az://`, `file://`, `memory://`).
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: Path,
    },
    Http(Box<HttpTarget>),
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Store { store, prefix } => write!(f, "Store({store}, {prefix})"),
            Destination::Http(t) => write!(f, "Http({})", t.url),
        }
    }
}

impl Destination {
    /// Writes (or replaces) `name` under the prefix / POSTs it.
    pub async fn put(&self, name: &str, bytes: Bytes, content_type: &str) -> Result<()> {
        match self {
            Destination::Store { store, prefix } => {
                let path = join(prefix, name);
                store
                    .put(&path, bytes.into())
                    .await
                    .map_err(|e| Error::Export(format!("writing {path}: {e}")))?;
                Ok(())
            }
            Destination::Http(t) => t.post(name, bytes, content_type).await,
        }
    }

    /// The names (relative to the prefix) that start with `start`; nothing for HTTP.
    /// Lists from `start` on (`list_with_offset`), so a directory of many older windows is
    /// not read each time.
    pub async fn list(&self, start: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let Destination::Store { store, prefix } = self else {
            return Ok(Vec::new());
        };
        let full = join(prefix, start);
        let parts: Vec<_> = full.parts().collect();
        let dir: Path = parts[..parts.len().saturating_sub(1)]
            .iter()
            .cloned()
            .collect();
        let file_prefix = full.filename().unwrap_or_default().to_string();
        let listed: Vec<_> = store
            .list_with_offset(Some(&dir), &full)
            .try_collect()
            .await
            .map_err(|e| Error::Export(format!("listing {dir}: {e}")))?;
        let base = prefix.as_ref();
        let mut names: Vec<String> = listed
            .into_iter()
            .filter(|m| {
                m.location.parts().count() == parts.len()
                    && m.location
                        .filename()
                        .is_some_and(|f| f.starts_with(&file_prefix))
            })
            .map(|m| {
                let loc = m.location.as_ref();
                loc.strip_prefix(base)
                    .unwrap_or(loc)
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes `name` (missing is fine); nothing for HTTP.
    pub async fn delete(&self, name: &str) -> Result<()> {
        if let Destination::Store { store, prefix } = self {
            let path = join(prefix, name);
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::Export(format!("deleting {path}: {e}"))),
            }
        }
        Ok(())
    }

    /// Reads `name` back (tests and verification); `None` for HTTP.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let Destination::Store { store, prefix } = self else {
            return Ok(None);
        };
        let path = join(prefix, name);
        match store.get(&path).await {
            Ok(r) => {
                Ok(Some(r.bytes().await.map_err(|e| {
                    Error::Export(format!("reading {path}: {e}"))
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Export(format!("reading {path}: {e}"))),
        }
    }
}

fn join(prefix: &Path, name: &str) -> Path {
    name.split('/')
        .filter(|p| !p.is_empty())
        .fold(prefix.clone(), |p, part| p.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_schemes_are_named_in_errors() {
        let e = super::super::Format::parse("xml", "format")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("format: unknown format \"xml\""), "{e}");
    }

    #[tokio::test]
    async fn store_destination_replaces_and_lists_by_prefix() {
        let dir = tempfile_dir();
        let url = url::Url::from_directory_path(&dir).expect("url");
        let rules = super::super::DestinationRules {
            file_roots: vec![dir.clone()],
            ..Default::default()
        };
        let (store, prefix) =
            super::super::open_store(&url, &Default::default(), "d", &rules).expect("open");
        let d = Destination::Store { store, prefix };
        d.put("events/a-b.csv", Bytes::from("1"), "text/csv")
            .await
            .expect("put");
        d.put("events/a-b-1.csv", Bytes::from("2"), "text/csv")
            .await
            .expect("put");
        d.put("events/a-c.csv", Bytes::from("3"), "text/csv")
            .await
            .expect("put");
        d.put("events/a-b.csv", Bytes::from("4"), "text/csv")
            .await
            .expect("replace");
        assert_eq!(
            d.list("events/a-b").await.expect("list"),
            vec!["events/a-b-1.csv", "events/a-b.csv"]
        );
        assert_eq!(
            d.get("events/a-b.csv").await.expect("get"),
            Some(Bytes::from("4"))
        );
        d.delete("events/a-b-1.csv").await.expect("delete");
        d.delete("events/missing").await.expect("missing is fine");
        assert_eq!(
            d.list("events/a-").await.expect("list"),
            vec!["events/a-b.csv", "events/a-c.csv"]
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tidemark-sinks-export-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
