//! Render tests on catalogs built directly (independent of the loader).

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::catalog::diagnostics::Location;
use crate::catalog::model::*;

fn origin(file: &str, pointers: &[(&str, u32)]) -> Origin {
    let file: Arc<str> = Arc::from(file);
    let positions = pointers
        .iter()
        .map(|(p, line)| {
            (
                p.to_string(),
                Location {
                    file: file.clone(),
                    line: *line,
                    column: 1,
                },
            )
        })
        .collect();
    Origin {
        file,
        document: 0,
        positions: Arc::new(positions),
    }
}

fn param(name: &str, kind: ParameterType, default: Option<serde_json::Value>) -> ParameterSpec {
    ParameterSpec {
        name: name.into(),
        kind,
        default,
        required: false,
        valid_values: vec![],
        sensitive: false,
        description: None,
    }
}

fn tmpl(
    receivers: Option<&str>,
    processors: Option<&str>,
    exporters: Option<&str>,
    extensions: Option<&str>,
) -> SignalTemplates {
    SignalTemplates {
        receivers: receivers.map(Into::into),
        processors: processors.map(Into::into),
        exporters: exporters.map(Into::into),
        extensions: extensions.map(Into::into),
    }
}

#[derive(Default)]
struct Repo {
    catalog: Catalog,
}

impl Repo {
    fn ty(
        &mut self,
        role: Role,
        name: &str,
        params: Vec<ParameterSpec>,
        templates: &[(Signal, SignalTemplates)],
    ) -> &mut Self {
        let file = format!("types/{name}.yaml");
        self.catalog.types.insert(
            (role, name.into()),
            ResourceType {
                role,
                metadata: Metadata {
                    name: name.into(),
                    ..Default::default()
                },
                spec: TypeSpec {
                    parameters: params,
                    templates: templates.iter().cloned().collect(),
                },
                origin: origin(
                    &file,
                    &[
                        ("/spec/templates/logs/receivers", 10),
                        ("/spec/templates/metrics/receivers", 20),
                        ("/spec/templates/logs/exporters", 30),
                        ("/spec/templates/metrics/exporters", 40),
                    ],
                ),
            },
        );
        self
    }

    fn res(&mut self, role: Role, name: &str, ty: &str, params: serde_json::Value) -> &mut Self {
        let parameters = match params {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => Default::default(),
        };
        self.catalog.resources.insert(
            (role, name.into()),
            Resource {
                role,
                metadata: Metadata {
                    name: name.into(),
                    ..Default::default()
                },
                spec: ResourceSpec {
                    type_name: ty.into(),
                    parameters,
                },
                origin: origin(&format!("{name}.yaml"), &[]),
                spec_pointer: "/spec".into(),
                inline_in: None,
            },
        );
        self
    }

    fn config(&mut self, name: &str, spec: serde_json::Value) -> &mut Self {
        let spec: ConfigurationSpec = serde_json::from_value(spec).unwrap();
        self.catalog.configurations.insert(
            name.into(),
            Configuration {
                metadata: Metadata {
                    name: name.into(),
                    ..Default::default()
                },
                spec,
                origin: origin(
                    &format!("configurations/{name}.yaml"),
                    &[("/metadata/name", 4)],
                ),
            },
        );
        self
    }

    /// A small but complete repository: otlp + filelog sources, batch processor, an otlp
    /// destination with a sensitive key and a debug destination (logs only).
    fn basic() -> Repo {
        let mut r = Repo::default();
        let otlp_recv = "otlp:\n  protocols:\n    grpc:\n      endpoint: 0.0.0.0:{{ grpc_port }}\n";
        r.ty(
            Role::Source,
            "otlp",
            vec![param("grpc_port", ParameterType::Int, Some(json!(4317)))],
            &[
                (Signal::Logs, tmpl(Some(otlp_recv), None, None, None)),
                (Signal::Metrics, tmpl(Some(otlp_recv), None, None, None)),
                (Signal::Traces, tmpl(Some(otlp_recv), None, None, None)),
            ],
        );
        r.ty(
            Role::Source,
            "filelog",
            vec![param("include", ParameterType::Strings, None)],
            &[(
                Signal::Logs,
                tmpl(
                    Some("filelog:\n  include: {{ include | toyaml }}\n"),
                    Some("resource/file:\n  attributes:\n    - {key: log.source, value: {{ name }}, action: upsert}\n"),
                    None,
                    Some("file_storage: {directory: /var/lib/otelcol}\n"),
                ),
            )],
        );
        let batch = "batch:\n";
        r.ty(
            Role::Processor,
            "batch",
            vec![],
            &[
                (Signal::Logs, tmpl(None, Some(batch), None, None)),
                (Signal::Metrics, tmpl(None, Some(batch), None, None)),
                (Signal::Traces, tmpl(None, Some(batch), None, None)),
            ],
        );
        let mut key = param("api_key", ParameterType::String, None);
        key.sensitive = true;
        let exp = "otlp:\n  endpoint: {{ endpoint }}\n  headers:\n    x-api-key: {{ api_key | tojson }}\n  env: ${env:OTLP_TOKEN}\n";
        r.ty(
            Role::Destination,
            "otlp-grpc",
            vec![param("endpoint", ParameterType::String, None), key],
            &[
                (Signal::Logs, tmpl(None, None, Some(exp), None)),
                (Signal::Metrics, tmpl(None, None, Some(exp), None)),
                (Signal::Traces, tmpl(None, None, Some(exp), None)),
            ],
        );
        r.ty(
            Role::Destination,
            "debug",
            vec![],
            &[(
                Signal::Logs,
                tmpl(None, None, Some("debug:\n  verbosity: basic\n"), None),
            )],
        );
        r.res(Role::Source, "app", "otlp", json!({}));
        r.res(
            Role::Source,
            "files",
            "filelog",
            json!({"include": ["/var/log/*.log"]}),
        );
        r.res(Role::Processor, "batch", "batch", json!({}));
        r.res(Role::Processor, "batch2", "batch", json!({}));
        r.res(
            Role::Destination,
            "backend",
            "otlp-grpc",
            json!({"endpoint": "otel.example.com:4317", "api_key": "s3cr3t-value"}),
        );
        r.res(Role::Destination, "console", "debug", json!({}));
        r.config(
            "prod",
            json!({
                "sources": ["app", {"name": "files", "processors": ["batch2"]}],
                "processors": ["batch"],
                "destinations": ["backend", "console"],
                "service": {"telemetry": {"logs": {"level": "info"}}}
            }),
        );
        r
    }
}

fn codes_of(d: &Diagnostics) -> Vec<&'static str> {
    d.iter().map(|d| d.code).collect()
}

#[test]
fn renders_pipelines_in_the_documented_shape() {
    let r = Repo::basic();
    let (out, diags) = render(&r.catalog);
    assert!(diags.is_empty(), "{diags}");
    let prod = &out.configurations["prod"];
    let tree: serde_json::Value = serde_saphyr::from_str(&prod.yaml).unwrap();
    let keys: Vec<&String> = tree.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "receivers",
            "processors",
            "exporters",
            "extensions",
            "service"
        ]
    );
    let pipelines = tree["service"]["pipelines"].as_object().unwrap();
    let names: Vec<&String> = pipelines.keys().collect();
    assert_eq!(
        names,
        [
            "logs/app__backend",
            "logs/app__console",
            "logs/files__backend",
            "logs/files__console",
            "metrics/app__backend",
            "traces/app__backend",
        ]
    );
    assert_eq!(
        pipelines["logs/files__console"],
        json!({
            "receivers": ["filelog/src-files"],
            "processors": ["resource/src-files__file", "batch/proc-batch2", "batch/proc-batch"],
            "exporters": ["debug/dst-console"],
        })
    );
    assert_eq!(
        tree["receivers"]["otlp/src-app"]["protocols"]["grpc"]["endpoint"],
        json!("0.0.0.0:4317")
    );
    assert_eq!(
        tree["service"]["extensions"],
        json!(["file_storage/src-files"])
    );
    assert_eq!(tree["service"]["telemetry"]["logs"]["level"], json!("info"));
    assert!(check::check(&prod.yaml).is_ok());
    // config map: one entry, default key, YAML content type, hash over it.
    assert_eq!(prod.config_map.len(), 1);
    let file = &prod.config_map[""];
    assert_eq!(file.content_type, YAML_CONTENT_TYPE);
    assert_eq!(&file.body[..], prod.yaml.as_bytes());
    assert_eq!(prod.hash, ConfigHash::of(&prod.config_map));
}

#[test]
fn masks_sensitive_values_and_keeps_env_references() {
    let r = Repo::basic();
    let (out, _) = render(&r.catalog);
    let prod = &out.configurations["prod"];
    assert!(prod.yaml.contains("s3cr3t-value"));
    assert!(!prod.masked_yaml.contains("s3cr3t-value"));
    assert!(prod.masked_yaml.contains("'***'") || prod.masked_yaml.contains("\"***\""));
    assert!(prod.yaml.contains("${env:OTLP_TOKEN}"));
    assert!(prod.masked_yaml.contains("${env:OTLP_TOKEN}"));
}

#[test]
fn deterministic() {
    let (a, _) = render(&Repo::basic().catalog);
    let (b, _) = render(&Repo::basic().catalog);
    assert_eq!(a.configurations["prod"].yaml, b.configurations["prod"].yaml);
    assert_eq!(a.configurations["prod"].hash, b.configurations["prod"].hash);
}

#[test]
fn config_map_key_is_honoured() {
    let mut r = Repo::basic();
    r.config(
        "keyed",
        json!({"sources": ["app"], "destinations": ["backend"], "configMapKey": "collector.yaml"}),
    );
    let (out, _) = render(&r.catalog);
    assert!(
        out.configurations["keyed"]
            .config_map
            .contains_key("collector.yaml")
    );
}

#[test]
fn template_errors_point_into_the_type_file() {
    let mut r = Repo::basic();
    r.ty(
        Role::Source,
        "broken",
        vec![],
        &[(
            Signal::Logs,
            tmpl(
                Some("filelog:\n  include: [{{ nope }}]\n"),
                None,
                None,
                None,
            ),
        )],
    );
    r.res(Role::Source, "b", "broken", json!({}));
    r.ty(
        Role::Source,
        "syntax",
        vec![],
        &[(
            Signal::Metrics,
            tmpl(Some("a:\n\n {% if %}\n"), None, None, None),
        )],
    );
    let (_, diags) = render(&r.catalog);
    let e101 = diags.iter().find(|d| d.code == "E101").unwrap();
    assert_eq!(&*e101.location.file, "types/broken.yaml");
    assert_eq!(e101.location.line, 11, "{e101}");
    let e100 = diags.iter().find(|d| d.code == "E100").unwrap();
    assert_eq!(&*e100.location.file, "types/syntax.yaml");
    assert_eq!(e100.location.line, 22, "{e100}");
}

#[test]
fn template_output_shape() {
    let mut r = Repo::basic();
    r.ty(
        Role::Source,
        "list",
        vec![],
        &[(Signal::Logs, tmpl(Some("- a\n- b\n"), None, None, None))],
    );
    r.ty(
        Role::Source,
        "bad-yaml",
        vec![],
        &[(Signal::Metrics, tmpl(Some("a: [\n"), None, None, None))],
    );
    r.ty(
        Role::Source,
        "bad-key",
        vec![],
        &[(
            Signal::Logs,
            tmpl(Some("\"9lives\": {}\n"), None, None, None),
        )],
    );
    r.ty(
        Role::Source,
        "misplaced",
        vec![],
        &[(Signal::Logs, tmpl(None, None, Some("debug:\n"), None))],
    );
    for (n, t) in [("l", "list"), ("y", "bad-yaml"), ("k", "bad-key")] {
        r.res(Role::Source, n, t, json!({}));
    }
    let (_, diags) = render(&r.catalog);
    let mut codes = codes_of(&diags);
    codes.sort();
    assert_eq!(codes, ["E102", "E103", "E104", "E105"], "{diags}");
}

#[test]
fn hostile_templates_are_bounded() {
    let mut r = Repo::basic();
    r.ty(
        Role::Source,
        "loop",
        vec![],
        &[(
            Signal::Logs,
            tmpl(
                Some("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"),
                None,
                None,
                None,
            ),
        )],
    );
    r.res(Role::Source, "l", "loop", json!({}));
    let (_, diags) = render(&r.catalog);
    let d = diags.iter().find(|d| d.code == "E101").unwrap();
    assert!(d.message.contains("fuel"), "{d}");
}

#[test]
fn conflicting_definitions_across_signals() {
    let mut r = Repo::basic();
    r.ty(
        Role::Source,
        "split",
        vec![],
        &[
            (
                Signal::Logs,
                tmpl(Some("otlp: {protocols: {grpc: {}}}\n"), None, None, None),
            ),
            (
                Signal::Metrics,
                tmpl(Some("otlp: {protocols: {http: {}}}\n"), None, None, None),
            ),
        ],
    );
    r.res(Role::Source, "s", "split", json!({}));
    let (_, diags) = render(&r.catalog);
    assert_eq!(codes_of(&diags), ["E108"], "{diags}");
    assert_eq!(diags.0[0].location.line, 20);
}

#[test]
fn configuration_findings() {
    let mut r = Repo::basic();
    r.config(
        "nothing",
        json!({"sources": ["files"], "destinations": ["backend"]}),
    );
    // files only has logs; backend does logs too, so make one with no shared signal:
    r.ty(
        Role::Destination,
        "metrics-only",
        vec![],
        &[(Signal::Metrics, tmpl(None, None, Some("debug:\n"), None))],
    );
    r.res(Role::Destination, "m", "metrics-only", json!({}));
    r.config(
        "disjoint",
        json!({"sources": ["files"], "destinations": ["m"]}),
    );
    r.config(
        "partial",
        json!({"sources": ["app"], "destinations": ["console"]}),
    );
    r.config(
        "svc",
        json!({"sources": ["app"], "destinations": ["backend"], "service": {"pipelines": {}}}),
    );
    r.config(
        "dup",
        json!({"sources": [{"name": "app", "processors": ["batch"]}], "processors": ["batch"], "destinations": ["backend"]}),
    );
    r.config(
        "broken-ref",
        json!({"sources": ["missing"], "destinations": ["backend"]}),
    );
    let (out, diags) = render(&r.catalog);
    let by_file = |f: &str| -> Vec<&'static str> {
        let mut v: Vec<_> = diags
            .iter()
            .filter(|d| &*d.location.file == f)
            .map(|d| d.code)
            .collect();
        v.sort();
        v
    };
    assert_eq!(by_file("configurations/nothing.yaml"), Vec::<&str>::new());
    assert_eq!(by_file("configurations/disjoint.yaml"), ["E106", "W107"]);
    assert_eq!(by_file("configurations/partial.yaml"), ["W107", "W107"]);
    assert_eq!(by_file("configurations/svc.yaml"), ["E109"]);
    assert_eq!(by_file("configurations/dup.yaml"), ["W110", "W110", "W110"]);
    assert_eq!(
        by_file("configurations/broken-ref.yaml"),
        Vec::<&str>::new()
    );
    assert!(out.configurations.contains_key("partial"));
    assert!(out.configurations.contains_key("dup"));
    assert!(!out.configurations.contains_key("disjoint"));
    assert!(!out.configurations.contains_key("svc"));
    assert!(!out.configurations.contains_key("broken-ref"));
}

#[test]
fn total_on_an_empty_or_dangling_catalog() {
    let mut r = Repo::default();
    r.res(Role::Source, "orphan", "no-such-type", json!({}));
    r.config("c", json!({}));
    let (out, diags) = render(&r.catalog);
    assert!(out.configurations.is_empty());
    assert_eq!(codes_of(&diags), ["E106"]);
    let (out, diags) = render(&Catalog::default());
    assert!(out.configurations.is_empty() && diags.is_empty());
}

#[test]
fn optional_parameters_without_default_are_none() {
    let mut r = Repo::default();
    r.ty(
        Role::Source,
        "opt",
        vec![param("extra", ParameterType::String, None)],
        &[(
            Signal::Logs,
            tmpl(
                Some("otlp:\n{% if extra %}  x: {{ extra }}\n{% else %}  protocols: {grpc: {}}\n{% endif %}"),
                None,
                None,
                None,
            ),
        )],
    );
    r.ty(
        Role::Destination,
        "d",
        vec![],
        &[(Signal::Logs, tmpl(None, None, Some("debug:\n"), None))],
    );
    r.res(Role::Source, "s", "opt", json!({}));
    r.res(Role::Destination, "d", "d", json!({}));
    r.config("c", json!({"sources": ["s"], "destinations": ["d"]}));
    let (out, diags) = render(&r.catalog);
    assert!(diags.is_empty(), "{diags}");
    assert!(out.configurations["c"].yaml.contains("grpc"));
}

/// Guards the assumption `components::error_location` makes: the loader positions a block-scalar
/// template where its content starts (the line after `receivers: |`), so template line N is
/// file line `position + N - 1`.
#[test]
fn block_scalar_templates_are_located_at_their_first_line() {
    let mut d = Diagnostics::default();
    let text = "kind: SourceType\nspec:\n  templates:\n    logs:\n      receivers: |\n        otlp:\n          protocols: {}\n      processors: >-\n        batch:\n";
    let docs = crate::catalog::load::parse_file("t.yaml", text.as_bytes(), &mut d);
    assert!(d.is_empty(), "{d}");
    assert_eq!(docs[0].locate("/spec/templates/logs/receivers").line, 6);
    assert_eq!(docs[0].locate("/spec/templates/logs/processors").line, 9);
}
