//! JSON Schema checks: the `schemas/` folder of the repository, embedded and compiled once.
//!
//! The same files serve editors (`# yaml-language-server: $schema=...`), so they refer to each
//! other by relative paths (`common.json#/$defs/metadata`); here they are resolved against a
//! fixed base URI by an in-memory retriever, never the network.

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Retrieve, Uri, ValidationError, Validator};
use serde_json::Value;

use super::codes;
use super::diagnostics::Diagnostics;
use super::load::{Document, escape_token};
use super::model::{API_VERSION, Kind};

/// Base URI the embedded schemas are known under (relative `$ref`s resolve against it).
const BASE_URI: &str = "https://gitamp.dev/schemas/v1/";

/// Every schema file, by file name: embedded so validation needs no files at run time.
pub const FILES: &[(&str, &str)] = &[
    (
        "common.json",
        include_str!("../../../../schemas/common.json"),
    ),
    (
        "source-type.json",
        include_str!("../../../../schemas/source-type.json"),
    ),
    (
        "processor-type.json",
        include_str!("../../../../schemas/processor-type.json"),
    ),
    (
        "destination-type.json",
        include_str!("../../../../schemas/destination-type.json"),
    ),
    (
        "source.json",
        include_str!("../../../../schemas/source.json"),
    ),
    (
        "processor.json",
        include_str!("../../../../schemas/processor.json"),
    ),
    (
        "destination.json",
        include_str!("../../../../schemas/destination.json"),
    ),
    (
        "configuration.json",
        include_str!("../../../../schemas/configuration.json"),
    ),
    (
        "agent-version.json",
        include_str!("../../../../schemas/agent-version.json"),
    ),
    (
        "gitamp.json",
        include_str!("../../../../schemas/gitamp.json"),
    ),
];

/// The schema file of a kind.
pub fn file_of(kind: Kind) -> &'static str {
    match kind {
        Kind::SourceType => "source-type.json",
        Kind::ProcessorType => "processor-type.json",
        Kind::DestinationType => "destination-type.json",
        Kind::Source => "source.json",
        Kind::Processor => "processor.json",
        Kind::Destination => "destination.json",
        Kind::Configuration => "configuration.json",
        Kind::AgentVersion => "agent-version.json",
    }
}

/// Serves the embedded schema files to the JSON Schema compiler.
struct Embedded;

impl Retrieve for Embedded {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let name = s.strip_prefix(BASE_URI).unwrap_or(s);
        let name = name.split('#').next().unwrap_or(name);
        let text = FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| format!("no embedded schema named {s}"))?;
        Ok(serde_json::from_str(text)?)
    }
}

/// Compile one embedded schema file.
pub fn compile(name: &str) -> Result<Validator, String> {
    let text = FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("no embedded schema named {name}"))?;
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    jsonschema::options()
        .with_base_uri(format!("{BASE_URI}{name}"))
        .with_retriever(Embedded)
        .build(&schema)
        .map_err(|e| format!("{name}: {e}"))
}

/// One compiled validator per kind, in `Kind::ALL` order; built on first use.
static VALIDATORS: LazyLock<Vec<Result<Validator, String>>> =
    LazyLock::new(|| Kind::ALL.iter().map(|k| compile(file_of(*k))).collect());

fn validator(kind: Kind) -> Result<&'static Validator, &'static str> {
    let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    match VALIDATORS.get(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(e.as_str()),
        None => Err("no validator"),
    }
}

/// Check envelope and schema of one document. Returns its kind when the document is fit to be
/// read as that kind; every problem found is reported (all schema errors, not just the first).
pub fn check(doc: &Document, diags: &mut Diagnostics) -> Option<Kind> {
    let Value::Object(map) = &doc.value else {
        diags.push(codes::NOT_A_MAPPING.at(
            doc.locate(""),
            format!(
                "a document must be a mapping with apiVersion, kind, metadata and spec, not {}",
                json_type(&doc.value)
            ),
        ));
        return None;
    };
    let kinds = Kind::ALL.map(Kind::as_str).join(", ");
    let kind = match map.get("kind") {
        None => {
            diags.push(codes::UNKNOWN_KIND.at(
                doc.locate(""),
                format!("the document has no `kind`; add one of {kinds}"),
            ));
            return None;
        }
        Some(Value::String(s)) => match Kind::parse(s) {
            Some(k) => k,
            None => {
                diags.push(codes::UNKNOWN_KIND.at(
                    doc.locate("/kind"),
                    format!("unknown kind `{s}`; use one of {kinds}"),
                ));
                return None;
            }
        },
        Some(other) => {
            diags.push(codes::UNKNOWN_KIND.at(
                doc.locate("/kind"),
                format!(
                    "`kind` must be a string, one of {kinds}, not {}",
                    json_type(other)
                ),
            ));
            return None;
        }
    };
    match map.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            diags.push(codes::API_VERSION.at(
                doc.locate("/apiVersion"),
                format!("unsupported apiVersion {other}; this gitamp reads `{API_VERSION}`"),
            ));
            return None;
        }
        None => {
            diags.push(codes::API_VERSION.at(
                doc.locate(""),
                format!("the document has no apiVersion; add `apiVersion: {API_VERSION}`"),
            ));
            return None;
        }
    }
    let validator = match validator(kind) {
        Ok(v) => v,
        Err(e) => {
            // A broken embedded schema is a gitamp bug; say so rather than pass the document.
            diags.push(codes::SCHEMA.at(
                doc.locate(""),
                format!("internal error: the {kind:?} schema does not compile: {e}"),
            ));
            return None;
        }
    };
    let before = diags.len();
    for err in validator.iter_errors(&doc.value) {
        let (pointer, message) = describe(&err);
        diags.push(codes::SCHEMA.at(doc.locate(&pointer), message));
    }
    (diags.len() == before).then_some(kind)
}

/// Where to point and what to say for one schema error.
fn describe(err: &ValidationError<'_>) -> (String, String) {
    let path = err.instance_path().as_str().to_string();
    let field = if path.is_empty() {
        "document".to_string()
    } else {
        path.trim_start_matches('/').replace('/', ".")
    };
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let first = unexpected.first().cloned().unwrap_or_default();
            let names = unexpected
                .iter()
                .map(|u| format!("`{u}`"))
                .collect::<Vec<_>>()
                .join(", ");
            (
                format!("{path}/{}", escape_token(&first)),
                format!("{field}: unknown field {names}; remove it or check its spelling"),
            )
        }
        ValidationErrorKind::Pattern { pattern } if pattern.contains("[-a-z0-9]") => (
            path,
            format!(
                "{field}: {} is not a valid name: use lowercase letters, digits and '-', \
                 starting and ending with a letter or digit",
                err.instance()
            ),
        ),
        ValidationErrorKind::Pattern { pattern } if pattern.contains('%') => (
            path,
            format!(
                "{field}: {} is neither a whole number nor a percentage such as \"25%\"",
                err.instance()
            ),
        ),
        ValidationErrorKind::Enum { options } => {
            let allowed = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| options.to_string());
            (
                path,
                format!("{field}: {} is not one of {allowed}", err.instance()),
            )
        }
        ValidationErrorKind::Type { .. }
            if matches!(**err.instance(), Value::Number(_) | Value::Bool(_))
                && err.to_string().contains("\"string\"") =>
        {
            (path, format!("{field}: {err}; quote the value"))
        }
        _ => (path, format!("{field}: {err}")),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::load::parse_file;

    #[test]
    fn every_schema_compiles() {
        for (name, _) in FILES {
            if let Err(e) = compile(name) {
                panic!("{e}");
            }
        }
    }

    fn check_text(text: &str) -> (Option<Kind>, Diagnostics) {
        let mut d = Diagnostics::default();
        let docs = parse_file("x.yaml", text.as_bytes(), &mut d);
        assert!(d.is_empty(), "{d}");
        let k = check(&docs[0], &mut d);
        (k, d)
    }

    #[test]
    fn valid_source_passes() {
        let (k, d) = check_text(
            "apiVersion: gitamp.dev/v1\nkind: Source\nmetadata:\n  name: app\nspec:\n  type: otlp\n  parameters:\n    port: 4317\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(k, Some(Kind::Source));
    }

    #[test]
    fn all_errors_located() {
        let (k, d) = check_text(
            "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: Bad_Name\nspec:\n  priority: high\n  sources: [a]\n  destinations:\n    - name: d\n      typo: 1\n  rollout:\n    maxFailures: 120%\n",
        );
        assert_eq!(k, None);
        let lines: Vec<u32> = d.iter().map(|x| x.location.line).collect();
        assert!(lines.contains(&4), "{d}");
        assert!(lines.contains(&6), "{d}");
        assert!(lines.contains(&10), "{d}");
        assert!(lines.contains(&12), "{d}");
        assert!(d.iter().all(|x| x.code == "E008"), "{d}");
    }

    #[test]
    fn kind_and_api_version() {
        let (_, d) = check_text("apiVersion: gitamp.dev/v1\nkind: Sauce\n");
        assert_eq!(d.0[0].code, "E006");
        let (_, d) = check_text("apiVersion: gitamp.dev/v2\nkind: Source\n");
        assert_eq!(d.0[0].code, "E007");
        let (_, d) = check_text("- a\n- b\n");
        assert_eq!(d.0[0].code, "E005");
    }

    #[test]
    fn dispatch_schema_compiles_and_dispatches() {
        let v = compile("gitamp.json").unwrap_or_else(|e| panic!("{e}"));
        let bad: Value = serde_json::json!({"apiVersion": "gitamp.dev/v1", "kind": "Source",
            "metadata": {"name": "x"}, "spec": {}});
        assert!(!v.is_valid(&bad));
        let good: Value = serde_json::json!({"apiVersion": "gitamp.dev/v1", "kind": "Source",
            "metadata": {"name": "x"}, "spec": {"type": "otlp"}});
        assert!(v.is_valid(&good));
    }
}
