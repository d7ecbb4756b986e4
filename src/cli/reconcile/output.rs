//! The dry run for people: text (a terminal, colour only when it is one) and markdown (a pull
//! request comment or a workflow step summary). Both are printed from the same [`Report`] as
//! `--format json`, so the three never disagree. Diffs are of masked YAML only.

use std::fmt::Write as _;
use std::path::Path;

use gitamp_core::Rejected;
use gitamp_core::plan::StatusCounts;

use super::{
    AgentAction, AgentChange, AgentRef, ComponentChanges, ConfigurationReport, Format, Report,
    short,
};
use crate::cli::validate;

/// GitHub truncates a step summary past 1 MiB; one diff larger than this is cut in markdown.
const MARKDOWN_DIFF_LIMIT: usize = 60_000;

/// The diagnostics of an invalid working tree, in the requested format.
pub(super) fn invalid(root: &Path, rejected: &Rejected, format: Format) -> anyhow::Result<String> {
    let diags = &rejected.diagnostics;
    Ok(match format {
        Format::Text => validate::text(root, &rejected.revision, diags, false),
        Format::Json => {
            let value = serde_json::json!({
                "format_version": super::JSON_FORMAT_VERSION,
                "valid": false,
                "path": root.to_string_lossy(),
                "revision": rejected.revision,
                "changes_pending": false,
                "errors": diags.errors().count(),
                "warnings": diags.warnings().count(),
                "diagnostics": diags,
            });
            serde_json::to_string_pretty(&value)? + "\n"
        }
        Format::Markdown => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "## gitamp dry run: invalid repository\n\n{} error(s), {} warning(s); nothing \
                 would be served until they are fixed.\n",
                diags.errors().count(),
                diags.warnings().count()
            );
            out.push_str("| Severity | Location | Code | Message |\n|---|---|---|---|\n");
            for d in diags.iter() {
                let _ = writeln!(
                    out,
                    "| {} | `{}:{}:{}` | {} {} | {} |",
                    match d.severity {
                        gitamp_core::Severity::Error => "error",
                        gitamp_core::Severity::Warning => "warning",
                    },
                    validate::display_path(root, &d.location.file),
                    d.location.line,
                    d.location.column,
                    d.code,
                    d.name,
                    cell(&d.message)
                );
            }
            out
        }
    })
}

/// ANSI styling, or none.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    fn cyan(&self, s: &str) -> String {
        self.paint("36", s)
    }
}

/// Where the plan comes from; `code` formats names and revisions (backticks in markdown).
fn header_lines(report: &Report, code: fn(&str) -> String) -> Vec<String> {
    let mut lines = vec![format!(
        "repository {} (revision {})",
        code(&report.path),
        code(short(&report.revision))
    )];
    if let Some(b) = &report.base {
        lines.push(format!(
            "compared with {} ({}){}",
            code(&b.reference),
            code(short(&b.revision)),
            if b.valid {
                ""
            } else {
                "; it does not compile, every configuration counts as added"
            }
        ));
    }
    if let Some(f) = &report.fleet {
        let from = if f.source == "server" {
            format!(
                "the server at {} (serving {})",
                code(&f.location),
                code(
                    f.server_revision
                        .as_deref()
                        .map(short)
                        .unwrap_or("nothing yet")
                )
            )
        } else {
            format!("the agents file {}", code(&f.location))
        };
        lines.push(format!("fleet: {} agent(s) from {from}", f.agents));
    }
    lines
}

fn components_line(c: &ComponentChanges) -> Vec<(char, String)> {
    let mut out = Vec::new();
    out.extend(c.added.iter().map(|r| ('+', r.to_string())));
    out.extend(c.removed.iter().map(|r| ('-', r.to_string())));
    out.extend(c.changed.iter().map(|r| ('~', r.to_string())));
    out
}

fn agent_line(a: &AgentChange) -> String {
    let mut s = format!("{:<4}  {}", a.action.as_str(), a.instance_uid);
    if let Some(n) = &a.name {
        let _ = write!(s, " ({n})");
    }
    let _ = write!(s, "  {}", a.status.as_str());
    match &a.current_hash {
        Some(h) => {
            let _ = write!(s, ", runs {}", short(h));
        }
        None => s.push_str(", runs nothing of ours"),
    }
    if let Some(d) = &a.detail {
        let _ = write!(s, " ({d})");
    }
    s
}

fn counts_line(c: &StatusCounts) -> String {
    gitamp_core::plan::SyncStatus::ALL
        .iter()
        .filter_map(|s| {
            let n = c.get(*s);
            (n > 0).then(|| format!("{n} {}", s.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary_sentence(report: &Report) -> String {
    let s = &report.summary;
    let mut parts = Vec::new();
    if report.base.is_some() {
        parts.push(format!(
            "configurations: {} added, {} removed, {} changed, {} unchanged",
            s.configurations_added,
            s.configurations_removed,
            s.configurations_changed,
            s.configurations_unchanged
        ));
    }
    if report.fleet.is_some() {
        let counts = counts_line(&s.by_status);
        parts.push(format!(
            "agents: {} total, {} to update ({} now, {} waiting for the rollout){}",
            s.agents_total,
            s.agents_to_update,
            s.agents_push,
            s.agents_wait,
            if counts.is_empty() {
                String::new()
            } else {
                format!("; by status: {counts}")
            }
        ));
    }
    parts.join("\n")
}

/// `1.0.0 -> 2.0.0`, `none -> 1.0.0`, `1.0.0 (redeclared: new URL or hash)`.
fn version_text(v: &super::VersionChange) -> String {
    let from = v.from.as_deref().unwrap_or("none");
    let to =
        v.to.as_deref()
            .unwrap_or("none (agents keep what they run)");
    if v.redeclared {
        format!("{to} (redeclared: new URL or hash)")
    } else {
        format!("{from} -> {to}")
    }
}

fn change_label(c: &ConfigurationReport) -> &'static str {
    match c.change {
        Some(ch) => ch.as_str(),
        None if c.agents.is_empty() => "no agents to update",
        None => "agents to update",
    }
}

/// Plain text; with `colour`, ANSI colours (only ever on a terminal).
pub(super) fn text(report: &Report, colour: bool) -> String {
    let st = Style { on: colour };
    let mut out = String::new();
    let _ = writeln!(out, "{}", st.bold("gitamp reconcile --dry-run"));
    for l in header_lines(report, str::to_string) {
        let _ = writeln!(out, "{l}");
    }
    for c in &report.configurations {
        out.push('\n');
        let label = change_label(c);
        let painted = match label {
            "added" => st.green(label),
            "removed" => st.red(label),
            _ => st.yellow(label),
        };
        let hashes = match (&c.base_hash, &c.hash) {
            (Some(a), Some(b)) if a != b => format!("  {} -> {}", short(a), short(b)),
            (_, Some(b)) => format!("  {}", short(b)),
            (Some(a), None) => format!("  was {}", short(a)),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "{} {}: {painted}{hashes}",
            st.bold("configuration"),
            st.bold(&c.name)
        );
        if let Some(with) = &c.compared_with {
            let _ = writeln!(out, "  compared with {with}");
        }
        if let Some(v) = &c.version {
            let _ = writeln!(out, "  agent version: {}", version_text(v));
        }
        let comps = components_line(&c.components);
        if !comps.is_empty() {
            let _ = writeln!(out, "  components:");
            for (sign, r) in comps {
                let line = format!("    {sign} {r}");
                let _ = writeln!(
                    out,
                    "{}",
                    match sign {
                        '+' => st.green(&line),
                        '-' => st.red(&line),
                        _ => st.yellow(&line),
                    }
                );
            }
        }
        if c.only_sensitive_values_changed {
            let _ = writeln!(out, "  only sensitive values changed (masked in the diff)");
        }
        if let Some(t) = &c.telemetry {
            let _ = writeln!(out, "  own telemetry: {}", st.yellow(&t.line()));
        }
        if let Some(counts) = &c.counts {
            let line = counts_line(counts);
            let _ = writeln!(
                out,
                "  agents: {} to update{}",
                c.agents.len(),
                if line.is_empty() {
                    String::new()
                } else {
                    format!(" (selected: {line})")
                }
            );
            for a in &c.agents {
                let _ = writeln!(out, "    {}", agent_line(a));
            }
        }
        if let Some(diff) = c.diff.as_deref().filter(|d| !d.is_empty()) {
            let _ = writeln!(
                out,
                "  diff of the rendered YAML (sensitive values masked):"
            );
            for line in diff.lines() {
                let painted = if line.starts_with("+++") || line.starts_with("---") {
                    st.bold(line)
                } else if line.starts_with('+') {
                    st.green(line)
                } else if line.starts_with('-') {
                    st.red(line)
                } else if line.starts_with("@@") {
                    st.cyan(line)
                } else {
                    line.to_string()
                };
                let _ = writeln!(out, "    {painted}");
            }
        }
    }
    if !report.conflicts.is_empty() {
        let _ = writeln!(
            out,
            "\n{} ({}):",
            st.bold("conflicts"),
            report.conflicts.len()
        );
        for a in &report.conflicts {
            let _ = writeln!(
                out,
                "  {}: selected by {} at the same priority; nothing is pushed to it",
                agent_name(a),
                a.configurations.join(", ")
            );
        }
    }
    if !report.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "\n{} ({}):",
            st.bold("unmanaged"),
            report.unmanaged.len()
        );
        for a in &report.unmanaged {
            let _ = writeln!(
                out,
                "  {}: no configuration selects it ({}); it keeps what it runs",
                agent_name(a),
                labels_text(a)
            );
        }
    }
    let _ = writeln!(out, "\n{}", summary_sentence(report));
    let verdict = if report.changes_pending {
        st.yellow("changes pending")
    } else {
        st.green("nothing to change")
    };
    let _ = writeln!(out, "{verdict}");
    out
}

fn agent_name(a: &AgentRef) -> String {
    match &a.name {
        Some(n) => format!("{} ({n})", a.instance_uid),
        None => a.instance_uid.clone(),
    }
}

fn labels_text(a: &AgentRef) -> String {
    if a.labels.is_empty() {
        return "no labels".into();
    }
    a.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text safe inside a markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A fence longer than any backtick run in `body`, so the body cannot close it.
fn fence_for(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for ch in body.chars() {
        run = if ch == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

/// A pull request comment: a heading, a summary table, one section per configuration with its
/// agents and a collapsed diff, then conflicts and unmanaged agents.
pub(super) fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let mut headline = Vec::new();
    if report.base.is_some() {
        let n = s.configurations_added + s.configurations_removed + s.configurations_changed;
        headline.push(format!("{n} configuration(s) change"));
    }
    if report.fleet.is_some() {
        headline.push(format!("{} agent(s) to update", s.agents_to_update));
    }
    let _ = writeln!(out, "## gitamp dry run: {}\n", headline.join(", "));
    for l in header_lines(report, |s| format!("`{s}`")) {
        let _ = writeln!(out, "- {l}");
    }
    out.push('\n');
    if report.configurations.is_empty() {
        out.push_str("Nothing to change.\n");
    } else {
        out.push_str("| Configuration | Change | Components (+ / - / ~) |");
        if report.fleet.is_some() {
            out.push_str(" Agents to update | Now | Waiting |");
        }
        out.push('\n');
        out.push_str("|---|---|---|");
        if report.fleet.is_some() {
            out.push_str("---:|---:|---:|");
        }
        out.push('\n');
        for c in &report.configurations {
            // Without anything to compare with (no base, unknown current rendering) the
            // component counts would be a misleading 0 / 0 / 0.
            let comps = if c.diff.is_some() {
                format!(
                    "{} / {} / {}",
                    c.components.added.len(),
                    c.components.removed.len(),
                    c.components.changed.len()
                )
            } else {
                "unknown".to_string()
            };
            let _ = write!(out, "| `{}` | {} | {comps} |", c.name, change_label(c));
            if report.fleet.is_some() {
                let push = c
                    .agents
                    .iter()
                    .filter(|a| a.action == AgentAction::Push)
                    .count();
                let _ = write!(
                    out,
                    " {} | {} | {} |",
                    c.agents.len(),
                    push,
                    c.agents.len() - push
                );
            }
            out.push('\n');
        }
    }
    for c in &report.configurations {
        let _ = writeln!(out, "\n### `{}`: {}\n", c.name, change_label(c));
        match (&c.base_hash, &c.hash) {
            (Some(a), Some(b)) if a != b => {
                let _ = writeln!(out, "Hash `{}` → `{}`.", short(a), short(b));
            }
            (_, Some(b)) => {
                let _ = writeln!(out, "Hash `{}`.", short(b));
            }
            (Some(a), None) => {
                let _ = writeln!(out, "Was `{}`.", short(a));
            }
            (None, None) => {}
        }
        if let Some(with) = &c.compared_with {
            let _ = writeln!(out, "Compared with {with}.");
        }
        let comps = components_line(&c.components);
        if !comps.is_empty() {
            out.push('\n');
            for (sign, r) in comps {
                let word = match sign {
                    '+' => "added",
                    '-' => "removed",
                    _ => "changed",
                };
                let _ = writeln!(out, "- {word}: `{r}`");
            }
        }
        if c.only_sensitive_values_changed {
            out.push_str("\nOnly sensitive values changed (they are masked below).\n");
        }
        if let Some(v) = &c.version {
            let _ = writeln!(out, "\nAgent version: {}.", version_text(v));
        }
        if let Some(t) = &c.telemetry {
            let _ = writeln!(out, "\nOwn telemetry: {}.", t.line());
        }
        if let Some(counts) = &c.counts {
            let line = counts_line(counts);
            let _ = writeln!(
                out,
                "\n{} agent(s) to update{}.",
                c.agents.len(),
                if line.is_empty() {
                    String::new()
                } else {
                    format!("; it selects {line}")
                }
            );
            if !c.agents.is_empty() {
                out.push_str("\n| Agent | Action | Status | Runs now |\n|---|---|---|---|\n");
                for a in &c.agents {
                    let _ = writeln!(
                        out,
                        "| `{}`{} | {} | {}{} | {} |",
                        a.instance_uid,
                        a.name
                            .as_deref()
                            .map(|n| format!(" ({})", cell(n)))
                            .unwrap_or_default(),
                        if a.action == AgentAction::Push {
                            "push now"
                        } else {
                            "wait for rollout"
                        },
                        a.status.as_str(),
                        a.detail
                            .as_deref()
                            .map(|d| format!(": {}", cell(d)))
                            .unwrap_or_default(),
                        a.current_hash
                            .as_deref()
                            .map(|h| format!("`{}`", short(h)))
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        if let Some(diff) = c.diff.as_deref().filter(|d| !d.is_empty()) {
            let (body, cut) = if diff.len() > MARKDOWN_DIFF_LIMIT {
                let mut end = MARKDOWN_DIFF_LIMIT;
                while !diff.is_char_boundary(end) {
                    end -= 1;
                }
                (&diff[..end], true)
            } else {
                (diff, false)
            };
            let fence = fence_for(body);
            let _ = writeln!(
                out,
                "\n<details><summary>Diff of the rendered YAML (sensitive values masked)</summary>\n\n{fence}diff\n{}{}{fence}\n{}\n</details>",
                body,
                if body.ends_with('\n') { "" } else { "\n" },
                if cut {
                    "\n(diff cut; run `gitamp reconcile --dry-run` locally for all of it)\n"
                } else {
                    ""
                }
            );
        }
    }
    if !report.conflicts.is_empty() {
        out.push_str("\n### Conflicts\n\nNothing is pushed to these agents until one configuration has a higher priority.\n\n| Agent | Configurations |\n|---|---|\n");
        for a in &report.conflicts {
            let _ = writeln!(
                out,
                "| `{}` | {} |",
                cell(&agent_name(a)),
                a.configurations
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !report.unmanaged.is_empty() {
        out.push_str("\n### Unmanaged agents\n\nNo configuration selects them; they keep what they run.\n\n| Agent | Labels |\n|---|---|\n");
        for a in &report.unmanaged {
            let _ = writeln!(
                out,
                "| `{}` | {} |",
                cell(&agent_name(a)),
                cell(&labels_text(a))
            );
        }
    }
    let _ = writeln!(
        out,
        "\n**Summary.** {}\n\n{}",
        summary_sentence(report).replace('\n', "; "),
        if report.changes_pending {
            "Changes pending."
        } else {
            "Nothing to change."
        }
    );
    out
}
