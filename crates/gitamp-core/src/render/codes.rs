//! Diagnostic codes of the render stage: errors E100-E199, warnings W100-W199 (the catalog owns
//! E001-E099 and W001-W099).
//!
//! Codes are stable across releases: people grep for them, CI annotations link them, and the
//! corpus under `tests/corpus/` pins where each one points. Add new codes at the end; never
//! renumber or reuse one.

use crate::catalog::diagnostics::{Diagnostic, Location, Severity};

/// One entry of the table: what [`Diagnostic`] gets as `code`, `name` and `severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The stable code, `E101`.
    pub code: &'static str,
    /// The readable slug.
    pub name: &'static str,
    /// Whether it rejects the revision.
    pub severity: Severity,
}

impl Code {
    /// A diagnostic of this code at `location`.
    pub fn at(self, location: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code: self.code,
            name: self.name,
            severity: self.severity,
            location,
            message: message.into(),
        }
    }
}

const fn error(code: &'static str, name: &'static str) -> Code {
    Code {
        code,
        name,
        severity: Severity::Error,
    }
}

const fn warning(code: &'static str, name: &'static str) -> Code {
    Code {
        code,
        name,
        severity: Severity::Warning,
    }
}

/// A template does not parse (unclosed `{% if %}`, bad expression).
pub const TEMPLATE_SYNTAX: Code = error("E100", "template-syntax");
/// A template failed while rendering one resource: undefined parameter, a filter error, out of
/// fuel (a runaway loop).
pub const TEMPLATE_RENDER: Code = error("E101", "template-render");
/// What a template produced is not YAML.
pub const TEMPLATE_NOT_YAML: Code = error("E102", "template-not-yaml");
/// What a template produced is YAML but not a mapping of component key to configuration.
pub const TEMPLATE_NOT_MAPPING: Code = error("E103", "template-not-mapping");
/// A key of a template's mapping is not a collector component key (`type` or `type/name`).
pub const INVALID_COMPONENT_KEY: Code = error("E104", "invalid-component-key");
/// A type has a template section its role cannot use (a source type with `exporters`): those
/// components would be defined and never used.
pub const MISPLACED_SECTION: Code = error("E105", "misplaced-template-section");
/// A configuration produces no pipeline: no source and destination share a signal.
pub const NO_PIPELINE: Code = error("E106", "no-pipeline");
/// Sources of a configuration handle a signal no destination handles: that data goes nowhere.
pub const SIGNAL_WITHOUT_DESTINATION: Code = warning("W107", "signal-without-destination");
/// One rendered component ID gets two different configurations (a type rendering `otlp` one way
/// for logs and another way for metrics).
pub const CONFLICTING_COMPONENT: Code = error("E108", "conflicting-component");
/// A configuration's `spec.service` is not a mapping, or sets `pipelines`/`extensions`, which
/// are generated.
pub const SERVICE_CONFLICT: Code = error("E109", "service-conflict");
/// The same processor appears twice in one pipeline (the collector rejects that); the second
/// occurrence is dropped.
pub const DUPLICATE_PROCESSOR: Code = warning("W110", "duplicate-processor");
/// The rendered collector YAML failed the consistency check (undefined or unused component,
/// a pipeline without receivers or exporters).
pub const INVALID_COLLECTOR_CONFIG: Code = error("E111", "invalid-collector-config");
/// The collector given with `--otelcol` refused a rendered configuration
/// (`otelcol validate`): a field its component does not have, a bad duration, an option a
/// component rejects. Reported on the resource or template that produced the component.
pub const COLLECTOR_REFUSED_CONFIG: Code = error("E112", "collector-refused-config");
/// The collector could not judge a configuration on the machine running the check: a
/// component it can only build on another platform (a Windows-only receiver checked on
/// Linux). What it could check passed; the rest is unchecked, not assumed valid.
pub const COLLECTOR_CHECK_INCOMPLETE: Code = warning("W113", "collector-check-incomplete");
/// `gitamp serve --otelcol`: the collector's check did not finish (timed out, crashed, could
/// not start), so the revision is not served unchecked.
pub const COLLECTOR_CHECK_FAILED: Code = error("E114", "collector-check-failed");

/// Every render code, for documentation and for tests that check the table.
pub const ALL: [Code; 15] = [
    TEMPLATE_SYNTAX,
    TEMPLATE_RENDER,
    TEMPLATE_NOT_YAML,
    TEMPLATE_NOT_MAPPING,
    INVALID_COMPONENT_KEY,
    MISPLACED_SECTION,
    NO_PIPELINE,
    SIGNAL_WITHOUT_DESTINATION,
    CONFLICTING_COMPONENT,
    SERVICE_CONFLICT,
    DUPLICATE_PROCESSOR,
    INVALID_COLLECTOR_CONFIG,
    COLLECTOR_REFUSED_CONFIG,
    COLLECTOR_CHECK_INCOMPLETE,
    COLLECTOR_CHECK_FAILED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_in_range() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ALL {
            assert!(seen.insert(c.code), "duplicate {}", c.code);
            let n: u32 = c.code[1..].parse().unwrap();
            assert!((100..200).contains(&n), "{} out of range", c.code);
            // Warnings are W-codes, errors E-codes, as in the catalog's table.
            assert_eq!(
                c.code.starts_with('W'),
                c.severity == Severity::Warning,
                "{}",
                c.code
            );
        }
    }
}
