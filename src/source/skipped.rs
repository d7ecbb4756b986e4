//! Turning files a source left out of a snapshot into diagnostics.
//!
//! The readers ([`super::dir::read_dir`], the Git source) never follow symbolic links and
//! leave out files over the size limit, reporting them in [`super::SourceSnapshot::skipped`].
//! For a configuration file (`*.yaml` / `*.yml`) that is not harmless: the revision would be
//! compiled without it, so agents could silently get a configuration that differs from what
//! the repository says (a destination missing, a processor gone). The safe rule is to reject
//! such a revision with an error naming the file, so the last good revision keeps serving and
//! the author sees why. Skipped files of any other kind (a big binary, a symlinked README) are
//! never read anyway and only earn a warning.
//!
//! Wiring: the reconciler should merge [`skipped_diagnostics`] into the revision's
//! diagnostics before deciding to accept it (see `src/server/reconciler.rs`, where
//! `SyncInfo::skipped` is turned into `file-skipped` events today), and the CLI readers can
//! do the same so `gitamp validate` agrees with the server.

use std::sync::Arc;

use gitamp_core::{Diagnostic, Diagnostics, Location, Severity};

use super::{SkipReason, SkippedFile};

/// Code of the error for a configuration file left out of a snapshot. Outside the core's
/// catalog table because the core never sees skipped files; E040–E049 are unused there.
pub const SKIPPED_CONFIG_FILE: (&str, &str) = ("E040", "skipped-config-file");

/// Code of the warning for any other skipped file.
pub const SKIPPED_OTHER_FILE: (&str, &str) = ("W040", "skipped-file");

/// True for the files the catalog would have read (`*.yaml`, `*.yml`, any case).
pub fn is_config_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// True if leaving `s` out may drop configuration: a `*.yaml`/`*.yml` file, or a symbolic
/// link without an extension, which may well be a linked folder of configuration files (it
/// is not followed, so what it holds is unknown).
pub fn may_hold_config(s: &SkippedFile) -> bool {
    if is_config_file(&s.path) {
        return true;
    }
    let name = s.path.rsplit('/').next().unwrap_or(&s.path);
    s.reason == SkipReason::Symlink && !name.contains('.')
}

/// One diagnostic per skipped file: an error when it may hold configuration (the revision
/// must be rejected: it would otherwise be served without it, see [`may_hold_config`]), a
/// warning for anything else.
/// Sorted like every other diagnostic list (file, line, column).
pub fn skipped_diagnostics(skipped: &[SkippedFile]) -> Diagnostics {
    let mut out = Diagnostics::default();
    for s in skipped {
        let config = may_hold_config(s);
        let ((code, name), severity) = if config {
            (SKIPPED_CONFIG_FILE, Severity::Error)
        } else {
            (SKIPPED_OTHER_FILE, Severity::Warning)
        };
        let fix = match &s.reason {
            SkipReason::Symlink => "replace the symbolic link by the file itself",
            SkipReason::TooLarge { .. } => "split the file or remove what it does not need",
            SkipReason::Submodule => "copy the files into this repository",
            SkipReason::NonUtf8Name => "rename it with a UTF-8 name",
            SkipReason::NotRegular => "replace it by a regular file",
        };
        let message = if config && !is_config_file(&s.path) {
            format!(
                "left out ({}); it may be a folder of configuration files, so the revision is rejected rather than served without them: {fix}",
                s.reason
            )
        } else if config {
            format!(
                "configuration file left out ({}); the revision is rejected rather than served without it: {fix}",
                s.reason
            )
        } else {
            format!(
                "file left out ({}); it is not a configuration file, so nothing changes",
                s.reason
            )
        };
        out.push(Diagnostic {
            code,
            name,
            severity,
            location: Location {
                file: Arc::from(s.path.as_str()),
                line: 1,
                column: 1,
            },
            message,
        });
    }
    out.0.sort_by(|a, b| a.location.cmp(&b.location));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(path: &str, reason: SkipReason) -> SkippedFile {
        SkippedFile {
            path: path.to_owned(),
            reason,
        }
    }

    #[test]
    fn yaml_files_are_errors_others_warnings() {
        let d = skipped_diagnostics(&[
            skipped(
                "logo.png",
                SkipReason::TooLarge {
                    size: 5 << 20,
                    limit: 1 << 20,
                },
            ),
            skipped(
                "destinations/big.YAML",
                SkipReason::TooLarge {
                    size: 2 << 20,
                    limit: 1 << 20,
                },
            ),
            skipped("sources/evil.yml", SkipReason::Symlink),
            skipped("linked-folder", SkipReason::Symlink),
            skipped("README.md", SkipReason::Symlink),
        ]);
        let got: Vec<(&str, &str, Severity)> =
            d.0.iter()
                .map(|d| (d.code, &*d.location.file, d.severity))
                .collect();
        assert_eq!(
            got,
            [
                ("W040", "README.md", Severity::Warning),
                ("E040", "destinations/big.YAML", Severity::Error),
                ("E040", "linked-folder", Severity::Error),
                ("W040", "logo.png", Severity::Warning),
                ("E040", "sources/evil.yml", Severity::Error),
            ]
        );
        assert_eq!(d.errors().count(), 3);
        assert!(
            d.0[1].message.contains("over the 1048576-byte limit"),
            "{}",
            d.0[1]
        );
        assert!(d.0[2].message.contains("may be a folder"), "{}", d.0[2]);
        assert!(d.0[4].message.contains("symbolic links"), "{}", d.0[4]);
    }

    #[test]
    fn nothing_skipped_nothing_reported() {
        assert!(skipped_diagnostics(&[]).0.is_empty());
    }
}
