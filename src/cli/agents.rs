//! `gitamp agents`: list a running server's agents from its status API.
//!
//! Also home of the small HTTP client `gitamp status` shares: both commands only read the
//! status API, so a server on another host (or behind a token) works the same as a local one.
//!
//! Exit codes: 0 listed, 2 error (server unreachable, refused, or an unexpected answer).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::de::DeserializeOwned;

use crate::api::model::{AgentItem, ErrorBody, Page};

/// How long one request may take; the API answers from memory, so a slow answer means trouble.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Page size when following pagination (the API's maximum).
pub const PAGE: usize = 1000;

/// Where the server is and how to authenticate; shared by `agents` and `status`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Base URL of the server's status API.
    #[arg(long, env = "GITAMP_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token, when the server was started with an API token.
    #[arg(long, env = "GITAMP_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// List agents with their sync status.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only agents in this sync status (or a comma-separated list: `failed,drifted`).
    #[arg(long)]
    pub status: Option<String>,
    /// Only agents selected by this configuration.
    #[arg(long)]
    pub configuration: Option<String>,
    /// Label selector: `k=v,k2!=v,k3 in (a,b),k4,!k5`.
    #[arg(long)]
    pub selector: Option<String>,
    /// `table` for people; `json` prints the agents as a JSON array, a ready-made agents file
    /// for `gitamp reconcile --dry-run`.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Agents per request while following pagination (tests use a small one).
    #[arg(long, hide = true, default_value_t = PAGE)]
    pub page_size: usize,
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
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let base = args.server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {base:?} is not an http:// URL");
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
            token: args.token.clone().filter(|t| !t.is_empty()),
            http,
            rt,
        })
    }

    /// GET `path` (with `query`) and return the body; a non-2xx answer becomes an error
    /// carrying the server's `{"error"}` text.
    pub fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).query(query);
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
                let why = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
                let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                    " (pass --token or set GITAMP_API_TOKEN)"
                } else {
                    ""
                };
                bail!("{url} answered {status}: {why}{hint}");
            }
            Ok(bytes)
        })
    }

    /// GET `path` (with `query`) and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let bytes = self.get_bytes(path, query)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{path} answered something that is not the expected JSON"))
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The server refuses a status that is not one; say so before asking it.
    if let Some(status) = &args.status {
        crate::api::parse_statuses(status).map_err(|e| anyhow::anyhow!("--status: {e}"))?;
    }
    let client = Client::new(&args.server)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("status", &args.status),
        ("configuration", &args.configuration),
        ("selector", &args.selector),
    ] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    let items = fetch_all(&client, &query, args.page_size.clamp(1, PAGE))?;
    let out = match args.output {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&items).context("cannot encode the agents")?;
            s.push('\n');
            s
        }
        Output::Table => table(&items)?,
    };
    print!("{out}");
    Ok(ExitCode::from(super::exit::OK))
}

/// Every page of `GET /api/v1/agents`, kept as raw JSON so `-o json` passes on every field.
pub fn fetch_all(
    client: &Client,
    filters: &[(&str, String)],
    page_size: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut items = Vec::new();
    loop {
        let mut query = filters.to_vec();
        query.push(("limit", page_size.to_string()));
        query.push(("offset", items.len().to_string()));
        let page: Page<serde_json::Value> = client.get("/api/v1/agents", &query)?;
        let got = page.items.len();
        items.extend(page.items);
        // Stop on an empty page too: a fleet shrinking between pages must not loop forever.
        if got == 0 || items.len() >= page.total {
            break;
        }
    }
    Ok(items)
}

fn table(items: &[serde_json::Value]) -> anyhow::Result<String> {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "UID",
            "STATUS",
            "CONFIGURATION",
            "CONNECTED",
            "HEALTH",
            "LABELS",
            "LAST SEEN",
            "REASON",
        ]);
    for v in items {
        let a: AgentItem = serde_json::from_value(v.clone()).context("unexpected agent item")?;
        table.add_row([
            short_uid(&a.uid).to_string(),
            a.status,
            a.configuration.unwrap_or_else(|| "-".into()),
            if a.connected { "yes" } else { "no" }.to_string(),
            match a.healthy {
                Some(true) => "ok",
                Some(false) => "unhealthy",
                None => "-",
            }
            .to_string(),
            labels_summary(&a.labels),
            a.last_seen
                .split('.')
                .next()
                .unwrap_or_default()
                .trim_end_matches('Z')
                .replace('T', " "),
            a.reason
                .as_deref()
                .map_or_else(|| "-".into(), |r| shorten(r, REASON_CHARS)),
        ]);
    }
    Ok(format!("{table}\n{} agent(s)\n", items.len()))
}

/// A reason longer than this is cut in the table (`-o json` and the API have it whole): a
/// collector's error can carry its whole log tail.
const REASON_CHARS: usize = 80;

/// `text` on one line, at most `max` characters, `…` where it was cut.
fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// The last group of the UUID: UUIDv7 instance UIDs begin with a timestamp, so agents started
/// together share their first digits, while the last 12 are random.
fn short_uid(uid: &str) -> &str {
    uid.rsplit('-').next().unwrap_or(uid)
}

/// The labels people recognise an agent by first, then the rest, cut to keep rows short.
fn labels_summary(labels: &std::collections::BTreeMap<String, String>) -> String {
    const FIRST: [&str; 3] = ["service.name", "host.name", "deployment.environment"];
    const SHOWN: usize = 3;
    let mut keys: Vec<&String> = FIRST
        .iter()
        .filter_map(|k| labels.get_key_value(*k).map(|(k, _)| k))
        .collect();
    keys.extend(labels.keys().filter(|k| !FIRST.contains(&k.as_str())));
    let mut parts: Vec<String> = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("{k}={}", labels[*k]))
        .collect();
    if keys.len() > SHOWN {
        parts.push(format!("+{} more", keys.len() - SHOWN));
    }
    parts.join(", ")
}
