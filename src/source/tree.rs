//! One Git tree read into a [`Snapshot`]: the rules both the Git source (a polled remote's
//! commit) and `--base` (a revision of a local checkout) apply, in one place.
//!
//! Blobs are read straight from the tree (no worktree, no checkout races). Symbolic links and
//! submodules are never followed, files over the size limit and names that are not UTF-8 are
//! left out, and everything left out is reported.

use git2::{ObjectType, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};
use gitamp_core::Snapshot;

use super::{SkipReason, SkippedFile, SourceSnapshot};

/// What could not be read, and libgit2's reason; callers wrap it in their own error type.
pub type TreeReadError = (String, git2::Error);

/// Every file of `tree` (paths relative to it) as a snapshot whose revision is `revision`.
pub fn tree_snapshot(
    repo: &Repository,
    tree: &Tree<'_>,
    revision: &str,
    max_file_size: u64,
) -> Result<SourceSnapshot, TreeReadError> {
    // Collect first: the walk callback cannot return our errors.
    let mut entries: Vec<(String, Oid, i32)> = Vec::new();
    let mut skipped = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            skipped.push(SkippedFile {
                path: format!("{dir}{}", String::from_utf8_lossy(entry.name_bytes())),
                reason: SkipReason::NonUtf8Name,
            });
            return TreeWalkResult::Skip;
        };
        if entry.kind() != Some(ObjectType::Tree) {
            entries.push((format!("{dir}{name}"), entry.id(), entry.filemode()));
        }
        TreeWalkResult::Ok
    })
    .map_err(|e| (format!("the tree of {revision}"), e))?;

    let odb = repo
        .odb()
        .map_err(|e| ("the object database".to_string(), e))?;
    let mut snapshot = Snapshot::new(revision.to_string());
    for (path, id, mode) in entries {
        let reason = match mode {
            0o120000 => Some(SkipReason::Symlink),
            0o160000 => Some(SkipReason::Submodule),
            _ => None,
        };
        if let Some(reason) = reason {
            skipped.push(SkippedFile { path, reason });
            continue;
        }
        let (size, _) = odb
            .read_header(id)
            .map_err(|e| (format!("{path} in {revision}"), e))?;
        if size as u64 > max_file_size {
            skipped.push(SkippedFile {
                path,
                reason: SkipReason::TooLarge {
                    size: size as u64,
                    limit: max_file_size,
                },
            });
            continue;
        }
        let blob = repo
            .find_blob(id)
            .map_err(|e| (format!("{path} in {revision}"), e))?;
        snapshot.insert(path, blob.content());
    }
    Ok(SourceSnapshot {
        snapshot,
        skipped,
        signature: None,
        commit: None,
    })
}
