//! Keeping sensitive values out of everything people see: the status API, events and logs, the
//! collector's own messages.
//!
//! It lives next to the rendering because only the renderer knows what is sensitive: the masked
//! YAML ([`super::RenderedConfiguration::masked_yaml`]) is the source of truth, and what this
//! module recovers from it (the sensitive values of a revision) is used wherever text that may
//! quote them leaves the server.
//!
//! The desired config is always the core's masked YAML. The *effective* config comes from the
//! agent, which may echo back the unmasked config it received (the sensitive values intact), so
//! it is masked before it is shown, two ways:
//! - by position: wherever the masked desired YAML has `***`, the same path in the effective
//!   tree is masked too (this also hides a secret that was rotated since the agent got it);
//! - by value: every sensitive value of the served revision (recovered by comparing each
//!   configuration's YAML with its masked YAML) is replaced wherever it appears.
//!
//! The effective config is parsed and re-emitted with the core's YAML writer, so the diff
//! against the desired config shows meaning, not formatting. Text that is not YAML is masked
//! by value only.

use super::{MASK, to_yaml};
use crate::Revision;
use serde_json::Value;

/// Shorter values are replaced only where a string equals them whole: replacing a two-letter
/// secret inside every string would garble the config without protecting anything.
const MIN_SUBSTRING_SECRET: usize = 4;

/// Every sensitive value rendered into any configuration of `revision`, longest first (so a
/// secret that contains another is replaced whole).
pub fn secrets_of(revision: &Revision) -> Vec<String> {
    let mut out = Vec::new();
    for rendered in revision.rendered.configurations.values() {
        let (Ok(plain), Ok(masked)) = (
            serde_saphyr::from_str::<Value>(&rendered.yaml),
            serde_saphyr::from_str::<Value>(&rendered.masked_yaml),
        ) else {
            continue;
        };
        collect(&plain, &masked, &mut out);
    }
    out.retain(|s| !s.is_empty() && s != MASK);
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

fn collect(plain: &Value, masked: &Value, out: &mut Vec<String>) {
    match (plain, masked) {
        (Value::Object(p), Value::Object(m)) => {
            for (k, mv) in m {
                if let Some(pv) = p.get(k) {
                    collect(pv, mv, out);
                }
            }
        }
        (Value::Array(p), Value::Array(m)) => {
            for (pv, mv) in p.iter().zip(m) {
                collect(pv, mv, out);
            }
        }
        (Value::String(p), Value::String(m)) if m.contains(MASK) && p != m => {
            out.extend(extract(p, m));
        }
        // A masked `yaml` parameter: the whole subtree was sensitive.
        (p, Value::String(m)) if m.contains(MASK) => leaves(p, out),
        _ => {}
    }
}

fn leaves(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
        Value::Object(o) => o.values().for_each(|v| leaves(v, out)),
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(_) | Value::Null => {}
    }
}

/// The values hidden behind each `***` of `masked`, given the unmasked `plain` text. When the
/// literal parts around the masks cannot be lined up, the whole plain string counts as secret.
fn extract(plain: &str, masked: &str) -> Vec<String> {
    let parts: Vec<&str> = masked.split(MASK).collect();
    let mut found = Vec::new();
    let Some(mut rest) = plain.strip_prefix(parts[0]) else {
        return vec![plain.to_string()];
    };
    for (i, lit) in parts.iter().enumerate().skip(1) {
        let last = i == parts.len() - 1;
        let end = if last {
            rest.strip_suffix(lit).map(str::len)
        } else if lit.is_empty() {
            None
        } else {
            rest.find(lit)
        };
        let Some(end) = end else {
            return vec![plain.to_string()];
        };
        found.push(rest[..end].to_string());
        rest = &rest[end + lit.len()..];
    }
    found
}

/// Replace every known secret in a piece of text.
pub fn mask_text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if out == *s {
            return MASK.to_string();
        }
        if s.len() >= MIN_SUBSTRING_SECRET && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// The effective config as people may see it: masked by position against `masked_desired`
/// (when given) and by value, then re-emitted as YAML. Non-YAML text is masked by value only.
pub fn mask_effective(effective: &str, masked_desired: Option<&str>, secrets: &[String]) -> String {
    let Ok(mut tree) = serde_saphyr::from_str::<Value>(effective) else {
        return mask_text(effective, secrets);
    };
    if !tree.is_object() {
        return mask_text(effective, secrets);
    }
    if let Some(Ok(desired)) = masked_desired.map(serde_saphyr::from_str::<Value>) {
        mask_positions(&mut tree, &desired);
    }
    if let Some(telemetry) = tree.pointer_mut("/service/telemetry") {
        mask_headers(telemetry);
    }
    mask_values(&mut tree, secrets);
    match to_yaml(&tree) {
        Ok(yaml) => yaml,
        // The tree came from YAML, so this does not happen; never fall back to the raw text.
        Err(e) => format!("# effective config could not be shown: {e}\n"),
    }
}

/// Hides every header value under the collector's own telemetry settings: an own-telemetry
/// offer's credentials (the agent secret, or a declared `${env:...}` already resolved) are
/// written there by the supervisor, and the repository's secrets do not list them.
fn mask_headers(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if k == "headers" {
                    mask_header_values(v);
                } else {
                    mask_headers(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_headers),
        _ => {}
    }
}

/// `{name: value}` or `[{name, value}]`: the values become `***`.
fn mask_header_values(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if !(k == "name" && v.is_string()) {
                    *v = Value::String(MASK.to_string());
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_header_values),
        Value::String(_) => *v = Value::String(MASK.to_string()),
        _ => {}
    }
}

fn mask_positions(tree: &mut Value, masked: &Value) {
    match (tree, masked) {
        (Value::Object(t), Value::Object(m)) => {
            for (k, mv) in m {
                if let Some(tv) = t.get_mut(k) {
                    mask_positions(tv, mv);
                }
            }
        }
        (Value::Array(t), Value::Array(m)) => {
            for (tv, mv) in t.iter_mut().zip(m) {
                mask_positions(tv, mv);
            }
        }
        (t, Value::String(m)) if m.contains(MASK) => {
            // Same literal parts around the secret: show the masked form (no diff); otherwise
            // show that something differs without showing what.
            let same_shape = match &*t {
                Value::String(s) => extract_matches(s, m),
                _ => false,
            };
            *t = Value::String(if same_shape {
                m.clone()
            } else {
                MASK.to_string()
            });
        }
        _ => {}
    }
}

/// Whether `plain` has the literal parts of `masked` around its masks.
fn extract_matches(plain: &str, masked: &str) -> bool {
    if plain == masked {
        return true;
    }
    let parts: Vec<&str> = masked.split(MASK).collect();
    let first = parts.first().copied().unwrap_or_default();
    let last = parts.last().copied().unwrap_or_default();
    plain.len() >= first.len() + last.len() && plain.starts_with(first) && plain.ends_with(last)
}

fn mask_values(tree: &mut Value, secrets: &[String]) {
    match tree {
        Value::String(s) => {
            let masked = mask_text(s, secrets);
            if masked != *s {
                *s = masked;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| mask_values(v, secrets)),
        Value::Object(o) => o.values_mut().for_each(|v| mask_values(v, secrets)),
        Value::Number(n) => {
            if secrets.iter().any(|s| *s == n.to_string()) {
                *tree = Value::String(MASK.to_string());
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_secrets_around_literals() {
        assert_eq!(extract("Bearer abc", "Bearer ***"), ["abc"]);
        assert_eq!(extract("a:x/b:y", "a:***/b:***"), ["x", "y"]);
        assert_eq!(extract("zzz", "pre-***"), ["zzz"]);
    }

    #[test]
    fn own_telemetry_headers_are_always_hidden() {
        let effective = "service:\n  telemetry:\n    metrics:\n      readers:\n        - periodic:\n            exporter:\n              otlp:\n                endpoint: http://gitamp:4320/v1/metrics\n                headers:\n                  Authorization: Bearer agent-secret\n        - periodic:\n            exporter:\n              otlp:\n                headers: [{name: X-Key, value: k1}]\n";
        let shown = mask_effective(effective, None, &[]);
        assert!(
            !shown.contains("agent-secret") && !shown.contains("k1"),
            "{shown}"
        );
        assert!(shown.contains("http://gitamp:4320/v1/metrics") && shown.contains("X-Key"));
    }

    #[test]
    fn masks_effective_by_position_and_value() {
        let desired = "exporters:\n  otlp:\n    headers:\n      x-api-key: '***'\n";
        let effective = "exporters:\n  otlp:\n    headers:\n      x-api-key: OLD-SECRET\n    note: NEW-SECRET here\n";
        let out = mask_effective(effective, Some(desired), &["NEW-SECRET".to_string()]);
        assert!(!out.contains("OLD-SECRET"), "{out}");
        assert!(!out.contains("NEW-SECRET"), "{out}");
        assert!(out.contains("***"));
        assert_eq!(
            mask_effective("not: [yaml", None, &["yaml".into()]),
            "not: [***"
        );
    }
}
