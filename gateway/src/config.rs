//! The whole configuration: layered, parsed, then validated.
//!
//! Layers, later wins: built-in defaults (`config/default.toml`, compiled in) →
//! the file given with `--config` → environment `THERMOCLINE__SECTION__KEY`
//! (e.g. `THERMOCLINE__HOT__FLUSH_INTERVAL=50ms`). Each crate owns its section
//! (`[devices]`, `[hot]`, `[cold]`, `[sync]`); the gateway owns `[gateway]`, `[mqtt]` and `[http]`.
//! Unknown keys are errors that name the key.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    mqtt::{MqttConfig, RawMqttConfig},
    Error, Result,
};

/// The built-in defaults: the same file operators read as the reference.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub gateway: RawGatewayConfig,
    pub mqtt: RawMqttConfig,
    pub http: RawHttpConfig,
    pub devices: devices::config::RawDevicesConfig,
    pub hot: hot::RawHotConfig,
    pub cold: cold::pipeline::RawColdConfig,
    pub sync: sync::RawSyncConfig,
    pub fleet: crate::fleet::RawFleetConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGatewayConfig {
    /// This gateway's identity: MQTT client id, later cold batch ids.
    pub id: String,
    /// How long shutdown may take (stop reading, flush, disconnect) before it is forced.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for RawGatewayConfig {
    fn default() -> Self {
        Self {
            id: "gw-1".into(),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpConfig {
    pub listen: String,
}

impl Default for RawHttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9880".into(),
        }
    }
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway_id: devices::DeviceId,
    pub shutdown_timeout: Duration,
    pub http_listen: SocketAddr,
    pub mqtt: MqttConfig,
    pub devices: devices::config::DevicesConfig,
    pub hot: hot::HotConfig,
    /// Validated also when `cold.enabled` is false.
    pub cold: cold::pipeline::ColdConfig,
    /// The reconciler; runs only when `cold.enabled` too.
    pub sync: sync::SyncConfig,
    /// Devices that go quiet: the gauge thresholds.
    pub fleet: crate::fleet::FleetConfig,
}

/// Reads the layers into the raw (unvalidated) config.
pub fn load(path: Option<&Path>) -> Result<RawConfig> {
    load_with_env(path, std::env::vars())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig> {
    let mut builder = defaults();
    if let Some(p) = path {
        if !p.is_file() {
            return Err(Error::Config {
                key: "--config".into(),
                reason: format!("{} is not a readable file", p.display()),
            });
        }
        builder = builder.add_source(::config::File::from(p).format(::config::FileFormat::Toml));
    }
    with_env(builder, env)
}

/// [`load_with_env`] with the `--config` file's contents given as a string
/// (the config fuzz target): the same layers, the same errors.
pub fn load_str_with_env(
    toml: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig> {
    let builder = defaults().add_source(::config::File::from_str(toml, ::config::FileFormat::Toml));
    with_env(builder, env)
}

/// The first layer: the built-in defaults.
fn defaults() -> ::config::ConfigBuilder<::config::builder::DefaultState> {
    ::config::Config::builder().add_source(::config::File::from_str(
        DEFAULT_TOML,
        ::config::FileFormat::Toml,
    ))
}

/// The last layer, `THERMOCLINE__SECTION__KEY` from `env`, then deserialization.
fn with_env(
    builder: ::config::ConfigBuilder<::config::builder::DefaultState>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig> {
    let env: std::collections::HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("THERMOCLINE__"))
        .collect();
    let builder = builder.add_source(
        ::config::Environment::with_prefix("THERMOCLINE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            // List keys: THERMOCLINE__HOT__REDIS__CLUSTER_NODES=redis://a:7000,redis://b:7001
            // and THERMOCLINE__COLD__CLICKHOUSE__SHARD_URLS=a,b
            .list_separator(",")
            .with_list_parse_key("hot.redis.cluster_nodes")
            .with_list_parse_key("cold.clickhouse.shard_urls")
            .source(Some(env)),
    );
    Ok(builder.build()?.try_deserialize()?)
}

impl RawConfig {
    pub fn validate(self) -> Result<Config> {
        let gateway_id = devices::DeviceId::parse(&self.gateway.id).map_err(|r| Error::Config {
            key: "gateway.id".into(),
            reason: r.detail,
        })?;
        if self.gateway.shutdown_timeout.is_zero() {
            return Err(Error::Config {
                key: "gateway.shutdown_timeout".into(),
                reason: "must be above zero".into(),
            });
        }
        let http_listen = self.http.listen.parse().map_err(|e| Error::Config {
            key: "http.listen".into(),
            reason: format!("{:?} is not host:port ({e})", self.http.listen),
        })?;
        let devices = self.devices.validate()?;
        if devices.sparkplug.is_some() && !self.mqtt.shared_group.is_empty() {
            return Err(Error::Config {
                key: "devices.sparkplug.enabled".into(),
                reason: "Sparkplug needs every message of an edge node in one gateway \
                         (its aliases and seq are per node); it cannot be combined with \
                         mqtt.shared_group"
                    .into(),
            });
        }
        let mqtt = self.mqtt.validate(
            gateway_id.as_str(),
            devices.subscription_filters(),
            devices.max_payload_bytes,
        )?;
        let hot = self.hot.validate()?;
        let cold = self.cold.validate()?;
        let sync = self.sync.validate(cold.batch.max_age)?;
        let fleet = self.fleet.validate()?;
        Ok(Config {
            gateway_id,
            shutdown_timeout: self.gateway.shutdown_timeout,
            http_listen,
            mqtt,
            devices,
            hot,
            cold,
            sync,
            fleet,
        })
    }

    /// The effective configuration as TOML, secrets redacted (`check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let c = load_with_env(None, env(&[])).unwrap().validate().unwrap();
        assert_eq!(c.mqtt.subscriptions, ["devices/#"]);
        assert_eq!(c.mqtt.client_id, "thermocline-gw-1");
        assert_eq!(c.hot.flush_interval, Duration::from_millis(100));
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:9880");
        assert!(c.cold.enabled);
        assert_eq!(c.cold.spool.dir, std::path::Path::new("data/spool"));
        assert_eq!(c.cold.spool.fsync_interval, Duration::from_millis(20));
    }

    #[test]
    fn default_toml_matches_builtin_defaults() {
        // config/default.toml documents every key; it must say what the code does.
        let from_file: RawConfig = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(
            toml::to_string(&from_file).unwrap(),
            toml::to_string(&RawConfig::default()).unwrap()
        );
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[hot]\nflush_interval = \"250ms\"\nkey_prefix = \"file\"\n[mqtt]\nport = 1999\n",
        )
        .unwrap();
        let c = load_with_env(
            Some(&p),
            env(&[
                ("THERMOCLINE__HOT__KEY_PREFIX", "env"),
                ("THERMOCLINE__MQTT__SHARED_GROUP", "g"),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(c.hot.flush_interval, Duration::from_millis(250));
        assert_eq!(c.hot.key_prefix, "env");
        assert_eq!(c.mqtt.port, 1999);
        assert_eq!(c.mqtt.subscriptions, ["$share/g/devices/#"]);
    }

    #[test]
    fn sources_from_a_file_add_subscriptions_and_name_their_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[[devices.sources]]\ntopic = \"tele/{device_id}/SENSOR\"\nformat = \"json\"\n\n[[devices.sources]]\ntopic = \"factory/{site}/{device_id}\"\n",
        )
        .unwrap();
        let c = load_with_env(Some(&p), env(&[("THERMOCLINE__MQTT__SHARED_GROUP", "g")]))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.devices.sources.len(), 3);
        assert_eq!(
            c.mqtt.subscriptions,
            [
                "$share/g/devices/#",
                "$share/g/factory/#",
                "$share/g/tele/#"
            ]
        );

        std::fs::write(
            &p,
            "[[devices.sources]]\ntopic = \"tele/{device_id}/SENSOR\"\n[[devices.sources]]\ntopic = \"tele/{device_id}/{metric}/#/x\"\n",
        )
        .unwrap();
        let e = load_with_env(Some(&p), env(&[]))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`devices.sources[1].topic`"), "{e}");
        assert!(e.contains("'#' may only be the last level"), "{e}");
    }

    #[test]
    fn sparkplug_example_config_validates() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/examples/sparkplug.toml"
        ));
        let c = load_with_env(Some(p), env(&[]))
            .unwrap()
            .validate()
            .unwrap();
        let sp = c.devices.sparkplug.expect("the example enables Sparkplug");
        assert_eq!((sp.separator, sp.rebirth), ('.', true));
        assert_eq!(c.mqtt.subscriptions, ["devices/#"]);
    }

    #[test]
    fn sparkplug_section_loads_and_refuses_a_shared_group() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[devices.sparkplug]\nenabled = true\nid_separator = \"_\"\nmax_nodes = 5\n",
        )
        .unwrap();
        let c = load_with_env(Some(&p), env(&[]))
            .unwrap()
            .validate()
            .unwrap();
        let sp = c.devices.sparkplug.expect("enabled");
        assert_eq!((sp.separator, sp.max_nodes), ('_', 5));
        assert!(load_with_env(None, env(&[]))
            .unwrap()
            .validate()
            .unwrap()
            .devices
            .sparkplug
            .is_none());

        let shared = load_with_env(Some(&p), env(&[("THERMOCLINE__MQTT__SHARED_GROUP", "g")]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            shared.to_string().contains("devices.sparkplug.enabled")
                && shared.to_string().contains("mqtt.shared_group"),
            "{shared}"
        );
        std::fs::write(
            &p,
            "[devices.sparkplug]\nenabled = true\nid_separator = \"/\"\n",
        )
        .unwrap();
        let bad = load_with_env(Some(&p), env(&[]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            bad.to_string().contains("devices.sparkplug.id_separator"),
            "{bad}"
        );
    }

    #[test]
    fn a_toml_string_is_the_file_layer() {
        let c = load_str_with_env(
            "[hot]\nflush_interval = \"250ms\"\nkey_prefix = \"file\"\n",
            env(&[("THERMOCLINE__HOT__KEY_PREFIX", "env")]),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(c.hot.flush_interval, Duration::from_millis(250));
        assert_eq!(c.hot.key_prefix, "env");
        let e = load_str_with_env("[hot]\nflush_intervall = 1\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush_intervall"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[hot]\nflush_intervall = \"250ms\"\n").unwrap();
        let e = load_with_env(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(e.contains("flush_intervall"), "{e}");

        std::fs::write(&p, "[mqtt]\nport = \"many\"\n").unwrap();
        let e = load_with_env(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");

        let e = load_with_env(None, env(&[("THERMOCLINE__HOT__FLUSH_INTERVAL", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush_interval"), "{e}");

        let e = load_with_env(None, env(&[("THERMOCLINE__MQTT__QOS", "2")]))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt.qos"), "{e}");

        for bad in ["0", "65536"] {
            let e = load_with_env(None, env(&[("THERMOCLINE__MQTT__MAX_UNACKED", bad)]))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("mqtt.max_unacked"), "{bad}: {e}");
        }

        let e = load_with_env(None, env(&[("THERMOCLINE__HTTP__LISTEN", "nowhere")]))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen"), "{e}");

        let missing = dir.path().join("missing.toml");
        assert!(load_with_env(Some(&missing), env(&[]))
            .unwrap_err()
            .to_string()
            .contains("--config"));
    }

    #[test]
    fn secrets_are_redacted() {
        let raw = load_with_env(
            None,
            env(&[
                ("THERMOCLINE__MQTT__USERNAME", "gw"),
                ("THERMOCLINE__MQTT__PASSWORD", "mqtt-secret-1"),
                ("THERMOCLINE__HOT__REDIS__PASSWORD", "redis-secret-2"),
                ("THERMOCLINE__COLD__S3__ACCESS_KEY_ID", "ak"),
                ("THERMOCLINE__COLD__S3__SECRET_ACCESS_KEY", "s3-secret-3"),
                ("THERMOCLINE__COLD__CLICKHOUSE__PASSWORD", "ch-secret-4"),
            ]),
        )
        .unwrap();
        let shown = raw.to_redacted_toml();
        let secrets = [
            "mqtt-secret-1",
            "redis-secret-2",
            "s3-secret-3",
            "ch-secret-4",
        ];
        assert!(secrets.iter().all(|s| !shown.contains(s)), "{shown}");
        assert_eq!(shown.matches("<redacted>").count(), 4, "{shown}");
        let debug = format!("{:?}", raw.clone().validate().unwrap());
        assert!(secrets.iter().all(|s| !debug.contains(s)), "{debug}");
    }
}
