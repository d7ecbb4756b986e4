//! One resource's templates rendered into collector components with stable IDs.
//!
//! Every type template is compiled once per revision and every resource rendered once per
//! revision (twice when it has sensitive values: real and masked), whatever the number of
//! configurations that use it; configurations then assemble pipelines from these fragments.
//!
//! Component IDs are derived from names only, never from order or content, so they are stable
//! across revisions and replicas: key `<type>` of resource `<resource>` becomes
//! `<type>/<prefix>-<resource>`, key `<type>/<suffix>` becomes
//! `<type>/<prefix>-<resource>__<suffix>`, with prefix `src`, `proc` or `dst` by role.

use std::collections::{BTreeMap, HashMap};

use minijinja::Template;
use serde_json::Value as Json;

use super::codes;
use super::env::environment;
use crate::catalog::Catalog;
use crate::catalog::diagnostics::{Diagnostics, Location};
use crate::catalog::model::{ParameterSpec, Resource, ResourceType, Role, Signal, SignalTemplates};

/// The four component sections a template may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    Receivers,
    Processors,
    Exporters,
    Extensions,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Receivers,
        Section::Processors,
        Section::Exporters,
        Section::Extensions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Section::Receivers => "receivers",
            Section::Processors => "processors",
            Section::Exporters => "exporters",
            Section::Extensions => "extensions",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn template(self, t: &SignalTemplates) -> Option<&str> {
        match self {
            Section::Receivers => t.receivers.as_deref(),
            Section::Processors => t.processors.as_deref(),
            Section::Exporters => t.exporters.as_deref(),
            Section::Extensions => t.extensions.as_deref(),
        }
    }

    /// Which sections a role can place in a pipeline: a source receives (and may pre-process),
    /// a destination exports (and may post-process), a processor processes. Extensions are
    /// allowed everywhere (auth, storage, health checks).
    fn allowed_for(self, role: Role) -> bool {
        match self {
            Section::Receivers => role == Role::Source,
            Section::Exporters => role == Role::Destination,
            Section::Processors | Section::Extensions => true,
        }
    }
}

/// JSON pointer of a type's template, for locating diagnostics.
pub fn template_pointer(signal: Signal, section: Section) -> String {
    format!("/spec/templates/{}/{}", signal.as_str(), section.as_str())
}

/// One rendered collector component.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// The rendered component ID (`otlp/src-app`).
    pub id: String,
    /// Its configuration as agents get it.
    pub config: Json,
    /// The same with sensitive parameters rendered as `***`.
    pub masked: Json,
}

/// The components of one resource for one signal, by section, in template order.
#[derive(Debug, Clone, Default)]
pub struct SignalComponents {
    sections: [Vec<Component>; 4],
}

impl SignalComponents {
    pub fn get(&self, section: Section) -> &[Component] {
        &self.sections[section.index()]
    }
}

/// Everything one resource renders to, per signal its type handles.
#[derive(Debug, Clone, Default)]
pub struct Fragments {
    pub signals: BTreeMap<Signal, SignalComponents>,
}

impl Fragments {
    pub fn handles(&self, signal: Signal) -> bool {
        self.signals.contains_key(&signal)
    }
    pub fn components(&self, signal: Signal, section: Section) -> &[Component] {
        self.signals
            .get(&signal)
            .map(|s| s.get(section))
            .unwrap_or(&[])
    }
}

/// The rendered ID of the component `key` of `resource`, or `None` when `key` is not a
/// collector component key (`type` or `type/name`, type starting with a letter, made of
/// letters, digits and `_`; name without whitespace).
pub fn component_id(role: Role, resource: &str, key: &str) -> Option<String> {
    let (ty, suffix) = match key.split_once('/') {
        Some((t, s)) => (t, Some(s)),
        None => (key, None),
    };
    let mut chars = ty.chars();
    let type_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !type_ok {
        return None;
    }
    let prefix = role.id_prefix();
    match suffix {
        None => Some(format!("{ty}/{prefix}-{resource}")),
        Some(s) if !s.is_empty() && !s.chars().any(char::is_whitespace) => {
            Some(format!("{ty}/{prefix}-{resource}__{s}"))
        }
        Some(_) => None,
    }
}

type TemplateKey<'a> = (Role, &'a str, Signal, Section);

/// Renders every resource of a catalog once; configurations read the results.
pub struct Renderer<'a> {
    /// By role (source, processor, destination), then resource name.
    fragments: [HashMap<&'a str, Fragments>; 3],
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Source => 0,
        Role::Processor => 1,
        Role::Destination => 2,
    }
}

impl<'a> Renderer<'a> {
    /// Compile every type's templates and render every resource, reporting template problems
    /// even for types and resources no configuration uses yet (a repository is validated whole).
    pub fn new(catalog: &'a Catalog, diags: &mut Diagnostics) -> Renderer<'a> {
        let templates = compile_all(catalog, diags);
        let mut fragments: [HashMap<&'a str, Fragments>; 3] = Default::default();
        for ((role, name), resource) in &catalog.resources {
            // A resource whose type is missing is the catalog's finding (unknown type): skip it.
            let Some(ty) = catalog.types.get(&(*role, resource.spec.type_name.clone())) else {
                continue;
            };
            if let Some(f) = render_resource(ty, resource, &templates, diags) {
                fragments[role_index(*role)].insert(name.as_str(), f);
            }
        }
        Renderer { fragments }
    }

    /// The fragments of a resource, or `None` when it does not exist or failed to render
    /// (both already reported).
    pub fn fragments(&self, role: Role, name: &str) -> Option<&Fragments> {
        self.fragments[role_index(role)].get(name)
    }
}

/// Compile every template of every type; `None` for one that failed (reported here, once).
fn compile_all<'a>(
    catalog: &'a Catalog,
    diags: &mut Diagnostics,
) -> HashMap<TemplateKey<'a>, Option<Template<'a, 'a>>> {
    // The environment is `'static`; narrowing it to `'a` lets templates borrow the catalog's
    // sources instead of copying them.
    let env: &minijinja::Environment<'a> = environment();
    let mut out = HashMap::new();
    for ((role, name), ty) in &catalog.types {
        for (signal, templates) in &ty.spec.templates {
            for section in Section::ALL {
                let Some(source) = section.template(templates) else {
                    continue;
                };
                let pointer = template_pointer(*signal, section);
                if !section.allowed_for(*role) {
                    diags.push(codes::MISPLACED_SECTION.at(
                        ty.origin.locate(&pointer),
                        format!(
                            "a {} cannot have `{}` components: no pipeline would use them; \
                             move them to a {}",
                            role.type_kind().as_str(),
                            section.as_str(),
                            match section {
                                Section::Receivers => "SourceType",
                                _ => "DestinationType",
                            }
                        ),
                    ));
                    out.insert((*role, name.as_str(), *signal, section), None);
                    continue;
                }
                let compiled = match env.template_from_named_str(name, source) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        diags.push(codes::TEMPLATE_SYNTAX.at(
                            error_location(ty, &pointer, &e),
                            format!(
                                "{} template of {} `{name}` ({}): {}",
                                section.as_str(),
                                role.type_kind().as_str(),
                                signal.as_str(),
                                describe(&e)
                            ),
                        ));
                        None
                    }
                };
                out.insert((*role, name.as_str(), *signal, section), compiled);
            }
        }
    }
    out
}

/// A minijinja error in one line: its kind and detail, without the template name (the
/// location already says where).
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Where in the type's file a template error is: the template's own position plus the line of
/// the error inside the template. The loader positions a scalar where its content starts (for a
/// block scalar `receivers: |`, the line after the indicator), so template line N is file line
/// `position + N - 1`. A test in `render::tests` pins that assumption.
fn error_location(ty: &ResourceType, pointer: &str, e: &minijinja::Error) -> Location {
    let mut loc = ty.origin.locate(pointer);
    if let Some(line) = e.line().filter(|l| *l >= 1) {
        let offset = u32::try_from(line - 1).unwrap_or(u32::MAX);
        loc.line = loc.line.saturating_add(offset);
        loc.column = 1;
    }
    loc
}

/// The template context of a resource: every declared parameter (resource value, else the
/// default, else `none`), then `name`. With `masked`, sensitive values become `***`.
fn context(params: &[ParameterSpec], resource: &Resource, masked: bool) -> Json {
    let mut map = serde_json::Map::new();
    for p in params {
        let value = resource
            .spec
            .parameters
            .get(&p.name)
            .or(p.default.as_ref())
            .cloned()
            .unwrap_or(Json::Null);
        let value = if masked && p.sensitive && !value.is_null() {
            Json::String(super::MASK.to_string())
        } else {
            value
        };
        map.insert(p.name.clone(), value);
    }
    map.insert("name".into(), Json::String(resource.metadata.name.clone()));
    Json::Object(map)
}

/// Render every template of one resource; `None` if any failed (reported).
fn render_resource(
    ty: &ResourceType,
    resource: &Resource,
    templates: &HashMap<TemplateKey<'_>, Option<Template<'_, '_>>>,
    diags: &mut Diagnostics,
) -> Option<Fragments> {
    let role = resource.role;
    let sensitive = ty.spec.parameters.iter().any(|p| p.sensitive);
    let real_ctx = minijinja::Value::from(minijinja::value::Serde(context(
        &ty.spec.parameters,
        resource,
        false,
    )));
    let masked_ctx = sensitive.then(|| {
        minijinja::Value::from(minijinja::value::Serde(context(
            &ty.spec.parameters,
            resource,
            true,
        )))
    });
    let mut out = Fragments::default();
    let mut ok = true;
    let mut seen: HashMap<String, (Json, Signal)> = HashMap::new();
    for signal in ty.spec.templates.keys() {
        let mut components = SignalComponents::default();
        for section in Section::ALL {
            let Some(entry) =
                templates.get(&(ty.role, ty.metadata.name.as_str(), *signal, section))
            else {
                continue;
            };
            let Some(template) = entry else {
                ok = false; // compile error or misplaced section, already reported
                continue;
            };
            let pointer = template_pointer(*signal, section);
            let what = format!(
                "{} template of {} `{}` ({}) for {} `{}`",
                section.as_str(),
                ty.role.type_kind().as_str(),
                ty.metadata.name,
                signal.as_str(),
                role.resource_kind().as_str(),
                resource.metadata.name
            );
            let Some(real) = render_mapping(template, &real_ctx, ty, &pointer, &what, diags) else {
                ok = false;
                continue;
            };
            let masked = match &masked_ctx {
                None => real.clone(),
                Some(ctx) => {
                    let what = format!("{what} (masked form, sensitive values as ***)");
                    match render_mapping(template, ctx, ty, &pointer, &what, diags) {
                        Some(m) => m,
                        None => {
                            ok = false;
                            continue;
                        }
                    }
                }
            };
            let list = &mut components.sections[section.index()];
            for (key, config) in real {
                let Some(id) = component_id(role, &resource.metadata.name, &key) else {
                    diags.push(codes::INVALID_COMPONENT_KEY.at(
                        ty.origin.locate(&pointer),
                        format!(
                            "{what}: `{key}` is not a collector component key; write `type` or \
                             `type/name` (type: letters, digits, _)"
                        ),
                    ));
                    ok = false;
                    continue;
                };
                if let Some((earlier, earlier_signal)) = seen.get(&id)
                    && *earlier != config
                {
                    diags.push(codes::CONFLICTING_COMPONENT.at(
                        ty.origin.locate(&pointer),
                        format!(
                            "{what}: `{key}` renders differently than for {} (both become \
                             `{id}`); render the same configuration for every signal or give \
                             them different names (`{key}/{}`)",
                            earlier_signal.as_str(),
                            signal.as_str()
                        ),
                    ));
                    ok = false;
                    continue;
                }
                seen.insert(id.clone(), (config.clone(), *signal));
                let masked = masked.get(&key).cloned().unwrap_or(Json::Null);
                list.push(Component { id, config, masked });
            }
        }
        out.signals.insert(*signal, components);
    }
    ok.then_some(out)
}

/// Render one template and parse its output as a mapping of component key to configuration.
fn render_mapping(
    template: &Template<'_, '_>,
    ctx: &minijinja::Value,
    ty: &ResourceType,
    pointer: &str,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<serde_json::Map<String, Json>> {
    let text = match template.render(ctx) {
        Ok(t) => t,
        Err(e) => {
            diags.push(codes::TEMPLATE_RENDER.at(
                error_location(ty, pointer, &e),
                format!("{what}: {}", describe(&e)),
            ));
            return None;
        }
    };
    if text.trim().is_empty() {
        return Some(serde_json::Map::new());
    }
    match serde_saphyr::from_str::<Json>(&text) {
        Ok(Json::Object(map)) => Some(map),
        Ok(Json::Null) => Some(serde_json::Map::new()),
        Ok(other) => {
            diags.push(codes::TEMPLATE_NOT_MAPPING.at(
                ty.origin.locate(pointer),
                format!(
                    "{what}: rendered {} where a mapping of component key to configuration \
                     (`otlp: {{...}}`) is expected",
                    kind_of(&other)
                ),
            ));
            None
        }
        Err(e) => {
            diags.push(codes::TEMPLATE_NOT_YAML.at(
                ty.origin.locate(pointer),
                format!(
                    "{what}: the output is not YAML ({}); quote values with `| tojson`",
                    first_line(&e.to_string())
                ),
            ));
            None
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(
            component_id(Role::Source, "app", "otlp").as_deref(),
            Some("otlp/src-app")
        );
        assert_eq!(
            component_id(Role::Destination, "backend", "otlp/grpc").as_deref(),
            Some("otlp/dst-backend__grpc")
        );
        assert_eq!(
            component_id(Role::Processor, "b", "memory_limiter").as_deref(),
            Some("memory_limiter/proc-b")
        );
        assert_eq!(component_id(Role::Source, "a", "otlp/"), None);
        assert_eq!(component_id(Role::Source, "a", "1otlp"), None);
        assert_eq!(component_id(Role::Source, "a", "ot lp"), None);
        assert_eq!(component_id(Role::Source, "a", ""), None);
    }
}
