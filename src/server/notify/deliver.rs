//! Delivering one endpoint's notifications: the body its kind expects, the signature, and
//! retries with backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Endpoint, EndpointType, Notification};
use crate::server::outbound;
use crate::server::state::AppState;
use crate::source::webhook::github_signature;
use crate::telemetry::{self, NotifyOutcome};

/// Tries per notification (the first and up to 5 retries).
pub const ATTEMPTS: u32 = 6;
/// First retry delay; doubles each time, up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` when the endpoint has a secret
/// (GitHub's webhook convention, so receivers can reuse their check).
pub const SIGNATURE_HEADER: &str = "X-Gitamp-Signature-256";
/// The header naming the notification's kind.
pub const KIND_HEADER: &str = "X-Gitamp-Event";

/// The body for `endpoint`'s kind.
pub fn body(kind: EndpointType, n: &Notification, app: &AppState) -> serde_json::Value {
    let (source, revision) = {
        let sync = app.sync.lock().unwrap_or_else(|p| p.into_inner());
        (sync.source.clone(), sync.current_revision.clone())
    };
    let at = crate::api::rfc3339(n.at);
    match kind {
        EndpointType::Webhook => serde_json::json!({
            "kind": n.kind,
            "at": at,
            "agent": n.agent,
            "message": n.message,
            "source": source,
            "revision": revision,
        }),
        EndpointType::Slack => {
            let about = n
                .agent
                .as_deref()
                .map(|a| format!(" (agent `{a}`)"))
                .unwrap_or_default();
            serde_json::json!({
                "text": format!("*gitamp: {}*{about}\n{}\nsource: {source}", n.kind, n.message),
            })
        }
    }
}

/// What one attempt's answer means.
enum Attempt {
    Sent,
    /// Worth trying again (after at least this long, when the endpoint said).
    Retry(Option<Duration>, String),
    /// Trying again would get the same answer (4xx but 408 and 429).
    GiveUp(String),
}

async fn attempt(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    n: &Notification,
    body: &[u8],
) -> Attempt {
    let mut req = client
        .post(&endpoint.url)
        .header("Content-Type", "application/json")
        .header(KIND_HEADER, n.kind)
        .body(body.to_vec());
    if let Some(secret) = &endpoint.secret {
        let Some(signed) = github_signature(secret, body) else {
            return Attempt::GiveUp("the secret cannot key an HMAC".into());
        };
        req = req.header(SIGNATURE_HEADER, signed);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Attempt::Sent,
        Ok(resp) => {
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(BACKOFF_CAP.as_secs())));
            let what = format!("answered {status}");
            if status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            {
                Attempt::GiveUp(what)
            } else {
                Attempt::Retry(retry_after, what)
            }
        }
        // Connection refused, timeout, TLS: the URL is not in the message (it may be a secret).
        Err(err) => Attempt::Retry(None, outbound::failure(&err).to_string()),
    }
}

/// Deliver `endpoint`'s queue until `cancel`.
pub(super) async fn run(
    endpoint: Endpoint,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Notification>,
    app: Arc<AppState>,
    cancel: CancellationToken,
) {
    loop {
        let n = tokio::select! {
            n = rx.recv() => match n { Some(n) => n, None => return },
            _ = cancel.cancelled() => return,
        };
        let body = serde_json::to_vec(&body(endpoint.kind, &n, &app)).unwrap_or_default();
        let mut delay = BACKOFF_BASE;
        for attempt_no in 1..=ATTEMPTS {
            match attempt(&client, &endpoint, &n, &body).await {
                Attempt::Sent => {
                    debug!(endpoint = %endpoint.name, kind = n.kind, "Notification sent.");
                    telemetry::notification(&endpoint.name, NotifyOutcome::Sent);
                    break;
                }
                Attempt::GiveUp(why) => {
                    warn!(endpoint = %endpoint.name, kind = n.kind, "Notification refused ({why}); not retried.");
                    telemetry::notification(&endpoint.name, NotifyOutcome::Failed);
                    break;
                }
                Attempt::Retry(_, why) if attempt_no == ATTEMPTS => {
                    warn!(endpoint = %endpoint.name, kind = n.kind, attempts = ATTEMPTS, "Notification failed ({why}); giving up.");
                    telemetry::notification(&endpoint.name, NotifyOutcome::Failed);
                }
                Attempt::Retry(after, why) => {
                    telemetry::notification(&endpoint.name, NotifyOutcome::Retried);
                    let wait = after.unwrap_or(delay).max(delay);
                    debug!(endpoint = %endpoint.name, kind = n.kind, retry_in_ms = wait.as_millis() as u64, "Notification failed ({why}); retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return,
                    }
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
            }
        }
    }
}
