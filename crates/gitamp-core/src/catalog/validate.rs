//! Semantic validation: documents that passed their schema become typed resources, then names,
//! references, parameters and selectors are checked across the whole repository.
//!
//! Best effort throughout: a problem is reported and the resource is still registered where
//! that avoids a cascade of follow-up errors (a misspelt type does not also make every
//! configuration using the resource fail). Names of documents that failed earlier stages are
//! remembered ([`Broken`]) so references to them are not reported a second time.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Catalog;
use super::agent_version::{self, AgentVersion, AgentVersionSpec};
use super::codes::{self, Code};
use super::diagnostics::{Diagnostics, Location};
use super::load::{Document, escape_token};
use super::model::{
    ComponentRef, Configuration, ConfigurationSpec, Kind, Metadata, Origin, ParameterSpec,
    ParameterType, Resource, ResourceSpec, ResourceType, Role, RolloutStrategy,
    SelectorValuesProblem, TypeSpec,
};
use super::params::{self, Problem};
use crate::plan::selector::may_overlap;

/// (kind, name) of documents that were rejected before typing; references to them are not
/// reported again.
pub type Broken = BTreeSet<(Kind, String)>;

/// The name a rejected document would have had, if it can be read.
pub fn broken_name(doc: &Document) -> Option<(Kind, String)> {
    let kind = Kind::parse(doc.value.get("kind")?.as_str()?)?;
    let name = doc.value.get("metadata")?.get("name")?.as_str()?;
    Some((kind, name.to_string()))
}

/// Names an unreadable file (bad YAML, not UTF-8) probably declares, found by a line scan:
/// references to them are not reported, since the file's own error is the one to fix.
pub fn names_in_unreadable(bytes: &[u8]) -> Broken {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Broken::new();
    for line in text.lines() {
        let Some(rest) = line
            .trim_start()
            .trim_start_matches("- ")
            .strip_prefix("name:")
        else {
            continue;
        };
        let name = rest.trim().trim_matches(|c| c == '"' || c == '\'');
        if !name.is_empty() {
            out.extend(Kind::ALL.map(|k| (k, name.to_string())));
        }
    }
    out
}

/// The common envelope; `apiVersion` and `kind` were checked by the schema stage.
#[derive(Deserialize)]
struct Envelope {
    metadata: Metadata,
    spec: Value,
}

/// Build the catalog from schema-clean documents and check their meaning.
pub fn build(
    revision: &str,
    docs: Vec<(Kind, Document)>,
    mut broken: Broken,
    diags: &mut Diagnostics,
) -> Catalog {
    let mut catalog = Catalog {
        revision: revision.to_string(),
        ..Catalog::default()
    };
    let mut types = Vec::new();
    let mut resources = Vec::new();
    let mut configurations = Vec::new();
    let mut versions = Vec::new();
    for (kind, doc) in docs {
        let name = broken_name(&doc);
        let typed = match kind {
            Kind::SourceType | Kind::ProcessorType | Kind::DestinationType => {
                typed::<TypeSpec>(&doc, diags).map(|(m, s)| types.push((kind, m, s, doc)))
            }
            Kind::Source | Kind::Processor | Kind::Destination => {
                typed::<ResourceSpec>(&doc, diags).map(|(m, s)| resources.push((kind, m, s, doc)))
            }
            Kind::Configuration => typed::<ConfigurationSpec>(&doc, diags)
                .map(|(m, s)| configurations.push((m, s, doc))),
            Kind::AgentVersion => {
                typed::<AgentVersionSpec>(&doc, diags).map(|(m, s)| versions.push((m, s, doc)))
            }
        };
        if typed.is_none() {
            broken.extend(name);
        }
    }

    let mut names = Names::default();
    for (kind, metadata, spec, doc) in types {
        let Some(role) = kind.role() else { continue };
        if !names.claim(kind, &metadata.name, doc.locate("/metadata/name"), diags) {
            continue;
        }
        check_type(kind, &metadata.name, &spec, &doc.origin, diags);
        catalog.types.insert(
            (role, metadata.name.clone()),
            ResourceType {
                role,
                metadata,
                spec,
                origin: doc.origin,
            },
        );
    }
    for (kind, metadata, spec, doc) in resources {
        let Some(role) = kind.role() else { continue };
        if !names.claim(kind, &metadata.name, doc.locate("/metadata/name"), diags) {
            continue;
        }
        catalog.resources.insert(
            (role, metadata.name.clone()),
            Resource {
                role,
                metadata,
                spec,
                origin: doc.origin,
                spec_pointer: "/spec".to_string(),
                inline_in: None,
            },
        );
    }
    for (metadata, spec, doc) in configurations {
        let kind = Kind::Configuration;
        if !names.claim(kind, &metadata.name, doc.locate("/metadata/name"), diags) {
            continue;
        }
        register_inline(
            &metadata.name,
            &spec,
            &doc.origin,
            &mut names,
            &mut catalog,
            diags,
        );
        catalog.configurations.insert(
            metadata.name.clone(),
            Configuration {
                metadata,
                spec,
                origin: doc.origin,
            },
        );
    }

    for (metadata, spec, doc) in versions {
        if !names.claim(
            Kind::AgentVersion,
            &metadata.name,
            doc.locate("/metadata/name"),
            diags,
        ) {
            continue;
        }
        catalog.agent_versions.insert(
            metadata.name.clone(),
            AgentVersion {
                metadata,
                spec,
                origin: doc.origin,
            },
        );
    }
    agent_version::check_versions(&catalog.agent_versions, diags);

    for resource in catalog.resources.values() {
        check_resource(resource, &catalog, &broken, diags);
    }
    for configuration in catalog.configurations.values() {
        check_configuration(configuration, &catalog, &broken, diags);
        agent_version::check_pin(configuration, &catalog.agent_versions, &broken, diags);
    }
    check_overlaps(&catalog, diags);
    catalog
}

/// Deserialize the typed metadata and spec of a schema-clean document.
fn typed<S: DeserializeOwned>(doc: &Document, diags: &mut Diagnostics) -> Option<(Metadata, S)> {
    let envelope: Envelope = match serde_json::from_value(doc.value.clone()) {
        Ok(e) => e,
        Err(e) => {
            diags.push(codes::INVALID_DOCUMENT.at(doc.locate(""), format!("{e}")));
            return None;
        }
    };
    match serde_json::from_value::<S>(envelope.spec) {
        Ok(spec) => Some((envelope.metadata, spec)),
        Err(e) => {
            diags.push(codes::INVALID_DOCUMENT.at(doc.locate("/spec"), format!("spec: {e}")));
            None
        }
    }
}

/// First declaration of every name, per kind (resources declared inline share their kind's
/// names with top-level ones).
#[derive(Default)]
struct Names(BTreeMap<(Kind, String), Location>);

impl Names {
    /// Record `name`; false (and a diagnostic at the second one) if it is already taken.
    fn claim(&mut self, kind: Kind, name: &str, at: Location, diags: &mut Diagnostics) -> bool {
        if let Some(first) = self.0.get(&(kind, name.to_string())) {
            diags.push(codes::DUPLICATE_NAME.at(
                at,
                format!(
                    "{} `{name}` is already defined at {}:{}; rename or remove one of them",
                    kind.as_str(),
                    first.file,
                    first.line
                ),
            ));
            return false;
        }
        self.0.insert((kind, name.to_string()), at);
        true
    }
}

/// Register the inline resources (entries with `type`) of a configuration.
fn register_inline(
    config: &str,
    spec: &ConfigurationSpec,
    origin: &Origin,
    names: &mut Names,
    catalog: &mut Catalog,
    diags: &mut Diagnostics,
) {
    for (pointer, role, entry) in entries(spec) {
        let ComponentRef::Entry(e) = entry else {
            continue;
        };
        let Some(type_name) = &e.type_name else {
            continue;
        };
        if !names.claim(
            role.resource_kind(),
            &e.name,
            origin.locate(&format!("{pointer}/name")),
            diags,
        ) {
            continue;
        }
        catalog.resources.insert(
            (role, e.name.clone()),
            Resource {
                role,
                metadata: Metadata {
                    name: e.name.clone(),
                    ..Metadata::default()
                },
                spec: ResourceSpec {
                    type_name: type_name.clone(),
                    parameters: e.parameters.clone(),
                },
                origin: origin.clone(),
                spec_pointer: pointer,
                inline_in: Some(config.to_string()),
            },
        );
    }
}

/// Every entry of a configuration with its JSON pointer and role, per-entry processors
/// included, in document order.
fn entries(spec: &ConfigurationSpec) -> Vec<(String, Role, &ComponentRef)> {
    let mut out = Vec::new();
    let lists = [
        ("sources", Role::Source, &spec.sources),
        ("processors", Role::Processor, &spec.processors),
        ("destinations", Role::Destination, &spec.destinations),
    ];
    for (field, role, list) in lists {
        for (i, entry) in list.iter().enumerate() {
            let pointer = format!("/spec/{field}/{i}");
            for (j, p) in entry.processors().iter().enumerate() {
                out.push((format!("{pointer}/processors/{j}"), Role::Processor, p));
            }
            out.push((pointer, role, entry));
        }
    }
    out.sort_by_key(|(p, _, _)| p.clone());
    out
}

fn check_type(kind: Kind, name: &str, spec: &TypeSpec, origin: &Origin, diags: &mut Diagnostics) {
    let what = format!("{} `{name}`", kind.as_str());
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in spec.parameters.iter().enumerate() {
        let at = |field: &str| origin.locate(&format!("/spec/parameters/{i}{field}"));
        if let Some(first) = seen.insert(&p.name, i) {
            seen.insert(&p.name, first);
            diags.push(codes::DUPLICATE_PARAMETER.at(
                at("/name"),
                format!(
                    "{what} declares parameter `{}` twice (also at line {}); remove one",
                    p.name,
                    at_line(origin, &format!("/spec/parameters/{first}/name"))
                ),
            ));
        }
        if p.kind == ParameterType::Enum && p.valid_values.is_empty() {
            diags.push(codes::ENUM_WITHOUT_VALUES.at(
                at(""),
                format!(
                    "{what}: enum parameter `{}` declares no validValues; list the allowed \
                     values under `validValues`",
                    p.name
                ),
            ));
        }
        if let Some(default) = &p.default {
            let problem = match params::check_value(p, default) {
                Some(Problem::Type(m) | Problem::NotValid(m)) => Some(m),
                None => None,
            };
            if let Some(m) = problem {
                diags.push(codes::BAD_DEFAULT.at(
                    at("/default"),
                    format!(
                        "{what}: the default of parameter `{}` is invalid: {m}",
                        p.name
                    ),
                ));
            }
        }
    }
}

fn at_line(origin: &Origin, pointer: &str) -> u32 {
    origin.locate(pointer).line
}

/// How a resource is named in messages.
fn describe_resource(r: &Resource) -> String {
    let kind = r.role.resource_kind().as_str();
    match &r.inline_in {
        Some(c) => format!("inline {kind} `{}` of configuration `{c}`", r.metadata.name),
        None => format!("{kind} `{}`", r.metadata.name),
    }
}

fn check_resource(r: &Resource, catalog: &Catalog, broken: &Broken, diags: &mut Diagnostics) {
    let what = describe_resource(r);
    let type_kind = r.role.type_kind();
    let Some(ty) = catalog.types.get(&(r.role, r.spec.type_name.clone())) else {
        if broken.contains(&(type_kind, r.spec.type_name.clone())) {
            return;
        }
        let known: Vec<&str> = catalog
            .types
            .keys()
            .filter(|(role, _)| *role == r.role)
            .map(|(_, n)| n.as_str())
            .collect();
        let hint = match params::closest(&r.spec.type_name, known.iter().copied()) {
            Some(c) => format!("; did you mean `{c}`?"),
            None if known.is_empty() => format!("; no {} is defined", type_kind.as_str()),
            None => format!("; known: {}", known.join(", ")),
        };
        diags.push(codes::UNKNOWN_TYPE.at(
            r.origin.locate(&format!("{}/type", r.spec_pointer)),
            format!(
                "{what} names {} `{}`, which does not exist{hint}",
                type_kind.as_str(),
                r.spec.type_name
            ),
        ));
        return;
    };
    check_parameters(r, &what, &ty.spec.parameters, diags);
}

fn check_parameters(r: &Resource, what: &str, decls: &[ParameterSpec], diags: &mut Diagnostics) {
    let base = format!("{}/parameters", r.spec_pointer);
    for (name, value) in &r.spec.parameters {
        let at = r.origin.locate(&format!("{base}/{}", escape_token(name)));
        let Some(decl) = decls.iter().find(|d| &d.name == name) else {
            let hint = match params::closest(name, decls.iter().map(|d| d.name.as_str())) {
                Some(c) => format!("did you mean `{c}`?"),
                None if decls.is_empty() => "it declares no parameters".to_string(),
                None => format!(
                    "it declares {}",
                    decls
                        .iter()
                        .map(|d| format!("`{}`", d.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            diags.push(codes::UNKNOWN_PARAMETER.at(
                at,
                format!(
                    "{what}: type `{}` has no parameter `{name}`; {hint}",
                    r.spec.type_name
                ),
            ));
            continue;
        };
        match params::check_value(decl, value) {
            Some(Problem::Type(m)) => diags.push(codes::PARAMETER_TYPE.at(
                at,
                format!("{what}: parameter `{name}` ({}) {m}", type_name(decl.kind)),
            )),
            Some(Problem::NotValid(m)) => diags.push(codes::PARAMETER_NOT_VALID.at(
                at,
                format!("{what}: parameter `{name}`: {m}; use one of them"),
            )),
            None => {
                if decl.sensitive && !params::mentions_env_ref(value) {
                    diags.push(codes::SENSITIVE_LITERAL.at(
                        at,
                        format!(
                            "{what}: sensitive parameter `{name}` holds a literal value; keep \
                             secrets out of Git with `${{env:NAME}}`"
                        ),
                    ));
                }
            }
        }
    }
    for decl in decls {
        if decl.required && decl.default.is_none() && !r.spec.parameters.contains_key(&decl.name) {
            let at = if r.spec.parameters.is_empty() {
                r.origin.locate(&r.spec_pointer)
            } else {
                r.origin.locate(&base)
            };
            diags.push(codes::MISSING_PARAMETER.at(
                at,
                format!(
                    "{what}: required parameter `{}` of type `{}` is missing; add it under \
                     `parameters`",
                    decl.name, r.spec.type_name
                ),
            ));
        }
    }
}

/// A parameter type as written in YAML.
fn type_name(t: ParameterType) -> &'static str {
    match t {
        ParameterType::String => "string",
        ParameterType::Int => "int",
        ParameterType::Bool => "bool",
        ParameterType::Enum => "enum",
        ParameterType::Strings => "strings",
        ParameterType::Map => "map",
        ParameterType::Yaml => "yaml",
        ParameterType::Duration => "duration",
    }
}

fn unknown_ref_code(role: Role) -> Code {
    match role {
        Role::Source => codes::UNKNOWN_SOURCE,
        Role::Processor => codes::UNKNOWN_PROCESSOR,
        Role::Destination => codes::UNKNOWN_DESTINATION,
    }
}

fn check_configuration(
    c: &Configuration,
    catalog: &Catalog,
    broken: &Broken,
    diags: &mut Diagnostics,
) {
    let name = &c.metadata.name;
    let o = &c.origin;
    let spec_at = |field: &str| {
        if o.positions.contains_key(&format!("/spec/{field}")) {
            o.locate(&format!("/spec/{field}"))
        } else {
            o.locate("/spec")
        }
    };
    if c.spec.sources.is_empty() {
        diags.push(codes::NO_SOURCES.at(
            spec_at("sources"),
            format!("configuration `{name}` lists no sources; add at least one under `sources`"),
        ));
    }
    if c.spec.destinations.is_empty() {
        diags.push(codes::NO_DESTINATIONS.at(
            spec_at("destinations"),
            format!(
                "configuration `{name}` lists no destinations; add at least one under \
                 `destinations`"
            ),
        ));
    }
    for (i, r) in c.spec.selector.match_expressions.iter().enumerate() {
        let at = o.locate(&format!("/spec/selector/matchExpressions/{i}"));
        let op = format!("{:?}", r.operator);
        match r.values_problem() {
            Some(SelectorValuesProblem::Missing) => diags.push(codes::SELECTOR_VALUES.at(
                at,
                format!(
                    "configuration `{name}`: `{op}` on `{}` needs at least one value; add \
                         `values`",
                    r.key
                ),
            )),
            Some(SelectorValuesProblem::Unexpected) => diags.push(codes::SELECTOR_VALUES.at(
                at,
                format!(
                    "configuration `{name}`: `{op}` on `{}` takes no values; remove \
                         `values` or use In/NotIn",
                    r.key
                ),
            )),
            None => {}
        }
    }
    super::telemetry::check(c, diags);
    if let Some(rollout) = &c.spec.rollout
        && rollout.strategy == RolloutStrategy::AllAtOnce
        && rollout.batch_size.is_some()
    {
        diags.push(codes::BATCH_SIZE_IGNORED.at(
            o.locate("/spec/rollout/batchSize"),
            format!(
                "configuration `{name}`: batchSize is ignored by strategy AllAtOnce; set \
                 `strategy: Batched` or remove batchSize"
            ),
        ));
    }

    // References and duplicates within each list (per-entry processor lists are lists too).
    let mut seen: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    for (pointer, role, entry) in entries(&c.spec) {
        let list = pointer
            .rfind('/')
            .map_or(pointer.clone(), |i| pointer[..i].to_string());
        let at = o.locate(&pointer);
        if let Some(first) = seen
            .entry(list.clone())
            .or_default()
            .insert(entry.name(), pointer.clone())
        {
            diags.push(codes::DUPLICATE_ENTRY.at(
                at.clone(),
                format!(
                    "configuration `{name}` lists {} `{}` twice in `{}` (also at line {}); \
                     remove one",
                    role.resource_kind().as_str().to_lowercase(),
                    entry.name(),
                    list.trim_start_matches("/spec/").replace('/', "."),
                    o.locate(&first).line
                ),
            ));
        }
        if let ComponentRef::Entry(e) = entry
            && e.type_name.is_none()
            && !e.parameters.is_empty()
        {
            diags.push(codes::PARAMETERS_ON_REFERENCE.at(
                o.locate(&format!("{pointer}/parameters")),
                format!(
                    "configuration `{name}`: `{}` is a reference (no `type`), so it takes no \
                     parameters; set them on the {} itself, or add `type` to declare it inline",
                    e.name,
                    role.resource_kind().as_str()
                ),
            ));
        }
        if entry.is_inline()
            || catalog
                .resources
                .contains_key(&(role, entry.name().to_string()))
        {
            continue;
        }
        let kind = role.resource_kind();
        if broken.contains(&(kind, entry.name().to_string())) {
            continue;
        }
        let other = [Role::Source, Role::Processor, Role::Destination]
            .into_iter()
            .find(|r| {
                catalog
                    .resources
                    .contains_key(&(*r, entry.name().to_string()))
            });
        let hint = match other {
            Some(r) => format!(
                "; a {} of that name exists: list it under `{}`",
                r.resource_kind().as_str(),
                match r {
                    Role::Source => "sources",
                    Role::Processor => "processors",
                    Role::Destination => "destinations",
                }
            ),
            None => {
                let known = catalog
                    .resources
                    .keys()
                    .filter(|(r, _)| *r == role)
                    .map(|(_, n)| n.as_str());
                match params::closest(entry.name(), known) {
                    Some(m) => format!("; did you mean `{m}`?"),
                    None => format!(
                        "; define a {} named `{}` or declare it inline with `type`",
                        kind.as_str(),
                        entry.name()
                    ),
                }
            }
        };
        diags.push(unknown_ref_code(role).at(
            at,
            format!(
                "configuration `{name}` uses {} `{}`, which does not exist{hint}",
                kind.as_str().to_lowercase(),
                entry.name()
            ),
        ));
    }
}

/// Equal priority plus selectors that may both match: those agents would get nothing.
fn check_overlaps(catalog: &Catalog, diags: &mut Diagnostics) {
    let mut configs: Vec<&Configuration> = catalog.configurations.values().collect();
    configs.sort_by_key(|c| c.origin.locate(""));
    for (j, second) in configs.iter().enumerate() {
        for first in &configs[..j] {
            if first.spec.priority != second.spec.priority
                || !may_overlap(&first.spec.selector, &second.spec.selector)
            {
                continue;
            }
            let at = if second.origin.positions.contains_key("/spec/selector") {
                second.origin.locate("/spec/selector")
            } else {
                second.origin.locate("/metadata/name")
            };
            let f = first.origin.locate("/metadata/name");
            diags.push(codes::OVERLAPPING_SELECTORS.at(
                at,
                format!(
                    "configurations `{}` ({}:{}) and `{}` have the same priority {} and \
                     selectors that can match the same agent, which would then get neither \
                     (conflict); give one a higher priority or make the selectors exclusive",
                    first.metadata.name, f.file, f.line, second.metadata.name, second.spec.priority
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::diagnostics::Severity;
    use crate::catalog::model::Role;
    use crate::catalog::{Catalog, load};
    use crate::snapshot::Snapshot;

    const TYPES: &str = "apiVersion: gitamp.dev/v1
kind: SourceType
metadata: {name: otlp}
spec:
  parameters:
    - {name: port, type: int, default: 4317}
  templates:
    logs: {receivers: 'otlp: {}'}
---
apiVersion: gitamp.dev/v1
kind: ProcessorType
metadata: {name: batch}
spec:
  templates:
    logs: {processors: 'batch: {}'}
---
apiVersion: gitamp.dev/v1
kind: DestinationType
metadata: {name: debug}
spec:
  parameters:
    - {name: level, type: enum, validValues: [basic, detailed], required: true}
  templates:
    logs: {exporters: 'debug: {}'}
";

    fn run(files: &[(&str, &str)]) -> (Catalog, Vec<String>) {
        let mut s = Snapshot::new("rev").with_file("types.yaml", TYPES);
        for (p, t) in files {
            s.insert(*p, *t);
        }
        let (c, d) = load(&s);
        let codes = d
            .iter()
            .map(|d| format!("{} {}:{}", d.code, d.location.file, d.location.line))
            .collect();
        (c, codes)
    }

    const CONFIG: &str = "apiVersion: gitamp.dev/v1
kind: Configuration
metadata: {name: main}
spec:
  sources:
    - name: in
      type: otlp
      parameters: {port: '${env:PORT}'}
      processors:
        - {name: b1, type: batch}
  destinations:
    - {name: out, type: debug, parameters: {level: basic}}
";

    #[test]
    fn own_telemetry_is_checked_at_its_line() {
        let telemetry = format!(
            "{CONFIG}  telemetry:
    metrics:
      endpoint: otlp.example.com:4318
      headers:
        Authorization: Bearer literal
        X-Scope-OrgID: team-a
    logs:
      endpoint: https://logs.example.com/v1/logs
      headers: {{Authorization: 'Bearer ${{env:LOGS_TOKEN}}'}}
"
        );
        let (c, codes) = run(&[("c.yaml", &telemetry)]);
        assert_eq!(codes, vec!["E036 c.yaml:15", "E037 c.yaml:17"]);
        let spec = c.configurations["main"]
            .spec
            .telemetry
            .clone()
            .expect("telemetry");
        assert_eq!(spec.logs.expect("logs").headers.len(), 1);
    }

    #[test]
    fn inline_resources_are_registered() {
        let (c, codes) = run(&[("c.yaml", CONFIG)]);
        assert!(codes.is_empty(), "{codes:?}");
        assert_eq!(c.types.len(), 3);
        let inline = &c.resources[&(Role::Source, "in".to_string())];
        assert_eq!(inline.inline_in.as_deref(), Some("main"));
        assert_eq!(inline.spec_pointer, "/spec/sources/0");
        assert_eq!(inline.spec.type_name, "otlp");
        let nested = &c.resources[&(Role::Processor, "b1".to_string())];
        assert_eq!(nested.spec_pointer, "/spec/sources/0/processors/0");
        assert_eq!(nested.origin.locate(&nested.spec_pointer).line, 10);
        assert!(c.configurations.contains_key("main"));
    }

    #[test]
    fn every_problem_in_one_run_without_cascades() {
        let bad_source = "apiVersion: gitamp.dev/v1
kind: Source
metadata: {name: app}
spec: {type: otlp, extra: 1}
";
        let config = "apiVersion: gitamp.dev/v1
kind: Configuration
metadata: {name: main}
spec:
  sources: [app]
  destinations:
    - {name: out, type: debug}
    - {name: out2, type: debug, parameters: {level: loud}}
";
        let (c, codes) = run(&[
            ("a.yaml", bad_source),
            ("b.yaml", config),
            ("broken.yaml", "a: [\n"),
            (".github/workflows/ci.yml", "on: push\n"),
        ]);
        assert_eq!(
            codes,
            [
                "E008 a.yaml:4",
                "E022 b.yaml:7",
                "E021 b.yaml:8",
                "E001 broken.yaml:1",
            ],
            "{codes:?}"
        );
        assert!(c.configurations.contains_key("main"));
    }

    #[test]
    fn overlap_is_a_warning_unless_priorities_differ() {
        let cfg = |name: &str, prio: i64, env: &str| {
            format!(
                "apiVersion: gitamp.dev/v1
kind: Configuration
metadata: {{name: {name}}}
spec:
  priority: {prio}
  selector: {{matchLabels: {{env: {env}}}}}
  sources: [{{name: s-{name}, type: otlp}}]
  destinations: [{{name: d-{name}, type: debug, parameters: {{level: basic}}}}]
"
            )
        };
        let (a, b, c) = (cfg("a", 0, "prod"), cfg("b", 0, "prod"), cfg("c", 0, "dev"));
        let s = Snapshot::new("r")
            .with_file("types.yaml", TYPES)
            .with_file("a.yaml", &a)
            .with_file("b.yaml", &b)
            .with_file("c.yaml", &c);
        let (_, d) = load(&s);
        assert_eq!(d.len(), 1, "{d}");
        assert_eq!(d.0[0].code, "W001");
        assert_eq!(d.0[0].severity, Severity::Warning);
        assert_eq!(&*d.0[0].location.file, "b.yaml");
        assert!(d.0[0].message.contains("a.yaml:3"), "{d}");
        let b2 = cfg("b", 5, "prod");
        let (_, d) = load(&s.with_file("b.yaml", &b2));
        assert!(d.is_empty(), "{d}");
    }

    #[test]
    fn names_of_unreadable_files_are_not_reported_missing() {
        let unreadable =
            "apiVersion: gitamp.dev/v1\nkind: Source\nmetadata:\n  name: app\nspec: [\n";
        let config = "apiVersion: gitamp.dev/v1
kind: Configuration
metadata: {name: main}
spec:
  sources: [app]
  destinations: [{name: out, type: debug, parameters: {level: basic}}]
";
        let (_, codes) = run(&[("a.yaml", unreadable), ("b.yaml", config)]);
        assert_eq!(codes.len(), 1, "{codes:?}");
        assert!(codes[0].starts_with("E001 a.yaml"), "{codes:?}");
    }
}
