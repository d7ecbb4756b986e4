//! `spec.telemetry` of a Configuration: where its agents send their own metrics and logs.
//!
//! ```yaml
//! telemetry:
//!   metrics:
//!     endpoint: https://otlp.example.com/v1/metrics
//!     headers:
//!       Authorization: "Bearer ${env:OTLP_TOKEN}"
//!   logs:
//!     endpoint: https://otlp.example.com/v1/logs
//! ```
//!
//! The server offers it to agents through OpAMP (`own_metrics` / `own_logs`); without it gitamp's
//! own receiver is offered for metrics. Header values travel to the agent as written, and the
//! collector resolves `${env:NAME}` on its side, so a credential never has to be in Git: a
//! credential-like header (Authorization, a key, a token...) holding a literal is an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::codes;
use super::diagnostics::Diagnostics;
use super::load::escape_token;
use super::model::Configuration;
use super::params::is_env_ref;

/// `spec.telemetry`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OwnTelemetrySpec {
    /// Where the agents' own metrics go (OTLP/HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<TelemetryDestinationSpec>,
    /// Where the agents' own logs go (OTLP/HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<TelemetryDestinationSpec>,
}

/// One OTLP/HTTP destination.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryDestinationSpec {
    /// The full OTLP/HTTP URL (`http` or `https`).
    pub endpoint: String,
    /// Request headers; credentials as `${env:NAME}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Is a header named `name` a credential? (Its value then must come from the environment.)
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "cookie"
        || ["key", "token", "secret", "password", "signature"]
            .iter()
            .any(|w| n.contains(w))
}

/// Whether `value` takes its credential from the environment: exactly one reference, or a scheme
/// word followed by one (`Bearer ${env:TOKEN}`).
fn from_env(value: &str) -> bool {
    let v = value.trim();
    is_env_ref(v)
        || v.split_once(' ')
            .is_some_and(|(scheme, rest)| !scheme.contains('$') && is_env_ref(rest.trim()))
}

/// An `http(s)://host...` URL with a host and no spaces.
fn endpoint_ok(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !r.chars().any(char::is_whitespace)
    })
}

/// Header names are HTTP tokens.
fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks `spec.telemetry` of one configuration.
pub fn check(c: &Configuration, diags: &mut Diagnostics) {
    let Some(t) = &c.spec.telemetry else {
        return;
    };
    let name = &c.metadata.name;
    let o = &c.origin;
    for (signal, d) in [("metrics", &t.metrics), ("logs", &t.logs)] {
        let Some(d) = d else { continue };
        let base = format!("/spec/telemetry/{signal}");
        if !endpoint_ok(&d.endpoint) {
            diags.push(codes::TELEMETRY_ENDPOINT.at(
                o.locate(&format!("{base}/endpoint")),
                format!(
                    "configuration `{name}`: telemetry {signal} endpoint `{}` is not an \
                     http(s) URL with a host; write the full OTLP/HTTP URL, e.g. \
                     `https://otlp.example.com/v1/{signal}`",
                    d.endpoint
                ),
            ));
        }
        for (header, value) in &d.headers {
            let at = o.locate(&format!("{base}/headers/{}", escape_token(header)));
            if !header_name_ok(header) {
                diags.push(codes::TELEMETRY_HEADER.at(
                    at,
                    format!("configuration `{name}`: `{header}` is not a valid HTTP header name"),
                ));
            } else if value.contains(['\r', '\n']) {
                diags.push(codes::TELEMETRY_HEADER.at(
                    at,
                    format!("configuration `{name}`: header `{header}` holds a line break"),
                ));
            } else if is_credential_header(header) && !from_env(value) {
                diags.push(codes::TELEMETRY_HEADER.at(
                    at,
                    format!(
                        "configuration `{name}`: header `{header}` is a credential written in \
                         Git; take it from the agent's environment, e.g. `Bearer ${{env:OTLP_TOKEN}}`"
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_must_come_from_the_environment() {
        assert!(is_credential_header("Authorization"));
        assert!(is_credential_header("X-API-Key"));
        assert!(!is_credential_header("X-Scope-OrgID"));
        assert!(from_env("${env:TOKEN}"));
        assert!(from_env("Bearer ${env:TOKEN}"));
        assert!(!from_env("Bearer abc"));
        assert!(!from_env("Bearer ${env:A}${env:B}x"));
    }

    #[test]
    fn endpoints_are_http_urls_with_a_host() {
        assert!(endpoint_ok("https://otlp.example.com/v1/metrics"));
        assert!(endpoint_ok("http://10.0.0.1:4318/v1/logs"));
        assert!(!endpoint_ok("otlp.example.com:4318"));
        assert!(!endpoint_ok("https:///v1/metrics"));
        assert!(!endpoint_ok("grpc://x:4317"));
    }
}
