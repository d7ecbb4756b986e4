//! The dry run's view of a configuration's own-telemetry destination (`spec.telemetry`): it is
//! offered to agents apart from their config, so it changes without the config hash changing.

use gitamp_core::Revision;
use gitamp_opamp::offers::{OwnTelemetry, masked};
use serde::Serialize;

use crate::server::own_telemetry::{of_configuration, summary};

/// Where a configuration's agents send their own telemetry, before and after (header values
/// masked). "gitamp" is the server's own receiver, offered when nothing is declared (unless it
/// runs with `--no-otlp-receiver`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetryChange {
    pub before: OwnTelemetry,
    pub after: OwnTelemetry,
}

impl TelemetryChange {
    /// `gitamp → https://otlp.example.com/v1/metrics`.
    pub fn line(&self) -> String {
        format!("{} → {}", summary(&self.before), summary(&self.after))
    }
}

fn of(revision: &Revision, name: &str) -> Option<OwnTelemetry> {
    let c = revision.catalog.configurations.get(name)?;
    Some(masked(&of_configuration(c.spec.telemetry.as_ref(), true)))
}

/// The change of configuration `name` between the base and the working tree, if both have it
/// and the destinations differ (a header value rotated counts, shown masked).
pub fn change(base: Option<&Revision>, new: &Revision, name: &str) -> Option<TelemetryChange> {
    let base = base?;
    let declared = |r: &Revision| {
        r.catalog
            .configurations
            .get(name)
            .map(|c| c.spec.telemetry.clone())
    };
    let (b, n) = (declared(base)?, declared(new)?);
    (b != n).then(|| TelemetryChange {
        before: of(base, name).unwrap_or(OwnTelemetry::None),
        after: of(new, name).unwrap_or(OwnTelemetry::None),
    })
}
