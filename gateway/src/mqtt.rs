//! The `[mqtt]` config section and the rumqttc options built from it.

use std::{path::PathBuf, time::Duration};

use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqttConfig {
    pub host: String,
    pub port: u16,
    /// Client id of the persistent session; empty = `thermocline-{gateway.id}`.
    pub client_id: String,
    /// false keeps a persistent session: the broker queues QoS 1 messages while
    /// the gateway is away and redelivers what was not acknowledged.
    pub clean_session: bool,
    /// Subscription filter; empty = derived from the sources' topic templates
    /// (`devices/#`, one filter per distinct literal prefix), wide on purpose
    /// so hostile topics arrive and are counted. When set, it is the only filter.
    pub topic_filter: String,
    /// When set, subscribe as `$share/{group}/{filter}` so several gateways
    /// split the fleet.
    pub shared_group: String,
    /// 0 or 1.
    pub qos: u8,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Largest MQTT packet accepted from the broker. Must exceed
    /// `devices.max_payload_size` with headroom: a larger packet makes the
    /// client drop the connection, and the broker would redeliver it forever.
    /// Set the broker's `message_size_limit` at or below it.
    pub max_packet_size: bytesize::ByteSize,
    /// With the cold path on: the most QoS 1 publishes taken from the broker
    /// before their acks are written (each waits for its spool fsync). At the
    /// limit ingest stops reading until acks go out. 1-65535 (the packet-id
    /// space); the broker's in-flight window (`max_inflight_messages`) should
    /// be well below it, but a broker that ignores its own is held here.
    pub max_unacked: u32,
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    pub username: Option<String>,
    #[serde(serialize_with = "devices::secret::redact")]
    pub password: Option<SecretString>,
    pub tls: RawTlsConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTlsConfig {
    pub enabled: bool,
    /// PEM CA bundle that signs the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that require mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl Default for RawMqttConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            clean_session: false,
            topic_filter: String::new(),
            shared_group: String::new(),
            qos: 1,
            keep_alive: Duration::from_secs(30),
            max_packet_size: bytesize::ByteSize::mib(16),
            max_unacked: 65_535,
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(10),
            username: None,
            password: None,
            tls: RawTlsConfig::default(),
        }
    }
}

/// The validated `[mqtt]` section.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub clean_session: bool,
    /// The filters actually subscribed to (each with any `$share/` prefix); never empty.
    pub subscriptions: Vec<String>,
    pub qos: QoS,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
    pub max_unacked: usize,
    pub reconnect_min_delay: Duration,
    pub reconnect_max_delay: Duration,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Read at startup, so a bad path fails fast.
    pub tls: Option<TlsMaterial>,
}

/// PEM bytes for a TLS connection to the broker.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca: Vec<u8>,
    /// Client certificate and key, for mutual TLS.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsMaterial")
            .field("ca_bytes", &self.ca.len())
            .field("client_auth", &self.client_auth.is_some())
            .finish()
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("mqtt.{key}"),
        reason: reason.into(),
    }
}

fn read(key: &str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))
}

impl RawMqttConfig {
    pub fn validate(
        self,
        gateway_id: &str,
        derived_filters: Vec<String>,
        max_payload_bytes: usize,
    ) -> Result<MqttConfig> {
        if self.host.is_empty() {
            return Err(invalid("host", "must not be empty"));
        }
        if self.port == 0 {
            return Err(invalid("port", "must be 1-65535"));
        }
        let client_id = if self.client_id.is_empty() {
            format!("thermocline-{gateway_id}")
        } else {
            self.client_id
        };
        if client_id.len() > 64 {
            return Err(invalid("client_id", "at most 64 characters"));
        }
        let qos = match self.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            q => return Err(invalid("qos", format!("{q} is not supported; use 0 or 1"))),
        };
        let filters = if self.topic_filter.is_empty() {
            derived_filters
        } else {
            vec![self.topic_filter]
        };
        if filters.is_empty() {
            return Err(invalid("topic_filter", "no filter to subscribe to"));
        }
        if !self.shared_group.is_empty() && self.shared_group.contains(['/', '+', '#']) {
            return Err(invalid("shared_group", "must not contain / + #"));
        }
        let subscriptions = filters
            .into_iter()
            .map(|filter| {
                if self.shared_group.is_empty() {
                    filter
                } else {
                    format!("$share/{}/{filter}", self.shared_group)
                }
            })
            .collect();
        if self.keep_alive < Duration::from_secs(5) {
            return Err(invalid("keep_alive", "at least 5s"));
        }
        let max_packet_bytes = self.max_packet_size.as_u64() as usize;
        if max_packet_bytes < max_payload_bytes + 1024 {
            return Err(invalid(
                "max_packet_size",
                format!("must exceed devices.max_payload_size ({max_payload_bytes} bytes) by at least 1 KiB"),
            ));
        }
        if !(1..=65_535).contains(&self.max_unacked) {
            return Err(invalid("max_unacked", "must be 1-65535"));
        }
        if self.reconnect_min_delay.is_zero() || self.reconnect_max_delay < self.reconnect_min_delay
        {
            return Err(invalid(
                "reconnect_max_delay",
                "need 0 < reconnect_min_delay <= reconnect_max_delay",
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(invalid("password", "set mqtt.username too"));
        }
        let tls = if self.tls.enabled {
            let ca = match &self.tls.ca_file {
                Some(p) => read("tls.ca_file", p)?,
                None => return Err(invalid("tls.ca_file", "required when mqtt.tls.enabled")),
            };
            let client_auth = match (&self.tls.client_cert_file, &self.tls.client_key_file) {
                (Some(c), Some(k)) => Some((
                    read("tls.client_cert_file", c)?,
                    read("tls.client_key_file", k)?,
                )),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "tls.client_key_file",
                        "set both client_cert_file and client_key_file",
                    ))
                }
            };
            Some(TlsMaterial { ca, client_auth })
        } else {
            None
        };
        Ok(MqttConfig {
            host: self.host,
            port: self.port,
            client_id,
            clean_session: self.clean_session,
            subscriptions,
            qos,
            keep_alive: self.keep_alive,
            max_packet_bytes,
            max_unacked: self.max_unacked as usize,
            reconnect_min_delay: self.reconnect_min_delay,
            reconnect_max_delay: self.reconnect_max_delay,
            username: self.username,
            password: self.password,
            tls,
        })
    }
}

impl MqttConfig {
    pub fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(&self.client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes)
            .set_request_channel_capacity(64);
        if let Some(user) = &self.username {
            let pw = self
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .unwrap_or_default();
            o.set_credentials(user, pw);
        }
        if let Some(tls) = &self.tls {
            hot::connect::ensure_crypto_provider();
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: tls.ca.clone(),
                alpn: None,
                client_auth: tls.client_auth.clone(),
            }));
        }
        o
    }
}
