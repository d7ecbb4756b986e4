//! The repository format v1: one Rust type per `kind`.
//!
//! These types are deserialized from documents that already passed the JSON Schema of their kind
//! (see `schemas/`), so they describe shape only; meaning (references, parameter types, template
//! errors) is checked in `validate`. Every resource remembers where it was written ([`Origin`]) so
//! that a diagnostic about `spec.destinations[2]` can point at that line.

use std::collections::BTreeMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::diagnostics::Location;

/// The only `apiVersion` format v1 accepts.
pub const API_VERSION: &str = "gitamp.dev/v1";

/// The telemetry signals a collector pipeline carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Log records.
    Logs,
    /// Metrics.
    Metrics,
    /// Traces.
    Traces,
}

impl Signal {
    /// Every signal, in the stable order used for rendering.
    pub const ALL: [Signal; 3] = [Signal::Logs, Signal::Metrics, Signal::Traces];

    /// The name in YAML and in pipeline IDs: `logs`, `metrics`, `traces`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }
}

/// Every `kind` of format v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `kind: SourceType`.
    SourceType,
    /// `kind: ProcessorType`.
    ProcessorType,
    /// `kind: DestinationType`.
    DestinationType,
    /// `kind: Source`.
    Source,
    /// `kind: Processor`.
    Processor,
    /// `kind: Destination`.
    Destination,
    /// `kind: Configuration`.
    Configuration,
    /// `kind: AgentVersion` (see [`super::agent_version`]).
    AgentVersion,
}

impl Kind {
    /// Every kind: the types, then the resources, then configurations.
    pub const ALL: [Kind; 8] = [
        Kind::SourceType,
        Kind::ProcessorType,
        Kind::DestinationType,
        Kind::Source,
        Kind::Processor,
        Kind::Destination,
        Kind::Configuration,
        Kind::AgentVersion,
    ];

    /// The `kind:` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SourceType => "SourceType",
            Kind::ProcessorType => "ProcessorType",
            Kind::DestinationType => "DestinationType",
            Kind::Source => "Source",
            Kind::Processor => "Processor",
            Kind::Destination => "Destination",
            Kind::Configuration => "Configuration",
            Kind::AgentVersion => "AgentVersion",
        }
    }

    /// The kind of a `kind:` value, if format v1 has it.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The role a type kind plays in a pipeline, and the resource kind that instantiates it.
    pub fn role(self) -> Option<Role> {
        match self {
            Kind::SourceType | Kind::Source => Some(Role::Source),
            Kind::ProcessorType | Kind::Processor => Some(Role::Processor),
            Kind::DestinationType | Kind::Destination => Some(Role::Destination),
            Kind::Configuration | Kind::AgentVersion => None,
        }
    }
}

/// Where a component sits in a pipeline. Also names the prefix of rendered component IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives telemetry (collector receivers).
    Source,
    /// Transforms it (collector processors).
    Processor,
    /// Sends it on (collector exporters).
    Destination,
}

impl Role {
    /// The kind declaring types of this role (`SourceType` for a source).
    pub fn type_kind(self) -> Kind {
        match self {
            Role::Source => Kind::SourceType,
            Role::Processor => Kind::ProcessorType,
            Role::Destination => Kind::DestinationType,
        }
    }
    /// The kind instantiating types of this role (`Source` for a source).
    pub fn resource_kind(self) -> Kind {
        match self {
            Role::Source => Kind::Source,
            Role::Processor => Kind::Processor,
            Role::Destination => Kind::Destination,
        }
    }
    /// Short prefix used in rendered component IDs: `otlp/src-app`, `batch/proc-batch`.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Role::Source => "src",
            Role::Processor => "proc",
            Role::Destination => "dst",
        }
    }
}

/// Where a document (and every value in it) was written: file, document index, and a map from
/// JSON pointer (`/spec/destinations/2`) to line and column.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Path relative to the repository root, `/`-separated.
    pub file: Arc<str>,
    /// 0-based index of the document within a multi-document file.
    pub document: usize,
    /// JSON pointer -> position of the value at that pointer (keys of maps point at the value).
    pub positions: Arc<BTreeMap<String, Location>>,
}

impl Origin {
    /// The position of the value at `pointer`, or of its nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Location {
        let mut p = pointer;
        loop {
            if let Some(loc) = self.positions.get(p) {
                return loc.clone();
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return self.positions.get("").cloned().unwrap_or_else(|| Location {
                        file: self.file.clone(),
                        line: 1,
                        column: 1,
                    });
                }
            }
        }
    }
}

/// `metadata` of every document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique per kind; what references use.
    pub name: String,
    /// Free-form labels (not used for selection).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The type of a parameter a resource type declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    /// Any string.
    String,
    /// An integer.
    Int,
    /// true or false.
    Bool,
    /// One of `validValues`.
    Enum,
    /// A list of strings.
    Strings,
    /// A map of string to string.
    Map,
    /// Any YAML value, inserted as-is (use the `toyaml` filter in templates).
    Yaml,
    /// A Go duration string such as `30s`, `1m30s`, `500ms`.
    Duration,
}

/// One parameter a resource type declares.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParameterSpec {
    /// The name templates and resources use.
    pub name: String,
    /// Its type; values are checked against it.
    #[serde(rename = "type")]
    pub kind: ParameterType,
    /// Used when a resource gives no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// A resource must give a value (a default does not count).
    #[serde(default)]
    pub required: bool,
    /// For `enum`: the allowed values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_values: Vec<String>,
    /// Masked (`***`) in everything shown to a person; intact in what agents receive.
    #[serde(default)]
    pub sensitive: bool,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Collector component fragments for one signal, each a minijinja template that renders to a
/// YAML mapping of component key (`otlp`, `filelog/app`) to component configuration.
/// Mapping order is kept: for processors it is the order in the pipeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignalTemplates {
    /// Template of the `receivers:` components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receivers: Option<String>,
    /// Template of the `processors:` components, in pipeline order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processors: Option<String>,
    /// Template of the `exporters:` components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporters: Option<String>,
    /// Template of the `extensions:` components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<String>,
}

/// `spec` of SourceType, ProcessorType and DestinationType.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TypeSpec {
    /// The parameters resources of this type may or must give.
    #[serde(default)]
    pub parameters: Vec<ParameterSpec>,
    /// Templates per signal; the signals present are the signals this type handles.
    pub templates: BTreeMap<Signal, SignalTemplates>,
}

/// A resource type: SourceType, ProcessorType or DestinationType.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// Source, processor or destination.
    pub role: Role,
    /// `metadata` of the document.
    pub metadata: Metadata,
    /// `spec` of the document.
    pub spec: TypeSpec,
    /// Where it was written.
    pub origin: Origin,
}

/// `spec` of Source, Processor and Destination: a type plus parameter values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource type's name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Values for the type's parameters, in document order.
    #[serde(default)]
    pub parameters: IndexMap<String, serde_json::Value>,
}

/// A Source, Processor or Destination, declared at top level or inline in a configuration.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Source, processor or destination.
    pub role: Role,
    /// `metadata` of the document (or of the inline entry).
    pub metadata: Metadata,
    /// Its type and parameter values.
    pub spec: ResourceSpec,
    /// Where it was written.
    pub origin: Origin,
    /// JSON pointer of this resource's own `spec` within `origin` (`/spec` at top level,
    /// `/spec/sources/1` for an inline one), so diagnostics point at the right lines.
    pub spec_pointer: String,
    /// The configuration that declared it inline, if any.
    pub inline_in: Option<String>,
}

/// `selector.matchExpressions[]` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is missing or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is missing.
    DoesNotExist,
}

/// One `selector.matchExpressions[]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectorRequirement {
    /// The label.
    pub key: String,
    /// How it is tested.
    pub operator: SelectorOperator,
    /// For `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// What is wrong with a requirement's values (code E032 in a repository; the status API's
/// `selector=` refuses the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorValuesProblem {
    /// `In` or `NotIn` without a value: it would match nothing, or everything.
    Missing,
    /// `Exists` or `DoesNotExist` with values, which they do not read.
    Unexpected,
}

impl SelectorRequirement {
    /// The one rule for a requirement's values.
    pub fn values_problem(&self) -> Option<SelectorValuesProblem> {
        match self.operator {
            SelectorOperator::In | SelectorOperator::NotIn if self.values.is_empty() => {
                Some(SelectorValuesProblem::Missing)
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist
                if !self.values.is_empty() =>
            {
                Some(SelectorValuesProblem::Unexpected)
            }
            _ => None,
        }
    }
}

/// Which agents a configuration applies to, by their labels (Kubernetes label-selector rules:
/// every matchLabels pair and every expression must hold; an empty selector matches every agent).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Labels an agent must have with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// Kubernetes label-selector text (`k=v,k in (a,b),k notin (c),k,!k`), what the status API's
/// `selector=` and `gitamp agents --selector` read back as the same selector. Empty for the
/// empty selector (every agent).
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for e in &self.match_expressions {
            let values = e.values.join(",");
            parts.push(match e.operator {
                SelectorOperator::In => format!("{} in ({values})", e.key),
                SelectorOperator::NotIn => format!("{} notin ({values})", e.key),
                SelectorOperator::Exists => e.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", e.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

/// A count of agents, absolute (`5`) or relative to the configuration's agents (`"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// That many agents.
    Count(u64),
    /// That percentage of the configuration's agents (0-100).
    #[serde(with = "percent")]
    Percent(f64),
}

impl Quantity {
    /// Resolve against a total; percentages round up so that a non-zero percent is at least 1.
    pub fn of(self, total: usize) -> usize {
        match self {
            Quantity::Count(n) => n as usize,
            Quantity::Percent(p) => ((total as f64) * p / 100.0).ceil() as usize,
        }
    }
}

mod percent {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(p: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{p}%"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        let n = s
            .strip_suffix('%')
            .ok_or_else(|| D::Error::custom("a percentage ends with %"))?;
        let v: f64 = n.trim().parse().map_err(D::Error::custom)?;
        if !(0.0..=100.0).contains(&v) {
            return Err(D::Error::custom("a percentage is between 0% and 100%"));
        }
        Ok(v)
    }
}

/// How agents are taken through a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RolloutStrategy {
    /// Every selected agent gets the new config at once.
    #[default]
    AllAtOnce,
    /// Agents get it in batches of `batchSize`; a batch must apply before the next starts.
    Batched,
}

/// What happens to an agent that reports FAILED for a configuration's new hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OnFailure {
    /// Send it back the last config it applied (default): a collector whose supervisor could
    /// not apply a config may not run at all, so keeping it on the failed config loses its
    /// telemetry. The failed hash is never re-sent.
    #[default]
    Rollback,
    /// Leave it as it is (on whatever the agent itself falls back to).
    Keep,
}

/// How a new revision of a configuration reaches its agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// At once or in batches.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Agents per batch (Batched only). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Quantity>,
    /// Failed agents tolerated before the rollout halts. Default 0: the first failure halts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<Quantity>,
    /// What a failed agent gets (default: its last applied config back).
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_failure: OnFailure,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            strategy: RolloutStrategy::AllAtOnce,
            batch_size: None,
            max_failures: None,
            on_failure: OnFailure::Rollback,
        }
    }
}

impl RolloutPolicy {
    /// Agents per batch among `agents` in scope (default 1, never 0 so a rollout always moves).
    pub fn batch_size_for(&self, agents: usize) -> usize {
        self.batch_size.map_or(1, |q| q.of(agents)).max(1)
    }

    /// Failures tolerated among `agents` in scope (default 0: the first failure halts).
    pub fn max_failures_for(&self, agents: usize) -> usize {
        self.max_failures.map_or(0, |q| q.of(agents))
    }
}

/// One entry of a configuration's `sources`, `processors` or `destinations`: a reference to a
/// top-level resource by name, or an inline resource (`type` present), plus the processors that
/// apply to this entry only (sources and destinations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ComponentRef {
    /// `- otlp-in`
    Name(String),
    /// `- name: otlp-in` / `- {name: x, type: otlp, parameters: {...}, processors: [...]}`
    Entry(ComponentEntry),
}

/// The mapping form of a [`ComponentRef`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    /// The referenced (or inline) resource's name.
    pub name: String,
    /// Present: an inline resource of this type. Absent: a reference to `name`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Parameter values of an inline resource.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub parameters: IndexMap<String, serde_json::Value>,
    /// Processors applied to this source or destination only, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processors: Vec<ComponentRef>,
}

impl ComponentRef {
    /// The name it references or declares.
    pub fn name(&self) -> &str {
        match self {
            ComponentRef::Name(n) => n,
            ComponentRef::Entry(e) => &e.name,
        }
    }
    /// The processors for this entry only.
    pub fn processors(&self) -> &[ComponentRef] {
        match self {
            ComponentRef::Name(_) => &[],
            ComponentRef::Entry(e) => &e.processors,
        }
    }
    /// True for an inline resource (it has a `type`).
    pub fn is_inline(&self) -> bool {
        matches!(self, ComponentRef::Entry(e) if e.type_name.is_some())
    }
}

/// `spec` of a Configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigurationSpec {
    /// Which agents it applies to.
    #[serde(default)]
    pub selector: Selector,
    /// Higher wins when several configurations select one agent; a tie is a conflict.
    #[serde(default)]
    pub priority: i64,
    /// Where telemetry comes from, each with its own processors.
    #[serde(default)]
    pub sources: Vec<ComponentRef>,
    /// Processors applied to every pipeline, after each source's own and before each
    /// destination's own.
    #[serde(default)]
    pub processors: Vec<ComponentRef>,
    /// Where it goes, each with its own processors.
    #[serde(default)]
    pub destinations: Vec<ComponentRef>,
    /// Extra service-level settings merged into `service:` (e.g. `telemetry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<serde_json::Value>,
    /// How a change reaches the agents (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
    /// Key of the single OpAMP config-map entry (default `""`, what the collector's supervisor
    /// merges last). Some distributions read `collector.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key: Option<String>,
    /// The AgentVersion (by name) its agents are upgraded to, through the same rollout policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Where its agents send their own metrics and logs (default: gitamp's own receiver, for
    /// metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<super::telemetry::OwnTelemetrySpec>,
}

/// A Configuration: which agents, and which sources, processors and destinations they run.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// `metadata` of the document.
    pub metadata: Metadata,
    /// `spec` of the document.
    pub spec: ConfigurationSpec,
    /// Where it was written.
    pub origin: Origin,
}

impl Configuration {
    /// The rollout policy, defaults filled in.
    pub fn rollout(&self) -> RolloutPolicy {
        self.spec.rollout.clone().unwrap_or_default()
    }
    /// The key of the config-map entry agents receive (`""` by default).
    pub fn config_map_key(&self) -> &str {
        self.spec.config_map_key.as_deref().unwrap_or("")
    }
}
