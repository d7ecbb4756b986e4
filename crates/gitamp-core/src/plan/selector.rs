//! Label selectors: which agents a configuration selects (Kubernetes label-selector rules).

use std::collections::BTreeMap;

use crate::catalog::model::{Selector, SelectorOperator, SelectorRequirement};

/// An agent's labels: its string attributes (identifying and non-identifying).
pub type Labels = BTreeMap<String, String>;

/// Does `selector` select an agent with these labels? Every `matchLabels` pair and every
/// expression must hold; an empty selector selects every agent.
pub fn matches(selector: &Selector, labels: &Labels) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector
            .match_expressions
            .iter()
            .all(|r| requirement_holds(r, labels))
}

fn requirement_holds(r: &SelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&r.key);
    match r.operator {
        SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
        SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
        SelectorOperator::Exists => value.is_some(),
        SelectorOperator::DoesNotExist => value.is_none(),
    }
}

/// What one key is constrained to by a selector, for overlap analysis.
#[derive(Debug, Clone, Default)]
struct KeyConstraint {
    /// Must be present.
    present: bool,
    /// Must be absent.
    absent: bool,
    /// Allowed values (intersection of In / matchLabels), `None` = any.
    allowed: Option<Vec<String>>,
    /// Forbidden values (NotIn).
    forbidden: Vec<String>,
}

fn constraints(s: &Selector) -> BTreeMap<&str, KeyConstraint> {
    let mut out: BTreeMap<&str, KeyConstraint> = BTreeMap::new();
    let narrow = |c: &mut KeyConstraint, vals: Vec<String>| {
        c.present = true;
        c.allowed = Some(match c.allowed.take() {
            None => vals,
            Some(prev) => prev.into_iter().filter(|v| vals.contains(v)).collect(),
        });
    };
    for (k, v) in &s.match_labels {
        narrow(out.entry(k).or_default(), vec![v.clone()]);
    }
    for r in &s.match_expressions {
        let c = out.entry(r.key.as_str()).or_default();
        match r.operator {
            SelectorOperator::In => narrow(c, r.values.clone()),
            SelectorOperator::NotIn => c.forbidden.extend(r.values.iter().cloned()),
            SelectorOperator::Exists => c.present = true,
            SelectorOperator::DoesNotExist => c.absent = true,
        }
    }
    out
}

/// Can some agent be selected by both selectors? Exact for the operators of format v1: the two
/// overlap unless some key's combined constraints are unsatisfiable.
pub fn may_overlap(a: &Selector, b: &Selector) -> bool {
    let ca = constraints(a);
    let cb = constraints(b);
    let keys: std::collections::BTreeSet<&str> = ca.keys().chain(cb.keys()).copied().collect();
    keys.into_iter().all(|k| {
        let empty = KeyConstraint::default();
        let x = ca.get(k).unwrap_or(&empty);
        let y = cb.get(k).unwrap_or(&empty);
        let present = x.present || y.present;
        let absent = x.absent || y.absent;
        if present && absent {
            return false;
        }
        if absent {
            return true;
        }
        let forbidden: Vec<&String> = x.forbidden.iter().chain(&y.forbidden).collect();
        match (&x.allowed, &y.allowed) {
            (None, None) => true, // some value outside a finite forbidden set always exists
            (Some(s), None) | (None, Some(s)) => s.iter().any(|v| !forbidden.contains(&v)),
            (Some(s), Some(t)) => s.iter().any(|v| t.contains(v) && !forbidden.contains(&v)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(labels: &[(&str, &str)], exprs: &[(&str, SelectorOperator, &[&str])]) -> Selector {
        Selector {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: exprs
                .iter()
                .map(|(k, op, vs)| SelectorRequirement {
                    key: k.to_string(),
                    operator: *op,
                    values: vs.iter().map(|v| v.to_string()).collect(),
                })
                .collect(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators() {
        use SelectorOperator::*;
        let l = labels(&[("env", "prod"), ("os.type", "linux")]);
        assert!(matches(&sel(&[], &[]), &l));
        assert!(matches(&sel(&[("env", "prod")], &[]), &l));
        assert!(!matches(&sel(&[("env", "dev")], &[]), &l));
        assert!(matches(
            &sel(&[], &[("os.type", In, &["linux", "darwin"])]),
            &l
        ));
        assert!(!matches(&sel(&[], &[("os.type", NotIn, &["linux"])]), &l));
        assert!(matches(&sel(&[], &[("region", NotIn, &["eu"])]), &l));
        assert!(matches(&sel(&[], &[("env", Exists, &[])]), &l));
        assert!(!matches(&sel(&[], &[("env", DoesNotExist, &[])]), &l));
    }

    #[test]
    fn overlap() {
        use SelectorOperator::*;
        let prod = sel(&[("env", "prod")], &[]);
        let dev = sel(&[("env", "dev")], &[]);
        let linux = sel(&[("os.type", "linux")], &[]);
        assert!(!may_overlap(&prod, &dev));
        assert!(may_overlap(&prod, &linux));
        assert!(may_overlap(&prod, &sel(&[], &[])));
        assert!(!may_overlap(&prod, &sel(&[], &[("env", NotIn, &["prod"])])));
        assert!(!may_overlap(
            &prod,
            &sel(&[], &[("env", DoesNotExist, &[])])
        ));
        assert!(may_overlap(
            &sel(&[], &[("env", In, &["a", "b"])]),
            &sel(&[], &[("env", In, &["b", "c"])])
        ));
    }
}
