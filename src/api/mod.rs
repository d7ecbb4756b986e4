//! The status API, `/metrics`, health probes, the webhook receivers and the operator's two
//! write routes (`POST /api/v1/sync`, `POST /api/v1/configurations/{name}/resume`), all on the
//! API listener.
//!
//! Everything here only *reads* [`AppState`] (the reconciler is the one writer); the webhooks
//! and `sync` wake the Git poller, and `resume` asks the reconciler ([`actions`]). Only masked YAML ever leaves this API: the desired
//! config is the core's masked form and an agent's effective config is masked before it is
//! shown (see [`mask`]).
//!
//! The web page ([`web`]: `/` and `/ui/...`) is served here too; it reads only this API.
//!
//! Auth: when `api_token` is set, every route but `/healthz`, `/readyz`, the web page's files
//! (which hold no data) and the webhooks (which
//! carry their own provider authentication), the write routes included, needs
//! `Authorization: Bearer <token>`; the token is
//! compared in constant time. Each request is bounded by [`REQUEST_TIMEOUT`] and a panicking
//! handler answers 500 instead of taking the listener down.

mod actions;
mod fleet;
mod handlers;
pub mod stream;
pub mod web;
pub(crate) use handlers::rfc3339;
pub(crate) mod query;
pub use handlers::{AgentSort, NAME_LABELS, UNKNOWN_STATUS, parse_statuses};
pub mod model;
pub mod selector;
mod throughput;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::catch_panic::CatchPanicLayer;

use crate::server::state::AppState;

/// Upper bound on one request; the handlers only copy in-memory state, so hitting it means
/// something is badly wrong and the client should get an answer rather than hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Every path the router serves, with its method: the OpenAPI document must describe each one
/// (checked by a unit test here and by tests/api.rs over a real socket).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/status"),
    ("get", "/api/v1/agents"),
    ("get", "/api/v1/agents/{id}"),
    ("get", "/api/v1/configurations"),
    ("get", "/api/v1/configurations/{name}"),
    ("get", "/api/v1/configurations/{name}/rendered"),
    ("get", "/api/v1/revisions"),
    ("get", "/api/v1/revisions/{revision}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/stream"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/sync"),
    ("post", "/api/v1/configurations/{name}/resume"),
    ("post", "/webhooks/github"),
    ("post", "/webhooks/gitlab"),
    ("post", "/webhooks/generic"),
];

/// The hand-written OpenAPI 3.1 description of [`ROUTES`].
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The API's own state: the shared server state.
pub(crate) struct Api {
    pub(crate) app: Arc<AppState>,
    /// The limit on open `GET /api/v1/stream`s.
    pub(crate) streams: stream::Streams,
    /// The other replicas' agents, read at most once a second (replicas only).
    pub(crate) fleet: Arc<fleet::FleetCache>,
}

/// The status API router. Mount it on the API listener.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Arc::new(Api {
        app: state,
        streams: stream::Streams::new(stream::MAX_STREAMS),
        fleet: Arc::new(fleet::FleetCache::default()),
    });
    let protected = Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/api/v1/status", get(handlers::status))
        .route("/api/v1/agents", get(handlers::agents))
        .route("/api/v1/agents/{id}", get(handlers::agent))
        .route("/api/v1/configurations", get(handlers::configurations))
        .route(
            "/api/v1/configurations/{name}",
            get(handlers::configuration),
        )
        .route(
            "/api/v1/configurations/{name}/rendered",
            get(handlers::rendered),
        )
        .route("/api/v1/revisions", get(handlers::revisions))
        .route("/api/v1/revisions/{revision}", get(handlers::revision))
        .route("/api/v1/events", get(handlers::events))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/sync", post(actions::sync))
        .route(
            "/api/v1/configurations/{name}/resume",
            post(actions::resume),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&api),
            require_token,
        ));
    let public = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/webhooks/github", post(webhooks::github))
        .route("/webhooks/gitlab", post(webhooks::gitlab))
        .route("/webhooks/generic", post(webhooks::generic))
        .route("/", get(web::index))
        .route("/ui/{file}", get(web::asset))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::source::webhook::MAX_BODY_BYTES,
        ));
    Router::new()
        .merge(protected)
        .merge(public)
        .fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                if web::is_page_path(&method, &uri) {
                    web::not_found_page()
                } else {
                    ApiError::not_found("no such route").into_response()
                }
            },
        )
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: the status API is read-only but for POST /api/v1/sync, \
                 POST /api/v1/configurations/{name}/resume and the webhooks",
            )
        })
        .with_state(api)
        .layer(middleware::from_fn(respond_in_time))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            },
        ))
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

/// Every request is answered within [`REQUEST_TIMEOUT`].
async fn respond_in_time(req: Request, next: Next) -> Response {
    within(REQUEST_TIMEOUT, next.run(req)).await
}

/// `answer`, or a JSON 503 once `limit` has passed: an error like every other (tower's
/// `TimeoutLayer` answered an empty body, which the document did not describe).
async fn within(limit: Duration, answer: impl Future<Output = Response>) -> Response {
    tokio::time::timeout(limit, answer)
        .await
        .unwrap_or_else(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took over {} s", limit.as_secs()),
            )
            .into_response()
        })
}

/// Bearer-token check for the protected routes (a no-op when no token is configured).
async fn require_token(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let Some(token) = api.app.api_token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            // `get` rather than indexing: no char boundary can panic here, whatever was sent.
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .and_then(|_| v.get(7..))
                .map(str::trim)
        });
    match given {
        Some(given) if token_eq(given.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// Constant time even across lengths: both sides are hashed first, so the comparison is always
/// 32 bytes and neither the token's bytes nor its length leak through timing. An empty
/// configured token matches nothing.
fn token_eq(given: &[u8], token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    Sha256::digest(given)
        .as_slice()
        .ct_eq(Sha256::digest(token).as_slice())
        .into()
}

/// A JSON error response: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(model::ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_describes_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..4]), Some("3.1."));
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "openapi.json lacks {method} {path}"
            );
        }
        let paths = doc["paths"].as_object().map_or(0, |p| p.len());
        assert_eq!(
            paths,
            ROUTES.len(),
            "openapi.json has paths the router does not serve"
        );
    }

    /// The numbers and names the document states are the server's own (their one home is in
    /// Rust: `query`, `SyncStatus`, `EventKind`).
    #[test]
    fn openapi_states_the_servers_rules() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses");
        let params = &doc["components"]["parameters"];
        let limit = &params["Limit"]["schema"];
        assert_eq!(limit["minimum"], 1);
        assert_eq!(limit["maximum"], query::MAX_LIMIT);
        assert_eq!(limit["default"], query::DEFAULT_LIMIT);
        let offset = &params["Offset"]["schema"];
        assert_eq!(offset["minimum"], 0);
        assert_eq!(offset["maximum"], query::MAX_OFFSET);
        assert_eq!(
            doc["components"]["schemas"]["Paging"]["properties"]["limit"]["maximum"],
            query::MAX_LIMIT
        );

        let list_routes = ["/api/v1/agents", "/api/v1/revisions", "/api/v1/events"];
        for path in list_routes {
            let refs: Vec<&str> = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["$ref"].as_str())
                .collect();
            assert!(
                refs.contains(&"#/components/parameters/Limit")
                    && refs.contains(&"#/components/parameters/Offset"),
                "{path} does not page by the shared rule: {refs:?}"
            );
        }

        let param = |path: &str, name: &str| {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name)
                .cloned()
                .unwrap_or_default()
        };
        let kinds: Vec<&str> = crate::server::events::EventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            param("/api/v1/events", "kind")["schema"]["enum"],
            serde_json::json!(kinds)
        );
        let status = param("/api/v1/agents", "status");
        let pattern = status["schema"]["pattern"].as_str().unwrap_or_default();
        let names: Vec<&str> = gitamp_core::plan::SyncStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .chain([UNKNOWN_STATUS])
            .collect();
        assert_eq!(
            pattern,
            format!("^ *({0})? *(, *({0})? *)*$", names.join("|")),
            "the status pattern lists every status, in SyncStatus::ALL order"
        );
        let sort = param("/api/v1/agents", "sort");
        let keys: Vec<&str> = AgentSort::ALL.iter().map(|(_, name)| *name).collect();
        assert_eq!(
            sort["schema"]["pattern"],
            format!("^(-?({}))?$", keys.join("|")),
            "the sort pattern lists every key, in AgentSort::ALL order"
        );
        assert_eq!(
            param("/api/v1/agents", "q")["schema"]["maxLength"],
            handlers::MAX_TEXT_FILTER
        );
        let stream = doc["paths"]["/api/v1/stream"]["get"]["summary"]
            .as_str()
            .unwrap_or_default();
        for figure in [
            format!("at most one every {} s", stream::MIN_GAP.as_secs()),
            format!("every {} s", stream::KEEP_ALIVE.as_secs()),
            format!("At most {} streams", stream::MAX_STREAMS),
            format!("leaves {} events unread", stream::QUEUE),
        ] {
            assert!(
                stream.contains(&figure),
                "the stream's summary lacks {figure:?}"
            );
        }
        // Every filter says that an empty value filters nothing.
        for (path, name) in [
            ("/api/v1/agents", "status"),
            ("/api/v1/agents", "configuration"),
            ("/api/v1/agents", "selector"),
            ("/api/v1/agents", "q"),
            ("/api/v1/agents", "sort"),
            ("/api/v1/events", "agent"),
            ("/api/v1/events", "kind"),
        ] {
            assert_eq!(param(path, name)["allowEmptyValue"], true, "{path} {name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_time_gets_a_json_503() {
        let slow = async {
            tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
            StatusCode::OK.into_response()
        };
        let resp = within(REQUEST_TIMEOUT, slow).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let error: model::ErrorBody = serde_json::from_slice(&body).expect("a JSON error body");
        assert_eq!(error.error, "the request took over 10 s");
        let quick = within(REQUEST_TIMEOUT, async { StatusCode::OK.into_response() }).await;
        assert_eq!(quick.status(), StatusCode::OK);
    }

    #[test]
    fn token_compare() {
        assert!(token_eq(b"abc", b"abc"));
        assert!(!token_eq(b"abc", b"abcd"));
        assert!(!token_eq(b"", b""));
    }
}
