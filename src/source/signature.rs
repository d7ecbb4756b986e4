//! Signed commits only (`--verify-signatures`): a revision is served only when its commit is
//! signed by a key the operator trusts, as Flux's `verify` does for OpenPGP and SSH.
//!
//! The cryptography is Git's own: `git log --format=%G?` checks the tip in the Git cache,
//! calling `ssh-keygen -Y` with `gpg.ssh.allowedSignersFile` for SSH signatures (the file
//! format `git` documents for that setting) and `gpg` for OpenPGP ones. OpenPGP keys are
//! imported into a keyring of gitamp's own (`<data-dir>/gnupg`, rebuilt at every start so a
//! key removed from the file is no longer trusted), whose `trust-model always` makes every key
//! in it trusted and every other key unknown: the file is the whole trust list, and the
//! operator's own keyring and web of trust play no part.
//!
//! Only Git's `G` (a good signature by a trusted key) serves a revision; every other answer
//! (unsigned, bad, unknown key, expired, revoked, not checkable) rejects it like an invalid
//! revision: the last good one keeps serving, and the diagnostic names the commit and the key.

use std::path::{Path, PathBuf};
use std::process::Command;

use gitamp_core::{Diagnostic, Diagnostics, Location, Severity};

use super::SignatureCheck;

/// Code of the error for a commit whose signature is refused. Outside the core's catalog: the
/// core never sees commits (E040 is the source's skipped-file error).
pub const UNVERIFIED_COMMIT: (&str, &str) = ("E041", "unverified-commit");

/// Why the signature settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SignatureSetupError {
    #[error("--verify-signatures needs --allowed-signers FILE and/or --trusted-gpg-keys FILE")]
    NoKeys,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no allowed signer (lines `principal[,…] [options] key-type key`)")]
    NoSigners { path: PathBuf },
    #[error("preparing the keyring {path}: {source}")]
    Keyring {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("importing OpenPGP keys from {path}: {detail}")]
    Import { path: PathBuf, detail: String },
}

/// The trusted keys, ready for Git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// SSH allowed signers (an empty file of gitamp's own when none is given, so an SSH
    /// signature is checked, and refused, rather than an error).
    allowed_signers: PathBuf,
    /// gitamp's own OpenPGP keyring (`GNUPGHOME`), empty when no key is given.
    gnupg_home: PathBuf,
    /// What the refusal messages call the lists, `--allowed-signers` and/or
    /// `--trusted-gpg-keys`.
    lists: String,
}

impl SignaturePolicy {
    /// Check the files and build gitamp's keyring under `data_dir`.
    pub fn prepare(
        allowed_signers: Option<&Path>,
        trusted_gpg_keys: Option<&Path>,
        data_dir: &Path,
    ) -> Result<SignaturePolicy, SignatureSetupError> {
        if allowed_signers.is_none() && trusted_gpg_keys.is_none() {
            return Err(SignatureSetupError::NoKeys);
        }
        let home = data_dir.join("gnupg");
        let keyring_err = |source| SignatureSetupError::Keyring {
            path: home.clone(),
            source,
        };
        if home.exists() {
            std::fs::remove_dir_all(&home).map_err(keyring_err)?;
        }
        std::fs::create_dir_all(&home).map_err(keyring_err)?;
        restrict(&home).map_err(keyring_err)?;
        std::fs::write(home.join("gpg.conf"), "trust-model always\n").map_err(keyring_err)?;

        let allowed = match allowed_signers {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SignatureSetupError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?;
                let signers = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .count();
                if signers == 0 {
                    return Err(SignatureSetupError::NoSigners {
                        path: path.to_path_buf(),
                    });
                }
                path.to_path_buf()
            }
            None => {
                let none = home.join("no-allowed-signers");
                std::fs::write(&none, "").map_err(keyring_err)?;
                none
            }
        };
        if let Some(keys) = trusted_gpg_keys {
            import_keys(&home, keys)?;
        }
        let lists = match (allowed_signers.is_some(), trusted_gpg_keys.is_some()) {
            (true, true) => "--allowed-signers or --trusted-gpg-keys",
            (true, false) => "--allowed-signers",
            _ => "--trusted-gpg-keys",
        };
        Ok(SignaturePolicy {
            allowed_signers: allowed,
            gnupg_home: home,
            lists: lists.into(),
        })
    }

    /// Git's verdict on `commit` in the repository at `git_dir`.
    pub fn check(&self, git_dir: &Path, commit: &str) -> SignatureCheck {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(git_dir)
            .arg("-c")
            .arg(format!(
                "gpg.ssh.allowedSignersFile={}",
                self.allowed_signers.display()
            ))
            .args(["log", "-1", "--no-show-signature"])
            .arg("--format=%G?%x00%GS%x00%GK%x00%GF")
            .arg(commit)
            .arg("--")
            .env("GNUPGHOME", &self.gnupg_home)
            .env("LC_ALL", "C")
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                return self.refused(
                    commit,
                    format!(
                        "its signature could not be checked: git log: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                );
            }
            Err(err) => {
                return self.refused(
                    commit,
                    format!("its signature could not be checked: running git: {err}"),
                );
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.trim_end_matches('\n').split('\0');
        let status = fields.next().unwrap_or("");
        let signer = fields.next().unwrap_or("").trim().to_string();
        let key = fields.next().unwrap_or("").trim().to_string();
        let fingerprint = fields.next().unwrap_or("").trim().to_string();
        let key = if fingerprint.is_empty() {
            key
        } else {
            fingerprint
        };
        let by = if signer.is_empty() {
            format!("key {key}")
        } else {
            format!("{signer} (key {key})")
        };
        let lists = &self.lists;
        let reason = match status {
            "G" => return SignatureCheck::Trusted { signer, key },
            "N" => "it is not signed".to_string(),
            "B" => format!(
                "its signature by key {key} is bad: the commit was changed after it was signed"
            ),
            "U" | "E" if key.is_empty() => {
                "its signature cannot be checked (no key was found)".to_string()
            }
            "U" | "E" => format!("it is signed by key {key}, which is not in {lists}"),
            "X" => format!("its signature by {by} has expired"),
            "Y" => format!("it is signed by {by}, whose key has expired"),
            "R" => format!("it is signed by {by}, whose key is revoked"),
            other => format!("its signature was not accepted (git status {other:?})"),
        };
        self.refused(commit, reason)
    }

    fn refused(&self, commit: &str, reason: String) -> SignatureCheck {
        let short = super::short_revision(commit);
        SignatureCheck::Refused {
            reason: format!(
                "commit {short} is not served: {reason}; --verify-signatures serves only commits \
                 signed by a key in {}",
                self.lists
            ),
        }
    }
}

/// The error a refused signature adds to the revision's diagnostics, at the repository's root
/// (it concerns the whole commit, no one file).
pub fn signature_diagnostics(check: Option<&SignatureCheck>) -> Diagnostics {
    let mut out = Diagnostics::default();
    if let Some(SignatureCheck::Refused { reason }) = check {
        let (code, name) = UNVERIFIED_COMMIT;
        out.push(Diagnostic {
            code,
            name,
            severity: Severity::Error,
            location: Location {
                file: ".".into(),
                line: 1,
                column: 1,
            },
            message: reason.clone(),
        });
    }
    out
}

/// `gpg --import` of the operator's file into gitamp's keyring; at least one key must come in.
fn import_keys(home: &Path, keys: &Path) -> Result<(), SignatureSetupError> {
    let import_err = |detail: String| SignatureSetupError::Import {
        path: keys.to_path_buf(),
        detail,
    };
    if let Err(source) = std::fs::metadata(keys) {
        return Err(SignatureSetupError::Read {
            path: keys.to_path_buf(),
            source,
        });
    }
    let out = Command::new("gpg")
        .args(["--batch", "--no-tty", "--status-fd", "1", "--import"])
        .arg(keys)
        .env("GNUPGHOME", home)
        .env("LC_ALL", "C")
        .output()
        .map_err(|err| import_err(format!("running gpg: {err}")))?;
    let status = String::from_utf8_lossy(&out.stdout);
    let imported = status
        .lines()
        .filter(|l| l.starts_with("[GNUPG:] IMPORT_OK"))
        .count();
    if !out.status.success() || imported == 0 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr.trim();
        return Err(import_err(if detail.is_empty() {
            "no OpenPGP public key in the file".into()
        } else {
            format!("no key imported: {detail}")
        }));
    }
    Ok(())
}

#[cfg(unix)]
fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // gpg warns about (and may refuse) a home others can read.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}
