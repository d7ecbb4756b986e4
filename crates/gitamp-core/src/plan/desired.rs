//! What the repository wants, reduced to what the plan needs: per configuration its selector,
//! priority, rollout policy and desired hash. Built once per revision; the server and
//! `reconcile --dry-run` build it the same way, so the dry run shows what the server would do.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Revision;
use crate::catalog::model::{
    Configuration, ConfigurationSpec, Metadata, OnFailure, RolloutPolicy, Selector,
};
use crate::config_map::ConfigHash;
use crate::plan::select::{Selection, select};
use crate::plan::selector::Labels;
use crate::plan::upgrade::DesiredVersion;

/// One configuration as the plan sees it.
#[derive(Debug, Clone)]
pub struct DesiredConfig {
    /// A slim copy (name, selector, priority, rollout) so selection runs through the one
    /// [`select`] that `gitamp render --labels` uses too, never a second implementation.
    config: Configuration,
    /// `None` only if the configuration has no rendered output (a compiled revision always has).
    pub hash: Option<ConfigHash>,
    /// The AgentVersion it pins, if any.
    pub version: Option<Arc<DesiredVersion>>,
}

impl DesiredConfig {
    /// Build directly (tests, agents-file dry runs).
    pub fn new(
        name: impl Into<String>,
        selector: Selector,
        priority: i64,
        rollout: RolloutPolicy,
        hash: Option<ConfigHash>,
    ) -> Self {
        DesiredConfig {
            config: Configuration {
                metadata: Metadata {
                    name: name.into(),
                    ..Default::default()
                },
                spec: ConfigurationSpec {
                    selector,
                    priority,
                    rollout: Some(rollout),
                    ..Default::default()
                },
                origin: Default::default(),
            },
            hash,
            version: None,
        }
    }

    /// Pin an agent version (builder for tests and the revision).
    pub fn with_version(mut self, version: Option<Arc<DesiredVersion>>) -> Self {
        self.version = version;
        self
    }

    /// The configuration's name.
    pub fn name(&self) -> &str {
        &self.config.metadata.name
    }
    /// Which agents it selects.
    pub fn selector(&self) -> &Selector {
        &self.config.spec.selector
    }
    /// Its priority: the highest among those selecting an agent wins.
    pub fn priority(&self) -> i64 {
        self.config.spec.priority
    }
    /// Its rollout policy (the default when the file sets none).
    pub fn rollout(&self) -> RolloutPolicy {
        self.config.rollout()
    }
    /// What its failed agents get (read per agent plan, so no policy clone).
    pub fn on_failure(&self) -> OnFailure {
        self.config
            .spec
            .rollout
            .as_ref()
            .map_or_else(OnFailure::default, |r| r.on_failure)
    }
}

/// Every configuration of one revision.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The revision they come from.
    pub revision: String,
    /// Each configuration by name.
    pub configurations: BTreeMap<String, DesiredConfig>,
    /// Every declared agent version by version string (what a rollback may offer back).
    pub versions: BTreeMap<String, Arc<DesiredVersion>>,
}

impl Desired {
    /// From configurations built directly.
    pub fn new(
        revision: impl Into<String>,
        configs: impl IntoIterator<Item = DesiredConfig>,
    ) -> Self {
        Desired {
            revision: revision.into(),
            configurations: configs
                .into_iter()
                .map(|c| (c.name().to_string(), c))
                .collect(),
            versions: BTreeMap::new(),
        }
    }

    /// From a compiled revision: every configuration of its catalog with its rendered hash.
    ///
    /// A configuration without rendered output is kept (hash `None`) rather than dropped, so
    /// the agents it wins do not silently fall through to a lower-priority configuration.
    pub fn from_revision(revision: &Revision) -> Self {
        let by_name: BTreeMap<&str, Arc<DesiredVersion>> = revision
            .catalog
            .agent_versions
            .values()
            .filter_map(|v| Some((v.metadata.name.as_str(), Arc::new(DesiredVersion::of(v)?))))
            .collect();
        let mut desired = Desired::new(
            revision.revision.clone(),
            revision.catalog.configurations.values().map(|c| {
                DesiredConfig::new(
                    c.metadata.name.clone(),
                    c.spec.selector.clone(),
                    c.spec.priority,
                    c.rollout(),
                    revision
                        .rendered
                        .configurations
                        .get(&c.metadata.name)
                        .map(|r| r.hash),
                )
                .with_version(
                    c.spec
                        .agent_version
                        .as_deref()
                        .and_then(|n| by_name.get(n).cloned()),
                )
            }),
        );
        desired.versions = by_name
            .into_values()
            .map(|v| (v.version.clone(), v))
            .collect();
        desired
    }

    /// Which configuration an agent with `labels` gets.
    pub fn select(&self, labels: &Labels) -> Selection {
        select(self.configurations.values().map(|d| &d.config), labels)
    }

    /// The desired hash of a configuration.
    pub fn hash_of(&self, name: &str) -> Option<ConfigHash> {
        self.configurations.get(name).and_then(|c| c.hash)
    }
}
