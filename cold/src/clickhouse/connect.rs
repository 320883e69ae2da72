//! Building the `clickhouse::Client`: our own hyper connector (TCP_NODELAY,
//! TLS for https), validation off (ClickHouse 18.16), credentials in headers.

use std::time::Duration;

use hyper_util::{
    client::legacy::{connect::HttpConnector, Client as HyperClient},
    rt::TokioExecutor,
};
use secrecy::ExposeSecret;

use super::config::ClickHouseConfig;
use crate::{Error, Result};

/// Idle pooled connections are dropped before the server closes them:
/// ClickHouse's `keep_alive_timeout` is 3 s up to 23.x.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A client for `cfg`, without a default database: every statement names
/// its tables in full (`db.readings`), which also lets `CREATE DATABASE` run
/// before the database exists.
///
/// - `TCP_NODELAY`: the crate's default connector leaves Nagle on, and every
///   INSERT then waits 16–46 ms for a delayed ACK whatever its size.
/// - `with_validation(false)`: validation fetches `RowBinaryWithNamesAndTypes`
///   and sets `describe_include_subcolumns`, both unknown to 18.16. Plain
///   RowBinary trusts the row structs to match the table, so
///   [`super::schema`] checks the columns once at start instead.
/// - User and password go in the `X-ClickHouse-User` / `X-ClickHouse-Key`
///   headers (18.16 honours them), never in the URL, so they cannot leak into
///   an error message that quotes the URL.
///
/// With a cluster every query carries `insert_distributed_sync=1`: an insert
/// into a `Distributed` table then answers only once every shard wrote its
/// part (the default queues the rows on the entry server's disk and answers
/// at once, which is not the durable ack the pipeline's spool release needs).
pub fn client(cfg: &ClickHouseConfig) -> Result<::clickhouse::Client> {
    client_for(cfg, &cfg.url)
}

/// [`client`] for another endpoint of the same deployment (a shard).
pub fn client_for(cfg: &ClickHouseConfig, url: &url::Url) -> Result<::clickhouse::Client> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_connect_timeout(Some(cfg.connect_timeout));
    let builder = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .clone();
    let client = if url.scheme() == "https" {
        http.enforce_http(false);
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| Error::Config {
                key: "cold.clickhouse.url".into(),
                reason: format!("https needs the system's CA certificates: {e}"),
            })?
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        ::clickhouse::Client::with_http_client(builder.build(https))
    } else {
        ::clickhouse::Client::with_http_client(builder.build(http))
    };
    let mut client = client
        .with_url(url.as_str().trim_end_matches('/'))
        .with_validation(false)
        .with_user(cfg.user.clone());
    if let Some(p) = &cfg.password {
        client = client.with_password(p.expose_secret());
    }
    if cfg.cluster.is_some() {
        client = client.with_setting("insert_distributed_sync", "1");
    }
    Ok(client)
}
