//! The environment of a collector run: a placeholder for each `${env:NAME}` a configuration
//! references, nothing else. Secrets never live in Git, so a configuration names them; the check
//! must neither see the real values (the caller's environment) nor depend on them.

use std::collections::BTreeMap;

use gitamp_core::catalog::Catalog;
use gitamp_core::catalog::model::ParameterType;
use gitamp_core::catalog::params::is_env_ref;
use serde_json::Value as Json;

/// What an `${env:NAME}` reference becomes for the check, by the type of the parameter that
/// holds it (a reference written anywhere else counts as a string). The collector types an
/// expanded value as YAML, so an `int` parameter needs a number and a `bool` one a boolean;
/// the values are plain enough to satisfy any component that accepts the type.
fn placeholder(kind: Option<ParameterType>) -> &'static str {
    match kind {
        Some(ParameterType::Int) => "1",
        Some(ParameterType::Bool) => "true",
        Some(ParameterType::Duration) => "1s",
        _ => STRING_PLACEHOLDER,
    }
}

/// The placeholder of a string reference (and of one whose type is unknown or ambiguous): an
/// ordinary string that is also a URL with a host and a port, so that a component wanting an
/// endpoint (`host:port` for gRPC, a URL for HTTP) accepts it as well as a header or a label.
pub const STRING_PLACEHOLDER: &str = "https://gitamp-placeholder.invalid:4317";

/// The parameter type of each environment variable that some parameter holds as a whole
/// `${env:NAME}` value (a resource's value or a type's default). A variable used for two types
/// gets none: it is checked as a string.
pub(super) fn env_types(catalog: &Catalog) -> BTreeMap<String, Option<ParameterType>> {
    let mut out: BTreeMap<String, Option<ParameterType>> = BTreeMap::new();
    let mut note = |value: &Json, kind: ParameterType| {
        if let Json::String(s) = value
            && is_env_ref(s)
            && let Some((name, _)) = env_reference(s.trim())
        {
            out.entry(name)
                .and_modify(|k| {
                    if *k != Some(kind) {
                        *k = None;
                    }
                })
                .or_insert(Some(kind));
        }
    };
    for ty in catalog.types.values() {
        for p in &ty.spec.parameters {
            if let Some(d) = &p.default {
                note(d, p.kind);
            }
        }
    }
    for ((role, _), resource) in &catalog.resources {
        let Some(ty) = catalog.types.get(&(*role, resource.spec.type_name.clone())) else {
            continue;
        };
        for (name, value) in &resource.spec.parameters {
            if let Some(p) = ty.spec.parameters.iter().find(|p| &p.name == name) {
                note(value, p.kind);
            }
        }
    }
    out
}

/// `${env:NAME}` or `${env:NAME:-default}` (also the schemeless `${NAME}`, which the collector
/// reads from the environment too) at the start of `s`: the name and whether it has a default.
fn env_reference(s: &str) -> Option<(String, bool)> {
    let inner = s.strip_prefix("${")?;
    let end = inner.find('}')?;
    let inner = &inner[..end];
    let inner = inner.strip_prefix("env:").unwrap_or(inner);
    let (name, has_default) = match inner.split_once(":-") {
        Some((n, _)) => (n, true),
        None => (inner, false),
    };
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name.to_string(), has_default))
}

/// The environment of one run: a placeholder for every variable the configuration references
/// without a default (a reference with a default keeps it, as an agent without the variable
/// would). `$${...}` is the collector's escape for a literal `${`, not a reference.
pub(super) fn placeholders(
    yaml: &str,
    types: &BTreeMap<String, Option<ParameterType>>,
) -> Vec<(String, String)> {
    let mut names = BTreeMap::new();
    let bytes = yaml.as_bytes();
    let mut i = 0;
    while let Some(off) = yaml[i..].find("${") {
        let at = i + off;
        i = at + 2;
        if at > 0 && bytes[at - 1] == b'$' {
            continue;
        }
        if let Some((name, has_default)) = env_reference(&yaml[at..])
            && !has_default
        {
            let kind = types.get(&name).copied().flatten();
            names.insert(name, placeholder(kind).to_string());
        }
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(env_reference("${env:A_1}"), Some(("A_1".into(), false)));
        assert_eq!(env_reference("${env:A:-x}"), Some(("A".into(), true)));
        assert_eq!(env_reference("${B}"), Some(("B".into(), false)));
        assert_eq!(env_reference("${file:/x}"), None);
        assert_eq!(env_reference("${env:1A}"), None);
    }

    #[test]
    fn typed_placeholders_for_references_without_default() {
        let mut types = BTreeMap::new();
        types.insert("PORT".to_string(), Some(ParameterType::Int));
        types.insert("TLS".to_string(), Some(ParameterType::Bool));
        types.insert("MIXED".to_string(), None);
        let env = placeholders(
            "a: ${env:PORT}\nb: Bearer ${env:TOKEN}\nc: $${env:LITERAL}\nd: ${env:D:-1}\n\
             e: ${env:TLS}\nf: ${env:MIXED}\n",
            &types,
        );
        assert_eq!(
            env,
            [
                ("MIXED".to_string(), STRING_PLACEHOLDER.to_string()),
                ("PORT".to_string(), "1".to_string()),
                ("TLS".to_string(), "true".to_string()),
                ("TOKEN".to_string(), STRING_PLACEHOLDER.to_string()),
            ]
        );
    }
}
