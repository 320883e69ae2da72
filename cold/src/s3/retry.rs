//! Which S3 failures are worth retrying, and the retry loop itself.
//!
//! The SDK's own retries are disabled (see `S3Sink::connect`): every attempt
//! goes through [`run`], so each one is counted, logged and paced by the
//! configured [`RetryPolicy`](super::RetryPolicy).

use std::future::Future;

use aws_sdk_s3::{
    config::http::HttpResponse,
    error::{ProvideErrorMetadata, SdkError},
};

use super::{config::RetryPolicy, metrics::S3Metrics};
use crate::{Error, Result};

/// One failed attempt, already classified.
#[derive(Debug)]
pub(crate) struct Failure {
    pub message: String,
    pub retriable: bool,
    /// The server answered (even with an error): S3 is up.
    pub answered: bool,
}

/// S3 error codes that mean "try again" whatever the HTTP status.
const RETRIABLE_CODES: [&str; 7] = [
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeTooSkewed",
];

/// The HTTP status of a service error, if the server answered.
pub(crate) fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        SdkError::ResponseError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    }
}

/// Classifies an SDK error: network failures, timeouts, 5xx, 408, 429 and
/// throttling codes are retriable; other 4xx (AccessDenied, NoSuchBucket,
/// SignatureDoesNotMatch, ...) and request construction failures are not.
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = err.code().unwrap_or("");
            let retriable =
                status >= 500 || status == 408 || status == 429 || RETRIABLE_CODES.contains(&code);
            let mut message = match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
                (Some(c), None) => format!("{c} (HTTP {status})"),
                // HEAD requests have no body, hence no code.
                _ if status == 401 || status == 403 => format!(
                    "access denied (HTTP {status}): check the credentials and the bucket's permissions"
                ),
                _ => format!("HTTP {status} with no error details"),
            };
            if let Some(hint) = hint(code) {
                message = format!("{message}: {hint}");
            }
            Failure {
                message,
                retriable,
                answered: status < 500,
            }
        }
        SdkError::ConstructionFailure(_) => Failure {
            message: chain(&err),
            retriable: false,
            answered: true,
        },
        SdkError::DispatchFailure(d) => Failure {
            message: chain(&err),
            retriable: !d.is_user(),
            answered: false,
        },
        // Timeouts, truncated or unparsable responses.
        _ => Failure {
            message: chain(&err),
            retriable: true,
            answered: false,
        },
    }
}

/// A fix for the errors a misconfiguration causes.
fn hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "SignatureDoesNotMatch" => "check cold.s3.secret_access_key",
        "InvalidAccessKeyId" => "check cold.s3.access_key_id",
        "NoSuchBucket" => "check cold.s3.bucket (ensure_bucket creates it)",
        "AccessDenied" => "check the credentials and the bucket's permissions",
        "PermanentRedirect" | "AuthorizationHeaderMalformed" => "check cold.s3.region",
        _ => return None,
    })
}

/// `outer: inner: root cause`, from the error's source chain (the SDK's
/// Display is only the outermost layer; its Debug is too noisy for logs).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Runs `attempt` until it succeeds, fails for good, or `policy.max_attempts`
/// attempts have failed, sleeping [`RetryPolicy::delay`] between attempts.
///
/// `attempt` builds each request synchronously and returns a future that owns
/// it, so the futures are `Send + 'static`-friendly (multipart parts run on
/// spawned tasks).
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    metrics: &S3Metrics,
    op: &'static str,
    key: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(v) => {
                metrics.up.set(1);
                return Ok(v);
            }
            Err(f) => {
                metrics.errors.with_label_values(&[op]).inc();
                metrics.up.set(i64::from(f.answered));
                if !f.retriable || n >= policy.max_attempts {
                    let message = if f.retriable {
                        format!("{} (gave up after {n} attempts)", f.message)
                    } else {
                        f.message
                    };
                    return Err(Error::S3 {
                        op,
                        key: key.to_string(),
                        message,
                        retriable: f.retriable,
                    });
                }
                let delay = policy.delay(n);
                tracing::warn!(
                    op,
                    key,
                    attempt = n,
                    retry_in = ?delay,
                    error = %f.message,
                    "s3 request failed; retrying"
                );
                metrics.retries.inc();
                tokio::time::sleep(delay).await;
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sdk_s3::{
        error::{ConnectorError, ErrorMetadata},
        operation::put_object::PutObjectError,
        primitives::SdkBody,
    };
    use prometheus::Registry;

    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts,
        }
    }

    fn failure(retriable: bool) -> Failure {
        Failure {
            message: "boom".into(),
            retriable,
            answered: !retriable,
        }
    }

    type PutErr = SdkError<PutObjectError, HttpResponse>;

    fn service(status: u16, code: Option<&str>) -> PutErr {
        let mut meta = ErrorMetadata::builder().message("details");
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(PutObjectError::generic(meta.build()), raw)
    }

    #[test]
    fn classifies_service_errors_by_status_and_code() {
        for (status, code, retriable) in [
            (500, Some("InternalError"), true),
            (503, Some("SlowDown"), true),
            (503, None, true),
            (429, None, true),
            (408, None, true),
            (400, Some("RequestTimeout"), true),
            (403, Some("AccessDenied"), false),
            (403, Some("SignatureDoesNotMatch"), false),
            (404, Some("NoSuchBucket"), false),
            (400, Some("InvalidArgument"), false),
        ] {
            let f = classify(service(status, code));
            assert_eq!(f.retriable, retriable, "{status} {code:?}: {}", f.message);
            assert_eq!(f.answered, status < 500);
            assert!(
                f.message.contains(&format!("HTTP {status}")),
                "{}",
                f.message
            );
        }
        let f = classify(service(403, Some("SignatureDoesNotMatch")));
        assert_eq!(
            f.message,
            "SignatureDoesNotMatch: details (HTTP 403): check cold.s3.secret_access_key"
        );
    }

    #[test]
    fn classifies_transport_errors() {
        let io =
            |msg: &str| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, msg.to_string());
        let f = classify::<PutObjectError>(SdkError::dispatch_failure(ConnectorError::io(
            Box::new(io("Connection refused")),
        )));
        assert!(f.retriable && !f.answered);
        assert!(f.message.contains("Connection refused"), "{}", f.message);
        let f = classify::<PutObjectError>(SdkError::timeout_error(Box::new(io("slow"))));
        assert!(f.retriable && !f.answered, "{}", f.message);
        let f = classify::<PutObjectError>(SdkError::dispatch_failure(ConnectorError::user(
            Box::new(io("bad request")),
        )));
        assert!(!f.retriable, "{}", f.message);
        let f = classify::<PutObjectError>(SdkError::construction_failure(Box::new(io("x"))));
        assert!(!f.retriable);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retriable_failures_until_success() {
        let m = S3Metrics::new(&Registry::new()).unwrap();
        let mut calls = 0;
        let start = tokio::time::Instant::now();
        let v = run(&policy(5), &m, "PutObject", "k", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(failure(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        assert_eq!(m.retries.get(), 2);
        assert_eq!(m.errors.with_label_values(&["PutObject"]).get(), 2);
        assert_eq!(m.up.get(), 1);
        // Two pauses: at least 50ms + 100ms, at most 100ms + 200ms.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_a_retriable_error() {
        let m = S3Metrics::new(&Registry::new()).unwrap();
        let mut calls = 0;
        let err = run(&policy(3), &m, "GetObject", "a/b", || {
            calls += 1;
            async { Err::<(), _>(failure(true)) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 3);
        assert_eq!(m.retries.get(), 2);
        assert_eq!(m.up.get(), 0);
        assert!(err.is_retriable());
        assert_eq!(
            err.to_string(),
            "s3 GetObject a/b: boom (gave up after 3 attempts)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_permanent_failures() {
        let m = S3Metrics::new(&Registry::new()).unwrap();
        let mut calls = 0;
        let err = run(&policy(5), &m, "HeadObject", "k", || {
            calls += 1;
            async { Err::<(), _>(failure(false)) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(m.retries.get(), 0);
        assert!(!err.is_retriable());
        assert_eq!(m.up.get(), 1, "the server answered");
    }
}
