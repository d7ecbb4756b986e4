//! Requests gitamp makes to other services (notifications, commit statuses): one client set-up
//! and one way to say why a request failed.

use std::time::Duration;

/// One request may take this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The client for outbound requests: bounded in time, named `gitamp/<version>`, and following
/// no redirect (a redirect could carry a signed body or a token somewhere else).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("gitamp/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Why a request got no answer, in words that never quote its URL (a Slack URL is a secret).
pub fn failure(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    }
}
