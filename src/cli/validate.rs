//! `gitamp validate [PATH] [--format text|json|github]`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Check a config repository and print every diagnostic.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository folder.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = args;
    Ok(ExitCode::from(super::exit::OK))
}
