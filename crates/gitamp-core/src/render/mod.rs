//! Configurations become complete OpenTelemetry Collector YAML.
//!
//! - [`env`]: the one minijinja environment (strict, raw text, `toyaml`, bounded by fuel).
//! - [`components`]: each resource's templates rendered once into components with stable IDs.
//! - [`pipelines`]: each configuration assembled into pipelines (source x destination per signal).
//! - [`check`]: the rendered YAML parsed back and checked the way a collector would.
//! - [`effective`]: the rendered YAML against what an agent reports it runs, by meaning.
//! - [`mask`]: sensitive values kept out of what people see (API, events, collector messages).
//! - [`codes`]: the diagnostics of this stage (E100-E199).
//!
//! Same repository, same bytes: IDs come from names, maps keep a defined order (pipelines
//! sorted, components in configuration order), and the YAML emitter is deterministic.

pub mod check;
pub mod codes;
pub mod components;
pub mod effective;
pub mod env;
pub mod mask;
pub mod pipelines;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::catalog::Catalog;
use crate::catalog::diagnostics::Diagnostics;
use crate::config_map::{ConfigFile, ConfigHash, ConfigMap, YAML_CONTENT_TYPE};

/// What a sensitive value becomes in everything shown to people.
pub const MASK: &str = "***";

/// One configuration, rendered once per revision and shared by every agent it selects.
#[derive(Debug, Clone)]
pub struct RenderedConfiguration {
    /// The configuration's name.
    pub name: String,
    /// The collector YAML agents receive (sensitive values intact).
    pub yaml: String,
    /// The same YAML with sensitive values replaced by `***`: the only form shown to people.
    pub masked_yaml: String,
    /// What goes on the wire: one entry (key from the configuration, `""` by default).
    pub config_map: ConfigMap,
    /// Hash of `config_map`: what agents report back when they run it.
    pub hash: ConfigHash,
}

/// Every configuration of a revision, by name.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// By configuration name.
    pub configurations: BTreeMap<String, Arc<RenderedConfiguration>>,
}

/// Render every configuration of a catalog.
///
/// Total on any catalog: a configuration whose references are broken (the catalog reports
/// those) is skipped, and every other problem becomes a diagnostic, never a panic. A
/// configuration with a finding is left out of [`Rendered`]; nothing partial is produced.
pub fn render(catalog: &Catalog) -> (Rendered, Diagnostics) {
    let mut diags = Diagnostics::default();
    let renderer = components::Renderer::new(catalog, &mut diags);
    let mut rendered = Rendered::default();
    for (name, config) in &catalog.configurations {
        let Some(assembled) = pipelines::assemble(&renderer, config, &mut diags) else {
            continue;
        };
        let location = config.origin.locate("/metadata/name");
        let written = to_yaml(&assembled.view(false)).and_then(|yaml| {
            let masked = if assembled.has_secrets() {
                to_yaml(&assembled.view(true))?
            } else {
                yaml.clone()
            };
            Ok((yaml, masked))
        });
        let (yaml, masked_yaml) = match written {
            Ok(pair) => pair,
            Err(e) => {
                diags.push(codes::INVALID_COLLECTOR_CONFIG.at(
                    location,
                    format!("configuration `{name}`: the collector YAML cannot be written: {e}"),
                ));
                continue;
            }
        };
        if let Err(problems) = check::check(&yaml) {
            for p in problems {
                diags.push(
                    codes::INVALID_COLLECTOR_CONFIG
                        .at(location.clone(), format!("configuration `{name}`: {p}")),
                );
            }
            continue;
        }
        let mut config_map = ConfigMap::new();
        config_map.insert(
            config.config_map_key().to_string(),
            ConfigFile {
                body: Bytes::from(yaml.clone()),
                content_type: YAML_CONTENT_TYPE.to_string(),
            },
        );
        let hash = ConfigHash::of(&config_map);
        rendered.configurations.insert(
            name.clone(),
            Arc::new(RenderedConfiguration {
                name: name.clone(),
                yaml,
                masked_yaml,
                config_map,
                hash,
            }),
        );
    }
    (rendered, diags)
}

/// Why a tree could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmitError(String);

/// Serialize a collector config tree. serde-saphyr's emitter is deterministic for a given tree
/// (map order is the tree's), and it quotes whatever would otherwise change type when read back.
/// Multi-line strings become literal blocks (`|`), but long single-line strings stay on one line:
/// folding an OTTL condition over two lines (`>-`) is valid YAML that nobody can read or grep.
pub fn to_yaml<T: serde::Serialize>(tree: &T) -> Result<String, EmitError> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    serde_saphyr::to_string_with_options(tree, options).map_err(|e| EmitError(e.to_string()))
}

#[cfg(test)]
mod tests;
