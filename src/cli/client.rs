//! The one HTTP client of every command that talks to a running server (`agents`, `status`,
//! `configurations`, `describe`, `events`, `revisions`, `sync`, `resume`, and `reconcile
//! --dry-run --server`), with the flags they share: `--server URL` and `--token-file PATH`.
//!
//! The token never comes from a flag (`ps` would show it): `--token-file` or the
//! `GITAMP_API_TOKEN` environment variable. A refusal by the server is a typed [`Refused`], so
//! the exit code can tell "no such thing" (1) from "could not ask" (2): see
//! [`super::exit::of_error`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::api::model::{ErrorBody, Page};

/// How long one request may take; the API answers from memory, so a slow answer means trouble.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Page size when following pagination (the API's maximum).
pub const PAGE: usize = 1000;
/// The environment variable holding the API token, when no `--token-file` is given.
pub const TOKEN_ENV: &str = "GITAMP_API_TOKEN";

/// How to authenticate to the status API. A flag of its own so `reconcile --dry-run`, whose
/// `--server` is optional, shares it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// File holding the API's bearer token (first line, trimmed), when the server was started
    /// with `--api-token-file`. Without it, the `GITAMP_API_TOKEN` environment variable is used.
    #[arg(long, value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token: the file's first line (a missing or empty file is an error), else
    /// `GITAMP_API_TOKEN` (empty counts as unset), else none.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            return crate::secret::read_secret(path)
                .map(Some)
                .context("--token-file");
        }
        Ok(std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()))
    }
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Base URL of the server's status API.
    #[arg(
        long,
        env = "GITAMP_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    #[command(flatten)]
    pub auth: TokenArgs,
}

/// The server answered with an error status: what it said, and a hint when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{url} answered {status}: {message}{hint}")]
pub struct Refused {
    pub status: StatusCode,
    pub url: String,
    /// The server's `{"error"}` text (or its body).
    pub message: String,
    /// What to do about it, when there is something (`(pass --token-file ...)`), or empty.
    pub hint: &'static str,
}

/// A blocking-style client over the status API (a private single-thread runtime: the CLI does
/// one request at a time and needs no async anywhere else).
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// A client for `--server` with the token `--token-file` or `GITAMP_API_TOKEN` gives.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        Client::connect(&args.server, args.auth.token()?)
    }

    /// A client for `server` (an `http(s)://` URL) with an optional bearer token.
    pub fn connect(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {base:?} is not an http:// or https:// URL");
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Client {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
            rt,
        })
    }

    /// Send `method path` (with `query`) and return the status and body; a non-2xx answer
    /// becomes a [`Refused`] carrying the server's `{"error"}` text.
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<(StatusCode, bytes::Bytes)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.rt.block_on(async {
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach the gitamp server at {}", self.base))?;
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .with_context(|| format!("reading the answer of {url}"))?;
            if !status.is_success() {
                let message = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
                let hint = if status == StatusCode::UNAUTHORIZED {
                    " (pass --token-file or set GITAMP_API_TOKEN)"
                } else {
                    ""
                };
                return Err(Refused {
                    status,
                    url,
                    message,
                    hint,
                }
                .into());
            }
            Ok((status, bytes))
        })
    }

    /// GET `path` (with `query`) and return the body.
    pub fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<bytes::Bytes> {
        Ok(self.send(reqwest::Method::GET, path, query)?.1)
    }

    /// GET `path` (with `query`) and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let bytes = self.get_bytes(path, query)?;
        decode(path, &bytes)
    }

    /// POST `path` with an empty body and decode the JSON answer.
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (_, bytes) = self.send(reqwest::Method::POST, path, &[])?;
        decode(path, &bytes)
    }

    /// Every page of `GET path` (a [`Page`] list), kept as raw JSON so `-o json` passes on
    /// every field.
    pub fn get_all(
        &self,
        path: &str,
        filters: &[(&str, String)],
        page_size: usize,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut items = Vec::new();
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", page_size.to_string()));
            query.push(("offset", items.len().to_string()));
            let page: Page<serde_json::Value> = self.get(path, &query)?;
            let got = page.items.len();
            items.extend(page.items);
            // Stop on an empty page too: a fleet shrinking between pages must not loop forever.
            if got == 0 || items.len() >= page.total {
                break;
            }
        }
        Ok(items)
    }

    /// An agent's full instance UID from what a person typed: a UUID as is, otherwise the one
    /// agent whose UID ends with `id` (the last digits `gitamp agents` shows). No agent, or
    /// several, is an answer ([`Failed`](super::exit::Failed), exit 1).
    pub fn agent_uid(&self, id: &str) -> anyhow::Result<String> {
        use super::exit::Failed;
        let id = id.trim();
        if uuid::Uuid::parse_str(id).is_ok() {
            return Ok(id.to_string());
        }
        let wanted = id.to_ascii_lowercase();
        if wanted.is_empty() {
            return Err(Failed("give an agent ID".into()).into());
        }
        let agents = self.get_all("/api/v1/agents", &[], PAGE)?;
        let matching: Vec<&str> = agents
            .iter()
            .filter_map(|a| a["uid"].as_str())
            .filter(|uid| uid.to_ascii_lowercase().ends_with(&wanted))
            .collect();
        match matching.as_slice() {
            [one] => Ok((*one).to_string()),
            [] => Err(Failed(format!(
                "no agent {id:?} on {} (`gitamp agents` lists them)",
                self.base
            ))
            .into()),
            many => Err(Failed(format!(
                "{} agents end with {id:?}: {}; give more of the ID",
                many.len(),
                many.join(", ")
            ))
            .into()),
        }
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }
}

fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes)
        .with_context(|| format!("{path} answered something that is not the expected JSON"))
}

/// A path segment with everything but unreserved characters percent-encoded, so a name or ID
/// typed by a person cannot change the route it goes to.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_cannot_leave_its_route() {
        assert_eq!(segment("linux-prod_1.x"), "linux-prod_1.x");
        assert_eq!(segment("../status?x=1"), "..%2Fstatus%3Fx%3D1");
    }

    #[test]
    fn the_token_comes_from_its_file_trimmed_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret \nsecond line\n").expect("write");
        let args = TokenArgs {
            token_file: Some(path.clone()),
        };
        assert_eq!(args.token().expect("read").as_deref(), Some("s3cret"));

        std::fs::write(&path, " \n").expect("write");
        let err = format!("{:#}", args.token().expect_err("empty"));
        assert!(
            err.contains("--token-file") && err.contains("is empty"),
            "{err}"
        );

        let missing = TokenArgs {
            token_file: Some(dir.path().join("nope")),
        };
        let err = format!("{:#}", missing.token().expect_err("missing"));
        assert!(
            err.contains("--token-file") && err.contains("nope"),
            "{err}"
        );
    }
}
