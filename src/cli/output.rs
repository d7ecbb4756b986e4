//! The one output convention of every command that prints data (kubectl's): `-o table` (the
//! default, for people: at most [`TABLE_WIDTH`] columns, long cells cut with `…`), `-o wide`
//! (every column, nothing cut), `-o json` and `-o yaml` (the API's objects as they are, for
//! scripts).

use std::time::SystemTime;

use anyhow::Context;
use comfy_table::{ContentArrangement, Row, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

/// The widest a default table gets (or the terminal's width, when narrower).
pub const TABLE_WIDTH: u16 = 100;

/// `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// For people: the main columns, fitting 100 columns.
    #[default]
    Table,
    /// For people: every column, nothing cut.
    Wide,
    /// The API's JSON, for scripts.
    Json,
    /// The API's objects as YAML.
    Yaml,
}

/// The `-o/--output` flag, flattened into each command that prints data.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct OutputArgs {
    /// Output format: table (fits 100 columns), wide (every column), json or yaml (the API's
    /// objects as they are).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl Output {
    /// `value` as JSON or YAML for the machine formats; `None` for the tables, which each
    /// command draws itself.
    pub fn data(self, value: &impl Serialize) -> anyhow::Result<Option<String>> {
        match self {
            Output::Json => json(value).map(Some),
            Output::Yaml => {
                let text = serde_saphyr::to_string(value).context("cannot encode as YAML")?;
                Ok(Some(if text.ends_with('\n') {
                    text
                } else {
                    text + "\n"
                }))
            }
            Output::Table | Output::Wide => Ok(None),
        }
    }

    pub fn is_wide(self) -> bool {
        self == Output::Wide
    }

    /// JSON or YAML: output for scripts, nothing else on stdout.
    pub fn is_data(self) -> bool {
        matches!(self, Output::Json | Output::Yaml)
    }
}

/// Pretty JSON with a final newline.
pub fn json(value: &impl Serialize) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(value).context("cannot encode as JSON")?;
    s.push('\n');
    Ok(s)
}

/// A table in the house style. Not wide: at most [`TABLE_WIDTH`] columns (or the terminal's
/// width), each row on one line with long cells cut (`…`). Wide: every cell whole.
pub fn table<R: Into<Row>>(
    header: &[&str],
    rows: impl IntoIterator<Item = R>,
    wide: bool,
) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(header);
    if wide {
        table.set_content_arrangement(ContentArrangement::Disabled);
    } else {
        let width = table.width().map_or(TABLE_WIDTH, |w| w.min(TABLE_WIDTH));
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(width);
    }
    for row in rows {
        let mut row: Row = row.into();
        if !wide {
            row.max_height(1);
        }
        table.add_row(row);
    }
    format!("{table}\n")
}

/// `text` on one line, at most `max` characters, `…` where it was cut.
pub fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// `-` for nothing.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// An RFC 3339 time as `2026-12-04 10:00:00` (UTC, seconds), or the text as is.
pub fn timestamp(text: &str) -> String {
    text.split('.')
        .next()
        .unwrap_or_default()
        .trim_end_matches('Z')
        .replace('T', " ")
}

/// How long ago an RFC 3339 time was, kubectl's way: `42s`, `5m`, `3h`, `2d`; the time itself
/// when it cannot be read.
/// When something happened, as a table shows it: its age (`5m`), or with `wide` the time.
pub fn when(text: &str, wide: bool) -> String {
    if wide { timestamp(text) } else { age(text) }
}

pub fn age(text: &str) -> String {
    let Ok(then) =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    else {
        return timestamp(text);
    };
    let now = time::OffsetDateTime::from(SystemTime::now());
    let secs = (now - then).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The last group of a UUID: UUIDv7 instance UIDs begin with a timestamp, so agents started
/// together share their first digits, while the last 12 are random.
pub fn short_uid(uid: &str) -> &str {
    uid.rsplit('-').next().unwrap_or(uid)
}

/// The first 12 digits of a config hash, as events and logs print it.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_table_fits_its_width_and_a_wide_one_keeps_everything() {
        let long = "x".repeat(300);
        let rows = vec![vec!["a".to_string(), long.clone(), "b c d e f".repeat(20)]];
        let narrow = table(&["ONE", "TWO", "THREE"], rows.clone(), false);
        for line in narrow.lines() {
            assert!(line.chars().count() <= 100, "{line}");
        }
        assert_eq!(narrow.lines().count(), 5, "one line per row:\n{narrow}");
        let wide = table(&["ONE", "TWO", "THREE"], rows, true);
        assert!(wide.contains(&long), "{wide}");
    }

    #[test]
    fn shortened_text_is_one_line() {
        assert_eq!(shorten("a\n b", 10), "a b");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
