//! HTTP: `/metrics`, `/healthz`, `/readyz` and the read API over the hot windows.
//!
//! | route | answers |
//! |---|---|
//! | `GET /api/v1/devices/{id}/latest` | every metric's last value and ts; 404 for an unknown device |
//! | `GET /api/v1/devices/{id}/metrics/{metric}/windows?resolution=1m&last=15m` | the buckets (oldest first) and their roll-up; also `from`/`to` in ms |
//! | `GET /api/v1/devices?active_within=5m&limit=1000` | devices by last arrival, newest first |
//! | `GET /api/v1/devices?silent_for=10m&limit=1000` | devices gone quiet (last arrival older than that, within the fleet index's retention), oldest first |
//!
//! | `GET /api/v1/openapi.json` | the OpenAPI 3 description of all of it (`openapi.json` beside this file) |
//!
//! Bad ids, metrics, resolutions or durations answer 400 with `{"error": ...}`;
//! Redis trouble answers 503.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use devices::{DeviceId, MetricName};
use hot::{reader::Reader, service::now_ms, service::Health, window::Agg};
use serde::Serialize;
use serde_json::json;

use crate::ingest::MqttState;

#[derive(Clone)]
pub struct AppState {
    pub registry: prometheus::Registry,
    pub reader: Reader,
    pub hot_health: Arc<Health>,
    pub mqtt: Arc<MqttState>,
    /// `None` when the cold path is disabled.
    pub cold: Option<Arc<cold::pipeline::ColdHealth>>,
    /// `gateway.id`, reported by `/readyz`.
    pub gateway_id: String,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/devices", get(active_devices))
        .route("/api/v1/devices/{id}/latest", get(latest))
        .route(
            "/api/v1/devices/{id}/metrics/{metric}/windows",
            get(windows),
        )
        .with_state(state)
}

/// An API error: a status and a message, rendered as JSON.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<hot::Error> for ApiError {
    fn from(e: hot::Error) -> Self {
        match e {
            hot::Error::BadRequest(m) => Self::bad(m),
            e => {
                tracing::warn!(error = %e, "read API: store error");
                Self(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("hot store unavailable: {e}"),
                )
            }
        }
    }
}

/// The OpenAPI 3 description of this API (`gateway/src/openapi.json`), kept
/// true by the test suite (schemathesis against a running gateway).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI_JSON).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&s.registry.gather(), &mut out) {
        Ok(()) => ([("content-type", prometheus::TEXT_FORMAT)], out).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Ready = the gateway is taking messages from the broker and storing them
/// safely: connected to the broker, Redis answering, and (cold path on) the
/// spool accepting appends and not full.
///
/// An S3 or ClickHouse outage alone does not make the gateway unready: the
/// spool absorbs it and nothing is lost, so a load balancer or orchestrator
/// has no reason to act. It shows in `cold.s3` / `cold.clickhouse` (false, with
/// the last error) and in the metrics; once the spool fills, ready turns false
/// (`cold.spool_full`) because ingestion has stopped.
async fn readyz(State(s): State<AppState>) -> Response {
    let (mqtt, redis) = (s.mqtt.connected(), s.hot_health.redis_ok());
    let cold = s.cold.as_ref().map(|c| c.report());
    let cold_ok = cold.as_ref().is_none_or(|c| c.spool && !c.spool_full);
    let ready = mqtt && redis && cold_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "gateway_id": s.gateway_id, "mqtt": mqtt, "redis": redis, "cold": cold })),
    )
        .into_response()
}

fn device(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(id).map_err(|r| ApiError::bad(r.detail))
}

/// The latest `from` / `to` accepted (9999-12-31T23:59:59.999Z): keeps the
/// bucket arithmetic far from i64's edges.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A duration in ms, saturating (a duration of centuries is still just long).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn duration(key: &str, v: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(v)
        .map_err(|e| ApiError::bad(format!("{key}={v:?}: {e} (e.g. 15m, 1h)")))
}

async fn latest(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let dev = device(&id)?;
    match s.reader.latest(&dev).await? {
        Some(l) => Ok(Json(l).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no data for device {dev}"),
        )),
    }
}

#[derive(Serialize)]
struct BucketOut {
    start_ms: i64,
    end_ms: i64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    last: f64,
    last_ts_ms: i64,
}

impl BucketOut {
    fn new(start_ms: i64, end_ms: i64, a: &Agg) -> Self {
        Self {
            start_ms,
            end_ms,
            count: a.count,
            sum: a.sum,
            min: a.min,
            max: a.max,
            mean: a.sum / a.count.max(1) as f64,
            last: a.last,
            last_ts_ms: a.last_ts_ms,
        }
    }
}

async fn windows(
    State(s): State<AppState>,
    Path((id, metric)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let dev = device(&id)?;
    let metric = MetricName::parse(&metric).map_err(|r| ApiError::bad(r.detail))?;
    let labels = || {
        s.reader
            .resolutions()
            .iter()
            .map(|r| r.label.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let res = match q.get("resolution") {
        Some(l) => s.reader.resolution(l).ok_or_else(|| {
            ApiError::bad(format!(
                "unknown resolution {l:?}; configured: {}",
                labels()
            ))
        })?,
        None => &s.reader.resolutions()[0],
    }
    .clone();
    let now = now_ms();
    let num = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|t| (0..=MAX_TIME_MS).contains(t))
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "{k} must be ms since the epoch, 0 to {MAX_TIME_MS} (year 9999)"
                        ))
                    })
            })
            .transpose()
    };
    let to = num("to")?.unwrap_or(now);
    let before = |span_ms: i64| {
        to.checked_sub(span_ms)
            .ok_or_else(|| ApiError::bad("the range starts before the representable time"))
    };
    let from = match (num("from")?, q.get("last")) {
        (Some(_), Some(_)) => return Err(ApiError::bad("give either from or last, not both")),
        (Some(f), None) => f,
        (None, Some(l)) => before(millis(duration("last", l)?))?,
        (None, None) => before(15 * 60_000)?,
    };
    if from > to {
        return Err(ApiError::bad("from is after to"));
    }
    for k in q.keys() {
        if !matches!(k.as_str(), "resolution" | "last" | "from" | "to") {
            return Err(ApiError::bad(format!("unknown parameter {k:?}")));
        }
    }
    if s.reader.latest(&dev).await?.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no data for device {dev}"),
        ));
    }
    let buckets = s.reader.buckets(&dev, &metric, &res, from, to).await?;
    let rollup = Agg::merged(buckets.iter().map(|b| &b.agg));
    Ok(Json(json!({
        "device_id": dev.as_str(),
        "metric": metric.as_str(),
        "resolution": res.label,
        "from_ms": from,
        "to_ms": to,
        "buckets": buckets.iter().map(|b| BucketOut::new(b.start_ms, b.start_ms + res.width_ms, &b.agg)).collect::<Vec<_>>(),
        "aggregate": rollup.map(|a| BucketOut::new(from, to, &a)),
    }))
    .into_response())
}

async fn active_devices(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    for k in q.keys() {
        if !matches!(k.as_str(), "active_within" | "silent_for" | "limit") {
            return Err(ApiError::bad(format!("unknown parameter {k:?}")));
        }
    }
    let limit: usize = match q.get("limit") {
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::bad("limit must be 1-10000"))?,
        None => 1000,
    };
    let now = now_ms();
    let rows = |devices: Vec<(String, i64)>| {
        devices
            .into_iter()
            .map(|(d, t)| json!({"device_id": d, "last_seen_ms": t}))
            .collect::<Vec<_>>()
    };
    if let Some(silent) = q.get("silent_for") {
        if q.contains_key("active_within") {
            return Err(ApiError::bad(
                "give either active_within or silent_for, not both",
            ));
        }
        let silent = duration("silent_for", silent)?;
        let horizon = s.reader.index_horizon_ms(now);
        let devices = s
            .reader
            .quiet_devices(horizon, now.saturating_sub(millis(silent)), limit)
            .await?;
        return Ok(Json(json!({
            "silent_for_ms": millis(silent),
            "devices": rows(devices),
        }))
        .into_response());
    }
    let within = duration(
        "active_within",
        q.get("active_within").map(String::as_str).unwrap_or("5m"),
    )?;
    let since = now.saturating_sub(millis(within));
    let devices = s.reader.active_devices(since, limit).await?;
    Ok(Json(json!({
        "active_within_ms": millis(within),
        "devices": rows(devices),
    }))
    .into_response())
}
