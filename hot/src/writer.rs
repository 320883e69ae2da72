//! Writes a [`FlushBatch`] to Redis.
//!
//! One Lua script call per device merges all of that device's pending buckets
//! and its latest view atomically (the keys share the device's hash slot), so
//! count/sum add up and min/max/last stay right under concurrent writers from
//! several gateways. Calls are pipelined, `devices_per_pipeline` per round trip;
//! one `ZADD GT` per pipeline updates the fleet index. Never one round trip per
//! reading.
//!
//! Numbers cross into Lua as shortest round-trip decimal strings and are stored
//! with `%.17g`, so a value read back is the same `f64`.

use redis::{aio::ConnectionManager, Pipeline, Script};

use crate::{
    aggregate::{DeviceBatch, FlushBatch},
    keys::Keys,
    window::Resolution,
    Error, Result,
};
use devices::DeviceId;

/// KEYS[1] = the device's latest hash, KEYS[2..] = its bucket hashes.
/// ARGV[1] = number of buckets n, ARGV[2] = arrival time (ms), ARGV[3] = expiry
/// of the latest hash (ms since epoch); then per bucket 7 values: count, sum,
/// min, max, last, last_ts, expire_at_ms; then per metric 3 values: name,
/// value, ts.
const MERGE_LUA: &str = r#"
local function f(x) return string.format('%.17g', x) end
local n = tonumber(ARGV[1])
local a = 4
for i = 1, n do
  local key = KEYS[i + 1]
  local c, s, mn, mx = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3])
  local l, lt = tonumber(ARGV[a+4]), tonumber(ARGV[a+5])
  local cur = redis.call('HMGET', key, 'c', 's', 'mn', 'mx', 'l', 'lt')
  if cur[1] then
    c = c + tonumber(cur[1])
    s = s + tonumber(cur[2])
    mn = math.min(mn, tonumber(cur[3]))
    mx = math.max(mx, tonumber(cur[4]))
    local cl, clt = tonumber(cur[5]), tonumber(cur[6])
    if clt > lt or (clt == lt and cl > l) then l, lt = cl, clt end
    redis.call('HSET', key, 'c', string.format('%d', c), 's', f(s), 'mn', f(mn), 'mx', f(mx), 'l', f(l), 'lt', string.format('%d', lt))
  else
    redis.call('HSET', key, 'c', string.format('%d', c), 's', f(s), 'mn', f(mn), 'mx', f(mx), 'l', f(l), 'lt', string.format('%d', lt))
    redis.call('PEXPIREAT', key, ARGV[a+6])
  end
  a = a + 7
end
local latest = KEYS[1]
while a <= #ARGV do
  local m, v, t = ARGV[a], tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local cur = redis.call('HMGET', latest, 't:' .. m, 'v:' .. m)
  local ct, cv = tonumber(cur[1]), tonumber(cur[2])
  if not ct or t > ct or (t == ct and v > cv) then
    redis.call('HSET', latest, 'v:' .. m, f(v), 't:' .. m, string.format('%d', t))
  end
  a = a + 3
end
local seen = tonumber(redis.call('HGET', latest, 'seen') or '0')
if tonumber(ARGV[2]) > seen then redis.call('HSET', latest, 'seen', ARGV[2]) end
redis.call('PEXPIREAT', latest, ARGV[3])
return n
"#;

/// The Redis side of the hot path: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Writer {
    conn: ConnectionManager,
    keys: Keys,
    resolutions: std::sync::Arc<[Resolution]>,
    script: Script,
    devices_per_pipeline: usize,
}

impl Writer {
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        resolutions: &[Resolution],
        devices_per_pipeline: usize,
    ) -> Self {
        Self {
            conn,
            keys,
            resolutions: resolutions.into(),
            script: Script::new(MERGE_LUA),
            devices_per_pipeline: devices_per_pipeline.max(1),
        }
    }

    /// Writes every device's pending windows. On error nothing can be said about
    /// which devices of the failing pipeline were applied; the caller counts the
    /// batch as not written and the reconciler repairs from cold storage.
    pub async fn write(&self, batch: &FlushBatch, now_ms: i64) -> Result<()> {
        let devices: Vec<(&DeviceId, &DeviceBatch)> = batch.devices.iter().collect();
        for chunk in devices.chunks(self.devices_per_pipeline) {
            let pipe = self.pipeline(chunk, now_ms);
            self.run(&pipe).await?;
        }
        Ok(())
    }

    async fn run(&self, pipe: &Pipeline) -> Result<()> {
        let mut conn = self.conn.clone();
        match pipe.exec_async(&mut conn).await {
            Ok(()) => Ok(()),
            // After a Redis restart its script cache is empty: every EVALSHA of
            // this pipeline failed without effect, and the ZADD GT is idempotent,
            // so loading the script and running it again is safe.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.prepare_invoke().load_async(&mut conn).await?;
                pipe.exec_async(&mut conn).await.map_err(Error::from)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn pipeline(&self, devices: &[(&DeviceId, &DeviceBatch)], now_ms: i64) -> Pipeline {
        let mut pipe = redis::pipe();
        let max_retention = self
            .resolutions
            .iter()
            .map(|r| r.width_ms + r.retention_ms)
            .max()
            .unwrap_or(0);
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.keys.device_index()).arg("GT");
        for (device, batch) in devices {
            let mut inv = self.script.prepare_invoke();
            inv.key(self.keys.latest(device));
            inv.arg(batch.buckets.len())
                .arg(batch.seen_ms)
                .arg(now_ms + max_retention);
            for ((metric, res_idx, start), agg) in &batch.buckets {
                let res = &self.resolutions[*res_idx as usize];
                inv.key(self.keys.bucket(device, &res.label, *start, metric));
                inv.arg(agg.count)
                    .arg(agg.sum)
                    .arg(agg.min)
                    .arg(agg.max)
                    .arg(agg.last)
                    .arg(agg.last_ts_ms)
                    .arg(res.expires_at_ms(*start));
            }
            for (metric, (ts, value)) in &batch.latest {
                inv.arg(metric.as_str()).arg(*value).arg(*ts);
            }
            pipe.invoke_script(&inv).ignore();
            zadd.arg(batch.seen_ms).arg(device.as_str());
        }
        pipe.add_command(zadd).ignore();
        // Keep the fleet index bounded: forget devices unseen for longer than
        // the longest retention.
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.device_index())
            .arg("-inf")
            .arg(format!("({}", now_ms - max_retention))
            .ignore();
        pipe
    }
}
