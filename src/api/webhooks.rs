//! `POST /webhooks/{github,gitlab,generic}`: authenticate, then wake the Git poller.
//!
//! - A provider without a configured secret answers **404**: the endpoint does not exist for
//!   that server, and a sender pointed at the wrong one sees so at once.
//! - A bad signature or token answers 401 and triggers nothing; a malformed payload 400; a
//!   body over [`MAX_BODY_BYTES`] 413.
//! - A push to the tracked ref answers 202 and wakes the poller (which still asks the remote
//!   for the tip: the payload is only a hint); a GitHub `ping` answers 200 `pong`; an
//!   authenticated push to another ref (or another event) answers 202 `ignored`.
//!
//! Every outcome is counted (`gitamp_webhooks_total{provider,outcome}`). Only authenticated
//! requests are recorded as events: an anonymous sender must not be able to flush the bounded
//! event history.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Api, ApiError};
use crate::server::events::Event;
use crate::source::webhook::{
    MAX_BODY_BYTES, WebhookError, WebhookKind, WebhookOutcome, verify_and_parse,
};
use crate::telemetry::{self, WebhookResult};

pub(crate) async fn github(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&api, WebhookKind::GitHub, &headers, body)
}

pub(crate) async fn gitlab(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&api, WebhookKind::GitLab, &headers, body)
}

pub(crate) async fn generic(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&api, WebhookKind::Generic, &headers, body)
}

fn handle(
    api: &Api,
    kind: WebhookKind,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let hooks = &api.app.webhooks;
    let (provider, secret) = match kind {
        WebhookKind::GitHub => ("github", hooks.github_secret.as_deref()),
        WebhookKind::GitLab => ("gitlab", hooks.gitlab_token.as_deref()),
        WebhookKind::Generic => ("generic", hooks.generic_token.as_deref()),
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        telemetry::webhook(provider, WebhookResult::NotConfigured);
        return ApiError::not_found(format!("the {provider} webhook is not configured"))
            .into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            telemetry::webhook(provider, WebhookResult::BadRequest);
            let status = e.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("body over the {MAX_BODY_BYTES}-byte limit")
            } else {
                e.body_text()
            };
            return ApiError::new(status, message).into_response();
        }
    };
    let tracked = Some(hooks.tracked_ref.as_str()).filter(|r| !r.is_empty());
    match verify_and_parse(kind, headers, &body, secret, tracked) {
        Ok(WebhookOutcome::Wake { git_ref, after }) => {
            telemetry::webhook(provider, WebhookResult::Wake);
            if let Some(poller) = &api.app.poller {
                poller.notify_one();
            }
            api.app.emit(Event::WebhookWake {
                provider,
                git_ref: git_ref.clone(),
                after: after.clone(),
            });
            (
                StatusCode::ACCEPTED,
                Json(json!({"outcome": "wake", "ref": git_ref, "after": after})),
            )
                .into_response()
        }
        Ok(WebhookOutcome::Pong) => {
            telemetry::webhook(provider, WebhookResult::Pong);
            api.app.emit(Event::WebhookPong { provider });
            (StatusCode::OK, Json(json!({"outcome": "pong"}))).into_response()
        }
        Ok(WebhookOutcome::Ignored { reason }) => {
            telemetry::webhook(provider, WebhookResult::Ignored);
            api.app.emit(Event::WebhookIgnored {
                provider,
                reason: reason.clone(),
            });
            (
                StatusCode::ACCEPTED,
                Json(json!({"outcome": "ignored", "reason": reason})),
            )
                .into_response()
        }
        Err(WebhookError::Unauthorized(why)) => {
            telemetry::webhook(provider, WebhookResult::Unauthorized);
            tracing::warn!(provider, reason = why, "webhook refused");
            ApiError::new(StatusCode::UNAUTHORIZED, format!("unauthorized: {why}")).into_response()
        }
        Err(WebhookError::BadRequest(why)) => {
            telemetry::webhook(provider, WebhookResult::BadRequest);
            tracing::warn!(provider, reason = %why, "webhook refused");
            ApiError::bad_request(why).into_response()
        }
    }
}
