//! The example repository compiled into the binary: what `gitamp serve` serves when no
//! `--repo` is given, so the first command of the README works with nothing else.

use gitamp_core::Snapshot;

mod files {
    include!(concat!(env!("OUT_DIR"), "/embedded_repo.rs"));
}

/// The embedded example repository as a snapshot; its revision is a content hash.
pub fn snapshot() -> Snapshot {
    let mut snap = Snapshot::default();
    for (path, bytes) in files::FILES {
        snap.insert(*path, bytes);
    }
    snap.revision = Snapshot::content_revision(&snap.files);
    snap
}
