//! `thermocline run`: wires ingest, the hot path, the cold path and HTTP, and
//! shuts them down in order.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    http::{router, AppState},
    ingest::{Ingest, MqttState},
    metrics::IngestMetrics,
    Error, Result,
};

/// A running gateway (used by `run` and by the integration tests).
pub struct Gateway {
    pub registry: prometheus::Registry,
    pub http_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds HTTP and starts everything; returns once the HTTP port listens.
    pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Self> {
        let registry = prometheus::Registry::new();
        let hot_metrics = hot::HotMetrics::new(&registry)?;
        let ingest_metrics = IngestMetrics::new(&registry, cfg.gateway_id.as_str())?;
        let (hot, hot_tx) = hot::HotPath::start(&cfg.hot, hot_metrics)?;
        let (cold, cold_ingest) = if cfg.cold.enabled {
            let (path, ingest) = cold::pipeline::ColdPath::start(
                cfg.cold.clone(),
                cfg.gateway_id.clone(),
                cfg.devices.clone(),
                &registry,
                cfg.shutdown_timeout,
            )
            .await?;
            (Some(path), Some(ingest))
        } else {
            tracing::warn!("cold path disabled (cold.enabled = false): messages are acked on receipt and kept only in the hot windows");
            (None, None)
        };
        let reconciler = match &cold {
            Some(c) if cfg.sync.enabled => {
                let health = c.health.clone();
                let ready = Box::new(move || {
                    let r = health.report();
                    r.spool && r.s3 && r.clickhouse
                });
                Some(start_reconciler(&cfg, &hot.reader, &registry, ready, shutdown.clone()).await?)
            }
            _ => None,
        };
        let fleet_metrics =
            crate::metrics::FleetMetrics::new(&registry, &cfg.fleet.quiet_thresholds)?;
        let fleet = crate::fleet::spawn(
            cfg.fleet.clone(),
            hot.reader.clone(),
            fleet_metrics,
            shutdown.clone(),
        );
        let mqtt_state = Arc::new(MqttState::default());
        let listener = tokio::net::TcpListener::bind(cfg.http_listen)
            .await
            .map_err(|source| Error::Http {
                addr: cfg.http_listen.to_string(),
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| Error::Http {
            addr: cfg.http_listen.to_string(),
            source,
        })?;
        let app = router(AppState {
            registry: registry.clone(),
            reader: hot.reader.clone(),
            hot_health: hot.health.clone(),
            mqtt: mqtt_state.clone(),
            cold: cold.as_ref().map(|c| c.health.clone()),
            gateway_id: cfg.gateway_id.as_str().to_owned(),
        });
        let http_stop = CancellationToken::new();
        let http = {
            let stop = http_stop.clone();
            tokio::spawn(async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "http server failed");
                }
            })
        };
        tracing::info!(addr = %http_addr, gateway_id = %cfg.gateway_id, "http listening");
        let ingest = Ingest {
            mqtt: cfg.mqtt,
            devices: cfg.devices,
            hot: hot_tx,
            metrics: ingest_metrics,
            state: mqtt_state,
            cold: cold_ingest,
        };
        let deadline = cfg.shutdown_timeout;
        let stop = shutdown.clone();
        let span = tracing::info_span!("gateway", id = %cfg.gateway_id);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Order: stop reading from the broker and ack what is durable
                // (ingest returns and drops the hot sender and the cold ingest
                // handle); the hot path flushes what it holds while the cold
                // pipeline cuts and ships what it holds (what it cannot ship in
                // time stays in the spool for the next start) and closes the
                // spool; then HTTP stops.
                ingest.run(stop.clone()).await;
                let cold_done = async {
                    if let Some(c) = cold {
                        c.join().await;
                    }
                };
                let hot_done = async {
                    if tokio::time::timeout(deadline, hot.join()).await.is_err() {
                        tracing::error!(
                            ?deadline,
                            "hot path did not flush within the shutdown deadline; forcing exit"
                        );
                    }
                };
                // The pipeline enforces the deadline itself; the margin covers closing the spool.
                let both = async { tokio::join!(hot_done, cold_done) };
                match tokio::time::timeout(deadline + std::time::Duration::from_secs(5), both).await
                {
                    Ok(_) => tracing::info!("shutdown complete"),
                    Err(_) => tracing::error!(?deadline, "shutdown deadline passed; forcing exit"),
                }
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), fleet).await;
                if let Some(r) = reconciler {
                    // Cancelled by the same token; a run in progress is dropped.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), r).await;
                }
                http_stop.cancel();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), http).await;
            },
            span,
        ));
        Ok(Self {
            registry,
            http_addr,
            shutdown,
            task,
        })
    }

    /// Signals shutdown and waits for the ordered stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the gateway stops (after the shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// The reconciler loop (`[sync]`), with its own store clients: the cold
/// pipeline's sinks stay private to it. The sinks' `thermocline_cold_*`
/// metrics go to a private registry so they do not collide with the
/// pipeline's; the reconciler counts its store requests itself, as
/// `thermocline_sync_store_*` on the gateway's registry with its other
/// metrics (see `sync::metrics`).
async fn start_reconciler(
    cfg: &Config,
    reader: &hot::reader::Reader,
    registry: &prometheus::Registry,
    ready: Box<dyn Fn() -> bool + Send + Sync>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let private = prometheus::Registry::new();
    let ch = cold::clickhouse::ClickHouseSink::connect(
        cfg.cold.clickhouse.clone(),
        cold::clickhouse::ClickHouseMetrics::new(&private)?,
    )?;
    let s3 =
        cold::s3::S3Sink::connect(cfg.cold.s3.clone(), cold::s3::S3Metrics::new(&private)?).await?;
    let repairer = hot::repair::Repairer::new(
        hot::connect::connect(&cfg.hot.redis)?,
        hot::keys::Keys::new(&cfg.hot.key_prefix),
        &cfg.hot.resolutions,
    );
    let metrics = sync::metrics::ReconcileMetrics::new(registry)?;
    let reconciler = sync::reconcile::Reconciler::new(
        reader.clone(),
        repairer,
        ch,
        Some(s3),
        Some(metrics.clone()),
    );
    Ok(sync::reconcile::service::spawn(
        reconciler,
        cfg.sync.clone(),
        cfg.gateway_id.to_string(),
        metrics,
        ready,
        shutdown,
    ))
}
