//! What a source hands the core: one revision of the config repository, as bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

/// One revision of the config repository: its identity and every file's bytes.
///
/// Sources (Git, a local folder, an embedded default) produce it; the pure core consumes it.
/// Paths are relative to the repository root (or the configured sub-path), `/`-separated.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// A commit SHA for Git, a content hash for a folder.
    pub revision: String,
    /// File contents by path.
    pub files: BTreeMap<String, Arc<[u8]>>,
}

impl Snapshot {
    /// An empty snapshot of `revision`.
    pub fn new(revision: impl Into<String>) -> Self {
        Snapshot {
            revision: revision.into(),
            files: BTreeMap::new(),
        }
    }

    /// Add a file (builder style, handy in tests).
    pub fn with_file(mut self, path: impl Into<String>, contents: impl AsRef<[u8]>) -> Self {
        self.insert(path, contents);
        self
    }

    /// Add or replace a file.
    pub fn insert(&mut self, path: impl Into<String>, contents: impl AsRef<[u8]>) {
        self.files.insert(path.into(), Arc::from(contents.as_ref()));
    }

    /// The YAML files format v1 reads: `*.yaml` and `*.yml`, in path order.
    pub fn yaml_files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files
            .iter()
            .filter(|(p, _)| p.ends_with(".yaml") || p.ends_with(".yml"))
            .map(|(p, b)| (p.as_str(), &b[..]))
    }

    /// A revision id for content without a commit (a folder): sha-256 over paths and bytes.
    pub fn content_revision(files: &BTreeMap<String, Arc<[u8]>>) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (path, bytes) in files {
            h.update((path.len() as u64).to_be_bytes());
            h.update(path.as_bytes());
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        format!("content-{}", &hex::encode(h.finalize())[..16])
    }
}
