//! Read a folder into a [`Snapshot`] for `validate`, `render` and `reconcile`: the folder
//! source's reader ([`crate::source::dir::read_dir`]), so the CLI sees exactly the files the
//! server would serve.

use std::path::Path;

use gitamp_core::{Diagnostics, Snapshot};

use crate::source::skipped::skipped_diagnostics;

use crate::source::DEFAULT_MAX_FILE_SIZE;
use crate::source::dir::{DirError, read_dir};

/// Every regular file under `root` (paths relative to it, `/`-separated), skipping `.git`
/// and never following symbolic links (a link could leave the repository). Files left out
/// (symlinks, files over the size limit) are reported on stderr, as the server reports them in
/// its events. The revision is a content hash, so an unchanged folder keeps its revision.
pub fn read_dir_snapshot(root: &Path) -> Result<Snapshot, DirError> {
    let read = read_dir(root, DEFAULT_MAX_FILE_SIZE)?;
    for skipped in &read.skipped {
        eprintln!("warning: {}: left out: {}", skipped.path, skipped.reason);
    }
    Ok(read.snapshot)
}

/// The folder as a snapshot plus the diagnostics of what was left out, exactly as the server
/// judges them (a configuration file left out is an error): for `validate`, which must reject
/// what the server would reject.
pub fn read_dir_checked(root: &Path) -> Result<(Snapshot, Diagnostics), DirError> {
    let read = read_dir(root, DEFAULT_MAX_FILE_SIZE)?;
    Ok((read.snapshot, skipped_diagnostics(&read.skipped)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tree_skips_git_and_symlinks() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("a/b"))?;
        std::fs::create_dir_all(dir.path().join(".git"))?;
        std::fs::write(dir.path().join("a/b/x.yaml"), "k: v\n")?;
        std::fs::write(dir.path().join(".git/config"), "x")?;
        std::fs::write(dir.path().join("top.yml"), "k: v\n")?;
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", dir.path().join("link"))?;
        let s = read_dir_snapshot(dir.path())?;
        let paths: Vec<&str> = s.files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["a/b/x.yaml", "top.yml"]);
        assert!(s.revision.starts_with("content-"));
        assert!(read_dir_snapshot(&dir.path().join("missing")).is_err());
        Ok(())
    }
}
