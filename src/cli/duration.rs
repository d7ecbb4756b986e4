//! Duration flags: `--poll 1m`, `--heartbeat 30s`, `--otelcol-timeout 90s`.
//!
//! The forms are the repository format's (Go's, as in Flux and Argo CD flags), through the one
//! parser in `gitamp_core::duration`; a bare number keeps meaning seconds, as these flags did
//! before. Zero is refused: every duration flag is an interval or a time limit, and neither
//! means anything at zero.

use std::time::Duration;

use gitamp_core::duration::{DurationError, parse_flag_duration};

/// What the help text and the error messages name as the accepted forms.
pub const FORMS: &str = "30s, 1m, 500ms, 1h30m; a bare number is seconds";

/// A clap value parser: any duration, zero included. Only for `--otelcol-timeout`, whose zero
/// (no time at all: every run is killed) tests/otelcol_validate.rs uses to reach the timeout
/// path; [`positive`] once that test says `1ms`.
pub fn zero_or_more(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::ZERO)
}

/// A clap value parser: a positive duration.
pub fn positive(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_nanos(1))
}

/// A clap value parser: a duration of at least one second (agents count heartbeats, and Git
/// remotes are polled, in whole seconds at best).
pub fn at_least_a_second(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_secs(1))
}

fn at_least(s: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_flag_duration(s).map_err(|err| match err {
        DurationError::Empty => format!("expected a duration ({FORMS})"),
        DurationError::Syntax(_) => format!("not a duration; expected one such as {FORMS}"),
        DurationError::Overflow(_) => "too long a duration".to_owned(),
    })?;
    if d.is_zero() && !min.is_zero() {
        return Err(format!("must be more than zero ({FORMS})"));
    }
    if d < min {
        return Err(format!(
            "must be at least {}",
            gitamp_core::duration::format_duration(min)
        ));
    }
    Ok(d)
}

/// A duration as a command-line value this module reads back (for child processes).
pub fn to_arg(d: Duration) -> String {
    gitamp_core::duration::format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms() {
        assert_eq!(positive("30"), Ok(Duration::from_secs(30)));
        assert_eq!(positive("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(positive("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(at_least_a_second("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(at_least_a_second("1"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn refuses_zero_negative_and_junk() {
        for bad in ["0", "0s", "-5s", "5x", "", "1.5"] {
            let err = positive(bad).expect_err(bad);
            assert!(err.contains("30s, 1m, 500ms, 1h30m"), "{bad}: {err}");
        }
        assert_eq!(
            at_least_a_second("500ms"),
            Err("must be at least 1s".to_owned())
        );
        assert_eq!(to_arg(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(zero_or_more("0"), Ok(Duration::ZERO));
        assert!(zero_or_more("-1s").is_err());
    }
}
