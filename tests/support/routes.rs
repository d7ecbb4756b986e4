//! Every route the status API serves: one list for the OpenAPI check and the auth checks.

/// `(method, path)` of every route the router serves: the server's own list (`api::ROUTES`), the
/// one the OpenAPI check reads too, so the tests never check a stale copy.
pub use gitamp::api::ROUTES;

/// Routes open without the API token: health probes and webhooks (which carry their own auth).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/webhooks/")
}

/// Every GET route behind the API token, with `{id}`/`{name}`/`{revision}` filled in.
pub fn protected_gets(id: &str, name: &str, revision: &str) -> Vec<String> {
    ROUTES
        .iter()
        .filter(|(m, p)| *m == "get" && !is_public(p))
        .map(|(_, p)| {
            p.replace("{id}", id)
                .replace("{name}", name)
                .replace("{revision}", revision)
        })
        .collect()
}
