//! The Go-built test peers (`scripts/build-peers.sh`): found, never skipped.

use std::path::PathBuf;

/// A test peer built from registries by `scripts/build-peers.sh`: the Collector Builder's
/// collector (`otelcol-gitamp`), the collector's `opampsupervisor`, the opamp-go driver
/// (`opamp-driver`). Found through its environment variable (`GITAMP_TEST_OTELCOL`,
/// `GITAMP_TEST_SUPERVISOR`, `GITAMP_TEST_OPAMP_GO`; not `GITAMP_OTELCOL`, which is gitamp's
/// own setting), else in the build script's default cache (`GITAMP_PEERS_DIR`). A missing peer fails the test with the command that builds it:
/// nothing is skipped silently.
pub fn peer(env_var: &str, file: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env_var}={} does not exist", p.display());
        return p;
    }
    let cache = std::env::var_os("GITAMP_PEERS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/gitamp-peers")))
        .unwrap_or_else(|| PathBuf::from(".cache/gitamp-peers"));
    let p = cache.join("bin").join(file);
    assert!(
        p.is_file(),
        "test peer {file} not found ({env_var} unset, {} missing): build it with \
         `scripts/build-peers.sh` (needs Go 1.26 and the Go module proxy), or run the \
         README's test command `scripts/test.sh`, which does",
        p.display()
    );
    p
}

/// The collector built by the Collector Builder from `tests/collector/manifest.yaml`.
pub fn otelcol() -> PathBuf {
    peer("GITAMP_TEST_OTELCOL", "otelcol-gitamp")
}

/// The collector's OpAMP supervisor, built from `tests/collector/supervisor`.
pub fn supervisor() -> PathBuf {
    peer("GITAMP_TEST_SUPERVISOR", "opampsupervisor")
}

/// The opamp-go client driver, built from `tests/opamp-go`.
pub fn opamp_go_driver() -> PathBuf {
    peer("GITAMP_TEST_OPAMP_GO", "opamp-driver")
}
