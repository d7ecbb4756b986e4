//! Consistency check of rendered collector YAML, on the bytes agents would get.
//!
//! Assembly builds the tree so that these rules hold; this check parses the serialized text
//! back, independently of how it was built, so that a serializer quirk, a template rendering an
//! empty section, or a future change to assembly cannot send a collector a file it would refuse
//! to start with. Rules (the collector's own): every component a pipeline names is defined, every
//! defined component is used by a pipeline (extensions: listed in `service.extensions`), every
//! pipeline has at least one receiver and one exporter.

use std::collections::BTreeSet;

use serde_json::Value as Json;

const SECTIONS: [(&str, &str); 3] = [
    ("receivers", "receiver"),
    ("processors", "processor"),
    ("exporters", "exporter"),
];

/// Check one rendered collector config; every problem found, as sentences.
pub fn check(yaml: &str) -> Result<(), Vec<String>> {
    let root: Json = match serde_saphyr::from_str(yaml) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("the rendered YAML does not parse back: {e}")]),
    };
    let mut problems = Vec::new();
    let Some(root) = root.as_object() else {
        return Err(vec!["the rendered YAML is not a mapping".into()]);
    };
    let defined = |section: &str| -> BTreeSet<&str> {
        root.get(section)
            .and_then(Json::as_object)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    };
    let service = root.get("service").and_then(Json::as_object);
    let pipelines = service
        .and_then(|s| s.get("pipelines"))
        .and_then(Json::as_object);
    let Some(pipelines) = pipelines.filter(|p| !p.is_empty()) else {
        return Err(vec!["`service.pipelines` is missing or empty".into()]);
    };

    for (section, singular) in SECTIONS {
        let defs = defined(section);
        let mut used = BTreeSet::new();
        for (name, pipeline) in pipelines {
            let ids = list(pipeline.get(section));
            if ids.is_empty() && section != "processors" {
                problems.push(format!("pipeline `{name}` has no {section}"));
            }
            for id in ids {
                if !defs.contains(id) {
                    problems.push(format!(
                        "pipeline `{name}` names {singular} `{id}`, which is not defined"
                    ));
                }
                used.insert(id);
            }
        }
        for id in defs.difference(&used) {
            problems.push(format!(
                "{singular} `{id}` is defined but no pipeline uses it"
            ));
        }
    }

    let ext_defs = defined("extensions");
    let ext_used: BTreeSet<&str> = list(service.and_then(|s| s.get("extensions")))
        .into_iter()
        .collect();
    for id in ext_used.difference(&ext_defs) {
        problems.push(format!(
            "`service.extensions` names `{id}`, which is not defined"
        ));
    }
    for id in ext_defs.difference(&ext_used) {
        problems.push(format!(
            "extension `{id}` is defined but not listed in `service.extensions`"
        ));
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn list(v: Option<&Json>) -> Vec<&str> {
    v.and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_complete_config() {
        let y = "receivers:\n  otlp/src-a: {}\nprocessors:\n  batch/proc-b:\nexporters:\n  debug/dst-d: {}\n\
                 extensions:\n  health_check/src-a: {}\nservice:\n  extensions: [health_check/src-a]\n  pipelines:\n    \
                 logs/a__d:\n      receivers: [otlp/src-a]\n      processors: [batch/proc-b]\n      exporters: [debug/dst-d]\n";
        assert_eq!(check(y), Ok(()));
    }

    #[test]
    fn finds_every_problem() {
        let y = "receivers:\n  otlp/src-a: {}\n  unused/src-a: {}\nexporters: {}\nextensions:\n  x/src-a: {}\n\
                 service:\n  pipelines:\n    logs/a__d:\n      receivers: [otlp/src-a]\n      processors: [nope]\n";
        let problems = check(y).unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("receiver `unused/src-a` is defined but no pipeline uses it"));
        assert!(text.contains("names processor `nope`, which is not defined"));
        assert!(text.contains("pipeline `logs/a__d` has no exporters"));
        assert!(text.contains("extension `x/src-a` is defined but not listed"));
        assert_eq!(problems.len(), 4, "{text}");
    }

    #[test]
    fn rejects_no_pipelines() {
        assert!(check("receivers: {}\nservice: {}\n").is_err());
    }
}
