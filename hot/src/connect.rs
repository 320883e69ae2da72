//! Opening the Redis connection from [`RedisConfig`]: credentials and TLS.

use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, IntoConnectionInfo};
use secrecy::ExposeSecret;

use crate::{config::RedisConfig, Error, Result};

/// Selects rustls's crypto provider (aws-lc-rs) for the process, unless one
/// was installed already. Call before any TLS connection is configured.
///
/// redis (`rediss://`) and rumqttc (MQTT over TLS) both build their TLS
/// config with `rustls::ClientConfig::builder()`, which takes the process
/// default. rustls infers that default only when exactly one of its `ring`
/// and `aws-lc-rs` features is compiled in; as soon as any dependency turns
/// on the other one (reqwest's `rustls-tls` does, in the gateway's test build)
/// every TLS handshake panics ("Could not automatically determine the
/// process-level CryptoProvider") inside a connection task, and the gateway
/// silently never connects. Choosing explicitly removes that dependence on
/// feature unification.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only if another thread installed one first: that one is kept.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// A reconnecting connection. Lazy: the gateway starts even while Redis is
/// down, and reconnects by itself when it comes back.
pub fn connect(cfg: &RedisConfig) -> Result<ConnectionManager> {
    ensure_crypto_provider();
    let mut info = cfg.url.as_str().into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &cfg.username {
        settings = settings.set_username(user);
    }
    if let Some(pw) = &cfg.password {
        settings = settings.set_password(pw.expose_secret());
    }
    info = info.set_redis_settings(settings);
    let client = match &cfg.tls_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )?
        }
        None => redis::Client::open(info)?,
    };
    let mgr_cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(std::time::Duration::from_secs(1));
    Ok(ConnectionManager::new_lazy_with_config(client, mgr_cfg)?)
}
