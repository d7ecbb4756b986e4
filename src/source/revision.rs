//! Read one revision of a local Git repository into a [`Snapshot`], for
//! `gitamp reconcile --dry-run --base REV`.
//!
//! Unlike [`super::git`], which keeps a bare cache of a remote and polls it, this opens the
//! repository a working tree already lives in (the one a CI job checked out) and reads a commit
//! by any name Git understands (`origin/main`, a tag, `HEAD~1`, a SHA). Files come straight from
//! the commit's tree, with the same rules as the Git source: symbolic links and submodules are
//! never followed, files over the size limit are left out and reported.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository};

use super::SourceSnapshot;

/// Why a revision could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("{path} is not inside a Git repository (needed for --base): {source}")]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("the Git repository at {path} is bare; --base needs a working tree")]
    Bare { path: PathBuf },
    #[error("{path} is outside the working tree of the Git repository at {workdir}")]
    OutsideWorkdir { path: PathBuf, workdir: PathBuf },
    #[error("unknown revision {rev:?} (fetch it first, e.g. `git fetch origin main`): {source}")]
    UnknownRevision {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("{sub_path} is not a folder in revision {revision}")]
    SubPathMissing { sub_path: String, revision: String },
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: git2::Error,
    },
}

/// The files under `path` (a folder inside a Git working tree) as they are in revision `rev`
/// of that repository, with paths relative to `path` (so they line up with
/// [`crate::source::dir::read_dir`] of the same folder). The snapshot's revision is the commit
/// SHA.
pub fn read_revision(
    path: &Path,
    rev: &str,
    max_file_size: u64,
) -> Result<SourceSnapshot, RevisionError> {
    let repo = Repository::discover(path).map_err(|source| RevisionError::NotARepository {
        path: path.to_path_buf(),
        source,
    })?;
    let workdir = repo.workdir().ok_or_else(|| RevisionError::Bare {
        path: path.to_path_buf(),
    })?;
    // Canonical forms on both sides, so symlinked temp folders (macOS /var) still compare.
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (abs, workdir) = (canon(path), canon(workdir));
    let sub = abs
        .strip_prefix(&workdir)
        .map_err(|_| RevisionError::OutsideWorkdir {
            path: abs.clone(),
            workdir: workdir.clone(),
        })?
        .to_path_buf();

    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|source| RevisionError::UnknownRevision {
            rev: rev.to_string(),
            source,
        })?;
    let revision = commit.id().to_string();
    let read = |what: String| move |source| RevisionError::Read { what, source };
    let root = commit
        .tree()
        .map_err(read(format!("the tree of {revision}")))?;
    let tree = if sub.as_os_str().is_empty() {
        root
    } else {
        let sub_path = sub.to_string_lossy().replace('\\', "/");
        let missing = || RevisionError::SubPathMissing {
            sub_path: sub_path.clone(),
            revision: revision.clone(),
        };
        let entry = root.get_path(&sub).map_err(|_| missing())?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(missing());
        }
        repo.find_tree(entry.id())
            .map_err(read(format!("{sub_path} in {revision}")))?
    };

    super::tree::tree_snapshot(&repo, &tree, &revision, max_file_size)
        .map_err(|(what, source)| RevisionError::Read { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_all(repo: &Repository, message: &str) -> Result<git2::Oid, git2::Error> {
        let mut index = repo.index()?;
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
        index.write()?;
        let tree = repo.find_tree(index.write_tree()?)?;
        let sig = git2::Signature::now("t", "t@example.invalid")?;
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
    }

    #[test]
    fn reads_a_commit_under_a_sub_folder() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        std::fs::create_dir_all(dir.path().join("cfg/a"))?;
        std::fs::write(dir.path().join("cfg/a/x.yaml"), "v: 1\n")?;
        std::fs::write(dir.path().join("top.yaml"), "t: 1\n")?;
        let first = commit_all(&repo, "one")?;
        std::fs::write(dir.path().join("cfg/a/x.yaml"), "v: 2\n")?;
        commit_all(&repo, "two")?;

        let s = read_revision(&dir.path().join("cfg"), "HEAD~1", 1 << 20)?;
        assert_eq!(s.snapshot.revision, first.to_string());
        let files: Vec<&str> = s.snapshot.files.keys().map(String::as_str).collect();
        assert_eq!(files, ["a/x.yaml"]);
        assert_eq!(&s.snapshot.files["a/x.yaml"][..], b"v: 1\n");

        let head = read_revision(dir.path(), "HEAD", 1 << 20)?;
        assert_eq!(&head.snapshot.files["cfg/a/x.yaml"][..], b"v: 2\n");
        assert!(matches!(
            read_revision(dir.path(), "no-such-branch", 1 << 20),
            Err(RevisionError::UnknownRevision { .. })
        ));
        Ok(())
    }
}
