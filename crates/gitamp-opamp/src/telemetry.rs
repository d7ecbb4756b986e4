//! The OpAMP layer's own metrics: each name once, described once (the server's own metrics live
//! in the binary's `telemetry` module; it calls [`describe`] and [`register_at_start`] when it
//! installs its recorder).

/// Messages to agents over the size limit: a reply whose remote config was left out, or a push
/// that was dropped.
pub const OVERSIZE_OUTGOING: &str = "gitamp_opamp_oversize_outgoing_total";

/// Connection-settings offers an agent reported FAILED (ConnectionSettingsStatus).
pub const OFFERS_REJECTED: &str = "gitamp_opamp_connection_settings_rejected_total";

/// OTLP/HTTP requests to gitamp's own-telemetry receiver, by `outcome` (a closed set:
/// [`OTLP_OUTCOMES`]).
pub const OTLP_REQUESTS: &str = "gitamp_otlp_requests_total";

/// Every `outcome` of [`OTLP_REQUESTS`].
pub const OTLP_OUTCOMES: [&str; 6] = [
    "accepted",
    "unauthorized",
    "unknown_agent",
    "malformed",
    "too_large",
    "unsupported_media_type",
];

/// Describe this crate's metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        OFFERS_REJECTED,
        "Connection-settings offers agents reported FAILED."
    );
    metrics::describe_counter!(
        OTLP_REQUESTS,
        "Requests to the own-telemetry OTLP receiver (/v1/metrics), by outcome."
    );
    metrics::describe_counter!(
        OVERSIZE_OUTGOING,
        "Messages to agents over the size limit (a remote config left out, or a push dropped)."
    );
}

/// Register this crate's counters at 0, so an alert on `increase()` has a series from the first
/// scrape (the binary's recorder calls this when it installs).
pub fn register_at_start() {
    metrics::counter!(OVERSIZE_OUTGOING).absolute(0);
    metrics::counter!(OFFERS_REJECTED).absolute(0);
    for outcome in OTLP_OUTCOMES {
        metrics::counter!(OTLP_REQUESTS, "outcome" => outcome).absolute(0);
    }
}

/// An agent reported an offer FAILED.
pub(crate) fn offer_rejected() {
    metrics::counter!(OFFERS_REJECTED).increment(1);
}

/// One OTLP request answered (`outcome` is one of [`OTLP_OUTCOMES`]).
pub(crate) fn otlp_request(outcome: &'static str) {
    metrics::counter!(OTLP_REQUESTS, "outcome" => outcome).increment(1);
}

/// A reply over the size limit lost its remote config.
pub(crate) fn oversize_outgoing() {
    metrics::counter!(OVERSIZE_OUTGOING).increment(1);
}
