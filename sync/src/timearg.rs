//! Time arguments of the CLI (`--from`, `--to`): RFC 3339 or relative to now.
//!
//! - RFC 3339: `2025-11-25T10:00:00Z`, `2025-11-25T12:00:00.5+02:00`;
//! - relative: `-2h`, `-90m`, `-1d 6h` (humantime units: ms, s, m, h, d, w),
//!   meaning that long before now; `now` is now.
//!
//! A range is half-open, `[from, to)`, and must not be empty.

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{Error, Result};

/// Parses one time argument into ms since the epoch, relative ones against `now_ms`.
pub fn parse_time(arg: &str, now_ms: i64) -> Result<i64> {
    let s = arg.trim();
    let bad = |reason: String| Error::TimeArg {
        arg: arg.to_string(),
        reason,
    };
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let d = humantime::parse_duration(rel.trim())
            .map_err(|e| bad(format!("not a duration ({e}); e.g. -2h, -30m, -1d")))?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| bad("too far back".into()))?;
        return now_ms
            .checked_sub(ms)
            .ok_or_else(|| bad("too far back".into()));
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        bad(format!(
            "neither RFC 3339 (2025-11-25T10:00:00Z) nor relative (-2h): {e}"
        ))
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad("out of range".into()))
}

/// Parses `--from` and `--to` and checks the range is not empty or reversed.
pub fn parse_range(from: &str, to: &str, now_ms: i64) -> Result<(i64, i64)> {
    let (f, t) = (parse_time(from, now_ms)?, parse_time(to, now_ms)?);
    if f >= t {
        return Err(Error::Range(format!(
            "--from {from} ({}) is not before --to {to} ({}): the range [from, to) is {}",
            format_ms(f),
            format_ms(t),
            if f == t { "empty" } else { "reversed" }
        )));
    }
    Ok((f, t))
}

/// RFC 3339 in UTC with milliseconds, for messages and summaries.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_064_800_000; // 2025-11-25T10:00:00Z

    #[test]
    fn rfc3339() {
        assert_eq!(parse_time("2025-11-25T10:00:00Z", 0).unwrap(), NOW);
        assert_eq!(
            parse_time("2025-11-25T12:00:00.250+02:00", 0).unwrap(),
            NOW + 250
        );
        assert_eq!(format_ms(NOW), "2025-11-25T10:00:00Z");
    }

    #[test]
    fn relative() {
        assert_eq!(parse_time("-2h", NOW).unwrap(), NOW - 7_200_000);
        assert_eq!(parse_time("-90m", NOW).unwrap(), NOW - 5_400_000);
        assert_eq!(parse_time("-1d 6h", NOW).unwrap(), NOW - 108_000_000);
        assert_eq!(parse_time(" now ", NOW).unwrap(), NOW);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for bad in [
            "",
            "yesterday",
            "-",
            "-2 parsecs",
            "2025-13-01T00:00:00Z",
            "+2h",
        ] {
            let e = parse_time(bad, NOW).unwrap_err().to_string();
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
    }

    #[test]
    fn ranges_must_be_forward() {
        assert_eq!(
            parse_range("-2h", "now", NOW).unwrap(),
            (NOW - 7_200_000, NOW)
        );
        let e = parse_range("-1h", "-2h", NOW).unwrap_err().to_string();
        assert!(e.contains("reversed"), "{e}");
        let e = parse_range("now", "now", NOW).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
