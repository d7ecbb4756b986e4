//! The one minijinja environment every template of every revision renders in.
//!
//! Decisions, and why:
//!
//! - **Created once** (a process-wide [`OnceLock`]): building an environment registers filters
//!   and settings; doing that per render would be waste on the hot path of every revision.
//! - **`UndefinedBehavior::Strict`**: a typo in a parameter name (`{{ endpiont }}`) must be an
//!   error at validation time, not an empty string in a collector config. Every declared
//!   parameter is always in the context (optional ones without a default as `none`), so
//!   `{% if api_key %}` works for optional parameters.
//! - **No auto-escaping: templates produce raw text.** Operators write templates as the YAML
//!   they already know (`endpoint: {{ endpoint }}`); JSON auto-escaping (what minijinja does for
//!   `*.yaml` names with the `json` feature) surprises them. Values that need quoting or that
//!   are structured use `{{ value | tojson }}` or `{{ value | toyaml }}`, which emit JSON, a
//!   valid YAML flow form. Template names here never end in `.yaml`, and the callback pins
//!   `AutoEscape::None` anyway so that a future minijinja default cannot change our bytes.
//! - **Bounded execution** (`fuel`): templates come from a Git repository anyone with commit
//!   access can change; a loop must not hang the server. Out of fuel is a render error.
//! - `${env:NAME}` strings are ordinary text to minijinja (no `{{`), so they pass through
//!   untouched for the collector to expand.

use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// Instruction budget of one template render. Realistic templates use a few hundred; this
/// leaves two orders of magnitude of headroom while stopping runaway loops in milliseconds.
pub const FUEL: u64 = 100_000;

/// Nesting limit for macros/includes/recursion; far above anything a component template needs.
const RECURSION_LIMIT: usize = 64;

/// The shared environment.
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(build)
}

fn build() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_filter("toyaml", toyaml);
    env
}

/// `{{ value | toyaml }}`: the value in YAML flow form, so it can be placed after a key on one
/// line (`headers: {{ headers | toyaml }}`). The flow form is JSON, which every YAML parser reads,
/// and unlike hand-quoting it escapes everything that needs escaping.
fn toyaml(value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "toyaml got an undefined value",
        ));
    }
    serde_json::to_string(value)
        .map(Value::from_safe_string)
        .map_err(|e| {
            Error::new(ErrorKind::BadSerialization, "toyaml could not serialize").with_source(e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, ctx: serde_json::Value) -> Result<String, Error> {
        environment()
            .template_from_str(src)?
            .render(Value::from(minijinja::value::Serde(ctx)))
    }

    #[test]
    fn raw_text_and_env_refs_untouched() {
        let out = render(
            "endpoint: {{ e }}\nkey: ${env:API_KEY}\n",
            serde_json::json!({"e": "collector:4317"}),
        )
        .unwrap();
        assert_eq!(out, "endpoint: collector:4317\nkey: ${env:API_KEY}");
    }

    #[test]
    fn toyaml_is_flow_and_ordered() {
        let out = render(
            "h: {{ h | toyaml }}",
            serde_json::json!({"h": {"b": "x: y", "a": 1}}),
        )
        .unwrap();
        assert_eq!(out, r#"h: {"b":"x: y","a":1}"#);
    }

    #[test]
    fn strict_undefined_is_an_error() {
        let err = render("x: {{ nope }}", serde_json::json!({})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UndefinedError);
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            serde_json::json!({}),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel);
    }
}
