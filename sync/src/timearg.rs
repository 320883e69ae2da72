//! Times on the command line: RFC 3339 (`2026-11-25T14:00:00Z`, also without
//! the `Z`, read as UTC), relative to now (`-2h`, `-30m`, `now`), or
//! milliseconds since the epoch. Shared by `reconcile` and `backfill`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// Parses one time argument into ms since the epoch, `now_ms` being now.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64> {
    let s = s.trim();
    let bad = |reason: String| Error::Arg(format!("{s:?} is not a time: {reason}"));
    if s.is_empty() {
        return Err(bad("empty".into()));
    }
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        if rel.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad("a relative time needs a unit, e.g. -2h or -30m".into()));
        }
        let d = humantime::parse_duration(rel).map_err(|e| bad(e.to_string()))?;
        return Ok(now_ms.saturating_sub(d.as_millis() as i64));
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse().map_err(|e| bad(format!("{e}")));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        bad(format!(
            "{e} (use RFC 3339 like 2026-11-25T14:00:00Z, or relative like -2h)"
        ))
    })?;
    Ok(match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    })
}

/// A `[from, to)` range from optional arguments: `from` defaults to
/// `to - default_lookback`, `to` to now. An empty or reversed range is an error.
pub fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    default_lookback: Duration,
    now_ms: i64,
) -> Result<(i64, i64)> {
    let to_ms = match to {
        Some(t) => parse_time(t, now_ms)?,
        None => now_ms,
    };
    let from_ms = match from {
        Some(f) => parse_time(f, now_ms)?,
        None => to_ms - default_lookback.as_millis() as i64,
    };
    if from_ms >= to_ms {
        return Err(Error::Arg(format!(
            "empty or reversed range: --from {} is not before --to {}",
            fmt_ms(from_ms),
            fmt_ms(to_ms)
        )));
    }
    Ok((from_ms, to_ms))
}

/// RFC 3339 in UTC with milliseconds, for reports and messages.
pub fn fmt_ms(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_082_800_000; // 2025-11-25T15:00:00Z

    #[test]
    fn absolute_relative_and_epoch() {
        assert_eq!(parse_time("2025-11-25T15:00:00Z", 0).unwrap(), NOW);
        assert_eq!(
            parse_time("2025-11-25T15:00:00.250Z", 0).unwrap(),
            NOW + 250
        );
        assert_eq!(parse_time("2025-11-25T15:00:00", 0).unwrap(), NOW);
        assert_eq!(parse_time("-2h", NOW).unwrap(), NOW - 7_200_000);
        assert_eq!(parse_time("-90s", NOW).unwrap(), NOW - 90_000);
        assert_eq!(parse_time("-1h 30m", NOW).unwrap(), NOW - 5_400_000);
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("1000", NOW).unwrap(), 1000);
        assert_eq!(fmt_ms(NOW), "2025-11-25T15:00:00.000Z");
    }

    #[test]
    fn bad_times_say_why() {
        for s in ["", "-2", "-2 parsecs", "yesterday", "2025-13-01T00:00:00Z"] {
            let e = parse_time(s, NOW).unwrap_err().to_string();
            assert!(e.contains("is not a time"), "{s}: {e}");
        }
    }

    #[test]
    fn ranges() {
        let h = Duration::from_secs(3600);
        assert_eq!(
            parse_range(None, None, 2 * h, NOW).unwrap(),
            (NOW - 7_200_000, NOW)
        );
        assert_eq!(
            parse_range(Some("-3h"), Some("-1h"), h, NOW).unwrap(),
            (NOW - 3 * 3_600_000, NOW - 3_600_000)
        );
        assert_eq!(
            parse_range(None, Some("-1h"), h, NOW).unwrap(),
            (NOW - 2 * 3_600_000, NOW - 3_600_000)
        );
        for (f, t) in [("-1h", "-2h"), ("-1h", "-1h")] {
            let e = parse_range(Some(f), Some(t), h, NOW)
                .unwrap_err()
                .to_string();
            assert!(e.contains("empty or reversed range"), "{e}");
        }
    }
}
