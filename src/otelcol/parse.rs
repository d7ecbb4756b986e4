//! The collector's refusal, read: `otelcol validate` (v0.158 here) prints one `Error: ` message
//! (cobra) and exits 1. Its stages write it differently:
//!
//! ```text
//! Error: failed to get config: cannot unmarshal the configuration: decoding failed due to the following error(s):
//!
//! 'exporters' error reading configuration for "debug/dst-console": decoding failed due to the following error(s):
//!
//! 'debugexporter.Config' has invalid keys: sampling_therafter
//! 'processors' error reading configuration for "batch/proc-batch": decoding failed due to the following error(s):
//!
//! 'timeout' time: unknown unit
//! ```
//!
//! (unmarshalling: mapstructure's nested lists, flattened into lines; a header ends with
//! "decoding failed due to the following error(s):", the lines after it are its errors),
//! `Error: exporters::otlp/dst-gw::clientconfig: address x: missing port in address` (each
//! component's `Validate()`, one per line), and `Error: failed to build pipelines: failed to
//! create "resource/proc-env" processor, in pipeline "logs/a__b": ...` (building the graph).
//! Each error becomes one [`Refusal`] carrying the headers above it, so the component ID they
//! name stays with it.

/// One error of the collector's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The headers it is nested under, outermost first (`'exporters' error reading
    /// configuration for "debug/dst-console"`).
    pub context: Vec<String>,
    /// The error itself (`'debugexporter.Config' has invalid keys: sampling_therafter`).
    pub error: String,
}

impl Refusal {
    /// Headers and error on one line, as the collector's own words.
    pub fn text(&self) -> String {
        let mut parts = self.context.clone();
        parts.push(self.error.clone());
        parts.join(": ")
    }
}

const NESTED: &str = "decoding failed due to the following error(s):";

/// Wrappers around the whole message that say nothing about the configuration.
const WRAPPERS: [&str; 3] = [
    "failed to get config",
    "cannot unmarshal the configuration",
    "invalid configuration",
];

/// Top-level keys of a collector configuration: a header or error about one of them starts a
/// new branch of the nested list.
const TOP_LEVEL: [&str; 6] = [
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
    "service",
];

/// The errors of what the collector printed (stderr then stdout); empty when it printed no
/// error at all.
pub fn refusals(output: &str) -> Vec<Refusal> {
    let Some(start) = output.find("Error: ") else {
        return Vec::new();
    };
    let text = &output[start + "Error: ".len()..];
    let mut out: Vec<Refusal> = Vec::new();
    let mut context: Vec<String> = Vec::new();
    let mut after_error = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || is_log_line(line) {
            continue;
        }
        if let Some(head) = line.strip_suffix(NESTED) {
            let head = unwrap(head.trim_end().trim_end_matches(':'));
            // A header after an error is a sibling: of the whole message when it is about a
            // top-level key, else of what follows the component's header.
            if after_error {
                if is_top_level(head) {
                    context.clear();
                } else {
                    context.truncate(1);
                }
            }
            if !head.is_empty() {
                context.push(one_line(head, 500));
            }
            after_error = false;
        } else {
            let error = unwrap(line);
            if is_top_level(error) {
                context.clear();
            }
            out.push(Refusal {
                context: context.clone(),
                error: one_line(error, 2000),
            });
            after_error = true;
        }
    }
    out.dedup();
    out
}

fn unwrap(mut s: &str) -> &str {
    loop {
        s = s.trim();
        match WRAPPERS.iter().find_map(|w| s.strip_prefix(w)) {
            Some(rest) if rest.is_empty() || rest.starts_with(':') => {
                s = rest.trim_start_matches(':');
            }
            _ => return s,
        }
    }
}

/// `'receivers' ...`, `'service.telemetry.logs' ...`.
fn is_top_level(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('\'') else {
        return false;
    };
    TOP_LEVEL.iter().any(|k| {
        rest.strip_prefix(k)
            .is_some_and(|r| r.starts_with('\'') || r.starts_with('.'))
    })
}

/// A line of the Go standard logger (`2024/05/01 12:00:00 ...`): not part of the message.
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'/'
        && b[7] == b'/'
        && b[10] == b' '
}

/// Whitespace collapsed, at most `max` bytes (cut on a character boundary).
pub fn one_line(text: &str, max: usize) -> String {
    let mut s = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the v0.158 collector printed for a configuration with four mistakes.
    const UNMARSHAL: &str = "Error: failed to get config: cannot unmarshal the configuration: \
decoding failed due to the following error(s):

'receivers' error reading configuration for \"otlp/src-app\": decoding failed due to the following error(s):

'protocols.grpc' decoding failed due to the following error(s):

'configgrpc.ServerConfig' has invalid keys: bogus
'processors' error reading configuration for \"batch/proc-batch\": decoding failed due to the following error(s):

'timeout' time: unknown unit
'exporters' error reading configuration for \"debug/dst-console\": decoding failed due to the following error(s):

'debugexporter.Config' has invalid keys: sampling_therafter
'service.telemetry.logs' decoding failed due to the following error(s):

'level' unrecognized level: \"loud\"
";

    #[test]
    fn nested_unmarshal_errors_keep_their_component() {
        let r = refusals(UNMARSHAL);
        let texts: Vec<String> = r.iter().map(Refusal::text).collect();
        assert_eq!(
            texts,
            [
                "'receivers' error reading configuration for \"otlp/src-app\": 'protocols.grpc': \
                 'configgrpc.ServerConfig' has invalid keys: bogus",
                "'processors' error reading configuration for \"batch/proc-batch\": 'timeout' \
                 time: unknown unit",
                "'exporters' error reading configuration for \"debug/dst-console\": \
                 'debugexporter.Config' has invalid keys: sampling_therafter",
                "'service.telemetry.logs': 'level' unrecognized level: \"loud\"",
            ]
        );
    }

    #[test]
    fn validate_and_graph_errors_are_one_per_line() {
        let r = refusals(
            "Error: exporters::otlp/dst-gw::clientconfig: address x: missing port in address\n\
             processors::batch/proc-b2: send_batch_max_size must be greater or equal to \
             send_batch_size\n",
        );
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.context.is_empty()));
        assert_eq!(
            r[1].error,
            "processors::batch/proc-b2: send_batch_max_size must be greater or equal to \
             send_batch_size"
        );
        assert!(refusals("no verdict here").is_empty());
    }

    #[test]
    fn bounded_one_line() {
        assert_eq!(one_line("a\n  b", 10), "a b");
        assert_eq!(one_line("ééé", 3), "é…");
    }
}
