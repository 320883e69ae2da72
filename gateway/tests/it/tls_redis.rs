//! TLS and ACL credentials for Redis, against a real redis-server with TLS
//! (the fixtures, a private CA and servers per test, are in `tls.rs`).

use std::time::{Duration, Instant};

use devices::{DeviceId, Message, MetricName, Reading};

use crate::tls::{
    env, path, pki, unique, Pki, TlsRedis, REDIS_DEFAULT_PASS, REDIS_PASS, REDIS_USER, WAIT,
};

fn hot_config(redis: &TlsRedis, pki: &Pki, name: &str, extra: &[(&str, String)]) -> hot::HotConfig {
    let mut e = env(&[
        ("THERMOCLINE__HOT__KEY_PREFIX", unique(name)),
        ("THERMOCLINE__HOT__FLUSH_INTERVAL", "10ms".into()),
        ("THERMOCLINE__HOT__REDIS__URL", redis.url()),
        ("THERMOCLINE__HOT__REDIS__TLS_CA_FILE", path(&pki.ca)),
    ]);
    e.extend(env(extra));
    gateway::config::load_with_env(None, e)
        .unwrap()
        .validate()
        .unwrap()
        .hot
}

fn message(device: &DeviceId, seq: u64, ts_ms: i64, value: f64) -> Message {
    Message {
        device_id: device.clone(),
        seq: Some(seq),
        readings: vec![Reading {
            device_id: device.clone(),
            metric: MetricName::parse("temp").unwrap(),
            ts_ms,
            value,
            seq: Some(seq),
        }],
    }
}

#[tokio::test]
async fn redis_over_tls_with_acl_user_round_trips() {
    let pki = pki();
    let redis = TlsRedis::start(&pki).await;

    // As the ACL user: write through the hot path, read back.
    let cfg = hot_config(
        &redis,
        &pki,
        "acl",
        &[
            ("THERMOCLINE__HOT__REDIS__USERNAME", REDIS_USER.into()),
            ("THERMOCLINE__HOT__REDIS__PASSWORD", REDIS_PASS.into()),
        ],
    );
    let registry = prometheus::Registry::new();
    let metrics = hot::HotMetrics::new(&registry).unwrap();
    let (path, tx) = hot::HotPath::start(&cfg, metrics.clone()).unwrap();
    let device = DeviceId::parse(&unique("hotdev")).unwrap();
    let now = hot::service::now_ms();
    tx.send(message(&device, 1, now - 2000, 1.25))
        .await
        .unwrap();
    tx.send(message(&device, 2, now - 1000, -7.5))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let latest = loop {
        if let Ok(Some(l)) = path.reader.latest(&device).await {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "nothing read back after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(latest.metrics["temp"].value, -7.5);
    assert_eq!(latest.metrics["temp"].ts_ms, now - 1000);
    let res = &cfg.resolutions[0];
    let buckets = path
        .reader
        .buckets(
            &device,
            &MetricName::parse("temp").unwrap(),
            res,
            now - 60_000,
            now,
        )
        .await
        .unwrap();
    let count: u64 = buckets.iter().map(|b| b.agg.count).sum();
    assert_eq!(count, 2);
    let deadline = Instant::now() + WAIT;
    while !path.health.redis_ok() {
        assert!(Instant::now() < deadline, "health never ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.redis_errors.get(), 0);
    drop(tx);
    path.join().await;
    assert_eq!(metrics.readings_written.get(), 2);

    // Password only authenticates as `default`.
    let cfg = hot_config(
        &redis,
        &pki,
        "default",
        &[(
            "THERMOCLINE__HOT__REDIS__PASSWORD",
            REDIS_DEFAULT_PASS.into(),
        )],
    );
    let conn = hot::connect::connect(&cfg.redis).unwrap();
    let who: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    assert_eq!(who, "default");
}

#[tokio::test]
async fn redis_wrong_password_or_no_tls_is_not_ok() {
    let pki = pki();
    let redis = TlsRedis::start(&pki).await;
    let device = DeviceId::parse(&unique("baddev")).unwrap();

    let cfg = hot_config(
        &redis,
        &pki,
        "wrongpw",
        &[
            ("THERMOCLINE__HOT__REDIS__USERNAME", REDIS_USER.into()),
            ("THERMOCLINE__HOT__REDIS__PASSWORD", "wrong-Pa55".into()),
        ],
    );
    let registry = prometheus::Registry::new();
    let metrics = hot::HotMetrics::new(&registry).unwrap();
    let (path, tx) = hot::HotPath::start(&cfg, metrics.clone()).unwrap();
    let err = path.reader.ping().await.unwrap_err().to_string();
    assert!(
        !err.contains("wrong-Pa55"),
        "the password in an error: {err}"
    );
    tx.send(message(&device, 1, hot::service::now_ms(), 1.0))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while metrics.readings_failed.get() == 0 {
        assert!(Instant::now() < deadline, "the write did not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The health watcher has had a tick (every 1 s) and says not ok.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!path.health.redis_ok());
    assert_eq!(metrics.readings_written.get(), 0);
    assert!(metrics.redis_errors.get() >= 1);
    drop(tx);
    tokio::time::timeout(WAIT, path.join()).await.unwrap();

    // The right password over plain TCP to the TLS port gets nowhere either.
    let mut raw = gateway::config::RawConfig::default();
    raw.hot.redis.url = format!("redis://127.0.0.1:{}", redis.port);
    raw.hot.redis.username = Some(REDIS_USER.into());
    raw.hot.redis.password = Some(REDIS_PASS.into());
    let cfg = raw.validate().unwrap();
    let conn = hot::connect::connect(&cfg.hot.redis).unwrap();
    let plain: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn.clone()).await;
    assert!(plain.is_err(), "{plain:?}");

    // And a CA that did not sign the server's certificate is refused.
    let other = self::pki(); // an unrelated CA
    let cfg = hot_config(
        &redis,
        &other,
        "otherca",
        &[
            ("THERMOCLINE__HOT__REDIS__USERNAME", REDIS_USER.into()),
            ("THERMOCLINE__HOT__REDIS__PASSWORD", REDIS_PASS.into()),
        ],
    );
    let conn = hot::connect::connect(&cfg.redis).unwrap();
    let untrusted: redis::RedisResult<String> =
        redis::cmd("PING").query_async(&mut conn.clone()).await;
    assert!(untrusted.is_err(), "{untrusted:?}");
}
