//! `gitamp render [PATH] --configuration NAME | --labels k=v,...`.
//!
//! Shows the collector YAML exactly as the server would compute it (same `gitamp_core::compile`
//! and the same selection rule as the plan), so an operator can check a change before pushing.
//!
//! - Output is the **masked** YAML (sensitive parameters as `***`): what is safe to paste in a
//!   ticket. `--unmasked` prints the form agents receive, secrets included; use it only where
//!   the terminal and the logs are trusted.
//! - The config hash (sha-256 of the OpAMP config map, what agents report back) goes to stderr
//!   so that stdout stays pure YAML; `--show-hash` prints only the hash, on stdout, for scripts.
//! - Exit codes: 0 rendered; 1 the repository has errors, no configuration matches the labels,
//!   several match at the same priority (a conflict), or the named configuration does not
//!   exist; 2 usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use gitamp_core::compile;
use gitamp_core::plan::select::{Selection, select};
use gitamp_core::plan::selector::Labels;

use super::exit;

/// Print the collector YAML a configuration renders to.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["configuration", "labels"])))]
pub struct Args {
    /// The repository folder.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Render this configuration.
    #[arg(long, short = 'c', value_name = "NAME")]
    pub configuration: Option<String>,
    /// Render what an agent with these labels would get (`deployment.environment=production,os.type=linux`).
    #[arg(long, short = 'l', value_name = "K=V,...", value_parser = parse_labels)]
    pub labels: Option<Labels>,
    /// Print the YAML agents receive, sensitive values included (default: masked with `***`).
    #[arg(long)]
    pub unmasked: bool,
    /// Print only the config hash on stdout instead of the YAML.
    #[arg(long)]
    pub show_hash: bool,
}

/// Parse `k=v,k2=v2` (values may contain `=`; an empty string is no labels).
fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{pair}` has an empty key"));
        }
        labels.insert(k.to_string(), v.trim().to_string());
    }
    Ok(labels)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let snapshot = super::fsread::read_dir_snapshot(&args.path)?;
    let revision = match compile(&snapshot) {
        Ok(r) => r,
        Err(rejected) => {
            eprint!("{}", rejected.diagnostics);
            eprintln!(
                "error: {} has {} error(s); nothing rendered",
                args.path.display(),
                rejected.diagnostics.errors().count()
            );
            return Ok(ExitCode::from(exit::FAILED));
        }
    };
    eprint!("{}", revision.warnings);

    let name = match (&args.configuration, &args.labels) {
        (Some(name), _) => name.clone(),
        (None, Some(labels)) => match select(revision.catalog.configurations.values(), labels) {
            Selection::One(name) => {
                eprintln!("selected configuration: {name}");
                name
            }
            Selection::None => {
                eprintln!(
                    "no configuration selects an agent with labels {}",
                    show(labels)
                );
                return Ok(ExitCode::from(exit::FAILED));
            }
            Selection::Conflict(names) => {
                eprintln!(
                    "conflict: configurations {} all select an agent with labels {} at the \
                         same priority; such an agent gets nothing until one has a higher \
                         priority",
                    names.join(", "),
                    show(labels)
                );
                return Ok(ExitCode::from(exit::FAILED));
            }
        },
        (None, None) => bail!("give --configuration NAME or --labels k=v,..."),
    };
    let Some(rendered) = revision.rendered.configurations.get(&name) else {
        let known: Vec<&str> = revision
            .rendered
            .configurations
            .keys()
            .map(String::as_str)
            .collect();
        eprintln!(
            "no configuration named `{name}`; the repository has: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return Ok(ExitCode::from(exit::FAILED));
    };
    if args.show_hash {
        println!("{}", rendered.hash);
    } else {
        eprintln!("config hash: {}", rendered.hash);
        let yaml = if args.unmasked {
            &rendered.yaml
        } else {
            &rendered.masked_yaml
        };
        print!("{yaml}");
    }
    Ok(ExitCode::from(exit::OK))
}

fn show(labels: &Labels) -> String {
    if labels.is_empty() {
        return "(none)".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        let l = parse_labels("deployment.environment=production, os.type=linux,x=a=b").unwrap();
        assert_eq!(l["deployment.environment"], "production");
        assert_eq!(l["os.type"], "linux");
        assert_eq!(l["x"], "a=b");
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("=v").is_err());
    }
}
