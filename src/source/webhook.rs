//! Webhook verification and payload parsing, free of HTTP servers so it can be tested with
//! plain bytes; the API mounts [`verify_and_parse`] on a route with [`MAX_BODY_BYTES`].
//!
//! A webhook only *wakes* the Git poller: the poller still asks the remote what the tip is, so
//! a forged or replayed payload can at worst cause one extra `ls-remote`. Authentication is
//! nonetheless mandatory (an empty secret rejects everything) and every comparison is
//! constant-time. Signatures are checked over the raw body before any JSON is parsed.

use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest body the webhook route should accept. GitHub caps payloads at 25 MB, but a push
/// payload for a config repository is small, and only `ref`/`after` are read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Which sender's conventions to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// `X-Hub-Signature-256: sha256=<hex>` HMAC over the body; `X-GitHub-Event`.
    GitHub,
    /// `X-Gitlab-Token: <secret>`; `X-Gitlab-Event`.
    GitLab,
    /// `Authorization: Bearer <secret>`; optional JSON body with `ref` / `after`.
    Generic,
}

/// What to do with an authenticated webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Poll now. `git_ref` / `after` are what the sender said, for logs.
    Wake {
        git_ref: Option<String>,
        after: Option<String>,
    },
    /// Authenticated but irrelevant (another branch, another event type).
    Ignored { reason: String },
    /// GitHub's `ping` on hook creation: answer 200, do nothing.
    Pong,
}

/// Why a webhook was refused. Map `Unauthorized` to 401 and `BadRequest` to 400; the reason is
/// safe to log and to return (it never contains the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// A case-insensitive header lookup, so callers without an `http::HeaderMap` can use this.
pub trait HeaderLookup {
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl HeaderLookup for HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

impl HeaderLookup for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

/// Check a webhook's authentication, then decide whether it should wake the poller.
///
/// `tracked_ref` is the configured `--ref` (`main`, `refs/heads/main`, `v1`, `refs/tags/v1`);
/// `None` (following the remote's default branch) wakes on every push, which costs one
/// `ls-remote`.
pub fn verify_and_parse<H: HeaderLookup + ?Sized>(
    kind: WebhookKind,
    headers: &H,
    body: &[u8],
    secret: &[u8],
    tracked_ref: Option<&str>,
) -> Result<WebhookOutcome, WebhookError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WebhookError::BadRequest(format!(
            "body is {} bytes, over the {MAX_BODY_BYTES}-byte limit",
            body.len()
        )));
    }
    if secret.is_empty() {
        return Err(WebhookError::Unauthorized(
            "no webhook secret is configured",
        ));
    }
    match kind {
        WebhookKind::GitHub => {
            let sig = headers
                .header("x-hub-signature-256")
                .ok_or(WebhookError::Unauthorized("missing X-Hub-Signature-256"))?;
            verify_github_signature(secret, body, sig)?;
            let event = header_str(headers, "x-github-event")?
                .ok_or_else(|| WebhookError::BadRequest("missing X-GitHub-Event".into()))?;
            match event {
                "ping" => Ok(WebhookOutcome::Pong),
                "push" => push_outcome(body, tracked_ref),
                other => Ok(WebhookOutcome::Ignored {
                    reason: format!("event {other:?} is not a push"),
                }),
            }
        }
        WebhookKind::GitLab => {
            let token = headers
                .header("x-gitlab-token")
                .ok_or(WebhookError::Unauthorized("missing X-Gitlab-Token"))?;
            if !constant_time_eq(token, secret) {
                return Err(WebhookError::Unauthorized("wrong X-Gitlab-Token"));
            }
            let event = header_str(headers, "x-gitlab-event")?
                .ok_or_else(|| WebhookError::BadRequest("missing X-Gitlab-Event".into()))?;
            match event {
                "Push Hook" | "Tag Push Hook" => push_outcome(body, tracked_ref),
                other => Ok(WebhookOutcome::Ignored {
                    reason: format!("event {other:?} is not a push"),
                }),
            }
        }
        WebhookKind::Generic => {
            let auth = headers
                .header("authorization")
                .ok_or(WebhookError::Unauthorized("missing Authorization"))?;
            let token = strip_bearer(auth).ok_or(WebhookError::Unauthorized(
                "Authorization is not a Bearer token",
            ))?;
            if !constant_time_eq(token, secret) {
                return Err(WebhookError::Unauthorized("wrong bearer token"));
            }
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(WebhookOutcome::Wake {
                    git_ref: None,
                    after: None,
                });
            }
            push_outcome(body, tracked_ref)
        }
    }
}

/// GitHub's `sha256=<hex>` HMAC-SHA256 of `body` under `secret`, the header gitamp's own
/// notifications carry (None only for a key HMAC cannot take, which no length is).
pub fn github_signature(secret: &[u8], body: &[u8]) -> Option<String> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(body);
    Some(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// GitHub's `sha256=<hex>` HMAC-SHA256 of the raw body, compared in constant time.
pub fn verify_github_signature(
    secret: &[u8],
    body: &[u8],
    header: &[u8],
) -> Result<(), WebhookError> {
    let hex_sig = header
        .strip_prefix(b"sha256=")
        .ok_or(WebhookError::Unauthorized(
            "X-Hub-Signature-256 is not sha256=<hex>",
        ))?;
    let tag = hex::decode(hex_sig.trim_ascii())
        .map_err(|_| WebhookError::Unauthorized("X-Hub-Signature-256 is not hex"))?;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| WebhookError::Unauthorized("unusable webhook secret"))?;
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| WebhookError::Unauthorized("signature does not match"))
}

/// Constant time even across lengths: both sides are hashed first, so the comparison is always
/// 32 bytes and the length of the secret does not leak through timing.
fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(secret);
    a.as_slice().ct_eq(b.as_slice()).into()
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(value[7..].trim_ascii())
    } else {
        None
    }
}

fn header_str<'a, H: HeaderLookup + ?Sized>(
    headers: &'a H,
    name: &str,
) -> Result<Option<&'a str>, WebhookError> {
    headers
        .header(name)
        .map(|v| {
            std::str::from_utf8(v)
                .map(str::trim)
                .map_err(|_| WebhookError::BadRequest(format!("{name} is not UTF-8")))
        })
        .transpose()
}

#[derive(serde::Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    after: Option<String>,
}

fn push_outcome(body: &[u8], tracked_ref: Option<&str>) -> Result<WebhookOutcome, WebhookError> {
    let payload: PushPayload = serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadRequest(format!("payload is not a push event: {e}")))?;
    if let (Some(tracked), Some(pushed)) = (tracked_ref, payload.git_ref.as_deref())
        && !ref_matches(tracked, pushed)
    {
        return Ok(WebhookOutcome::Ignored {
            reason: format!("push to {pushed}, tracking {tracked}"),
        });
    }
    Ok(WebhookOutcome::Wake {
        git_ref: payload.git_ref,
        after: payload.after,
    })
}

/// Whether a pushed full ref is the tracked one (which may be short, like `main` or `v1`).
pub fn ref_matches(tracked: &str, pushed: &str) -> bool {
    if tracked.starts_with("refs/") {
        return tracked == pushed;
    }
    if tracked == "HEAD" {
        return true;
    }
    pushed
        .strip_prefix("refs/heads/")
        .or_else(|| pushed.strip_prefix("refs/tags/"))
        .is_some_and(|short| short == tracked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_githubs_form() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a published vector.
        let signed = github_signature(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            signed.as_deref(),
            Some("sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
        );
        let header = signed.unwrap_or_default();
        assert!(
            verify_github_signature(
                b"key",
                b"The quick brown fox jumps over the lazy dog",
                header.as_bytes()
            )
            .is_ok()
        );
    }

    #[test]
    fn refs() {
        assert!(ref_matches("main", "refs/heads/main"));
        assert!(ref_matches("v1", "refs/tags/v1"));
        assert!(ref_matches("refs/heads/main", "refs/heads/main"));
        assert!(!ref_matches("refs/heads/main", "refs/heads/dev"));
        assert!(!ref_matches("main", "refs/heads/mainline"));
        assert!(ref_matches("HEAD", "refs/heads/anything"));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert_eq!(strip_bearer(b"Bearer  tok "), Some(&b"tok"[..]));
        assert_eq!(strip_bearer(b"Basic tok"), None);
    }
}
