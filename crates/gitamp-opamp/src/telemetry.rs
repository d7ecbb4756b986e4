//! The OpAMP layer's own metrics: each name once, described once (the server's own metrics live
//! in the binary's `telemetry` module; it calls [`describe`] and [`register_at_start`] when it
//! installs its recorder).

/// Messages to agents over the size limit: a reply whose remote config was left out, or a push
/// that was dropped.
pub const OVERSIZE_OUTGOING: &str = "gitamp_opamp_oversize_outgoing_total";

/// Describe this crate's metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        OVERSIZE_OUTGOING,
        "Messages to agents over the size limit (a remote config left out, or a push dropped)."
    );
}

/// Register this crate's counters at 0, so an alert on `increase()` has a series from the first
/// scrape (the binary's recorder calls this when it installs).
pub fn register_at_start() {
    metrics::counter!(OVERSIZE_OUTGOING).absolute(0);
}

/// A reply over the size limit lost its remote config.
pub(crate) fn oversize_outgoing() {
    metrics::counter!(OVERSIZE_OUTGOING).increment(1);
}
