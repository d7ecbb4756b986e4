//! Does an agent run what it was sent? The rendered YAML against the effective config the agent
//! reports, compared by meaning rather than by text.
//!
//! A real collector's supervisor reports its own serialization of the merged config: other key
//! order and quoting, its own additions (the `opamp` extension it injects, defaults filled in),
//! and `${env:…}` references possibly expanded. A text diff shows all of that as noise. Here the
//! desired tree must be contained in the effective one:
//!
//! - every desired key is present, with an equal value (scalars compared by their text, so
//!   `512` equals `"512"`, and without regard to case, since collectors print their enums
//!   their own way: `none` is `None`); a desired string with `${…}` references matches any
//!   text in their place; a masked or redacted effective value matches anything;
//! - a desired scalar the agent does not echo back, inside a component it does report, is
//!   `Unreported`, not missing: a collector prints its config from its own structs, and some
//!   fields (the debug exporter's `verbosity`) do not round-trip. A missing map or list (a
//!   component, a pipeline) is `Missing`;
//! - a desired list is matched by an effective list holding its items in the same order, with
//!   others in between allowed (the supervisor appends `opamp` to `service.extensions`);
//! - keys and items only the agent has are listed as `Added` and do not change the meaning.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::MASK;

/// Texts agents put in place of a secret.
const REDACTED: [&str; 3] = [MASK, "[REDACTED]", "<redacted>"];

/// One place where the two configs differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDifference {
    /// Dotted path (`service.pipelines.logs/a__b.processors`); keys that contain dots are kept
    /// whole between the dots of the path.
    pub path: String,
    /// Flattened: `{"path": …, "kind": "changed", "desired": …, "effective": …}`.
    #[serde(flatten)]
    pub kind: DifferenceKind,
}

/// How a place differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DifferenceKind {
    /// In the desired config, not in the effective one.
    Missing,
    /// A desired scalar the agent's report leaves out, inside a map it does report (not a
    /// difference in meaning: agents do not echo every field).
    Unreported,
    /// In both, with other values (shown as YAML-ish text).
    Changed {
        /// The repository's value.
        desired: String,
        /// The agent's value.
        effective: String,
    },
    /// Only in the effective config: the agent's own addition (not a difference in meaning).
    Added,
}

impl ConfigDifference {
    /// True for differences that mean the agent does not run what it was sent.
    pub fn changes_meaning(&self) -> bool {
        !matches!(
            self.kind,
            DifferenceKind::Added | DifferenceKind::Unreported
        )
    }
}

/// Every difference between `desired` and `effective`, in path order of the desired tree
/// (additions after).
pub fn compare(desired: &Value, effective: &Value) -> Vec<ConfigDifference> {
    let mut out = Vec::new();
    walk(desired, effective, &mut String::new(), &mut out);
    out
}

fn walk(desired: &Value, effective: &Value, path: &mut String, out: &mut Vec<ConfigDifference>) {
    match (desired, effective) {
        (Value::Object(d), Value::Object(e)) => {
            for (k, dv) in d {
                let len = push_key(path, k);
                match e.get(k) {
                    Some(ev) => walk(dv, ev, path, out),
                    // A null or empty desired value (`debug:`) is what an absent key means too.
                    None if is_empty(dv) => {}
                    None => out.push(ConfigDifference {
                        path: path.clone(),
                        kind: if matches!(dv, Value::Object(_) | Value::Array(_)) {
                            DifferenceKind::Missing
                        } else {
                            DifferenceKind::Unreported
                        },
                    }),
                }
                path.truncate(len);
            }
            for k in e.keys().filter(|k| !d.contains_key(*k)) {
                let len = push_key(path, k);
                out.push(ConfigDifference {
                    path: path.clone(),
                    kind: DifferenceKind::Added,
                });
                path.truncate(len);
            }
        }
        (Value::Array(d), Value::Array(e)) => {
            // Desired items in order, each matched by the next effective item that contains it.
            let mut next = 0;
            for dv in d {
                let found = e[next..].iter().position(|ev| {
                    let mut scratch = Vec::new();
                    walk(dv, ev, &mut path.clone(), &mut scratch);
                    !scratch.iter().any(ConfigDifference::changes_meaning)
                });
                match found {
                    Some(i) => next += i + 1,
                    None => {
                        out.push(changed(path, desired, effective));
                        return;
                    }
                }
            }
            if e.len() > d.len() {
                out.push(ConfigDifference {
                    path: path.clone(),
                    kind: DifferenceKind::Added,
                });
            }
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
            if is_empty(desired) {
                // `debug:` asks for the defaults, which the agent may spell out.
                if !is_empty(effective) {
                    out.push(ConfigDifference {
                        path: path.clone(),
                        kind: DifferenceKind::Added,
                    });
                }
            } else {
                out.push(changed(path, desired, effective));
            }
        }
        (d, e) => {
            if !scalar_matches(d, e) {
                out.push(changed(path, desired, effective));
            }
        }
    }
}

fn changed(path: &str, desired: &Value, effective: &Value) -> ConfigDifference {
    ConfigDifference {
        path: path.to_string(),
        kind: DifferenceKind::Changed {
            desired: text(desired),
            effective: text(effective),
        },
    }
}

/// Appends `.key` (or `key` at the root); returns the length to truncate back to.
fn push_key(path: &mut String, key: &str) -> usize {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
    len
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn scalar_matches(desired: &Value, effective: &Value) -> bool {
    let (d, e) = (text(desired), text(effective));
    d.eq_ignore_ascii_case(&e)
        || REDACTED.contains(&e.as_str())
        || (d.contains("${") && template_matches(&d, &e))
}

/// `d` with each `${…}` reference standing for any text (none included) matches `e`.
fn template_matches(d: &str, e: &str) -> bool {
    // Literal pieces between references, in order.
    let mut pieces = Vec::new();
    let mut rest = d;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        pieces.push(&rest[..start]);
        rest = &rest[start + end + 1..];
    }
    pieces.push(rest);
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if pieces.len() == 1 {
        return d == e;
    }
    if !e.starts_with(first) || !e[first.len()..].ends_with(last) {
        return false;
    }
    let mut middle = &e[first.len()..e.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match middle.find(piece) {
            Some(i) => middle = &middle[i + piece.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meaningful(d: Value, e: Value) -> Vec<ConfigDifference> {
        compare(&d, &e)
            .into_iter()
            .filter(ConfigDifference::changes_meaning)
            .collect()
    }

    #[test]
    fn supervisor_additions_and_defaults_do_not_change_the_meaning() {
        let desired = json!({
            "receivers": {"otlp/a": {"protocols": {"http": {"endpoint": "127.0.0.1:${env:PORT}"}}}},
            "exporters": {"debug/b": null},
            "service": {"pipelines": {"logs/a__b": {"receivers": ["otlp/a"], "exporters": ["debug/b"]}}}
        });
        let effective = json!({
            "receivers": {"otlp/a": {"protocols": {"http": {"endpoint": "127.0.0.1:4318", "cors": null}}}},
            "exporters": {"debug/b": {"verbosity": "basic"}},
            "extensions": {"opamp": {"server": {"ws": {"endpoint": "ws://localhost:1"}}}},
            "service": {
                "extensions": ["opamp"],
                "pipelines": {"logs/a__b": {"receivers": ["otlp/a"], "exporters": ["debug/b"]}}
            }
        });
        let all = compare(&desired, &effective);
        assert!(all.iter().all(|d| !d.changes_meaning()), "{all:?}");
        assert!(all.iter().any(|d| d.path == "extensions"));
    }

    #[test]
    fn a_changed_value_a_missing_key_and_a_reordered_list_are_differences() {
        let desired = json!({
            "processors": {"batch": {"timeout": "200ms"}, "filter": {"error_mode": "ignore"}},
            "service": {"pipelines": {"logs": {"processors": ["a", "b"]}}}
        });
        let effective = json!({
            "processors": {"batch": {"timeout": "1s"}},
            "service": {"pipelines": {"logs": {"processors": ["b", "a"]}}}
        });
        let d = meaningful(desired, effective);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "processors.batch.timeout",
                "processors.filter",
                "service.pipelines.logs.processors"
            ]
        );
        assert_eq!(
            d[0].kind,
            DifferenceKind::Changed {
                desired: "200ms".into(),
                effective: "1s".into()
            }
        );
        assert_eq!(d[1].kind, DifferenceKind::Missing);
    }

    #[test]
    fn scalars_compare_by_text_and_secrets_match_their_mask() {
        assert!(
            meaningful(
                json!({"n": 512, "b": true}),
                json!({"n": "512", "b": "true"})
            )
            .is_empty()
        );
        assert!(
            meaningful(json!({"token": "${env:T}"}), json!({"token": "[REDACTED]"})).is_empty()
        );
        assert!(meaningful(json!({"token": "s3cret"}), json!({"token": "***"})).is_empty());
        assert!(meaningful(json!({"level": "none"}), json!({"level": "None"})).is_empty());
        // A field the agent does not echo: unreported, not a difference in meaning.
        let d = compare(
            &json!({"debug": {"verbosity": "basic"}}),
            &json!({"debug": {}}),
        );
        assert_eq!(d[0].kind, DifferenceKind::Unreported);
        assert!(!d[0].changes_meaning());
        assert_eq!(meaningful(json!({"n": 1}), json!({"n": 2})).len(), 1);
    }

    #[test]
    fn env_references_match_any_text_in_place() {
        assert!(template_matches("${env:A}", "anything"));
        assert!(template_matches("h:${env:P}/x", "h:4318/x"));
        assert!(template_matches("${env:A}-${env:B}", "x-y"));
        assert!(!template_matches("h:${env:P}", "g:4318"));
        assert!(!template_matches("${env:A}-${env:B}", "xy"));
    }
}
