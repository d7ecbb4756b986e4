//! The config repository as typed resources: load (YAML with positions), schema and semantic
//! validation, diagnostics.

pub mod codes;
pub mod diagnostics;
pub mod load;
pub mod model;

use std::collections::BTreeMap;

use crate::snapshot::Snapshot;
use diagnostics::Diagnostics;
use model::{Configuration, Resource, ResourceType, Role};

/// Every resource of one revision. Built best-effort: a document with errors is left out and
/// its diagnostics reported, the rest still loads (so all diagnostics come out in one run).
#[derive(Debug, Default)]
pub struct Catalog {
    pub revision: String,
    /// SourceType, ProcessorType, DestinationType by (role, name).
    pub types: BTreeMap<(Role, String), ResourceType>,
    /// Source, Processor, Destination by (role, name), including those declared inline in a
    /// configuration (their names are unique per role too).
    pub resources: BTreeMap<(Role, String), Resource>,
    pub configurations: BTreeMap<String, Configuration>,
}

/// Load and validate every YAML file of a snapshot.
pub fn load(snapshot: &Snapshot) -> (Catalog, Diagnostics) {
    let _ = snapshot;
    (Catalog::default(), Diagnostics::default())
}
