//! One configuration assembled into a collector configuration tree.
//!
//! The shape is BindPlane's, proven on large fleets: for each signal, one pipeline per
//! source x destination pair that both handle the signal, named `<signal>/<source>__<destination>`.
//! A pipeline's processors come in a fixed order:
//!
//! 1. the source type's own processors (its template),
//! 2. the configuration entry's per-source processors,
//! 3. the configuration's `processors` that handle the signal,
//! 4. the destination entry's per-destination processors,
//! 5. the destination type's own processors.
//!
//! One pipeline per pair (rather than fan-in/fan-out through connectors) keeps each pair's
//! processing independent and makes the rendered file read like the configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value as Json;

use super::codes;
use super::components::{Component, Fragments, Renderer, Section, same};
use crate::catalog::diagnostics::{Diagnostics, Location};
use crate::catalog::model::{ComponentRef, Configuration, Role, Signal};

/// One component of a rendered configuration: (ID, config, masked config).
type Rendered = (String, Arc<Json>, Arc<Json>);

/// A component definition while assembling: (config, masked config, owner resource for messages).
type Definition = (Arc<Json>, Arc<Json>, String);

/// A configuration's collector config, as agents get it and with secrets masked, sharing every
/// component with the resources' fragments (serialized through [`Assembled::view`], never
/// copied into a second tree).
#[derive(Debug, Clone)]
pub struct Assembled {
    /// Per section (receivers, processors, exporters, extensions): (ID, config, masked config),
    /// sorted by ID.
    sections: [Vec<Rendered>; 4],
    /// `service:`: the configuration's own settings, then `extensions`, then `pipelines`.
    service: serde_json::Map<String, Json>,
    has_secrets: bool,
}

impl Assembled {
    /// Does the masked form differ from the real one?
    pub fn has_secrets(&self) -> bool {
        self.has_secrets
    }

    /// The collector config, real or masked, as something to serialize. Top-level keys in the
    /// collector's customary order; empty `processors` and `extensions` left out.
    pub fn view(&self, masked: bool) -> View<'_> {
        View { a: self, masked }
    }
}

/// See [`Assembled::view`].
pub struct View<'a> {
    a: &'a Assembled,
    masked: bool,
}

struct SectionView<'a> {
    components: &'a [Rendered],
    masked: bool,
}

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for section in Section::ALL {
            let components = &self.a.sections[section as usize];
            if components.is_empty() && matches!(section, Section::Processors | Section::Extensions)
            {
                continue;
            }
            let view = SectionView {
                components,
                masked: self.masked,
            };
            map.serialize_entry(section.as_str(), &view)?;
        }
        map.serialize_entry("service", &self.a.service)?;
        map.end()
    }
}

impl Serialize for SectionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.components.len()))?;
        for (id, config, masked) in self.components {
            let value: &Json = if self.masked { masked } else { config };
            map.serialize_entry(id, value)?;
        }
        map.end()
    }
}

/// One resolved entry of a configuration (source, processor or destination).
struct Entry<'r> {
    name: &'r str,
    fragments: &'r Fragments,
    /// Per-entry processors (sources and destinations only).
    processors: Vec<Entry<'r>>,
}

/// Resolve an entry; `None` when it or one of its processors is unknown or failed to render
/// (reported by the catalog or by [`Renderer`]).
fn resolve<'r>(renderer: &'r Renderer<'_>, role: Role, r: &'r ComponentRef) -> Option<Entry<'r>> {
    let fragments = renderer.fragments(role, r.name())?;
    let processors = r
        .processors()
        .iter()
        .map(|p| resolve(renderer, Role::Processor, p))
        .collect::<Option<Vec<_>>>()?;
    Some(Entry {
        name: r.name(),
        fragments,
        processors,
    })
}

/// Component definitions of one section: ID -> (config, masked, owner resource for messages).
/// Sorted by ID, so that adding a source to a configuration adds lines to the rendered file
/// without moving the others (small, reviewable diffs).
#[derive(Default)]
struct Defs {
    sections: [BTreeMap<String, Definition>; 4],
}

struct Pipeline {
    receivers: Vec<String>,
    processors: Vec<String>,
    exporters: Vec<String>,
}

/// Collects definitions and pipelines, reporting conflicts.
struct Builder<'d> {
    defs: Defs,
    location: Location,
    config_name: &'d str,
    diags: &'d mut Diagnostics,
    failed: bool,
}

impl Builder<'_> {
    /// Define the components of `entry` for `signal`/`section`; their IDs, in template order.
    fn define(
        &mut self,
        role: Role,
        entry: &Entry<'_>,
        signal: Signal,
        section: Section,
    ) -> Vec<String> {
        let comps: &[Component] = entry.fragments.components(signal, section);
        let mut ids = Vec::with_capacity(comps.len());
        for c in comps {
            let defs = &mut self.defs.sections[section as usize];
            match defs.get(&c.id) {
                Some((config, _, owner)) if !same(config, &c.config) => {
                    self.diags.push(codes::CONFLICTING_COMPONENT.at(
                        self.location.clone(),
                        format!(
                            "configuration `{}`: {} `{}` is rendered differently by {} `{}` and \
                             by `{owner}`; rename one of their component keys",
                            self.config_name,
                            section.as_str(),
                            c.id,
                            role.resource_kind().as_str(),
                            entry.name
                        ),
                    ));
                    self.failed = true;
                }
                Some(_) => {}
                None => {
                    defs.insert(
                        c.id.clone(),
                        (c.config.clone(), c.masked.clone(), entry.name.to_string()),
                    );
                }
            }
            ids.push(c.id.clone());
        }
        ids
    }
}

/// Assemble one configuration. `None` when it cannot be rendered: a reference is broken (the
/// catalog reports that) or a finding was reported here.
pub fn assemble(
    renderer: &Renderer<'_>,
    config: &Configuration,
    diags: &mut Diagnostics,
) -> Option<Assembled> {
    let spec = &config.spec;
    let sources = spec
        .sources
        .iter()
        .map(|r| resolve(renderer, Role::Source, r))
        .collect::<Option<Vec<_>>>()?;
    let processors = spec
        .processors
        .iter()
        .map(|r| resolve(renderer, Role::Processor, r))
        .collect::<Option<Vec<_>>>()?;
    let destinations = spec
        .destinations
        .iter()
        .map(|r| resolve(renderer, Role::Destination, r))
        .collect::<Option<Vec<_>>>()?;

    let name = config.metadata.name.as_str();
    let location = config.origin.locate("/metadata/name");
    let mut b = Builder {
        defs: Defs::default(),
        location: location.clone(),
        config_name: name,
        diags,
        failed: false,
    };
    let mut pipelines: BTreeMap<String, Pipeline> = BTreeMap::new();
    let mut extensions: BTreeSet<String> = BTreeSet::new();

    for signal in Signal::ALL {
        let srcs: Vec<&Entry> = sources
            .iter()
            .filter(|e| e.fragments.handles(signal))
            .collect();
        let dsts: Vec<&Entry> = destinations
            .iter()
            .filter(|e| e.fragments.handles(signal))
            .collect();
        if !srcs.is_empty() && dsts.is_empty() {
            let names: Vec<&str> = srcs.iter().map(|e| e.name).collect();
            b.diags.push(codes::SIGNAL_WITHOUT_DESTINATION.at(
                location.clone(),
                format!(
                    "configuration `{name}`: {} from {} go nowhere: no destination handles {}",
                    signal.as_str(),
                    names.join(", "),
                    signal.as_str()
                ),
            ));
        }
        for src in &srcs {
            for dst in &dsts {
                let mut used: Vec<(Role, &Entry)> = vec![(Role::Source, *src)];
                let receivers = b.define(Role::Source, src, signal, Section::Receivers);
                let mut procs = b.define(Role::Source, src, signal, Section::Processors);
                for p in &src.processors {
                    if p.fragments.handles(signal) {
                        procs.extend(b.define(Role::Processor, p, signal, Section::Processors));
                        used.push((Role::Processor, p));
                    }
                }
                for p in &processors {
                    if p.fragments.handles(signal) {
                        procs.extend(b.define(Role::Processor, p, signal, Section::Processors));
                        used.push((Role::Processor, p));
                    }
                }
                for p in &dst.processors {
                    if p.fragments.handles(signal) {
                        procs.extend(b.define(Role::Processor, p, signal, Section::Processors));
                        used.push((Role::Processor, p));
                    }
                }
                procs.extend(b.define(Role::Destination, dst, signal, Section::Processors));
                let exporters = b.define(Role::Destination, dst, signal, Section::Exporters);
                used.push((Role::Destination, *dst));
                for (role, e) in used {
                    for id in b.define(role, e, signal, Section::Extensions) {
                        extensions.insert(id);
                    }
                }
                let pipeline_name = format!("{}/{}__{}", signal.as_str(), src.name, dst.name);
                let procs = dedup(procs, &pipeline_name, name, &location, b.diags);
                pipelines.insert(
                    pipeline_name,
                    Pipeline {
                        receivers,
                        processors: procs,
                        exporters,
                    },
                );
            }
        }
    }

    if pipelines.is_empty() {
        b.diags.push(codes::NO_PIPELINE.at(
            location.clone(),
            format!(
                "configuration `{name}` renders no pipeline: no source and destination share a \
                 signal (logs, metrics, traces); add a destination that handles what the sources \
                 produce"
            ),
        ));
        return None;
    }

    let service_extra = service_settings(config, b.diags)?;
    if b.failed {
        return None;
    }
    let mut service = service_extra;
    if !extensions.is_empty() {
        let ids = extensions.into_iter().map(Json::String).collect();
        service.insert("extensions".into(), Json::Array(ids));
    }
    service.insert("pipelines".into(), pipelines_to_json(&pipelines));
    let sections = b.defs.sections.map(|defs| {
        defs.into_iter()
            .map(|(id, (config, masked, _))| (id, config, masked))
            .collect::<Vec<_>>()
    });
    let has_secrets = sections
        .iter()
        .flatten()
        .any(|(_, c, m)| !Arc::ptr_eq(c, m));
    Some(Assembled {
        sections,
        service,
        has_secrets,
    })
}

/// Drop repeated processors from one pipeline, keeping the first (the collector rejects a
/// processor listed twice).
fn dedup(
    procs: Vec<String>,
    pipeline: &str,
    config: &str,
    location: &Location,
    diags: &mut Diagnostics,
) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(procs.len());
    for p in procs {
        if seen.insert(p.clone()) {
            out.push(p);
        } else {
            diags.push(codes::DUPLICATE_PROCESSOR.at(
                location.clone(),
                format!(
                    "configuration `{config}`: pipeline `{pipeline}` would run processor `{p}` \
                     twice; only the first is kept"
                ),
            ));
        }
    }
    out
}

/// `spec.service` minus what is generated: a mapping that must not set `pipelines` or
/// `extensions`. `None` on a finding.
fn service_settings(
    config: &Configuration,
    diags: &mut Diagnostics,
) -> Option<serde_json::Map<String, Json>> {
    let name = &config.metadata.name;
    match &config.spec.service {
        None | Some(Json::Null) => Some(serde_json::Map::new()),
        Some(Json::Object(map)) => {
            let mut ok = true;
            for generated in ["pipelines", "extensions"] {
                if map.contains_key(generated) {
                    diags.push(codes::SERVICE_CONFLICT.at(
                        config.origin.locate(&format!("/spec/service/{generated}")),
                        format!(
                            "configuration `{name}`: `service.{generated}` is generated from the \
                             sources, processors and destinations; remove it"
                        ),
                    ));
                    ok = false;
                }
            }
            ok.then(|| map.clone())
        }
        Some(_) => {
            diags.push(codes::SERVICE_CONFLICT.at(
                config.origin.locate("/spec/service"),
                format!(
                    "configuration `{name}`: `service` must be a mapping (e.g. `telemetry: ...`)"
                ),
            ));
            None
        }
    }
}

fn pipelines_to_json(pipelines: &BTreeMap<String, Pipeline>) -> Json {
    let ids = |v: &[String]| Json::Array(v.iter().map(|s| Json::String(s.clone())).collect());
    let map = pipelines
        .iter()
        .map(|(name, p)| {
            let mut m = serde_json::Map::new();
            m.insert("receivers".into(), ids(&p.receivers));
            if !p.processors.is_empty() {
                m.insert("processors".into(), ids(&p.processors));
            }
            m.insert("exporters".into(), ids(&p.exporters));
            (name.clone(), Json::Object(m))
        })
        .collect();
    Json::Object(map)
}
