//! The command line. This is the binary's edge: errors are `anyhow` here.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{app::Gateway, config};

#[derive(Debug, Parser)]
#[command(
    name = "thermocline",
    version,
    about = "IoT telemetry ingestion gateway: MQTT → Redis rolling windows"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        /// Config file layered over the built-in defaults (config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective values, secrets redacted.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Publish a deterministic simulated fleet and write a ledger of what the broker acknowledged.
    Simulate {
        /// Broker and topic are read from this config (mqtt.host/port; the first source of format auto or json on a simple topic, normally devices.topic_pattern).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, default_value_t = 100)]
        devices: u32,
        /// Messages per device (3 metrics each).
        #[arg(long, default_value_t = 100)]
        messages: u64,
        /// Messages per second overall; 0 = as fast as the broker takes them.
        #[arg(long, default_value_t = 0)]
        rate: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Device id prefix; random by default so runs never share a device.
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, default_value_t = 1)]
        connections: usize,
        #[arg(long)]
        ledger: PathBuf,
    },
    /// Lint the Grafana dashboards and run every panel's query against the
    /// given servers; one line per panel target: ok / no data / error.
    /// Exits 1 unless every line is ok.
    DashboardsCheck {
        /// The dashboards' directory.
        #[arg(long, default_value = "config/grafana/dashboards")]
        dir: PathBuf,
        /// The datasource provisioning file whose uids the panels must use.
        #[arg(
            long,
            default_value = "config/grafana/provisioning/datasources/thermocline.yaml"
        )]
        datasources: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        prometheus: String,
        /// ClickHouse HTTP interface (password from CLICKHOUSE_PASSWORD).
        #[arg(long, default_value = "http://127.0.0.1:8123")]
        clickhouse: String,
        #[arg(long, default_value = "default")]
        clickhouse_user: String,
        /// The gateway's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:9880")]
        api: String,
        /// Dashboard variables, `name=value` (e.g. database=thermocline,
        /// device=sensor-1); unset query variables take their first value.
        #[arg(long = "var")]
        vars: Vec<String>,
        /// The range's length, ending now.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        range: std::time::Duration,
        /// The panels' interval (`$__interval_s`).
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// Check what the stores hold against a simulator ledger; exits non-zero on any difference.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        ledger: PathBuf,
        /// Check the Redis windows.
        #[arg(long)]
        hot: bool,
        /// Check ClickHouse (FINAL) and the Parquet objects in S3 (cold.s3 and
        /// cold.clickhouse settings), including duplicates across S3 objects.
        #[arg(long)]
        cold: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare sealed Redis buckets with ClickHouse and the `batches` table with
    /// S3; with --repair, rewrite Redis from ClickHouse and reload missing batches.
    Reconcile(crate::cli_reconcile::ReconcileArgs),
    /// Restore into ClickHouse the batches S3 holds and ClickHouse lacks over
    /// [--from, --to); a rerun inserts nothing (and resumes an interrupted run).
    Backfill(crate::cli_backfill::BackfillArgs),
    /// Import readings a device buffered offline (NDJSON, CSV or Parquet) through
    /// the gateway's validation into S3, ClickHouse and the hot windows; bad lines
    /// are reported by number; a rerun resumes from the checkpoint, never duplicates.
    Import(crate::cli_backfill::ImportArgs),
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttc=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<config::Config> {
    let raw = config::load(path)?;
    Ok(raw.validate()?)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Reconcile(args) => crate::cli_reconcile::run(args).await,
        Command::Run { config } => {
            let cfg = load(config.as_deref())?;
            let shutdown = CancellationToken::new();
            crate::shutdown::on_signal(shutdown.clone());
            let gw = Gateway::start(cfg, shutdown).await?;
            gw.wait().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::DashboardsCheck {
            dir,
            datasources,
            prometheus,
            clickhouse,
            clickhouse_user,
            api,
            vars,
            range,
            interval,
        } => {
            use crate::dashboards as d;
            let dashboards = d::load(&dir)?;
            let uids = d::provisioned_uids(&std::fs::read_to_string(&datasources)?);
            let mut ok = true;
            for p in d::lint(&dashboards, &uids) {
                println!("lint: error: {p}");
                ok = false;
            }
            let mut map = std::collections::BTreeMap::new();
            for v in vars {
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--var {v:?}: expected name=value"))?;
                map.insert(k.to_string(), val.to_string());
            }
            let servers = d::Servers {
                prometheus,
                clickhouse,
                clickhouse_user,
                clickhouse_password: std::env::var("CLICKHOUSE_PASSWORD").ok(),
                api,
            };
            let now = hot::service::now_ms();
            let from = now - i64::try_from(range.as_millis()).unwrap_or(i64::MAX / 2);
            for c in d::check(&dashboards, &servers, &map, (from, now), interval).await {
                ok &= c.status == d::Status::Ok;
                println!("{}", c.line());
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::CheckConfig { config } => {
            let raw = config::load(config.as_deref())?;
            let shown = raw.to_redacted_toml();
            raw.validate()?;
            print!("{shown}");
            eprintln!("config OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            config,
            host,
            port,
            devices,
            messages,
            rate,
            seed,
            prefix,
            connections,
            ledger,
        } => {
            let cfg = load(config.as_deref())?;
            let sim = devices::sim::SimConfig {
                host: host.unwrap_or(cfg.mqtt.host.clone()),
                port: port.unwrap_or(cfg.mqtt.port),
                username: cfg.mqtt.username.clone(),
                password: cfg
                    .mqtt
                    .password
                    .as_ref()
                    .map(|p| secrecy::ExposeSecret::expose_secret(p).to_string()),
                topic_template: simulator_template(&cfg.devices)?,
                devices,
                messages_per_device: messages,
                rate_per_s: rate,
                seed,
                prefix: prefix.unwrap_or_else(devices::sim::random_prefix),
                connections: connections.max(1),
                inflight: 100,
                ack_timeout: Duration::from_secs(60),
            };
            let led = devices::sim::run(sim).await.context("simulation failed")?;
            led.write(&ledger)?;
            eprintln!(
                "published {} readings from {} devices (prefix {}); ledger: {}",
                led.total_readings(),
                led.entries.len(),
                led.prefix,
                ledger.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(args) => crate::cli_backfill::backfill(args).await,
        Command::Import(args) => crate::cli_backfill::import(args).await,
        Command::Verify {
            config,
            ledger,
            hot,
            cold,
            json,
        } => {
            anyhow::ensure!(
                hot || cold,
                "say which stores to verify: --hot, --cold or both"
            );
            let cfg = load(config.as_deref())?;
            let led = devices::ledger::Ledger::read(&ledger)?;
            let mut ok = true;
            if cold {
                ok &= verify_cold(&cfg, &led, json).await?;
            }
            if !hot {
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            let conn = hot::connect::connect(&cfg.hot.redis)?;
            let reader = hot::reader::Reader::new(
                conn,
                hot::keys::Keys::new(&cfg.hot.key_prefix),
                &cfg.hot.resolutions,
            );
            let report = sync::verify::verify_hot(&reader, &led, hot::service::now_ms()).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "ok": report.ok(),
                        "rows": report.rows.iter().map(|((m, r), row)| serde_json::json!({"metric": m, "resolution": r, "row": row})).collect::<Vec<_>>(),
                        "skipped_resolutions": report.skipped_resolutions,
                        "mismatches": report.mismatches,
                    }))?
                );
            } else {
                print!("{}", report.render());
            }
            Ok(if ok && report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The cold stores for a one-shot command (verify, reconcile, backfill,
/// import). Their request metrics go to a throwaway registry: nothing scrapes
/// a command.
pub(crate) struct ColdStores {
    pub s3: cold::s3::S3Sink,
    pub ch: cold::clickhouse::ClickHouseSink,
}

pub(crate) async fn cold_stores(cfg: &config::Config) -> anyhow::Result<ColdStores> {
    let registry = prometheus::Registry::new();
    let ch = cold::clickhouse::ClickHouseSink::connect(
        cfg.cold.clickhouse.clone(),
        cold::clickhouse::ClickHouseMetrics::new(&registry)?,
    )?;
    let s3 = cold::s3::S3Sink::connect(cfg.cold.s3.clone(), cold::s3::S3Metrics::new(&registry)?)
        .await?;
    Ok(ColdStores { s3, ch })
}

/// `verify --cold`: prints the report; true when it passed.
async fn verify_cold(
    cfg: &config::Config,
    ledger: &devices::ledger::Ledger,
    json: bool,
) -> anyhow::Result<bool> {
    let ColdStores { s3, ch } = cold_stores(cfg).await?;
    let report = sync::verify_cold::verify_cold(&ch, &s3, ledger)
        .await
        .context("verify --cold")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": report.ok(), "cold": report}))?
        );
    } else {
        print!("{}", report.render());
    }
    Ok(report.ok())
}

/// The template the simulator publishes to: the first source that takes the
/// gateway's JSON object format on a topic of literals and one `{device_id}`.
fn simulator_template(devices: &devices::config::DevicesConfig) -> anyhow::Result<String> {
    use devices::source::Format;
    devices
        .sources
        .iter()
        .find(|s| {
            s.template.is_simple()
                && match &s.format {
                    Format::Auto { json, .. } | Format::Json(json) => {
                        **json == devices::json::JsonMapping::thermocline()
                    }
                    _ => false,
                }
        })
        .map(|s| s.template.as_str().to_string())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no source the simulator can publish to: it needs one with format auto or json and a topic of literals and one {{device_id}} (devices.topic_pattern is the usual one)"
            )
        })
}
