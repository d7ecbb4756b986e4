//! Which configuration an agent gets: the one whose selector matches its labels, highest
//! `priority` first; several at the top priority are a conflict and the agent gets nothing.
//!
//! Used by `gitamp render --labels` and by the plan, so the CLI shows exactly what the server
//! would pick.

use crate::catalog::model::Configuration;
use crate::plan::selector::{Labels, matches};

/// The outcome of selecting a configuration for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// No configuration selects the agent (it is unmanaged).
    None,
    /// Exactly one configuration wins, by name.
    One(String),
    /// Several configurations select the agent at the same, highest priority; names sorted.
    Conflict(Vec<String>),
}

/// Select the configuration for an agent with `labels`.
pub fn select<'a>(configs: impl Iterator<Item = &'a Configuration>, labels: &Labels) -> Selection {
    let mut best: Option<i64> = None;
    let mut winners: Vec<&str> = Vec::new();
    for c in configs {
        if !matches(&c.spec.selector, labels) {
            continue;
        }
        let p = c.spec.priority;
        match best {
            Some(b) if p < b => {}
            Some(b) if p == b => winners.push(&c.metadata.name),
            _ => {
                best = Some(p);
                winners.clear();
                winners.push(&c.metadata.name);
            }
        }
    }
    winners.sort_unstable();
    winners.dedup();
    match winners.as_slice() {
        [] => Selection::None,
        [one] => Selection::One((*one).to_string()),
        many => Selection::Conflict(many.iter().map(|s| s.to_string()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{ConfigurationSpec, Metadata, Selector};

    fn config(name: &str, labels: &[(&str, &str)], priority: i64) -> Configuration {
        Configuration {
            metadata: Metadata {
                name: name.into(),
                ..Default::default()
            },
            spec: ConfigurationSpec {
                selector: Selector {
                    match_labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    match_expressions: vec![],
                },
                priority,
                ..Default::default()
            },
            origin: Default::default(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn priority_then_conflict() {
        let cs = [
            config("base", &[], 0),
            config("prod", &[("env", "prod")], 10),
            config("prod-linux", &[("env", "prod"), ("os", "linux")], 20),
            config("prod-linux-b", &[("env", "prod"), ("os", "linux")], 20),
        ];
        let sel = |l: &[(&str, &str)]| select(cs.iter(), &labels(l));
        assert_eq!(sel(&[("env", "dev")]), Selection::One("base".into()));
        assert_eq!(sel(&[("env", "prod")]), Selection::One("prod".into()));
        assert_eq!(
            sel(&[("env", "prod"), ("os", "linux")]),
            Selection::Conflict(vec!["prod-linux".into(), "prod-linux-b".into()])
        );
        assert_eq!(select(cs[1..2].iter(), &labels(&[])), Selection::None);
        let neg = [config("low", &[], -5)];
        assert_eq!(
            select(neg.iter(), &labels(&[])),
            Selection::One("low".into())
        );
    }
}
