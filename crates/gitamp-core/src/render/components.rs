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
use std::sync::Arc;

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
    /// `receivers:`.
    Receivers,
    /// `processors:`.
    Processors,
    /// `exporters:`.
    Exporters,
    /// `extensions:`.
    Extensions,
}

impl Section {
    /// Every section, in the order the YAML lists them.
    pub const ALL: [Section; 4] = [
        Section::Receivers,
        Section::Processors,
        Section::Exporters,
        Section::Extensions,
    ];

    /// The key in collector YAML.
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
    /// Its configuration as agents get it (shared: see the parse cache).
    pub config: Arc<Json>,
    /// The same with sensitive parameters rendered as `***`.
    pub masked: Arc<Json>,
}

/// The components of one resource for one signal, by section, in template order.
#[derive(Debug, Clone, Default)]
pub struct SignalComponents {
    sections: [Vec<Component>; 4],
}

impl SignalComponents {
    /// The components of one section.
    pub fn get(&self, section: Section) -> &[Component] {
        &self.sections[section.index()]
    }
}

/// Everything one resource renders to, per signal its type handles.
#[derive(Debug, Clone, Default)]
pub struct Fragments {
    /// Components per signal the resource's type handles.
    pub signals: BTreeMap<Signal, SignalComponents>,
}

impl Fragments {
    /// Whether the resource's type has templates for `signal`.
    pub fn handles(&self, signal: Signal) -> bool {
        self.signals.contains_key(&signal)
    }
    /// The components of one signal and section; empty when the type does not handle the signal.
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
        let mut cache = ParseCache::default();
        let mut tools = Tools {
            templates: &templates,
            cache: &mut cache,
            diags,
        };
        let mut fragments: [HashMap<&'a str, Fragments>; 3] = Default::default();
        for ((role, name), resource) in &catalog.resources {
            // A resource whose type is missing is the catalog's finding (unknown type): skip it.
            let Some(ty) = catalog.types.get(&(*role, resource.spec.type_name.clone())) else {
                continue;
            };
            if let Some(f) = render_resource(ty, resource, &mut tools) {
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

/// The value a resource gives parameter `p`: its own, else the default, else `null`.
fn value_of<'r>(p: &'r ParameterSpec, resource: &'r Resource) -> Option<&'r Json> {
    resource
        .spec
        .parameters
        .get(&p.name)
        .or(p.default.as_ref())
        .filter(|v| !v.is_null())
}

/// The template context of a resource: every declared parameter (resource value, else the
/// default, else `none`), then `name`. With `masked`, sensitive values become `***`.
fn context(params: &[ParameterSpec], resource: &Resource, masked: bool) -> minijinja::Value {
    let mut map = serde_json::Map::new();
    for p in params {
        let value = match value_of(p, resource) {
            Some(_) if masked && p.sensitive => Json::String(super::MASK.to_string()),
            Some(v) => v.clone(),
            None => Json::Null,
        };
        map.insert(p.name.clone(), value);
    }
    map.insert("name".into(), Json::String(resource.metadata.name.clone()));
    minijinja::Value::from(minijinja::value::Serde(Json::Object(map)))
}

/// A template's output parsed: component key -> configuration, shared (many resources render
/// the same text: every `batch` with default parameters, every signal of an `otlp` source).
type Parsed = Arc<Vec<(String, Arc<Json>)>>;

/// Why a template's output is not a mapping of components (reported per resource).
#[derive(Debug, Clone)]
enum OutputError {
    NotYaml(String),
    NotMapping(&'static str),
}

/// Parse results by rendered text. Parsing YAML is the most expensive step of rendering, and
/// in real repositories most outputs repeat, so each distinct text is parsed once per revision.
#[derive(Default)]
struct ParseCache {
    by_text: HashMap<String, Result<Parsed, OutputError>>,
}

impl ParseCache {
    fn parse(&mut self, text: String) -> Result<Parsed, OutputError> {
        if let Some(hit) = self.by_text.get(&text) {
            return hit.clone();
        }
        let result = parse_output(&text);
        self.by_text.insert(text, result.clone());
        result
    }
}

fn parse_output(text: &str) -> Result<Parsed, OutputError> {
    if text.trim().is_empty() {
        return Ok(Arc::new(Vec::new()));
    }
    let map = match serde_saphyr::from_str::<Json>(text) {
        Ok(Json::Object(map)) => map,
        Ok(Json::Null) => serde_json::Map::new(),
        Ok(other) => return Err(OutputError::NotMapping(kind_of(&other))),
        Err(e) => return Err(OutputError::NotYaml(first_line(&e.to_string()).to_string())),
    };
    Ok(Arc::new(
        map.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
    ))
}

/// Everything `render_resource` needs besides the resource.
struct Tools<'t, 'a> {
    templates: &'t HashMap<TemplateKey<'a>, Option<Template<'a, 'a>>>,
    cache: &'t mut ParseCache,
    diags: &'t mut Diagnostics,
}

/// Render every template of one resource; `None` if any failed (reported).
fn render_resource(
    ty: &ResourceType,
    resource: &Resource,
    tools: &mut Tools<'_, '_>,
) -> Option<Fragments> {
    let role = resource.role;
    // The masked form differs only when a sensitive parameter has a value.
    let has_secret = ty
        .spec
        .parameters
        .iter()
        .any(|p| p.sensitive && value_of(p, resource).is_some());
    let real_ctx = context(&ty.spec.parameters, resource, false);
    let masked_ctx = has_secret.then(|| context(&ty.spec.parameters, resource, true));
    let mut out = Fragments::default();
    let mut ok = true;
    let mut seen: HashMap<String, (Arc<Json>, Signal)> = HashMap::new();
    // Same template text, same context, same output: types that share one template across
    // signals (a YAML anchor) render it once per resource.
    let mut done: HashMap<&str, Option<(Parsed, Parsed)>> = HashMap::new();
    for signal in ty.spec.templates.keys() {
        let mut components = SignalComponents::default();
        for section in Section::ALL {
            let Some(entry) =
                tools
                    .templates
                    .get(&(ty.role, ty.metadata.name.as_str(), *signal, section))
            else {
                continue;
            };
            let Some(template) = entry else {
                ok = false; // compile error or misplaced section, already reported
                continue;
            };
            let pointer = template_pointer(*signal, section);
            let what = || {
                format!(
                    "{} template of {} `{}` ({}) for {} `{}`",
                    section.as_str(),
                    ty.role.type_kind().as_str(),
                    ty.metadata.name,
                    signal.as_str(),
                    role.resource_kind().as_str(),
                    resource.metadata.name
                )
            };
            let rendered = match done.get(template.source()) {
                Some(r) => r.clone(),
                None => {
                    let r = render_both(
                        template,
                        &real_ctx,
                        masked_ctx.as_ref(),
                        ty,
                        &pointer,
                        &what,
                        tools,
                    );
                    done.insert(template.source(), r.clone());
                    r
                }
            };
            let Some((real, masked)) = rendered else {
                ok = false;
                continue;
            };
            let list = &mut components.sections[section.index()];
            for (key, config) in real.iter() {
                let Some(id) = component_id(role, &resource.metadata.name, key) else {
                    tools.diags.push(codes::INVALID_COMPONENT_KEY.at(
                        ty.origin.locate(&pointer),
                        format!(
                            "{}: `{key}` is not a collector component key; write `type` or \
                             `type/name` (type: letters, digits, _)",
                            what()
                        ),
                    ));
                    ok = false;
                    continue;
                };
                if let Some((earlier, earlier_signal)) = seen.get(&id)
                    && !same(earlier, config)
                {
                    tools.diags.push(codes::CONFLICTING_COMPONENT.at(
                        ty.origin.locate(&pointer),
                        format!(
                            "{}: `{key}` renders differently than for {} (both become \
                             `{id}`); render the same configuration for every signal or give \
                             them different names (`{key}/{}`)",
                            what(),
                            earlier_signal.as_str(),
                            signal.as_str()
                        ),
                    ));
                    ok = false;
                    continue;
                }
                seen.insert(id.clone(), (config.clone(), *signal));
                let masked = masked
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| Arc::new(Json::Null));
                list.push(Component {
                    id,
                    config: config.clone(),
                    masked,
                });
            }
        }
        out.signals.insert(*signal, components);
    }
    ok.then_some(out)
}

/// Equal configurations, cheaply when they are the same allocation (the parse cache's doing).
pub(crate) fn same(a: &Arc<Json>, b: &Arc<Json>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Render a template with the real context and, if the resource has secrets, the masked one.
fn render_both(
    template: &Template<'_, '_>,
    real_ctx: &minijinja::Value,
    masked_ctx: Option<&minijinja::Value>,
    ty: &ResourceType,
    pointer: &str,
    what: &dyn Fn() -> String,
    tools: &mut Tools<'_, '_>,
) -> Option<(Parsed, Parsed)> {
    let real_text = render_text(template, real_ctx, ty, pointer, what, tools.diags)?;
    let masked_text = match masked_ctx {
        None => None,
        Some(ctx) => {
            let masked_what = || format!("{} (masked form, sensitive values as ***)", what());
            let text = render_text(template, ctx, ty, pointer, &masked_what, tools.diags)?;
            (text != real_text).then_some(text)
        }
    };
    let real = parse_reported(real_text, ty, pointer, what, tools)?;
    let masked = match masked_text {
        None => real.clone(),
        Some(text) => parse_reported(text, ty, pointer, what, tools)?,
    };
    Some((real, masked))
}

fn render_text(
    template: &Template<'_, '_>,
    ctx: &minijinja::Value,
    ty: &ResourceType,
    pointer: &str,
    what: &dyn Fn() -> String,
    diags: &mut Diagnostics,
) -> Option<String> {
    match template.render(ctx) {
        Ok(t) => Some(t),
        Err(e) => {
            diags.push(codes::TEMPLATE_RENDER.at(
                error_location(ty, pointer, &e),
                format!("{}: {}", what(), describe(&e)),
            ));
            None
        }
    }
}

/// Parse one output as a mapping of component key to configuration, reporting why not.
fn parse_reported(
    text: String,
    ty: &ResourceType,
    pointer: &str,
    what: &dyn Fn() -> String,
    tools: &mut Tools<'_, '_>,
) -> Option<Parsed> {
    match tools.cache.parse(text) {
        Ok(p) => Some(p),
        Err(OutputError::NotMapping(kind)) => {
            tools.diags.push(codes::TEMPLATE_NOT_MAPPING.at(
                ty.origin.locate(pointer),
                format!(
                    "{}: rendered {kind} where a mapping of component key to configuration \
                     (`otlp: {{...}}`) is expected",
                    what()
                ),
            ));
            None
        }
        Err(OutputError::NotYaml(e)) => {
            tools.diags.push(codes::TEMPLATE_NOT_YAML.at(
                ty.origin.locate(pointer),
                format!(
                    "{}: the output is not YAML ({e}); quote values with `| tojson`",
                    what()
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
