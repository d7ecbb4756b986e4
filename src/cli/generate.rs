//! `gitamp completion SHELL` and `gitamp man`: generated from the one clap definition
//! ([`super::command`]), so they list exactly the commands and flags the binary parses.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

/// Print a completion script.
#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The completion script for `shell`, on stdout.
pub fn completion(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "gitamp", &mut out);
    write_stdout(&out)
}

/// Print the man page, or write every page to a folder.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `gitamp.1` and a page per subcommand (`gitamp-serve.1`, ...) into this folder
    /// instead of printing `gitamp.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// The man page (roff) on stdout (`gitamp man > gitamp.1`), or every page into `--dir`.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = args.dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(super::command(), &dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        return Ok(ExitCode::from(super::exit::OK));
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(super::command())
        .render(&mut out)
        .context("cannot render the man page")?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::from(super::exit::OK))
}
