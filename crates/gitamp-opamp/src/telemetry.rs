//! The OpAMP layer's own metrics: each name once, described once (the server's own metrics live
//! in the binary's `telemetry` module; it calls [`describe`] when it installs its recorder).

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

/// A reply over the size limit lost its remote config.
pub(crate) fn oversize_outgoing() {
    metrics::counter!(OVERSIZE_OUTGOING).increment(1);
}
