//! Agent packages for upgrade tests: an HTTP server with package files (one served corrupted:
//! the opamp-go driver's store refuses bytes whose SHA-256 is not the offered one) and the
//! AgentVersion that declares them.

use sha2::{Digest, Sha256};

pub const GOOD: &[u8] = b"collector 1.0.0 package bytes\n";
pub const NEWER: &[u8] = b"collector 2.0.0 package bytes\n";
pub const CORRUPT: &[u8] = b"collector 2.0.0 package bytes, truncated in transit";

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// An HTTP server with the package files: `/good` and `/newer` (served corrupted).
pub async fn package_server() -> String {
    let app = axum::Router::new()
        .route("/good", axum::routing::get(|| async { GOOD }))
        .route("/newer", axum::routing::get(|| async { CORRUPT }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A URL on a port nothing listens on.
pub fn down_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/collector.tar.gz")
}

pub fn agent_version(name: &str, version: &str, url: &str, sha256: &str) -> String {
    format!(
        "apiVersion: gitamp.dev/v1\nkind: AgentVersion\nmetadata:\n  name: {name}\nspec:\n  \
         version: {version}\n  platforms:\n    - os: linux\n      arch: amd64\n      url: {url}\n      \
         sha256: {sha256}\n"
    )
}

/// `versions/collector-2.yaml`: collector 2.0.0, whose file (`/newer` of [`package_server`] at
/// `files`) arrives corrupted.
pub fn corrupted_version(files: &str) -> String {
    agent_version(
        "collector-2",
        "2.0.0",
        &format!("{files}/newer"),
        &sha256_hex(NEWER),
    )
}
