//! The config repository as typed resources: load (YAML with positions), schema and semantic
//! validation, diagnostics.

pub mod agent_version;
pub mod codes;
pub mod diagnostics;
pub mod load;
pub mod model;
pub mod params;
pub mod schema;
pub mod telemetry;
pub mod validate;

use std::collections::BTreeMap;

use crate::snapshot::Snapshot;
use diagnostics::Diagnostics;
use model::{Configuration, Resource, ResourceType, Role};

/// Every resource of one revision. Built best-effort: a document with errors is left out and
/// its diagnostics reported, the rest still loads (so all diagnostics come out in one run).
#[derive(Debug, Default)]
pub struct Catalog {
    /// The revision the documents came from.
    pub revision: String,
    /// SourceType, ProcessorType, DestinationType by (role, name).
    pub types: BTreeMap<(Role, String), ResourceType>,
    /// Source, Processor, Destination by (role, name), including those declared inline in a
    /// configuration (their names are unique per role too).
    pub resources: BTreeMap<(Role, String), Resource>,
    /// Configurations by name.
    pub configurations: BTreeMap<String, Configuration>,
    /// AgentVersions by name.
    pub agent_versions: BTreeMap<String, agent_version::AgentVersion>,
}

/// Load and validate every YAML file of a snapshot.
///
/// Files under a hidden folder or with a hidden name (`.github/workflows/ci.yml`,
/// `.gitlab-ci.yml`) are not part of the catalog: repositories hold CI configuration too.
pub fn load(snapshot: &Snapshot) -> (Catalog, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut checked = Vec::new();
    let mut broken = validate::Broken::new();
    for (path, bytes) in snapshot.yaml_files() {
        if is_hidden(path) {
            continue;
        }
        let errors_before = diags.len();
        let docs = load::parse_file(path, bytes, &mut diags);
        if docs.is_empty() && diags.len() > errors_before {
            broken.extend(validate::names_in_unreadable(bytes));
        }
        for doc in docs {
            match schema::check(&doc, &mut diags) {
                Some(kind) => checked.push((kind, doc)),
                None => broken.extend(validate::broken_name(&doc)),
            }
        }
    }
    let catalog = validate::build(&snapshot.revision, checked, broken, &mut diags);
    diags.sort();
    (catalog, diags)
}

/// Is any component of a repository path hidden (starts with `.`)?
pub fn is_hidden(path: &str) -> bool {
    path.split('/')
        .any(|c| c.starts_with('.') && c != "." && c != "..")
}
