//! The command-line interface: the one clap definition ([`Cli`], [`command`]: `main`, the
//! shell completions, the man page and the tests all read it) and one module per subcommand,
//! each with its `Args` and `run`. Exit codes have one home: [`exit`].

pub mod agents;
pub mod client;
pub mod configurations;
pub mod describe;
pub mod duration;
pub mod events;
pub mod fsread;
pub mod generate;
pub mod output;
pub mod reconcile;
pub mod render;
pub mod resume;
pub mod revisions;
pub mod serve;
pub mod status;
pub mod sync;
pub mod validate;
pub mod wait;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// `gitamp`: its global flags and subcommands.
#[derive(Debug, Parser)]
#[command(
    name = "gitamp",
    version = crate::build_info::LONG_VERSION,
    about = "Run a fleet of OpenTelemetry collectors from Git (OpAMP server + GitOps reconciler)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand. The help lists them in this order: the server, the repository, the
/// running server, then the tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve OpAMP and the status API, keeping every agent in step with the repository.
    Serve(Box<serve::Args>),
    /// Check a config repository: schema, references, parameters, templates.
    Validate(validate::Args),
    /// Render the collector YAML of a configuration, or of the agent with given labels.
    Render(render::Args),
    /// Preview what the server would do with a repository change (`--dry-run`), per agent.
    Reconcile(reconcile::Args),
    /// Show a running server's sync status: revision, last fetch, errors, agents per status.
    Status(status::Args),
    /// List a running server's agents (status, configuration, labels, last seen).
    Agents(agents::Args),
    /// List a running server's configurations with their rollouts, or show one.
    Configurations(configurations::Args),
    /// Show one object of a running server in detail (`describe agent ID`).
    Describe(describe::Args),
    /// A running server's recent events, newest first.
    Events(events::Args),
    /// The revisions a running server saw, accepted or rejected, newest first, with how many
    /// agents applied each.
    #[command(visible_alias = "history")]
    Revisions(revisions::Args),
    /// Wait until every agent a revision targets applied it (exit 0), or it failed (exit 1).
    Wait(wait::Args),
    /// Have a running server fetch its Git source now, and wait for the result.
    Sync(sync::Args),
    /// Resume a configuration's halted rollout without a new commit.
    Resume(resume::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completion(generate::CompletionArgs),
    /// Print gitamp's man page (roff), or write every page into a folder (`--dir`).
    Man(generate::ManArgs),
    /// Measure hot paths (`bench repo`: load + validate + render of a synthetic repository).
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
}

/// The clap command, for generators (completions, man page) and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Run a parsed command line; an error is printed on one line and becomes its exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Validate(args) => validate::run(args),
        Command::Render(args) => render::run(args),
        Command::Reconcile(args) => reconcile::run(args),
        Command::Status(args) => status::run(args),
        Command::Agents(args) => agents::run(args),
        Command::Configurations(args) => configurations::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Events(args) => events::run(args),
        Command::Revisions(args) => revisions::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Wait(args) => wait::run(args),
        Command::Resume(args) => resume::run(args),
        Command::Completion(args) => generate::completion(args),
        Command::Man(args) => generate::man(args),
        Command::Bench { command } => crate::bench::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_line(&err));
            ExitCode::from(exit::of_error(&err))
        }
    }
}

/// An error and its causes on one line, each cause once: many of our error types already show
/// their cause in their own message (`reading x: No such file`), and printing the chain as is
/// would repeat it.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Process exit codes, the same for every subcommand (the README's table is this one):
///
/// | code | meaning |
/// |---|---|
/// | 0 | done: valid, listed, synced, resumed, nothing to change |
/// | 1 | the answer is no: an invalid repository, a rejected tip or a failed fetch, no such agent or configuration, nothing to resume |
/// | 2 | usage or I/O error: a bad flag (clap's own), an unreadable file, a server that cannot be reached, refuses the token or answers nonsense |
/// | 3 | changes pending (`reconcile --dry-run`) |
pub mod exit {
    use super::client::Refused;
    use reqwest::StatusCode;

    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const ERROR: u8 = 2;
    pub const CHANGES_PENDING: u8 = 3;

    /// An answer that is no (no such agent, a fetch that failed), reported as an error: exit 1.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Failed(pub String);

    /// The code of a command that ended in `err`: the server saying "no such thing" (404) or
    /// "not in that state" (409) is an answer (1); anything else kept the command from
    /// getting one (2).
    pub fn of_error(err: &anyhow::Error) -> u8 {
        if err.downcast_ref::<Failed>().is_some() {
            return FAILED;
        }
        match err.downcast_ref::<Refused>() {
            Some(r) if matches!(r.status, StatusCode::NOT_FOUND | StatusCode::CONFLICT) => FAILED,
            _ => ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client::Refused;
    use super::exit;

    #[test]
    fn a_no_from_the_server_is_exit_1_and_not_getting_an_answer_is_exit_2() {
        let refused = |status: reqwest::StatusCode| {
            anyhow::Error::new(Refused {
                status,
                url: "http://x/api".into(),
                message: "no".into(),
                hint: "",
            })
            .context("asking the server")
        };
        assert_eq!(exit::of_error(&refused(reqwest::StatusCode::NOT_FOUND)), 1);
        assert_eq!(exit::of_error(&refused(reqwest::StatusCode::CONFLICT)), 1);
        assert_eq!(
            exit::of_error(&refused(reqwest::StatusCode::UNAUTHORIZED)),
            2
        );
        assert_eq!(
            exit::of_error(&refused(reqwest::StatusCode::BAD_REQUEST)),
            2
        );
        let failed = anyhow::Error::new(exit::Failed("no agent".into()));
        assert_eq!(exit::of_error(&failed), 1);
        assert_eq!(exit::of_error(&anyhow::anyhow!("cannot read x")), 2);
    }

    #[test]
    fn an_error_line_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        #[derive(Debug, thiserror::Error)]
        #[error("reading /x: {source}")]
        struct Read {
            source: std::io::Error,
        }
        let err = anyhow::Error::new(Read { source: io }).context("cannot read repository /x");
        assert_eq!(
            super::error_line(&err),
            "cannot read repository /x: reading /x: No such file"
        );
    }
}
