//! Which collector components and pipelines differ between two renderings of a configuration.
//!
//! Compared on the parsed YAML (not the text), so a moved key is not a change. Only component
//! IDs are reported, never values: the caller may compare the *unmasked* renderings (so a rotated
//! secret still shows its component as changed) without anything sensitive reaching the output.

use std::collections::BTreeSet;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};

/// Top-level sections whose keys are component IDs.
const SECTIONS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
];

/// One component (`receivers` / `otlp/src-app`), pipeline (`pipelines` / `traces/a__b`) or
/// other service setting (`service` / `telemetry`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ComponentRef {
    pub section: String,
    pub id: String,
}

impl std::fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.section, self.id)
    }
}

/// Components added, removed and changed, each sorted by section then ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ComponentChanges {
    pub added: Vec<ComponentRef>,
    pub removed: Vec<ComponentRef>,
    pub changed: Vec<ComponentRef>,
}

impl ComponentChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compare two rendered collector YAMLs; `None` stands for "no configuration" (every component
/// of the other side is added or removed).
pub fn compare(old: Option<&str>, new: Option<&str>) -> anyhow::Result<ComponentChanges> {
    let parse = |yaml: Option<&str>, what: &str| -> anyhow::Result<Vec<(ComponentRef, Value)>> {
        match yaml {
            None => Ok(Vec::new()),
            Some(text) => {
                let tree: Value = serde_saphyr::from_str(text)
                    .with_context(|| format!("the {what} rendered YAML does not parse"))?;
                Ok(flatten(&tree))
            }
        }
    };
    let old = parse(old, "current")?;
    let new = parse(new, "new")?;
    let mut out = ComponentChanges::default();
    let old_ids: BTreeSet<&ComponentRef> = old.iter().map(|(r, _)| r).collect();
    let new_ids: BTreeSet<&ComponentRef> = new.iter().map(|(r, _)| r).collect();
    for (r, value) in &new {
        match old.iter().find(|(o, _)| o == r) {
            None => out.added.push(r.clone()),
            Some((_, before)) if before != value => out.changed.push(r.clone()),
            Some(_) => {}
        }
    }
    out.removed = old_ids.difference(&new_ids).map(|r| (*r).clone()).collect();
    out.added.sort();
    out.changed.sort();
    Ok(out)
}

/// Every component, pipeline and other service key of a collector configuration with its value.
fn flatten(tree: &Value) -> Vec<(ComponentRef, Value)> {
    let empty = Map::new();
    let root = tree.as_object().unwrap_or(&empty);
    let entry = |section: &str, id: &str, v: &Value| {
        (
            ComponentRef {
                section: section.to_string(),
                id: id.to_string(),
            },
            v.clone(),
        )
    };
    let mut out = Vec::new();
    for section in SECTIONS {
        if let Some(map) = root.get(section).and_then(Value::as_object) {
            out.extend(map.iter().map(|(id, v)| entry(section, id, v)));
        }
    }
    if let Some(service) = root.get("service").and_then(Value::as_object) {
        for (key, v) in service {
            match (key.as_str(), v.as_object()) {
                ("pipelines", Some(pipelines)) => {
                    out.extend(pipelines.iter().map(|(id, p)| entry("pipelines", id, p)));
                }
                _ => out.push(entry("service", key, v)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_added_removed_changed() -> anyhow::Result<()> {
        let old = "receivers:\n  otlp: {}\n  filelog/a: {include: [x]}\nexporters:\n  debug: {}\n\
                   service:\n  pipelines:\n    logs/a: {receivers: [filelog/a], exporters: [debug]}\n";
        let new = "receivers:\n  otlp: {}\n  filelog/a: {include: [y]}\nexporters:\n  otlp/b: {}\n\
                   service:\n  pipelines:\n    logs/a: {receivers: [filelog/a], exporters: [otlp/b]}\n";
        let c = compare(Some(old), Some(new))?;
        let show = |v: &[ComponentRef]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(show(&c.added), ["exporters otlp/b"]);
        assert_eq!(show(&c.removed), ["exporters debug"]);
        assert_eq!(
            show(&c.changed),
            ["pipelines logs/a", "receivers filelog/a"]
        );
        let all_new = compare(None, Some(new))?;
        assert_eq!(all_new.added.len(), 4);
        assert!(compare(Some(new), Some(new))?.is_empty());
        assert!(compare(Some(": : :\n\t-"), None).is_err());
        Ok(())
    }
}
