//! The fleet web page: hand-written HTML, CSS and ES modules under `src/api/web/`, embedded in
//! the binary at build time (no Node.js, no build step, nothing loaded from elsewhere) and
//! served on the API listener.
//!
//! The page is public (it holds no data: it asks for the token when the API answers 401 and
//! keeps it in the browser's session storage) and reads only the public API. Every answer
//! carries a strict Content-Security-Policy (`default-src 'self'`, no inline script or style),
//! an ETag and `no-cache` (revalidated, so an upgraded server is never shadowed by a cache). A
//! GET of a path that is neither the API's nor an asset answers the page with a 404, and the
//! page shows its "not found" view there.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The page's routes (outside the API's [`super::ROUTES`]: not part of the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[("get", "/"), ("get", "/ui/{file}")];

/// The Content-Security-Policy of every page answer: only this server's own scripts, styles,
/// images and API; no inline code, no frames, no forms posting anywhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = "index.html";

const ASSETS: &[Asset] = &[
    Asset {
        name: INDEX,
        content_type: "text/html; charset=utf-8",
        body: include_str!("web/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("web/app.js"),
    },
    Asset {
        name: "views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("web/views.js"),
    },
    Asset {
        name: "highlight.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("web/highlight.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("web/style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("web/icon.svg"),
    },
];

/// Each asset's ETag (a content hash), computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body.as_bytes());
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
        .collect()
});

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    Some((&ASSETS[i], ETAGS[i].as_str()))
}

/// `asset` with `status`, or a 304 when the client holds this version.
fn answer(status: StatusCode, name: &str, headers: &HeaderMap) -> Response {
    let Some((asset, etag)) = find(name) else {
        return plain_404();
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh && status == StatusCode::OK {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (status, asset.body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    secure(h);
    resp
}

/// The headers every page answer carries.
fn secure(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn plain_404() -> Response {
    let mut resp = (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "no such file\n",
    )
        .into_response();
    secure(resp.headers_mut());
    resp
}

/// `GET /`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    answer(StatusCode::OK, INDEX, &headers)
}

/// `GET /ui/{file}`: one of the page's files.
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == INDEX {
        // One address for the page: `/`.
        return plain_404();
    }
    answer(StatusCode::OK, &file, &headers)
}

/// Whether an unknown path is one a person would type into a browser (the page answers it with
/// its 404 view) rather than an API client's (a JSON error).
pub(crate) fn is_page_path(method: &Method, uri: &Uri) -> bool {
    let path = uri.path();
    (method == Method::GET || method == Method::HEAD)
        && !["/api/", "/webhooks/", "/ui/"]
            .iter()
            .any(|p| path.starts_with(p))
        && !["/api", "/webhooks", "/metrics", "/healthz", "/readyz"].contains(&path)
}

/// The page with a 404: it shows its "not found" view for any path but `/`.
pub(crate) fn not_found_page() -> Response {
    answer(StatusCode::NOT_FOUND, INDEX, &HeaderMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_etag_and_the_page_names_only_embedded_files() {
        let mut tags = ETAGS.clone();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
        // Every `/ui/...` reference in the page and its modules is an embedded file, and no
        // file refers to another origin.
        for a in ASSETS {
            for part in a.body.split("/ui/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(find(&name).is_some(), "{} refers to /ui/{name}", a.name);
            }
            for scheme in ["http://", "https://"] {
                for (i, _) in a.body.match_indices(scheme) {
                    let rest = &a.body[i..];
                    // Links to a commit on a Git host are built from the remote's URL, not
                    // loaded; the SVG namespace is a name, not a fetch.
                    assert!(
                        rest.starts_with("http://www.w3.org/2000/svg")
                            || rest.starts_with("https://${"),
                        "{} names another origin: {}",
                        a.name,
                        &rest[..rest.len().min(60)]
                    );
                }
            }
        }
    }

    #[test]
    fn page_paths_exclude_the_api() {
        let get = Method::GET;
        let is = |p: &str| is_page_path(&get, &p.parse().expect("uri"));
        assert!(is("/nothing/here"));
        assert!(is("/agents"));
        assert!(!is("/api/v1/nothing"));
        assert!(!is("/api"));
        assert!(!is("/webhooks/x"));
        assert!(!is("/ui/missing.js"));
        assert!(!is_page_path(&Method::POST, &"/x".parse().expect("uri")));
    }
}
