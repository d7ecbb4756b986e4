//! The operator's write routes, behind the same bearer token as the rest of the API:
//!
//! - `POST /api/v1/sync`: fetch the source now, the path a webhook takes (wake the Git
//!   poller); 202 `{"outcome":"fetching", "requested_at", "last_fetch"}`: the fetch it causes
//!   is the first in `/api/v1/status` to have started (`last_fetch` minus
//!   `last_fetch_duration_ms`) at or after `requested_at`; 409 when the source is not fetched
//!   (a watched folder, the embedded example);
//! - `POST /api/v1/configurations/{name}/resume`: resume a halted rollout without a new commit
//!   (the reconciler does it: it is the one writer); 202 with the rollout's progress, 404 for
//!   an unknown configuration, 409 when its rollout is not halted.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gitamp_core::plan::{ResumeError, RolloutPhase, RolloutProgress};
use serde_json::json;
use tokio::sync::oneshot;

use super::handlers::{rfc3339, serving_or_404};
use super::{Api, ApiError};
use crate::server::events::Event;
use crate::server::reconciler::Command;

pub(crate) async fn sync(State(api): State<Arc<Api>>) -> Response {
    let Some(poller) = &api.app.poller else {
        let source = api
            .app
            .sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .source
            .clone();
        return ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "the source {source} is not fetched: a folder is read on every change, the \
                 embedded example never changes; only a Git source can sync"
            ),
        )
        .into_response();
    };
    let last_fetch = api
        .app
        .sync
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last_fetch
        .map(rfc3339);
    // Before the wake: the fetch it causes starts after this time (one already under way
    // started before it, and the wake waits for it to end, then fetches again).
    let requested_at = rfc3339(SystemTime::now());
    poller.notify_one();
    api.app.emit(Event::SyncRequested);
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "outcome": "fetching",
            "requested_at": requested_at,
            "last_fetch": last_fetch,
        })),
    )
        .into_response()
}

pub(crate) async fn resume(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    if let Err(e) = serving_or_404(&api, &name) {
        return e.into_response();
    }
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler is not running",
        )
    };
    let Some(reconciler) = &api.app.reconciler else {
        return unavailable().into_response();
    };
    let (reply, answer) = oneshot::channel();
    let command = Command::Resume {
        configuration: name.clone(),
        reply,
    };
    if reconciler.send(command).await.is_err() {
        return unavailable().into_response();
    }
    let answer = match answer.await {
        Ok(Err(ResumeError::SteppedElsewhere)) => resume_on_leader(&api, &name).await,
        other => other,
    };
    match answer {
        Ok(Ok(rollout)) => (
            StatusCode::ACCEPTED,
            Json(json!({"outcome": "resumed", "configuration": name, "rollout": rollout})),
        )
            .into_response(),
        Ok(Err(ResumeError::NoRollout)) => ApiError::new(
            StatusCode::CONFLICT,
            format!("configuration {name:?} has no rollout to resume (it did not render)"),
        )
        .into_response(),
        Ok(Err(ResumeError::NotHalted(rollout))) => {
            let phase = match &rollout.phase {
                RolloutPhase::Progressing => "progressing",
                RolloutPhase::Complete => "complete",
                RolloutPhase::Halted { .. } => "halted",
                RolloutPhase::Superseded { .. } => "superseded",
            };
            ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "the rollout of {name:?} ({}) is not halted but {phase}: nothing to resume",
                    rollout.target.short()
                ),
            )
            .into_response()
        }
        Ok(Err(ResumeError::SteppedElsewhere)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the leading replica did not resume the rollout of {name:?} within \
                 {RELAYED_RESUME_WAIT:?}; see /api/v1/status for the replicas"
            ),
        )
        .into_response(),
        Err(_) => unavailable().into_response(),
    }
}

/// How long a replica waits to see the leader resume a rollout it relayed.
const RELAYED_RESUME_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Several replicas: the leader steps rollouts, so the resume is relayed to it; the answer is
/// the rollout as this replica sees it once it adopted the resumed one (still
/// `SteppedElsewhere` if that took longer than [`RELAYED_RESUME_WAIT`]).
async fn resume_on_leader(
    api: &Api,
    name: &str,
) -> Result<Result<RolloutProgress, ResumeError>, oneshot::error::RecvError> {
    let Some(cluster) = api.app.cluster.load_full() else {
        return Ok(Err(ResumeError::SteppedElsewhere));
    };
    if let Err(err) = crate::server::cluster::relay_resume(&cluster, name).await {
        tracing::warn!(error = %err, "Relaying a resume to the leader failed.");
        return Ok(Err(ResumeError::SteppedElsewhere));
    }
    let started = std::time::Instant::now();
    while started.elapsed() < RELAYED_RESUME_WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let view = api.app.view.load_full();
        if let Some(c) = view.configurations.get(name)
            && !c.rollout_halted
            && let Some(rollout) = c.rollout.clone()
            && let Ok(progress) = serde_json::from_value::<RolloutProgress>(rollout)
        {
            return Ok(Ok(progress));
        }
    }
    Ok(Err(ResumeError::SteppedElsewhere))
}
