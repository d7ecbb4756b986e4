//! The OpAMP layer's own metrics: each name once, described once (the server's own metrics live
//! in the binary's `telemetry` module; it calls [`describe`] when it installs its recorder).

/// Replies whose remote config was dropped because the whole message was over the size limit.
pub const OVERSIZE_OUTGOING: &str = "gitamp_opamp_oversize_outgoing_total";

/// Describe this crate's metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        OVERSIZE_OUTGOING,
        "Replies whose remote config was dropped to fit the message size limit."
    );
}

/// A reply over the size limit lost its remote config.
pub(crate) fn oversize_outgoing() {
    metrics::counter!(OVERSIZE_OUTGOING).increment(1);
}
