//! From the collector's words back to the repository: which resource produced the component
//! an error names, and which line of it (or of its type's template) wrote the part refused.
//!
//! Component IDs are derived from resource names (`<type>/<src|proc|dst>-<resource>` with an
//! optional `__<suffix>`, `gitamp_core::render::components::component_id`), so an ID leads back
//! to its resource. Then, in order: a key the error names, found as a key of a parameter value
//! (a `yaml` parameter inserted it) or as a key of a template line (when that line inserts a
//! parameter, the value of that parameter is what was refused: the resource's value, else the
//! type's default); a value the error quotes, found among the parameter values or template
//! lines; else the resource itself. Without a component, the configuration.

use gitamp_core::catalog::Catalog;
use gitamp_core::catalog::load::escape_token;
use gitamp_core::catalog::model::{Resource, ResourceType, Role, Signal};
use gitamp_core::render::codes;
use gitamp_core::render::components::{Section, template_pointer};
use gitamp_core::render::mask::mask_text;
use gitamp_core::{Diagnostic, Location};
use serde_json::Value as Json;

use super::parse::Refusal;

/// Every component ID of a rendered configuration, longest first (so that `otlp/src-a__b` is
/// found before `otlp/src-a`).
pub(super) fn component_ids(yaml: &str) -> Vec<String> {
    let Ok(Json::Object(tree)) = serde_saphyr::from_str::<Json>(yaml) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = TOP_SECTIONS
        .iter()
        .filter_map(|section| tree.get(*section).and_then(Json::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect();
    ids.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    ids.dedup();
    ids
}

const TOP_SECTIONS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
];

/// The resource a rendered component ID comes from (resource names never contain `_`, so the
/// first `__` ends the name).
fn resource_of(id: &str) -> Option<(Role, &str)> {
    let (_, rest) = id.split_once('/')?;
    let (prefix, rest) = rest.split_once('-')?;
    let role = [Role::Source, Role::Processor, Role::Destination]
        .into_iter()
        .find(|r| r.id_prefix() == prefix)?;
    let name = rest.split_once("__").map_or(rest, |(n, _)| n);
    (!name.is_empty()).then_some((role, name))
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.')
}

/// The component ID the error is about: the one it names first (whole words only).
fn named_component<'a>(ids: &'a [String], text: &str) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for id in ids {
        let mut from = 0;
        while let Some(off) = text[from..].find(id.as_str()) {
            let at = from + off;
            let end = at + id.len();
            let before = text[..at].chars().next_back();
            let after = text[end..].chars().next();
            if !before.is_some_and(is_id_char) && !after.is_some_and(is_id_char) {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, id));
                }
                break;
            }
            from = at + 1;
        }
    }
    best.map(|(_, id)| id)
}

/// An error saying the component cannot be built on this operating system (a Windows-only
/// receiver in a Linux build): a limit of the machine running the check, not a mistake.
fn is_platform_limit(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("only supported on windows")
        || t.contains("supported only on windows")
        || t.contains("not supported on non-windows")
}

/// One diagnostic for one error of the collector about configuration `config`, its message
/// masked with the revision's sensitive values.
pub(super) fn diagnose(
    catalog: &Catalog,
    config: &str,
    ids: &[String],
    refusal: &Refusal,
    secrets: &[String],
) -> Diagnostic {
    let text = refusal.text();
    let config_location = catalog
        .configurations
        .get(config)
        .map(|c| c.origin.locate("/metadata/name"))
        .unwrap_or_else(|| super::unknown_location(config));
    let platform = is_platform_limit(&text);
    let code = if platform {
        codes::COLLECTOR_CHECK_INCOMPLETE
    } else {
        codes::COLLECTOR_REFUSED_CONFIG
    };
    let found = named_component(ids, &text).and_then(|id| {
        let (role, name) = resource_of(id)?;
        let resource = catalog.resources.get(&(role, name.to_string()))?;
        let ty = catalog.types.get(&(role, resource.spec.type_name.clone()));
        Some((id, resource, ty))
    });
    let (location, message) = match found {
        None => (
            catalog
                .configurations
                .get(config)
                .and_then(|c| service_pointer(refusal).map(|p| c.origin.locate(&p)))
                .unwrap_or(config_location),
            if platform {
                format!(
                    "configuration `{config}`: the collector cannot judge it on this platform \
                     ({text}); it is unchecked, not known to be valid"
                )
            } else {
                format!("configuration `{config}`: the collector refused it: {text}")
            },
        ),
        Some((id, resource, ty)) => {
            let (location, part) = locate(resource, ty, refusal, ids);
            let shown = shown(refusal, id);
            let message = if platform {
                format!(
                    "configuration `{config}`: the collector cannot build `{id}` on this \
                     platform ({shown}); that component is unchecked, not known to be valid"
                )
            } else {
                format!(
                    "configuration `{config}`: the collector refused `{id}` ({} `{}`{part}): \
                     {shown}",
                    resource.role.resource_kind().as_str(),
                    resource.metadata.name,
                )
            };
            (location, message)
        }
    };
    code.at(location, mask_text(&message, secrets))
}

/// For an error about the `service` section (`'service.telemetry.logs': 'level' ...`), the
/// pointer of what it names in the configuration's `spec.service` (which gitamp copies there).
fn service_pointer(refusal: &Refusal) -> Option<String> {
    let mut paths = refusal
        .context
        .iter()
        .chain(std::iter::once(&refusal.error))
        .filter_map(|t| quoted(t, '\'').into_iter().next());
    let first = paths.next()?;
    let rest = first.strip_prefix("service")?;
    if !(rest.is_empty() || rest.starts_with('.')) {
        return None;
    }
    let mut pointer = String::from("/spec/service");
    for path in std::iter::once(rest.to_string()).chain(paths) {
        for part in path.split('.').filter(|p| !p.is_empty()) {
            if part.chars().any(|c| c.is_ascii_uppercase()) {
                return Some(pointer);
            }
            pointer.push('/');
            pointer.push_str(&escape_token(part));
        }
    }
    Some(pointer)
}

/// The collector's words without the headers that only name the component (the message names
/// it already).
fn shown(refusal: &Refusal, id: &str) -> String {
    let quoted = format!("\"{id}\"");
    let mut parts: Vec<&str> = refusal
        .context
        .iter()
        .filter(|h| !h.contains(&quoted))
        .map(String::as_str)
        .collect();
    parts.push(&refusal.error);
    parts.join(": ")
}

/// Where the part of `resource` the error is about was written, and a few words saying which
/// part (for the message).
fn locate(
    resource: &Resource,
    ty: Option<&ResourceType>,
    refusal: &Refusal,
    ids: &[String],
) -> (Location, String) {
    let param_at = |name: &str| param_location(resource, ty, name);
    // 1. A key the error names, most specific first.
    for key in keys(refusal) {
        for (name, value) in &resource.spec.parameters {
            if let Some(path) = key_path(value, &key) {
                let pointer = format!(
                    "{}/parameters/{}{path}",
                    resource.spec_pointer,
                    escape_token(name)
                );
                return (
                    resource.origin.locate(&pointer),
                    describe(resource, ty, name),
                );
            }
        }
        if let Some(ty) = ty
            && let Some(line) = template_line(ty, |l| writes_key(l, &key))
        {
            let inserted = line.inserts.as_deref();
            return match inserted.and_then(|p| parameter_source(resource, ty, p)) {
                Some(found) => found,
                None => line.found(ty),
            };
        }
    }
    // 2. A value the error quotes.
    let words: Vec<String> = quoted(&refusal.text(), '"')
        .into_iter()
        .filter(|w| !w.is_empty() && !ids.contains(w))
        .collect();
    for (name, value) in &resource.spec.parameters {
        if scalar_text(value).is_some_and(|t| words.contains(&t)) {
            return param_at(name);
        }
    }
    if let Some(ty) = ty {
        for (i, p) in ty.spec.parameters.iter().enumerate() {
            if !resource.spec.parameters.contains_key(&p.name)
                && p.default
                    .as_ref()
                    .and_then(scalar_text)
                    .is_some_and(|t| words.contains(&t))
            {
                return default_at(ty, i);
            }
        }
        if let Some(line) = template_line(ty, |l| {
            l.split_once(':')
                .is_some_and(|(_, v)| words.iter().any(|w| w.len() >= 2 && v.contains(w.as_str())))
        }) {
            return line.found(ty);
        }
    }
    // 3. A value the error mentions without quotes (`address x:1:2: too many colons`).
    let text = refusal.text();
    for (name, value) in &resource.spec.parameters {
        // The collector may print a URL without its scheme (gRPC endpoints).
        if let Some(t) = scalar_text(value)
            && t.len() >= 4
            && (text.contains(&t)
                || t.split_once("://")
                    .is_some_and(|(_, rest)| rest.len() >= 4 && text.contains(rest)))
        {
            return param_at(name);
        }
    }
    // 4. The resource.
    (
        resource
            .origin
            .locate(&format!("{}/type", resource.spec_pointer)),
        String::new(),
    )
}

/// The location of a resource's parameter value, and its description for the message.
fn param_location(
    resource: &Resource,
    ty: Option<&ResourceType>,
    name: &str,
) -> (Location, String) {
    let pointer = format!(
        "{}/parameters/{}",
        resource.spec_pointer,
        escape_token(name)
    );
    (
        resource.origin.locate(&pointer),
        describe(resource, ty, name),
    )
}

/// `, parameter `timeout` = "5 seconds"`: the value is shown when it is a scalar and the
/// parameter is not sensitive (the message is masked as well, but a short secret would slip
/// through masking by value).
fn describe(resource: &Resource, ty: Option<&ResourceType>, name: &str) -> String {
    let sensitive = ty.is_none_or(|t| {
        t.spec
            .parameters
            .iter()
            .any(|p| p.name == name && p.sensitive)
    });
    match resource.spec.parameters.get(name).and_then(scalar_text) {
        Some(value) if !sensitive => format!(", parameter `{name}` = {value:?}"),
        _ => format!(", parameter `{name}`"),
    }
}

fn default_at(ty: &ResourceType, index: usize) -> (Location, String) {
    let p = &ty.spec.parameters[index];
    (
        ty.origin
            .locate(&format!("/spec/parameters/{index}/default")),
        format!(
            ", default of parameter `{}` of type `{}`",
            p.name, ty.metadata.name
        ),
    )
}

/// Where the value of parameter `name` of `resource` comes from: its own value, else the
/// type's default; `None` when neither is written (the template line is then the place).
fn parameter_source(
    resource: &Resource,
    ty: &ResourceType,
    name: &str,
) -> Option<(Location, String)> {
    if resource.spec.parameters.contains_key(name) {
        return Some(param_location(resource, Some(ty), name));
    }
    let index = ty
        .spec
        .parameters
        .iter()
        .position(|p| p.name == name && p.default.is_some())?;
    Some(default_at(ty, index))
}

/// The configuration keys an error names, most specific first: the error's `has invalid keys:`
/// list, its quoted field paths (`'sending_queue.queue_size'`: the last part), the snake_case
/// words it uses (`send_batch_max_size must be ...`), then the same in its headers, innermost
/// first. Type names (`'debugexporter.Config'`) and top-level sections are not keys.
fn keys(refusal: &Refusal) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |k: &str| {
        let k = k.split('[').next().unwrap_or(k);
        let is_key = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !TOP_SECTIONS.contains(&k)
            && k != "service";
        if is_key && !out.iter().any(|o| o == k) {
            out.push(k.to_string());
        }
    };
    for text in std::iter::once(&refusal.error).chain(refusal.context.iter().rev()) {
        if let Some(list) = text.split("has invalid keys:").nth(1) {
            for key in list.split(',') {
                add(key.trim());
            }
        }
        for path in quoted(text, '\'') {
            if !path.chars().any(|c| c.is_ascii_uppercase()) {
                add(path.rsplit('.').next().unwrap_or(&path));
            }
        }
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.contains('_') {
                add(word);
            }
        }
    }
    out
}

/// The strings `text` quotes between `q` characters.
fn quoted(text: &str, q: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(q) {
        let after = &rest[start + q.len_utf8()..];
        let Some(end) = after.find(q) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + q.len_utf8()..];
    }
    out
}

/// A scalar parameter value as the collector would print it.
fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The JSON pointer (relative to `v`) of the first mapping key `key` inside `v`.
fn key_path(v: &Json, key: &str) -> Option<String> {
    match v {
        Json::Object(m) => m.iter().find_map(|(k, v)| {
            let here = format!("/{}", escape_token(k));
            if k == key {
                Some(here)
            } else {
                key_path(v, key).map(|rest| here + &rest)
            }
        }),
        Json::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| key_path(v, key).map(|rest| format!("/{i}{rest}"))),
        _ => None,
    }
}

/// Does a template line write `key` as a mapping key (`key:`, `"key":`, `- key:`)?
fn writes_key(line: &str, key: &str) -> bool {
    let t = line.trim_start().trim_start_matches("- ");
    t.strip_prefix(key)
        .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
        .is_some_and(|r| r.trim_start().starts_with(':'))
}

/// A line of a type's template.
struct TemplateLine {
    location: Location,
    signal: Signal,
    section: Section,
    /// The parameter the line's value inserts (`timeout: {{ timeout | tojson }}`), if any.
    inserts: Option<String>,
}

impl TemplateLine {
    fn found(self, ty: &ResourceType) -> (Location, String) {
        (
            self.location,
            format!(
                ", written by the {} template of type `{}` ({})",
                self.section.as_str(),
                ty.metadata.name,
                self.signal.as_str()
            ),
        )
    }
}

/// The first line of `ty`'s templates (signals in order, sections in order) that `matches`,
/// located in the type's file: a template's position is where its text starts (the line after
/// `receivers: |`), so line N of the template is N - 1 lines further, indented by its own
/// indentation.
fn template_line(ty: &ResourceType, matches: impl Fn(&str) -> bool) -> Option<TemplateLine> {
    for (signal, templates) in &ty.spec.templates {
        for section in Section::ALL {
            let text = match section {
                Section::Receivers => templates.receivers.as_deref(),
                Section::Processors => templates.processors.as_deref(),
                Section::Exporters => templates.exporters.as_deref(),
                Section::Extensions => templates.extensions.as_deref(),
            };
            let Some((n, line)) =
                text.and_then(|t| t.lines().enumerate().find(|(_, l)| matches(l)))
            else {
                continue;
            };
            let mut location = ty.origin.locate(&template_pointer(*signal, section));
            location.line = location
                .line
                .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            if n > 0 {
                let indent = line.len() - line.trim_start().len();
                location.column = location
                    .column
                    .saturating_add(u32::try_from(indent).unwrap_or(u32::MAX));
            }
            let inserts = inserted_parameter(line)
                .filter(|p| ty.spec.parameters.iter().any(|d| d.name == *p));
            return Some(TemplateLine {
                location,
                signal: *signal,
                section,
                inserts,
            });
        }
    }
    None
}

/// The variable a template line's value starts by inserting: `key: {{ name | filter }}`.
fn inserted_parameter(line: &str) -> Option<String> {
    let (_, value) = line.split_once(':')?;
    let inner = value.trim_start().strip_prefix("{{")?;
    let inner = inner.trim_start().trim_start_matches('(');
    let name: String = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitamp_core::render::components::component_id;

    #[test]
    fn ids_lead_back_to_resources() {
        for (role, name, key) in [
            (Role::Source, "app-logs", "filelog"),
            (Role::Destination, "gw", "otlp/grpc"),
            (Role::Processor, "batch-1", "batch/x__y"),
        ] {
            let id = component_id(role, name, key).expect("valid key");
            assert_eq!(resource_of(&id), Some((role, name)), "{id}");
        }
        assert_eq!(resource_of("otlp"), None);
        assert_eq!(resource_of("otlp/other-x"), None);
    }

    #[test]
    fn whole_ids_only() {
        let ids = component_ids(
            "receivers:\n  otlp/src-a: {}\n  otlp/src-a__b: {}\nexporters:\n  debug/dst-d: {}\n",
        );
        assert_eq!(ids[0], "otlp/src-a__b");
        assert_eq!(
            named_component(&ids, "for \"otlp/src-a__b\": bad"),
            Some("otlp/src-a__b")
        );
        assert_eq!(
            named_component(&ids, "receivers::otlp/src-a: x; debug/dst-d"),
            Some("otlp/src-a")
        );
        assert_eq!(named_component(&ids, "otlp/src-abc"), None);
    }

    #[test]
    fn keys_most_specific_first() {
        let r = Refusal {
            context: vec![
                "'receivers' error reading configuration for \"otlp/src-a\"".into(),
                "'protocols.grpc'".into(),
            ],
            error: "'configgrpc.ServerConfig' has invalid keys: bogus, other".into(),
        };
        assert_eq!(keys(&r), ["bogus", "other", "grpc"]);
        let r = Refusal {
            context: vec![],
            error: "processors::batch/proc-b: send_batch_max_size must be greater or equal \
                    to send_batch_size"
                .into(),
        };
        assert_eq!(keys(&r), ["send_batch_max_size", "send_batch_size"]);
    }

    #[test]
    fn service_errors_point_into_spec_service() {
        let r = Refusal {
            context: vec!["'service.telemetry.logs'".into()],
            error: "'level' unrecognized level: \"loud\"".into(),
        };
        assert_eq!(
            service_pointer(&r).as_deref(),
            Some("/spec/service/telemetry/logs/level")
        );
        let r = Refusal {
            context: vec![],
            error: "'receivers' unknown type".into(),
        };
        assert_eq!(service_pointer(&r), None);
    }

    #[test]
    fn key_paths() {
        let v = serde_json::json!({"a": {"b": [{"c/d": 1}]}});
        assert_eq!(key_path(&v, "c/d").as_deref(), Some("/a/b/0/c~1d"));
        assert_eq!(key_path(&v, "a").as_deref(), Some("/a"));
        assert_eq!(key_path(&v, "x"), None);
    }

    /// A Windows-only receiver in a configuration without an `os.type` selector, as contrib's
    /// Linux build refuses it: a warning on the resource, not an error.
    #[test]
    fn a_platform_limit_is_a_warning_on_the_resource() {
        let snapshot = gitamp_core::Snapshot::new("r")
            .with_file(
                "types.yaml",
                "apiVersion: gitamp.dev/v1\nkind: SourceType\nmetadata: {name: winlog}\n\
                 spec:\n  templates:\n    logs:\n      receivers: |\n        \
                 windowseventlog:\n          channel: Application\n---\n\
                 apiVersion: gitamp.dev/v1\nkind: DestinationType\nmetadata: {name: debug}\n\
                 spec:\n  templates:\n    logs:\n      exporters: |\n        debug: {}\n",
            )
            .with_file(
                "config.yaml",
                "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  \
                 sources:\n    - {name: events, type: winlog}\n  destinations:\n    \
                 - {name: out, type: debug}\n",
            );
        let revision = match gitamp_core::compile(&snapshot) {
            Ok(r) => r,
            Err(rejected) => panic!("{}", rejected.diagnostics),
        };
        let yaml = &revision.rendered.configurations["c"].yaml;
        let refusal = Refusal {
            context: vec![],
            error: "failed to build pipelines: failed to create \"windowseventlog/src-events\" \
                    receiver: windows eventlog receiver is only supported on Windows"
                .into(),
        };
        let d = diagnose(&revision.catalog, "c", &component_ids(yaml), &refusal, &[]);
        assert_eq!(d.code, "W113", "{d}");
        assert_eq!(&*d.location.file, "config.yaml", "{d}");
        assert_eq!(d.location.line, 6, "{d}");
        assert!(d.message.contains("unchecked"), "{d}");
    }

    #[test]
    fn template_lines() {
        assert!(writes_key("    timeout: {{ t }}", "timeout"));
        assert!(writes_key("- \"timeout\" : 1", "timeout"));
        assert!(!writes_key("timeouts: 1", "timeout"));
        assert_eq!(
            inserted_parameter("timeout: {{ timeout | tojson }}").as_deref(),
            Some("timeout")
        );
        assert_eq!(inserted_parameter("a: b {{ c }}"), None);
    }
}
