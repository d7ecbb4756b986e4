//! Every route the status API serves: one list for the OpenAPI check and the auth checks.

/// `(method, path)` of every route the router serves, as the OpenAPI document must list them.
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
    ("get", "/api/v1/events"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/webhooks/github"),
    ("post", "/webhooks/gitlab"),
    ("post", "/webhooks/generic"),
];

/// Routes open without the API token: health probes and webhooks (which carry their own auth).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/webhooks/")
}

/// Every GET route behind the API token, with `{id}`/`{name}` filled in.
pub fn protected_gets(id: &str, name: &str) -> Vec<String> {
    ROUTES
        .iter()
        .filter(|(m, p)| *m == "get" && !is_public(p))
        .map(|(_, p)| p.replace("{id}", id).replace("{name}", name))
        .collect()
}
