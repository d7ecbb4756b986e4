//! `kind: AgentVersion`: a version of the agent with one downloadable package per platform,
//! which a configuration pins with `spec.agentVersion` and gitamp offers to agents through
//! OpAMP `PackagesAvailable` (the offer itself is built in `plan::upgrade`).
//!
//! Checked here: the URL form (absolute http/https), the hash form (a SHA-256, 64 hex digits),
//! duplicate platforms, the same version declared twice, and configurations pinning an
//! AgentVersion that does not exist. The offer is built only from a declaration that passed
//! these checks, so a malformed hash never reaches an agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::codes;
use super::diagnostics::Diagnostics;
use super::model::{Configuration, Metadata, Origin};
use super::validate::Broken;

/// The OpAMP package name when the declaration names none.
pub const DEFAULT_PACKAGE: &str = "collector";

/// One platform's package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformPackage {
    /// The `os.type` label of the agents it is for (`linux`, `windows`, `darwin`).
    pub os: String,
    /// The `host.arch` label of the agents it is for (`amd64`, `arm64`).
    pub arch: String,
    /// Where the agent downloads it (`DownloadableFile.download_url`).
    pub url: String,
    /// SHA-256 of its content, hex (`DownloadableFile.content_hash`, as bytes).
    pub sha256: String,
    /// Optional signature (`DownloadableFile.signature`), checked by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `spec` of an AgentVersion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentVersionSpec {
    /// The version string agents report once it is installed.
    pub version: String,
    /// The OpAMP package name (default [`DEFAULT_PACKAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// One package per (os, arch).
    pub platforms: Vec<PlatformPackage>,
}

impl AgentVersionSpec {
    /// The OpAMP package name.
    pub fn package_name(&self) -> &str {
        self.package.as_deref().unwrap_or(DEFAULT_PACKAGE)
    }

    /// The package for agents labelled `os`/`arch`, if one is declared.
    pub fn platform(&self, os: &str, arch: &str) -> Option<&PlatformPackage> {
        self.platforms.iter().find(|p| p.os == os && p.arch == arch)
    }
}

/// An AgentVersion document.
#[derive(Debug, Clone)]
pub struct AgentVersion {
    /// `metadata` of the document.
    pub metadata: Metadata,
    /// `spec` of the document.
    pub spec: AgentVersionSpec,
    /// Where it was written.
    pub origin: Origin,
}

/// Why a package URL is refused, or `None` when it is an absolute http(s) URL with a host.
pub fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some("it must start with http:// or https://");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Some("it has no host");
    }
    None
}

/// The 32 bytes of a SHA-256 written as 64 hex digits (either case), or `None`.
pub fn sha256_bytes(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Check every AgentVersion (URL and hash forms, duplicate platforms, duplicate versions).
pub fn check_versions(versions: &BTreeMap<String, AgentVersion>, diags: &mut Diagnostics) {
    let mut seen_versions: BTreeMap<(&str, &str), &AgentVersion> = BTreeMap::new();
    for v in versions.values() {
        let what = format!("AgentVersion `{}`", v.metadata.name);
        let key = (v.spec.package_name(), v.spec.version.as_str());
        if let Some(first) = seen_versions.insert(key, v) {
            seen_versions.insert(key, first);
            let at = first.origin.locate("/spec/version");
            diags.push(codes::DUPLICATE_VERSION.at(
                v.origin.locate("/spec/version"),
                format!(
                    "{what} declares version `{}` of package `{}`, already declared by \
                     AgentVersion `{}` at {}:{}; keep one",
                    v.spec.version,
                    v.spec.package_name(),
                    first.metadata.name,
                    at.file,
                    at.line
                ),
            ));
        }
        let mut platforms: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (i, p) in v.spec.platforms.iter().enumerate() {
            let at = |field: &str| v.origin.locate(&format!("/spec/platforms/{i}{field}"));
            if let Some(first) = platforms.insert((&p.os, &p.arch), i) {
                platforms.insert((&p.os, &p.arch), first);
                diags.push(codes::DUPLICATE_PLATFORM.at(
                    at(""),
                    format!(
                        "{what} declares platform {}/{} twice (also at line {}); an agent \
                         must get one package, remove one",
                        p.os,
                        p.arch,
                        v.origin.locate(&format!("/spec/platforms/{first}")).line
                    ),
                ));
            }
            if let Some(why) = url_problem(&p.url) {
                diags.push(codes::PACKAGE_URL.at(
                    at("/url"),
                    format!(
                        "{what}: the {}/{} package URL `{}` is not valid: {why}",
                        p.os, p.arch, p.url
                    ),
                ));
            }
            if sha256_bytes(&p.sha256).is_none() {
                diags.push(codes::PACKAGE_HASH.at(
                    at("/sha256"),
                    format!(
                        "{what}: the {}/{} sha256 `{}` is not a SHA-256: write the 64 hex \
                         digits of `sha256sum <file>`",
                        p.os, p.arch, p.sha256
                    ),
                ));
            }
        }
    }
}

/// A configuration's `agentVersion` must name an AgentVersion.
pub fn check_pin(
    config: &Configuration,
    versions: &BTreeMap<String, AgentVersion>,
    broken: &Broken,
    diags: &mut Diagnostics,
) {
    let Some(name) = &config.spec.agent_version else {
        return;
    };
    if versions.contains_key(name)
        || broken.contains(&(super::model::Kind::AgentVersion, name.clone()))
    {
        return;
    }
    let hint = match super::params::closest(name, versions.keys().map(String::as_str)) {
        Some(c) => format!("; did you mean `{c}`?"),
        None if versions.is_empty() => "; no AgentVersion is defined".to_string(),
        None => format!(
            "; known: {}",
            versions.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    diags.push(codes::UNKNOWN_AGENT_VERSION.at(
        config.origin.locate("/spec/agentVersion"),
        format!(
            "Configuration `{}` pins AgentVersion `{name}`, which does not exist{hint}",
            config.metadata.name
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(url_problem("https://dl.example.com/otelcol.tar.gz"), None);
        assert_eq!(url_problem("http://127.0.0.1:8080/p"), None);
        assert!(url_problem("ftp://x/y").is_some());
        assert!(url_problem("https:///x").is_some());
        assert!(url_problem("https://:80/x").is_some());
        assert!(url_problem("https://a b/x").is_some());
        assert!(url_problem("otelcol.tar.gz").is_some());
    }

    #[test]
    fn hash_forms() {
        let ok = "ab".repeat(32);
        assert_eq!(sha256_bytes(&ok), Some([0xab; 32]));
        assert_eq!(sha256_bytes(&ok.to_uppercase()), Some([0xab; 32]));
        assert_eq!(sha256_bytes(&"ab".repeat(31)), None);
        assert_eq!(sha256_bytes(&format!("{}zz", "ab".repeat(31))), None);
    }
}
