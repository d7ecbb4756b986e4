//! gitamp's pure core: the config repository model, validation, rendering and the reconcile plan.
//!
//! Data flows one way: a [`Snapshot`] (bytes of one revision) is loaded into a
//! [`catalog::Catalog`] (typed resources with file:line origins) and checked, then every
//! configuration is rendered into collector YAML ([`render::Rendered`]); [`plan`] compares what
//! agents report with what the repository wants. Nothing here does I/O or knows about sockets or
//! Git, so `gitamp serve`, `validate`, `render` and `reconcile --dry-run` all call the same code
//! and the dry run shows exactly what the server would do.

#![warn(missing_docs)]
// Non-test code must not panic on input; tests may (clippy.toml: allow-unwrap-in-tests).
#![warn(clippy::unwrap_used)]

pub mod catalog;
pub mod config_map;
pub mod duration;
pub mod plan;
pub mod render;
pub mod snapshot;

pub use catalog::diagnostics::{Diagnostic, Diagnostics, Location, Severity};
pub use config_map::{ConfigFile, ConfigHash, ConfigMap};
pub use snapshot::Snapshot;

/// A revision that passed validation and rendered cleanly: what the server may serve.
#[derive(Debug)]
pub struct Revision {
    /// Commit SHA (Git) or content hash (folder).
    pub revision: String,
    /// Every resource, typed.
    pub catalog: catalog::Catalog,
    /// Every configuration's collector YAML.
    pub rendered: render::Rendered,
    /// Warnings do not reject a revision; they are shown with it.
    pub warnings: Diagnostics,
}

/// A revision that must not be served, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Commit SHA (Git) or content hash (folder).
    pub revision: String,
    /// Every error and warning, sorted by location.
    pub diagnostics: Diagnostics,
}

/// Load, validate and render one revision: the single entry point of the core.
///
/// Every diagnostic of the repository is reported in one run. A revision with any error is
/// rejected whole: nothing partial is ever rendered for agents.
pub fn compile(snapshot: &Snapshot) -> Result<Revision, Rejected> {
    compile_with(snapshot, Diagnostics::default())
}

/// [`compile`], with diagnostics the source found before the core saw the files (a
/// configuration file it had to leave out, say): an error among them rejects the revision too,
/// and all of them are reported with the rest.
pub fn compile_with(
    snapshot: &Snapshot,
    source_diagnostics: Diagnostics,
) -> Result<Revision, Rejected> {
    let (catalog, mut diagnostics) = catalog::load(snapshot);
    diagnostics.extend(source_diagnostics);
    let (rendered, render_diagnostics) = render::render(&catalog);
    diagnostics.extend(render_diagnostics);
    diagnostics.sort();
    if diagnostics.has_errors() {
        return Err(Rejected {
            revision: snapshot.revision.clone(),
            diagnostics,
        });
    }
    Ok(Revision {
        revision: snapshot.revision.clone(),
        catalog,
        rendered,
        warnings: diagnostics,
    })
}
