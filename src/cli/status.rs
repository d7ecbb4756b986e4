//! `gitamp status`: a running server's sync status (revision, source, last fetch, errors, the
//! last rejected revision's diagnostics, agents per status) from its status API.
//!
//! Exit codes: 0 shown, 1 the repository's tip is rejected (a rejection newer than the served
//! revision), 2 error (server unreachable, refused, or an unexpected answer).

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use super::client::{Client, ServerArgs};
use super::output::OutputArgs;
use crate::api::model::StatusResponse;

/// Show the server's sync status.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// `table` and `wide` print text for people; `json` and `yaml` the API's answer as is.
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let raw: serde_json::Value = client.get("/api/v1/status", &[])?;
    let status: StatusResponse = serde_json::from_value(raw.clone())
        .context("the server's status has an unexpected shape")?;
    let out = match args.output.output.data(&raw)? {
        Some(data) => data,
        None => text(&status),
    };
    print!("{out}");
    // A script asking "is the repository's tip being served?" reads the exit code.
    let code = if tip_rejected(&status) {
        super::exit::FAILED
    } else {
        super::exit::OK
    };
    Ok(ExitCode::from(code))
}

/// Whether the repository's tip is not what agents get, by the server's one rule
/// ([`crate::server::state::tip_rejected`]) over the times the status carries.
pub fn tip_rejected(s: &StatusResponse) -> bool {
    let rejected_at = s.last_rejected.as_ref().map(|r| parse_time(&r.at));
    let accepted_at = s.accepted_at.as_deref().map(parse_time);
    match (rejected_at, accepted_at) {
        // Unreadable times: say what the server says, the rejection is there.
        (Some(None), _) | (Some(_), Some(None)) => true,
        (rejected_at, accepted_at) => {
            crate::server::state::tip_rejected(rejected_at.flatten(), accepted_at.flatten())
        }
    }
}

/// An RFC 3339 time as the API writes it.
pub fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// The status for people, one fact per line.
pub fn text(s: &StatusResponse) -> String {
    let mut o = String::new();
    let none = || "-".to_string();
    let revision = match (&s.current_revision, &s.accepted_at) {
        (Some(r), Some(at)) => format!("{r} (accepted {at})"),
        (Some(r), None) => r.clone(),
        _ => "none accepted yet".to_string(),
    };
    let _ = writeln!(o, "revision:        {revision}");
    let mut source = s.source.clone();
    if let Some(r) = &s.reference {
        let _ = write!(source, " @ {r}");
    }
    if let Some(p) = &s.sub_path {
        let _ = write!(source, " (path {p})");
    }
    let _ = writeln!(o, "source:          {source}");
    let fetch = match (&s.last_fetch, s.last_fetch_duration_ms) {
        (Some(at), Some(ms)) => format!("{at} ({ms} ms)"),
        (Some(at), None) => at.clone(),
        _ => none(),
    };
    let _ = writeln!(o, "last fetch:      {fetch}");
    if let Some(e) = &s.last_error {
        let _ = writeln!(o, "last error:      {e}");
    }
    if s.consecutive_failures > 0 {
        let _ = writeln!(
            o,
            "failures:        {} in a row, next retry {}",
            s.consecutive_failures,
            s.next_retry.clone().unwrap_or_else(none)
        );
    }
    if let Some(r) = &s.last_rejected {
        // An old rejection (a newer revision was accepted since) must not read as the news.
        let when = if tip_rejected(s) {
            "the repository's tip is not served"
        } else {
            "older than the served revision"
        };
        let _ = writeln!(
            o,
            "last rejected:   {} at {} ({} error(s), {} warning(s)); {when}",
            r.revision, r.at, r.errors, r.warnings
        );
        for d in &r.diagnostics {
            let _ = writeln!(
                o,
                "  {}:{}:{}: {}[{} {}]: {}",
                d.file, d.line, d.column, d.severity, d.code, d.name, d.message
            );
        }
    }
    if !s.warnings.is_empty() {
        let _ = writeln!(o, "warnings:        {}", s.warnings.len());
        for d in &s.warnings {
            let _ = writeln!(
                o,
                "  {}:{}:{}: {}[{} {}]: {}",
                d.file, d.line, d.column, d.severity, d.code, d.name, d.message
            );
        }
    }
    let _ = writeln!(o, "configurations:  {}", s.configurations);
    let _ = writeln!(
        o,
        "agents:          {} ({} connected)",
        s.agents.total, s.agents.connected
    );
    let counts: Vec<String> = s
        .agents
        .by_status
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !counts.is_empty() {
        let _ = writeln!(o, "  {}", counts.join(", "));
    }
    if let Some(c) = &s.cluster {
        let _ = writeln!(
            o,
            "fleet:           {} agents ({} connected) over {} replicas",
            c.fleet_agents,
            c.fleet_connected,
            c.replicas.len()
        );
        let counts: Vec<String> = c
            .fleet_by_status
            .iter()
            .flatten()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !counts.is_empty() {
            let _ = writeln!(o, "  {}", counts.join(", "));
        }
        for r in &c.replicas {
            let _ = writeln!(
                o,
                "  {}{} {} opamp={} api={} agents={} heartbeat={}",
                r.id,
                if r.this { " (this)" } else { "" },
                r.role,
                r.opamp_address,
                r.api_address,
                r.agents,
                r.last_heartbeat
            );
        }
    }
    let up = s.uptime_seconds;
    let _ = writeln!(
        o,
        "uptime:          {}h{:02}m{:02}s",
        up / 3600,
        (up / 60) % 60,
        up % 60
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::RevisionItem;

    fn status(rejected_at: Option<&str>, accepted_at: Option<&str>) -> StatusResponse {
        StatusResponse {
            accepted_at: accepted_at.map(str::to_string),
            last_rejected: rejected_at.map(|at| RevisionItem {
                revision: "bad".into(),
                at: at.into(),
                accepted: false,
                errors: 1,
                warnings: 0,
                diagnostics: Vec::new(),
                convergence: None,
                commit: None,
            }),
            ..StatusResponse::default()
        }
    }

    #[test]
    fn the_tip_is_rejected_only_when_the_rejection_is_newer_than_what_is_served() {
        let early = "2026-12-04T10:00:00Z";
        let late = "2026-12-04T10:00:00.5Z";
        assert!(!tip_rejected(&status(None, Some(early))));
        assert!(tip_rejected(&status(Some(early), None)), "nothing served");
        assert!(tip_rejected(&status(Some(late), Some(early))));
        assert!(
            !tip_rejected(&status(Some(early), Some(late))),
            "an old rejection"
        );
        let old = text(&status(Some(early), Some(late)));
        assert!(old.contains("older than the served revision"), "{old}");
        let news = text(&status(Some(late), Some(early)));
        assert!(
            news.contains("the repository's tip is not served"),
            "{news}"
        );
    }
}
