//! Opening the Redis connection from [`RedisConfig`]: one server or a
//! cluster, credentials and TLS.

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};
use secrecy::ExposeSecret;

use crate::{
    config::{RedisConfig, RedisServers},
    Error, Result,
};

/// A connection to one Redis server or to a Redis Cluster; cheap to clone
/// (clones share the connection). On a cluster every command and pipeline is
/// routed by its keys' slot, and MOVED/ASK redirections during a resharding
/// are followed by the redis crate: callers keep each pipeline and script call
/// within one slot.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

fn read_ca(cfg: &RedisConfig) -> Result<Option<Vec<u8>>> {
    cfg.tls_ca_file
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })
        })
        .transpose()
}

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
pub fn connect(cfg: &RedisConfig) -> Result<Conn> {
    ensure_crypto_provider();
    match &cfg.servers {
        RedisServers::Single(url) => connect_single(cfg, url).map(Conn::Single),
        RedisServers::Cluster(nodes) => connect_cluster(cfg, nodes).map(Conn::Cluster),
    }
}

fn connect_cluster(cfg: &RedisConfig, nodes: &[url::Url]) -> Result<ClusterConnection> {
    // TLS is taken from the nodes' scheme (all rediss:// or none).
    let mut b = ClusterClientBuilder::new(nodes.iter().map(|u| u.as_str()));
    if let Some(user) = &cfg.username {
        b = b.username(user);
    }
    if let Some(pw) = &cfg.password {
        b = b.password(pw.expose_secret());
    }
    if let Some(pem) = read_ca(cfg)? {
        b = b.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        });
    }
    let client = b.retries(4).max_retry_wait(1000).build()?;
    Ok(client.get_pending_async_connection_with_config(
        ClusterConfig::new()
            .set_connection_timeout(cfg.connect_timeout)
            .set_response_timeout(cfg.response_timeout),
    ))
}

fn connect_single(cfg: &RedisConfig, url: &url::Url) -> Result<ConnectionManager> {
    let mut info = url.as_str().into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &cfg.username {
        settings = settings.set_username(user);
    }
    if let Some(pw) = &cfg.password {
        settings = settings.set_password(pw.expose_secret());
    }
    info = info.set_redis_settings(settings);
    let client = match read_ca(cfg)? {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        )?,
        None => redis::Client::open(info)?,
    };
    let mgr_cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(std::time::Duration::from_secs(1));
    Ok(ConnectionManager::new_lazy_with_config(client, mgr_cfg)?)
}
