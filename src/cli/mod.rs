//! The command-line interface: one module per subcommand, each with its `Args` and `run`.
//!
//! Exit codes: 0 success (valid / nothing to change), 1 invalid input (a repository with
//! errors), 2 usage or I/O error; `reconcile --dry-run` adds 3 (changes pending).

pub mod agents;
pub mod duration;
pub mod fsread;
pub mod reconcile;
pub mod render;
pub mod serve;
pub mod status;
pub mod validate;

/// Process exit codes shared by every subcommand.
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

pub mod exit {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const ERROR: u8 = 2;
    pub const CHANGES_PENDING: u8 = 3;
}

#[cfg(test)]
mod tests {
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
