//! The notifications file (`--notifications FILE`): which events go to which endpoint.
//!
//! ```yaml
//! sourceUnreachableAfter: 10m        # default 10m
//! endpoints:
//!   - name: ops-slack
//!     type: slack                    # a Slack-compatible incoming webhook
//!     urlFile: /etc/gitamp/slack-url # the URL is the secret: read from a file
//!     events: [revision-rejected, rollout-halted, source-unreachable]
//!   - name: pager
//!     type: webhook                  # generic JSON
//!     url: https://alerts.example.com/gitamp
//!     secretFile: /etc/gitamp/pager-secret  # HMAC-SHA256 of the body, X-Gitamp-Signature-256
//! ```
//!
//! Everything is checked when the server starts, so a typo is an error at start rather than a
//! notification that never comes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The events a person may be told about: a closed set, so that a typo in the file is caught.
pub const NOTIFIABLE: &[&str] = &[
    "revision-rejected",
    "rollout-halted",
    "rollout-completed",
    "rolled-back",
    "failed",
    "source-unreachable",
    "source-recovered",
];

/// How long the source may fail before `source-unreachable` is sent, unless the file says.
pub const DEFAULT_UNREACHABLE_AFTER: Duration = Duration::from_secs(600);

/// Why the notifications file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The kind of endpoint: what the body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointType {
    /// `{"kind", "at", "message", ...}`, optionally signed with a shared secret.
    Webhook,
    /// `{"text": ...}`, what Slack's (and Mattermost's, Rocket.Chat's) incoming webhooks take.
    Slack,
}

/// One endpoint, checked: its URL and secret read from their files.
#[derive(Clone)]
pub struct Endpoint {
    /// A label for metrics and logs (`gitamp_notifications_total{endpoint}`).
    pub name: String,
    pub kind: EndpointType,
    /// Where to POST; may itself be a secret (a Slack webhook URL), so never logged.
    pub url: String,
    /// HMAC-SHA256 key for `X-Gitamp-Signature-256` (webhook endpoints).
    pub secret: Option<Vec<u8>>,
    /// The [`NOTIFIABLE`] kinds it receives.
    pub events: Vec<&'static str>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// The whole file, checked.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub endpoints: Vec<Endpoint>,
    /// How long fetches may fail in a row before `source-unreachable`.
    pub source_unreachable_after: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileFormat {
    #[serde(default)]
    source_unreachable_after: Option<String>,
    endpoints: Vec<EndpointFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointFormat {
    name: String,
    #[serde(rename = "type")]
    kind: EndpointType,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_file: Option<PathBuf>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    events: Option<Vec<String>>,
}

impl NotifyConfig {
    /// Read and check the file at `path`; relative `urlFile`/`secretFile` paths are relative to
    /// the file's folder.
    pub fn load(path: &Path) -> Result<NotifyConfig, NotifyConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NotifyConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| NotifyConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: FileFormat = serde_saphyr::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let source_unreachable_after = match &file.source_unreachable_after {
            None => DEFAULT_UNREACHABLE_AFTER,
            Some(text) => gitamp_core::duration::parse_flag_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(format!(
                        "sourceUnreachableAfter: {text:?} is not a duration such as 30s, 10m, 1h"
                    ))
                })?,
        };
        if file.endpoints.is_empty() {
            return Err(invalid("endpoints: list at least one endpoint".into()));
        }
        let mut endpoints = Vec::new();
        for (i, e) in file.endpoints.into_iter().enumerate() {
            let at = format!("endpoints[{i}] ({})", e.name);
            if e.name.is_empty()
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "{at}: name must be letters, digits, '-' or '_' (it labels a metric)"
                )));
            }
            if endpoints.iter().any(|x: &Endpoint| x.name == e.name) {
                return Err(invalid(format!("{at}: the name is used twice")));
            }
            let read = |file: &Path, what: &str| -> Result<String, NotifyConfigError> {
                crate::secret::read_secret(&base.join(file))
                    .map_err(|err| invalid(format!("{at}: {what}: {err:#}")))
            };
            let url = match (e.url, e.url_file) {
                (Some(url), None) => url,
                (None, Some(file)) => read(&file, "urlFile")?,
                _ => {
                    return Err(invalid(format!(
                        "{at}: give exactly one of url and urlFile (urlFile for a URL that is \
                         itself a secret, as Slack's are)"
                    )));
                }
            };
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(format!(
                    "{at}: the URL must start with https:// or http://"
                )));
            }
            let secret = match (&e.secret_file, e.kind) {
                (None, _) => None,
                (Some(file), EndpointType::Webhook) => Some(read(file, "secretFile")?.into_bytes()),
                (Some(_), EndpointType::Slack) => {
                    return Err(invalid(format!(
                        "{at}: secretFile is for webhook endpoints (Slack's URL is its secret)"
                    )));
                }
            };
            let events = match e.events {
                None => NOTIFIABLE.to_vec(),
                Some(names) => {
                    let mut kinds = Vec::new();
                    for name in names {
                        let Some(kind) = NOTIFIABLE.iter().find(|k| **k == name) else {
                            return Err(invalid(format!(
                                "{at}: unknown event {name:?}; the events are {}",
                                NOTIFIABLE.join(", ")
                            )));
                        };
                        kinds.push(*kind);
                    }
                    kinds
                }
            };
            endpoints.push(Endpoint {
                name: e.name,
                kind: e.kind,
                url,
                secret,
                events,
            });
        }
        Ok(NotifyConfig {
            endpoints,
            source_unreachable_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<NotifyConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("slack-url"),
            "https://hooks.example/T/B/x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
        let path = dir.path().join("notifications.yaml");
        std::fs::write(&path, text).unwrap();
        NotifyConfig::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_file_reads_with_defaults() {
        let c = load(
            "endpoints:\n\
             - {name: ops, type: slack, urlFile: slack-url, events: [rollout-halted]}\n\
             - {name: pager, type: webhook, url: 'http://127.0.0.1:9/x', secretFile: secret}\n",
        )
        .unwrap();
        assert_eq!(c.source_unreachable_after, DEFAULT_UNREACHABLE_AFTER);
        assert_eq!(c.endpoints[0].url, "https://hooks.example/T/B/x");
        assert_eq!(c.endpoints[0].events, vec!["rollout-halted"]);
        assert_eq!(c.endpoints[1].secret.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(c.endpoints[1].events.len(), NOTIFIABLE.len());
        assert!(!format!("{:?}", c.endpoints[0]).contains("hooks.example"));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("endpoints: []\n", "at least one endpoint"),
            (
                "endpoints: [{name: a, type: slack, url: 'https://x', events: [halted]}]\n",
                "unknown event \"halted\"",
            ),
            (
                "endpoints: [{name: a, type: teams, url: 'https://x'}]\n",
                "teams",
            ),
            (
                "endpoints: [{name: a, type: slack}]\n",
                "exactly one of url and urlFile",
            ),
            (
                "endpoints: [{name: 'a b', type: slack, url: 'https://x'}]\n",
                "name must be",
            ),
            (
                "endpoints: [{name: a, type: slack, url: 'https://x', secretFile: secret}]\n",
                "secretFile is for webhook",
            ),
            (
                "sourceUnreachableAfter: soon\nendpoints: [{name: a, type: slack, url: 'https://x'}]\n",
                "sourceUnreachableAfter",
            ),
            (
                "endpoints: [{name: a, type: slack, url: 'ftp://x'}]\n",
                "https://",
            ),
            (
                "endpoints: [{name: a, type: webhook, url: 'https://x', secretFile: nope}]\n",
                "secretFile",
            ),
        ] {
            let err = load(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
