//! The single table of catalog diagnostic codes.
//!
//! Codes are stable across releases: tools (CI annotations, editors, people's muscle memory)
//! key on them. Ranges: E001–E099 load, schema and semantic errors (this module), E100–E199
//! render errors (see `render`), W001–W099 warnings. Never renumber; retire a code instead.

use super::diagnostics::{Diagnostic, Location, Severity};

/// A diagnostic code: id (`E012`), readable slug (`unknown-destination`) and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    /// The stable code, `E012`.
    pub id: &'static str,
    /// The readable slug, `unknown-destination`.
    pub name: &'static str,
    /// Whether it rejects the revision.
    pub severity: Severity,
}

impl Code {
    const fn error(id: &'static str, name: &'static str) -> Code {
        Code {
            id,
            name,
            severity: Severity::Error,
        }
    }

    const fn warning(id: &'static str, name: &'static str) -> Code {
        Code {
            id,
            name,
            severity: Severity::Warning,
        }
    }

    /// A diagnostic of this code at `location`.
    pub fn at(self, location: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code: self.id,
            name: self.name,
            severity: self.severity,
            location,
            message: message.into(),
        }
    }
}

// --- load: bytes and YAML -------------------------------------------------------------------
/// The file is not valid YAML.
pub const YAML_SYNTAX: Code = Code::error("E001", "yaml-syntax");
/// A mapping repeats a key (YAML would silently keep one; we refuse to guess).
pub const DUPLICATE_KEY: Code = Code::error("E002", "duplicate-key");
/// Alias expansion, nesting or size went past the loader's budget (alias bombs).
pub const YAML_LIMIT: Code = Code::error("E003", "yaml-limit");
/// The file is not UTF-8.
pub const NOT_UTF8: Code = Code::error("E004", "not-utf8");
/// A document is not a mapping (`apiVersion`, `kind`, `metadata`, `spec`).
pub const NOT_A_MAPPING: Code = Code::error("E005", "not-a-mapping");

// --- schema ---------------------------------------------------------------------------------
/// `kind` is missing or not one of format v1's kinds.
pub const UNKNOWN_KIND: Code = Code::error("E006", "unknown-kind");
/// `apiVersion` is missing or not `gitamp.dev/v1`.
pub const API_VERSION: Code = Code::error("E007", "unsupported-api-version");
/// The document breaks the JSON Schema of its kind.
pub const SCHEMA: Code = Code::error("E008", "schema-violation");
/// The document passed its schema but could not be read as its kind (e.g. a percentage > 100%).
pub const INVALID_DOCUMENT: Code = Code::error("E009", "invalid-document");

// --- names and references -------------------------------------------------------------------
/// Two resources of one kind share a name.
pub const DUPLICATE_NAME: Code = Code::error("E010", "duplicate-name");
/// A resource names a type that does not exist.
pub const UNKNOWN_TYPE: Code = Code::error("E011", "unknown-type");
/// A configuration names a destination that does not exist.
pub const UNKNOWN_DESTINATION: Code = Code::error("E012", "unknown-destination");
/// A configuration names a source that does not exist.
pub const UNKNOWN_SOURCE: Code = Code::error("E013", "unknown-source");
/// A configuration names a processor that does not exist.
pub const UNKNOWN_PROCESSOR: Code = Code::error("E014", "unknown-processor");
/// One list of a configuration names the same resource twice.
pub const DUPLICATE_ENTRY: Code = Code::error("E015", "duplicate-entry");
/// A reference (no `type`) carries `parameters`: only inline resources take parameters.
pub const PARAMETERS_ON_REFERENCE: Code = Code::error("E016", "parameters-on-reference");

// --- parameters -----------------------------------------------------------------------------
/// A parameter value does not have the parameter's type.
pub const PARAMETER_TYPE: Code = Code::error("E020", "parameter-type");
/// An enum parameter value is not one of `validValues`.
pub const PARAMETER_NOT_VALID: Code = Code::error("E021", "parameter-not-in-valid-values");
/// A required parameter (no default) is not given.
pub const MISSING_PARAMETER: Code = Code::error("E022", "missing-required-parameter");
/// A parameter the type does not declare.
pub const UNKNOWN_PARAMETER: Code = Code::error("E023", "unknown-parameter");
/// A type's parameter `default` does not fit the parameter (type or validValues).
pub const BAD_DEFAULT: Code = Code::error("E024", "invalid-parameter-default");
/// An `enum` parameter declares no `validValues`.
pub const ENUM_WITHOUT_VALUES: Code = Code::error("E025", "enum-without-valid-values");
/// A type declares the same parameter twice.
pub const DUPLICATE_PARAMETER: Code = Code::error("E026", "duplicate-parameter");

// --- configurations -------------------------------------------------------------------------
/// A configuration lists no sources.
pub const NO_SOURCES: Code = Code::error("E030", "no-sources");
/// A configuration lists no destinations.
pub const NO_DESTINATIONS: Code = Code::error("E031", "no-destinations");
/// `In`/`NotIn` without values, or `Exists`/`DoesNotExist` with values.
pub const SELECTOR_VALUES: Code = Code::error("E032", "invalid-selector-expression");
/// `spec.telemetry`: an endpoint that is not an http(s) URL with a host.
pub const TELEMETRY_ENDPOINT: Code = Code::error("E036", "invalid-telemetry-endpoint");
/// `spec.telemetry`: a header that is not valid, or a credential written in Git.
pub const TELEMETRY_HEADER: Code = Code::error("E037", "invalid-telemetry-header");

// --- agent versions (see `agent_version`) -------------------------------------------------
/// A package URL that is not an absolute http:// or https:// URL.
pub const PACKAGE_URL: Code = Code::error("E050", "invalid-package-url");
/// A package hash that is not 64 hex digits (a SHA-256).
pub const PACKAGE_HASH: Code = Code::error("E051", "invalid-package-hash");
/// Two packages of one AgentVersion for the same (os, arch).
pub const DUPLICATE_PLATFORM: Code = Code::error("E052", "duplicate-platform");
/// A configuration pins an AgentVersion that does not exist.
pub const UNKNOWN_AGENT_VERSION: Code = Code::error("E053", "unknown-agent-version");
/// Two AgentVersions declare the same version string (of the same package).
pub const DUPLICATE_VERSION: Code = Code::error("E054", "duplicate-version");

// --- warnings -------------------------------------------------------------------------------
/// Two configurations of equal priority may select the same agent: those agents get nothing.
pub const OVERLAPPING_SELECTORS: Code = Code::warning("W001", "overlapping-selectors");
/// A sensitive parameter holds a literal value: secrets belong in `${env:NAME}`, not in Git.
pub const SENSITIVE_LITERAL: Code = Code::warning("W002", "sensitive-literal");
/// `batchSize` is set but the strategy is `AllAtOnce`, which ignores it.
pub const BATCH_SIZE_IGNORED: Code = Code::warning("W003", "batch-size-ignored");

/// Every code of this table, for docs and tests (ids must be unique).
pub const ALL: &[Code] = &[
    YAML_SYNTAX,
    DUPLICATE_KEY,
    YAML_LIMIT,
    NOT_UTF8,
    NOT_A_MAPPING,
    UNKNOWN_KIND,
    API_VERSION,
    SCHEMA,
    INVALID_DOCUMENT,
    DUPLICATE_NAME,
    UNKNOWN_TYPE,
    UNKNOWN_DESTINATION,
    UNKNOWN_SOURCE,
    UNKNOWN_PROCESSOR,
    DUPLICATE_ENTRY,
    PARAMETERS_ON_REFERENCE,
    PARAMETER_TYPE,
    PARAMETER_NOT_VALID,
    MISSING_PARAMETER,
    UNKNOWN_PARAMETER,
    BAD_DEFAULT,
    ENUM_WITHOUT_VALUES,
    DUPLICATE_PARAMETER,
    NO_SOURCES,
    NO_DESTINATIONS,
    SELECTOR_VALUES,
    PACKAGE_URL,
    PACKAGE_HASH,
    DUPLICATE_PLATFORM,
    UNKNOWN_AGENT_VERSION,
    DUPLICATE_VERSION,
    TELEMETRY_ENDPOINT,
    TELEMETRY_HEADER,
    OVERLAPPING_SELECTORS,
    SENSITIVE_LITERAL,
    BATCH_SIZE_IGNORED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_unique_and_in_range() {
        let mut ids: Vec<&str> = ALL.iter().map(|c| c.id).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate code id");
        for c in ALL {
            let num: u32 = c.id[1..].parse().unwrap_or(0);
            match c.severity {
                Severity::Error => assert!(c.id.starts_with('E') && (1..100).contains(&num)),
                Severity::Warning => assert!(c.id.starts_with('W') && (1..100).contains(&num)),
            }
        }
        let mut names: Vec<&str> = ALL.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate code name");
    }
}
