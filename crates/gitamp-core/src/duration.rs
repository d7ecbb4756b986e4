//! Durations as people write them: Go's `time.ParseDuration` syntax (`30s`, `1m30s`, `500ms`).
//!
//! One parser for the repository format (a `duration` parameter must be something the
//! collector, a Go program, accepts) and for the command line (`gitamp serve --poll 1m`), so a
//! duration means the same in both places.

use std::time::Duration;

/// The units Go accepts, longest spelling first so `ms` is not read as `m`.
const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 micro sign
    ("μs", 1_000), // U+03BC Greek mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration")]
    Empty,
    /// A number without a unit, a unit without a number, or an unknown unit.
    #[error("`{0}` is not a duration (a number and a unit: ns, us, ms, s, m, h)")]
    Syntax(String),
    /// More than Go's `time.Duration` holds (about 292 years).
    #[error("`{0}` is too long a duration")]
    Overflow(String),
}

/// A parsed Go duration: Go durations may be negative, [`Duration`] may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// True for a leading `-` on a non-zero value.
    pub negative: bool,
    /// The magnitude.
    pub magnitude: Duration,
}

/// Parses a Go duration (`time.ParseDuration`): `0`, or an optionally signed sequence of
/// decimal numbers, each with a unit among ns, us, µs, ms, s, m, h (`300ms`, `1.5h`, `2h45m`).
/// Like Go, a value past `i64` nanoseconds is an error.
pub fn parse_go_duration(s: &str) -> Result<GoDuration, DurationError> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if body == "0" {
        return Ok(GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        });
    }
    if body.is_empty() {
        return Err(if s.is_empty() {
            DurationError::Empty
        } else {
            DurationError::Syntax(s.to_owned())
        });
    }
    let syntax = || DurationError::Syntax(s.to_owned());
    let overflow = || DurationError::Overflow(s.to_owned());
    let mut total: u64 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(tail) => {
                let len = tail
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(tail.len());
                tail.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax());
        }
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| after.starts_with(u))
            .max_by_key(|(u, _)| u.len())
            .copied()
            .ok_or_else(syntax)?;
        rest = &after[unit.len()..];
        let whole: u64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
        if !frac_part.is_empty() {
            // As Go does: the fraction scaled by the unit, in floating point, truncated.
            let digits = &frac_part[..frac_part.len().min(18)];
            let fraction: f64 = format!("0.{digits}").parse().map_err(|_| syntax())?;
            nanos = nanos
                .checked_add((fraction * scale as f64) as u64)
                .ok_or_else(overflow)?;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
    }
    let limit = if negative {
        i64::MAX as u64 + 1
    } else {
        i64::MAX as u64
    };
    if total > limit {
        return Err(overflow());
    }
    Ok(GoDuration {
        negative: negative && total > 0,
        magnitude: Duration::from_nanos(total),
    })
}

/// Is `s` a Go duration? The repository format's `duration` parameter type.
pub fn is_go_duration(s: &str) -> bool {
    parse_go_duration(s).is_ok()
}

/// Parses a duration the way gitamp's command line takes one: a Go duration (`30s`, `1m`,
/// `500ms`, `1h30m`), or a bare whole number of seconds (what the flags took before). Negative
/// values are refused; zero is left to the caller, which knows whether it makes sense.
pub fn parse_flag_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s
            .parse()
            .map_err(|_| DurationError::Overflow(s.to_owned()))?;
        return Ok(Duration::from_secs(secs));
    }
    let parsed = parse_go_duration(s)?;
    if parsed.negative {
        return Err(DurationError::Syntax(s.to_owned()));
    }
    Ok(parsed.magnitude)
}

/// Writes `d` in the form [`parse_go_duration`] reads back: `1h30m`, `30s`, `500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, scale) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= scale {
            out.push_str(&format!("{}{unit}", nanos / scale));
            nanos %= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_syntax() {
        for d in [
            "10s",
            "1m30s",
            "500ms",
            "0",
            "-0",
            "+0",
            "1.5h",
            "-3us",
            "2h45m0.5s",
            "1µs",
            "1μs",
            ".5s",
            "1.s",
        ] {
            assert!(is_go_duration(d), "{d}");
        }
        for d in [
            "", "10", "s", "1x", "1..5s", "10 s", "1m30", "-", "+", ".s", "1.2.3s", "1d",
        ] {
            assert!(!is_go_duration(d), "{d}");
        }
    }

    #[test]
    fn go_values() {
        let v = |s| parse_go_duration(s).map(|d| d.magnitude);
        assert_eq!(v("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(v("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(v("500ms"), Ok(ms(500)));
        assert_eq!(v("2h45m0.5s"), Ok(ms((2 * 3600 + 45 * 60) * 1000 + 500)));
        assert_eq!(v("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(v("7ns"), Ok(Duration::from_nanos(7)));
        assert!(parse_go_duration("-3s").is_ok_and(|d| d.negative));
        assert!(parse_go_duration("-0s").is_ok_and(|d| !d.negative));
    }

    #[test]
    fn go_overflow() {
        // Go's limit: i64 nanoseconds, 2562047h47m16.854775807s.
        assert!(is_go_duration("2562047h"));
        assert_eq!(
            parse_go_duration("2562048h"),
            Err(DurationError::Overflow("2562048h".into()))
        );
        assert!(matches!(
            parse_go_duration("99999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn flag_forms() {
        let f = parse_flag_duration;
        assert_eq!(f("30"), Ok(Duration::from_secs(30)));
        assert_eq!(f("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(f("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(f("500ms"), Ok(ms(500)));
        assert_eq!(f("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(f("0"), Ok(Duration::ZERO));
        assert_eq!(f(" 45s "), Ok(Duration::from_secs(45)));
        for bad in ["", "5x", "-5s", "1.5", "s", "1 m", "-1"] {
            assert!(f(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["1h30m", "30s", "500ms", "1m0s", "2h0m0.001s", "3ns", "0"] {
            let d = parse_go_duration(s)
                .map(|d| d.magnitude)
                .unwrap_or_default();
            assert_eq!(
                parse_flag_duration(&format_duration(d)),
                Ok(d),
                "{s} -> {}",
                format_duration(d)
            );
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(ms(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
