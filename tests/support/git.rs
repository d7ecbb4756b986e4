//! Real Git repositories made with the `git` CLI: a bare remote and a work clone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use gitamp_core::ConfigHash;

use super::workspace;

/// Run `git` in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=gitamp test",
            "-c",
            "user.email=test@gitamp.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Copy a folder tree (files only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// A bare "remote" and a work clone that commits and pushes to it.
pub struct GitFixture {
    pub dir: tempfile::TempDir,
}

impl GitFixture {
    /// A remote whose `main` holds a copy of `example-repo/`.
    pub fn with_example_repo() -> GitFixture {
        GitFixture::with_tree(&workspace().join("example-repo"))
    }

    /// A bare remote and a work clone holding a copy of `tree`, committed and pushed.
    pub fn with_tree(tree: &Path) -> GitFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = dir.path().join("remote.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&remote).expect("mkdir");
        git(&remote, &["init", "--bare", "-q", "-b", "main"]);
        git(
            dir.path(),
            &["clone", "-q", remote.to_str().expect("utf8"), "work"],
        );
        copy_tree(tree, &work);
        let f = GitFixture { dir };
        f.commit_all("initial import");
        f.push(false);
        f
    }

    pub fn remote_url(&self) -> String {
        format!("file://{}", self.dir.path().join("remote.git").display())
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.work().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.work().join(rel)).expect("read")
    }

    /// Replace `from` by `to` in a file, asserting it was there.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replacen(from, to, 1));
    }

    /// Set the `team:` label of the production processor (a change that rolls out to the
    /// `linux-production` agents), whatever it was.
    pub fn set_team(&self, team: &str) {
        let rel = "processors/env-production.yaml";
        let text = self.read(rel);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("team: "))
            .expect("a team line")
            .to_string();
        let indent = &line[..line.len() - line.trim_start().len()];
        self.edit(rel, &line, &format!("{indent}team: {team}"));
    }

    /// Commit everything; returns the new commit SHA.
    pub fn commit_all(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "-m", message]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    pub fn push(&self, force: bool) {
        if force {
            git(&self.work(), &["push", "-q", "-f", "origin", "HEAD:main"]);
        } else {
            git(&self.work(), &["push", "-q", "origin", "HEAD:main"]);
        }
    }

    /// The hashes the repository's work tree renders to, per configuration (the same core the
    /// server runs, so the test knows what agents must end up with).
    pub fn expected_hashes(&self) -> BTreeMap<String, ConfigHash> {
        let snap = gitamp::source::dir::read_dir(&self.work(), 1 << 20)
            .expect("read work tree")
            .snapshot;
        let revision = gitamp_core::compile(&snap)
            .unwrap_or_else(|r| panic!("work tree does not compile:\n{}", r.diagnostics));
        revision
            .rendered
            .configurations
            .iter()
            .map(|(name, r)| (name.clone(), r.hash))
            .collect()
    }
}
