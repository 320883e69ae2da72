//! Failures: an unreachable server, a server that never answers, a wrong
//! password. No database is needed.

use std::time::{Duration, Instant};

use cold::{
    clickhouse::{ClickHouseMetrics, ClickHouseSink, RawClickHouseConfig},
    Error,
};
use secrecy::SecretString;

use super::{batch, url};

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = RawClickHouseConfig {
        url: format!("http://127.0.0.1:{port}"),
        max_attempts: 3,
        retry_min_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(50),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let registry = prometheus::Registry::new();
    let sink = ClickHouseSink::connect(cfg, ClickHouseMetrics::new(&registry).unwrap()).unwrap();
    let started = Instant::now();
    let e = sink.ping().await.unwrap_err();
    assert!(e.is_retriable(), "{e:?}");
    assert!(
        matches!(
            e,
            Error::ClickHouseOp {
                op: "ping",
                attempts: 3,
                ..
            }
        ),
        "{e:?}"
    );
    // Two backoff sleeps of at least half of 20 ms and 40 ms.
    assert!(started.elapsed() >= Duration::from_millis(30));
    let m = sink.metrics();
    assert_eq!((m.errors_of("ping"), m.retries_of("ping")), (3, 2));
    assert_eq!(m.up.get(), 0);
    let h = sink.health();
    assert!(!h.ok && h.last_error.unwrap().contains("after 3 attempt"));

    let b = batch("it-gw-1", 0, 1, 1, 10);
    let e = sink.insert_batch(&b, "k").await.unwrap_err();
    assert!(e.is_retriable(), "{e:?}");
    assert_eq!(
        (
            m.errors_of("insert_readings"),
            m.retries_of("insert_readings")
        ),
        (3, 2)
    );
    assert_eq!(m.batches_inserted.get(), 0);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains("thermocline_cold_clickhouse_retries_total{op=\"ping\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_is_retried() {
    // Accepts connections and holds them without a byte of answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let cfg = RawClickHouseConfig {
        url: format!("http://127.0.0.1:{port}"),
        query_timeout: Duration::from_millis(150),
        insert_timeout: Duration::from_millis(150),
        max_attempts: 2,
        retry_min_delay: Duration::from_millis(10),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let sink = ClickHouseSink::connect(cfg, ClickHouseMetrics::unregistered().unwrap()).unwrap();
    let started = Instant::now();
    let e = sink.ping().await.unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(e.is_retriable(), "{e:?}");
    assert!(
        matches!(
            &e,
            Error::ClickHouseOp {
                attempts: 2,
                source: ::clickhouse::error::Error::TimedOut,
                ..
            }
        ),
        "{e:?}"
    );
    let e = sink
        .insert_batch(&batch("it-gw-1", 0, 1, 1, 10), "k")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::ClickHouseOp {
                op: "insert_readings",
                attempts: 2,
                source: ::clickhouse::error::Error::TimedOut
            }
        ),
        "{e:?}"
    );
    assert_eq!(sink.metrics().retries_of("insert_readings"), 1);
    hold.abort();
}

#[tokio::test]
async fn a_wrong_password_is_fatal_and_never_shown() {
    const SECRET: &str = "hunter2-not-the-password";
    let cfg = RawClickHouseConfig {
        url: url(),
        password: Some(SecretString::from(SECRET)),
        max_attempts: 3,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let sink = ClickHouseSink::connect(cfg, ClickHouseMetrics::unregistered().unwrap()).unwrap();
    let e = sink.ping().await.unwrap_err();
    assert!(!e.is_retriable(), "{e:?}");
    assert!(
        matches!(e, Error::ClickHouseOp { attempts: 1, .. }),
        "{e:?}"
    );
    let (shown, debug) = (e.to_string(), format!("{e:?}"));
    // 18.16: "Code: 193 ... Wrong password for user default"; current
    // releases: "Code: 516 ... Authentication failed: password is incorrect".
    assert!(shown.to_lowercase().contains("password"), "{shown}");
    assert!(
        !shown.contains(SECRET) && !debug.contains(SECRET),
        "{debug}"
    );
    assert!(!sink.health().last_error.unwrap().contains(SECRET));
    assert_eq!(sink.metrics().retries_of("ping"), 0);
    assert!(!format!("{:?}", sink.config()).contains(SECRET));
}
