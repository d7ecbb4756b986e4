//! Parameter values against their declarations: the type rules of format v1.

use serde_json::Value;

use super::model::{ParameterSpec, ParameterType};

/// Is `s` exactly one collector environment reference (`${env:NAME}` or `${env:NAME:-default}`)?
/// The collector expands it at load time, so it stands for a value of any parameter type.
pub fn is_env_ref(s: &str) -> bool {
    let Some(inner) = s
        .trim()
        .strip_prefix("${env:")
        .and_then(|r| r.strip_suffix('}'))
    else {
        return false;
    };
    let name = inner.split(":-").next().unwrap_or("");
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Does the string contain an environment reference anywhere (for the sensitive-literal check)?
pub fn mentions_env_ref(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${env:"),
        Value::Array(a) => a.iter().all(mentions_env_ref) && !a.is_empty(),
        Value::Object(m) => m.values().all(mentions_env_ref) && !m.is_empty(),
        _ => false,
    }
}

pub use crate::duration::is_go_duration;

/// What is wrong with `value` for `spec`, if anything.
pub enum Problem {
    /// Not of the parameter's type; the message says what was expected.
    Type(String),
    /// Of the right type but not among `validValues`.
    NotValid(String),
}

/// Check one value against its declaration.
pub fn check_value(spec: &ParameterSpec, value: &Value) -> Option<Problem> {
    if let Value::String(s) = value
        && is_env_ref(s)
    {
        return None;
    }
    let got = describe(value);
    let type_err = |expected: &str, hint: &str| {
        Some(Problem::Type(format!(
            "expects {expected}, got {got}{hint}"
        )))
    };
    match spec.kind {
        ParameterType::String => match value {
            Value::String(s) => check_valid_values(spec, s),
            Value::Number(_) | Value::Bool(_) => {
                type_err("a string", "; quote the value to make it a string")
            }
            _ => type_err("a string", ""),
        },
        ParameterType::Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => None,
            Value::String(s) if s.trim().parse::<i64>().is_ok() => {
                type_err("an integer", "; remove the quotes")
            }
            _ => type_err("an integer", ""),
        },
        ParameterType::Bool => match value {
            Value::Bool(_) => None,
            Value::String(s) if matches!(s.as_str(), "true" | "false") => {
                type_err("true or false", "; remove the quotes")
            }
            _ => type_err("true or false", ""),
        },
        ParameterType::Enum => match value {
            Value::String(s) => check_valid_values(spec, s),
            _ => type_err(&format!("one of {}", list(&spec.valid_values)), ""),
        },
        ParameterType::Strings => match value {
            Value::Array(items) if items.iter().all(Value::is_string) => None,
            Value::Array(items) => {
                let (i, bad) = items
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !v.is_string())
                    .unwrap_or((0, &Value::Null));
                Some(Problem::Type(format!(
                    "expects a list of strings, but item {} is {}; quote it",
                    i + 1,
                    describe(bad)
                )))
            }
            Value::String(_) => type_err("a list of strings", "; write it as `[value]`"),
            _ => type_err("a list of strings", ""),
        },
        ParameterType::Map => match value {
            Value::Object(m) if m.values().all(Value::is_string) => None,
            Value::Object(m) => {
                let (k, bad) = m
                    .iter()
                    .find(|(_, v)| !v.is_string())
                    .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v));
                Some(Problem::Type(format!(
                    "expects a map of string to string, but the value of `{k}` is {}; quote it",
                    describe(bad)
                )))
            }
            _ => type_err("a map of string to string", ""),
        },
        ParameterType::Yaml => None,
        ParameterType::Duration => match value {
            Value::String(s) if is_go_duration(s) => None,
            Value::Number(_) => type_err(
                "a duration such as `10s`, `1m30s` or `500ms`",
                "; add a unit",
            ),
            _ => type_err("a duration such as `10s`, `1m30s` or `500ms`", ""),
        },
    }
}

fn check_valid_values(spec: &ParameterSpec, s: &str) -> Option<Problem> {
    if spec.valid_values.is_empty() || spec.valid_values.iter().any(|v| v == s) {
        return None;
    }
    Some(Problem::NotValid(format!(
        "`{s}` is not one of {}",
        list(&spec.valid_values)
    )))
}

fn list(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
    if items.is_empty() {
        "the declared validValues (none are declared)".to_string()
    } else {
        items.join(", ")
    }
}

fn describe(v: &Value) -> String {
    let shown = |s: String| {
        if s.chars().count() > 40 {
            format!("{}…", s.chars().take(40).collect::<String>())
        } else {
            s
        }
    };
    match v {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", shown(format!("{s:?}"))),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
    }
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: edits plus adjacent transpositions (`prot` → `port` is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(kind: ParameterType, valid: &[&str]) -> ParameterSpec {
        ParameterSpec {
            name: "p".into(),
            kind,
            default: None,
            required: false,
            valid_values: valid.iter().map(|s| s.to_string()).collect(),
            sensitive: false,
            description: None,
        }
    }

    fn ok(kind: ParameterType, v: Value) -> bool {
        let valid: &[&str] = if kind == ParameterType::Enum {
            &["a", "b"]
        } else {
            &[]
        };
        check_value(&spec(kind, valid), &v).is_none()
    }

    #[test]
    fn durations() {
        for d in [
            "10s",
            "1m30s",
            "500ms",
            "0",
            "1.5h",
            "-3us",
            "2h45m0.5s",
            "1µs",
        ] {
            assert!(is_go_duration(d), "{d}");
        }
        for d in ["", "10", "s", "1x", "1..5s", "10 s", "1m30"] {
            assert!(!is_go_duration(d), "{d}");
        }
    }

    #[test]
    fn types() {
        use ParameterType::*;
        assert!(ok(String, json!("x")));
        assert!(!ok(String, json!(3)));
        assert!(ok(Int, json!(3)));
        assert!(!ok(Int, json!(3.5)));
        assert!(!ok(Int, json!("3")));
        assert!(ok(Bool, json!(false)));
        assert!(!ok(Bool, json!("yes")));
        assert!(ok(Enum, json!("a")));
        assert!(matches!(
            check_value(&spec(Enum, &["a"]), &json!("c")),
            Some(Problem::NotValid(_))
        ));
        assert!(ok(Strings, json!(["a", "b"])));
        assert!(!ok(Strings, json!(["a", 1])));
        assert!(ok(Map, json!({"k": "v"})));
        assert!(!ok(Map, json!({"k": 1})));
        assert!(ok(Yaml, json!({"k": [1, 2]})));
        assert!(ok(Duration, json!("10s")));
        assert!(!ok(Duration, json!(10)));
        for k in [String, Int, Bool, Enum, Strings, Map, Yaml, Duration] {
            assert!(ok(k, json!("${env:X_1}")), "{k:?}");
            assert!(ok(k, json!("${env:PORT:-4317}")), "{k:?}");
        }
        assert!(!ok(Int, json!("${env:}")));
    }

    #[test]
    fn did_you_mean() {
        assert_eq!(closest("prot", ["port", "endpoint"]), Some("port"));
        assert_eq!(closest("zzzz", ["port", "endpoint"]), None);
    }
}
