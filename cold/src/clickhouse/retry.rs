//! Retry policy: capped exponential backoff with jitter, network errors only.

use std::{future::Future, time::Duration};

use rand::Rng;

use super::metrics::ClickHouseMetrics;
use crate::{Error, Result};

/// How an operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub min_delay: Duration,
    /// Cap on any one delay.
    pub max_delay: Duration,
    /// Tries in all, the first included.
    pub max_attempts: u32,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based): `min · 2^(attempt-1)`
    /// capped at `max`, then "equal jitter" — a uniform draw from the upper
    /// half — so that gateways retrying together spread out but never retry
    /// sooner than half the nominal delay.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let nominal = self
            .min_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = nominal / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

/// Whether a ClickHouse client error may go away on its own: the network
/// (refused, reset, DNS) and timeouts. Server answers (syntax, auth, schema)
/// are not retried.
pub fn is_retriable(e: &::clickhouse::error::Error) -> bool {
    matches!(
        e,
        ::clickhouse::error::Error::Network(_) | ::clickhouse::error::Error::TimedOut
    )
}

/// Server error codes that refuse the data itself, so the same insert can
/// never succeed: unparsable or mistyped values and columns, a row a table's
/// `throwIf` or constraint rejects. Anything else the server answers (too
/// many parts, read-only, memory, auth, unknown table) is a state of the store
/// that can pass.
const DATA_REJECTED_CODES: [u32; 19] = [
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
];

/// The server's error code in its answer (`Code: 395, e.displayText() = …`
/// on 18.16, `Code: 395. DB::Exception: …` on current releases).
fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + "Code: ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// Whether ClickHouse refused the data itself (see [`DATA_REJECTED_CODES`]),
/// or the client could not encode it: retrying the same insert cannot help.
pub fn rejects_data(e: &::clickhouse::error::Error) -> bool {
    use ::clickhouse::error::Error as E;
    match e {
        E::BadResponse(m) => server_code(m).is_some_and(|c| DATA_REJECTED_CODES.contains(&c)),
        E::SequenceMustHaveLength | E::Custom(_) => true,
        _ => false,
    }
}

/// Runs `f` until it succeeds, fails with an error that is not retriable, or
/// `backoff.max_attempts` tries have failed. Counts every failed try in
/// `errors_total` and every retry in `retries_total`; keeps `up` current.
pub(crate) async fn retry<T, F, Fut>(
    op: &'static str,
    backoff: &Backoff,
    metrics: &ClickHouseMetrics,
    mut f: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ::clickhouse::error::Error>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => {
                metrics.up.set(1);
                return Ok(v);
            }
            Err(source) => {
                metrics.errors.with_label_values(&[op]).inc();
                let retriable = is_retriable(&source);
                if retriable {
                    // The server did not answer; a server that answers with an
                    // error is up.
                    metrics.up.set(0);
                }
                if !retriable || attempt >= backoff.max_attempts {
                    let err = Error::ClickHouseOp {
                        op,
                        attempts: attempt,
                        source,
                    };
                    tracing::warn!(error = %err, "clickhouse operation failed");
                    return Err(err);
                }
                let delay = backoff.delay(attempt, &mut rand::rng());
                tracing::debug!(op, attempt, ?delay, error = %source, "clickhouse: retrying");
                metrics.retries.with_label_values(&[op]).inc();
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn delays_double_then_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: 10,
        };
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, nominal_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..100 {
                let d = b.delay(attempt, &mut rng);
                let nominal = Duration::from_millis(nominal_ms);
                assert!(d >= nominal / 2 && d <= nominal, "{attempt}: {d:?}");
            }
        }
    }
}
