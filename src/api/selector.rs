//! The `selector=` query parameter: Kubernetes label-selector text parsed into the same
//! [`Selector`] the repository uses, so the API filters agents with exactly the matching rules
//! configurations use ([`gitamp_core::plan::selector::matches`]).
//!
//! Grammar (comma-separated requirements, all must hold):
//! `k=v` / `k==v` (equals), `k!=v` (not equal, or absent), `k in (a,b)`, `k notin (a,b)`,
//! `k` (exists), `!k` (does not exist).

use gitamp_core::catalog::model::{
    Selector, SelectorOperator, SelectorRequirement, SelectorValuesProblem,
};

/// Parse selector text; the error says which requirement is malformed.
pub fn parse(text: &str) -> Result<Selector, String> {
    let mut selector = Selector::default();
    for part in split_top_level(text)? {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        selector.match_expressions.push(requirement(part)?);
    }
    Ok(selector)
}

/// Split on commas that are not inside `( ... )`.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced `)` in selector {text:?}"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unclosed `(` in selector {text:?}"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<SelectorRequirement, String> {
    let req = |key: &str, operator, values: Vec<String>| -> Result<SelectorRequirement, String> {
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            // `k in v` without the parentheses reads as one key with spaces in it.
            let words: Vec<&str> = part.split_whitespace().collect();
            if words.len() >= 3 && matches!(words[1].to_ascii_lowercase().as_str(), "in" | "notin")
            {
                return Err(format!(
                    "selector requirement {part:?}: the values of `{}` go in parentheses: \
                     `{} {} ({})`",
                    words[1],
                    words[0],
                    words[1],
                    words[2..].join(" ")
                ));
            }
            return Err(format!("selector requirement {part:?} has no valid key"));
        }
        let requirement = SelectorRequirement {
            key: key.to_string(),
            operator,
            values,
        };
        match requirement.values_problem() {
            Some(SelectorValuesProblem::Missing) => Err(format!(
                "selector requirement {part:?}: `in`/`notin` needs at least one value (E032)"
            )),
            Some(SelectorValuesProblem::Unexpected) => Err(format!(
                "selector requirement {part:?}: takes no values (E032)"
            )),
            None => Ok(requirement),
        }
    };
    if let Some((key, value)) = part.split_once("!=") {
        return req(key, SelectorOperator::NotIn, vec![value.trim().to_string()]);
    }
    if let Some((key, value)) = part.split_once('=') {
        let value = value.strip_prefix('=').unwrap_or(value);
        return req(key, SelectorOperator::In, vec![value.trim().to_string()]);
    }
    if let Some(key) = part.strip_prefix('!') {
        return req(key, SelectorOperator::DoesNotExist, Vec::new());
    }
    if let Some(open) = part.find('(') {
        let close = part
            .rfind(')')
            .filter(|&c| c > open && part[c + 1..].trim().is_empty())
            .ok_or_else(|| format!("selector requirement {part:?}: expected `key in (a,b)`"))?;
        let head = part[..open].trim();
        let values: Vec<String> = part[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let (key, op) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("selector requirement {part:?}: expected `key in (a,b)`"))?;
        let operator = match op.to_ascii_lowercase().as_str() {
            "in" => SelectorOperator::In,
            "notin" => SelectorOperator::NotIn,
            other => {
                return Err(format!(
                    "selector requirement {part:?}: unknown operator `{other}` (in, notin)"
                ));
            }
        };
        return req(key, operator, values);
    }
    req(part, SelectorOperator::Exists, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitamp_core::plan::selector::{Labels, matches};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A configuration's selector as `gitamp configurations` prints it is a `selector=` that
    /// reads back as the same rules.
    #[test]
    fn a_selector_printed_reads_back_the_same() {
        let mut s = parse("os.type in (linux,darwin),tier notin (db),region,!canary").unwrap();
        s.match_labels.insert("env".into(), "prod".into());
        let text = s.to_string();
        assert_eq!(
            text,
            "env=prod,os.type in (linux,darwin),tier notin (db),region,!canary"
        );
        let back = parse(&text).unwrap();
        for agent in [
            labels(&[("env", "prod"), ("os.type", "linux"), ("region", "eu")]),
            labels(&[
                ("env", "prod"),
                ("os.type", "linux"),
                ("region", "eu"),
                ("canary", "1"),
            ]),
            labels(&[("env", "dev"), ("os.type", "linux"), ("region", "eu")]),
            labels(&[
                ("env", "prod"),
                ("os.type", "linux"),
                ("tier", "db"),
                ("region", "eu"),
            ]),
        ] {
            assert_eq!(matches(&s, &agent), matches(&back, &agent), "{agent:?}");
        }
        assert_eq!(Selector::default().to_string(), "");
    }

    #[test]
    fn parses_every_form() {
        let s = parse("env=prod, tier!=db,os.type in (linux, darwin),region,!canary").unwrap();
        let ops: Vec<_> = s.match_expressions.iter().map(|r| r.operator).collect();
        assert_eq!(
            ops,
            [
                SelectorOperator::In,
                SelectorOperator::NotIn,
                SelectorOperator::In,
                SelectorOperator::Exists,
                SelectorOperator::DoesNotExist
            ]
        );
        let agent = labels(&[("env", "prod"), ("os.type", "linux"), ("region", "eu")]);
        assert!(matches(&s, &agent));
        let canary = labels(&[
            ("env", "prod"),
            ("os.type", "linux"),
            ("region", "eu"),
            ("canary", "1"),
        ]);
        assert!(!matches(&s, &canary));
        assert!(matches(&parse("k==v").unwrap(), &labels(&[("k", "v")])));
        assert!(matches(&parse("x notin (a)").unwrap(), &labels(&[])));
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse("k in (a").is_err());
        assert!(parse("k in a)").is_err());
        assert!(parse("k between (a,b)").is_err());
        assert!(parse("=v").is_err());
        assert!(parse("").unwrap().match_expressions.is_empty());
    }
}
