//! Where each agent's own telemetry goes: the one rule ([`of_configuration`]) the reconciler
//! applies to each planned agent, the API shows per configuration and the dry run compares.
//!
//! A configuration's `spec.telemetry` wins; without it (or for an agent no configuration
//! selects) gitamp's own receiver is offered for metrics when it is served
//! (`--no-otlp-receiver` turns it off), else nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use gitamp_core::Revision;
use gitamp_core::catalog::telemetry::{OwnTelemetrySpec, TelemetryDestinationSpec};
use gitamp_opamp::offers::{Destination, OwnTelemetry};

fn destination(d: &TelemetryDestinationSpec) -> Destination {
    Destination {
        endpoint: d.endpoint.clone(),
        headers: d.headers.clone(),
    }
}

/// The destination of a configuration's agents (`spec` is its `spec.telemetry`).
pub fn of_configuration(spec: Option<&OwnTelemetrySpec>, receiver: bool) -> OwnTelemetry {
    match spec {
        Some(t) if t.metrics.is_some() || t.logs.is_some() => OwnTelemetry::Declared {
            metrics: t.metrics.as_ref().map(destination),
            logs: t.logs.as_ref().map(destination),
        },
        _ if receiver => OwnTelemetry::Gitamp,
        _ => OwnTelemetry::None,
    }
}

/// One short word or URL for tables: `gitamp`, `none`, or the metrics (else logs) endpoint.
pub fn summary(own: &OwnTelemetry) -> String {
    match own {
        OwnTelemetry::None => "none".into(),
        OwnTelemetry::Gitamp => "gitamp".into(),
        OwnTelemetry::Declared { metrics, logs } => metrics
            .as_ref()
            .or(logs.as_ref())
            .map_or_else(|| "none".into(), |d| d.endpoint.clone()),
    }
}

/// Every configuration's destination for a served revision, shared by its agents.
#[derive(Debug, Default)]
pub struct Policy {
    by_configuration: BTreeMap<String, Arc<OwnTelemetry>>,
    /// For agents no configuration selects.
    default: Option<Arc<OwnTelemetry>>,
}

impl Policy {
    /// Reads the destinations of `revision` (call when it is accepted).
    pub fn set_revision(&mut self, revision: &Revision, receiver: bool) {
        self.by_configuration = revision
            .catalog
            .configurations
            .iter()
            .map(|(name, c)| {
                let own = of_configuration(c.spec.telemetry.as_ref(), receiver);
                (name.clone(), Arc::new(own))
            })
            .collect();
        self.default = Some(Arc::new(of_configuration(None, receiver)));
    }

    /// The destination of an agent of `configuration` (none: no configuration selects it);
    /// `None` before a revision is served.
    pub fn for_agent(&self, configuration: Option<&str>) -> Option<Arc<OwnTelemetry>> {
        configuration
            .and_then(|c| self.by_configuration.get(c))
            .or(self.default.as_ref())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_wins_then_the_receiver_then_nothing() {
        let spec = OwnTelemetrySpec {
            metrics: None,
            logs: Some(TelemetryDestinationSpec {
                endpoint: "https://logs.example/v1/logs".into(),
                headers: BTreeMap::new(),
            }),
        };
        let declared = of_configuration(Some(&spec), true);
        assert!(matches!(
            declared,
            OwnTelemetry::Declared { metrics: None, .. }
        ));
        assert_eq!(summary(&declared), "https://logs.example/v1/logs");
        assert_eq!(of_configuration(None, true), OwnTelemetry::Gitamp);
        assert_eq!(
            of_configuration(Some(&OwnTelemetrySpec::default()), false),
            OwnTelemetry::None
        );
    }
}
