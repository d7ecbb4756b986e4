//! Embed `example-repo/` into the binary so that `gitamp serve` with no `--repo` has a realistic
//! repository to serve (the README's first command) and `gitamp validate --embedded` works
//! anywhere. Also records which commit the binary was built from (`gitamp --version`, the
//! `gitamp_build_info` metric).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs, io};

/// `git <args>` in the crate's directory, trimmed; None when git or the repository is missing
/// (a build from a source tarball).
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The commit and its date, from `GITAMP_BUILD_COMMIT` / `GITAMP_BUILD_DATE` when a packager
/// sets them (no `.git` in a container build context), else from Git. The commit's date rather
/// than the clock's keeps two builds of one commit identical.
fn build_info() {
    println!("cargo:rerun-if-env-changed=GITAMP_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=GITAMP_BUILD_DATE");
    // Rebuild when HEAD moves: HEAD itself, the branch it names, and packed refs.
    if let (Some(dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
        let (dir, common) = (manifest.join(dir), manifest.join(common));
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        println!(
            "cargo:rerun-if-changed={}",
            common.join("packed-refs").display()
        );
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", common.join(branch).display());
        }
    }
    let commit = env::var("GITAMP_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = env::var("GITAMP_BUILD_DATE")
        .ok()
        .filter(|d| !d.is_empty())
        .or_else(|| git(&["log", "-1", "--format=%cs", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GITAMP_COMMIT={commit}");
    println!("cargo:rustc-env=GITAMP_COMMIT_DATE={date}");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path));
        }
    }
    Ok(())
}

fn main() -> io::Result<()> {
    build_info();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(io::Error::other)?);
    let root = manifest.join("example-repo");
    println!("cargo:rerun-if-changed=example-repo");
    let mut files = Vec::new();
    if root.is_dir() {
        collect(&root, &root, &mut files)?;
    }
    let mut code = String::from("/// Files of example-repo/, embedded at build time.\n");
    code.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, path) in &files {
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            path.to_string_lossy()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").map_err(io::Error::other)?);
    fs::write(out.join("embedded_repo.rs"), code)
}
