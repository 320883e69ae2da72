//! Writes a [`FlushBatch`] to Redis.
//!
//! One Lua script call per device merges all of that device's pending buckets
//! and its latest view atomically (the keys share the device's hash slot), so
//! count/sum add up and min/max/last stay right under concurrent writers from
//! several gateways. Calls are pipelined, `devices_per_pipeline` per round trip,
//! the pipelines of a flush in flight together; one `ZADD GT` per pipeline
//! updates the fleet index. Never one round trip per reading.
//!
//! Cost matters here: Redis runs every script on its one thread, so the script
//! does one `HMGET` and one `HSET` per bucket hash (all metrics of a device
//! share it) and formats numbers only where it must (counts and sums). A
//! min/max/last that wins is stored as the exact string the gateway sent
//! (shortest round-trip, from `ryu`); one that loses is not rewritten. Sums are
//! stored with `%.17g`, so every value read back is the same `f64`.

use std::collections::BTreeMap;

use redis::{aio::ConnectionManager, Pipeline, Script};

use crate::{
    aggregate::{DeviceBatch, FlushBatch},
    keys::Keys,
    window::{Agg, Resolution},
    Error, Result,
};
use devices::{DeviceId, MetricName};

/// Metrics per bucket entry of one script call: keeps Lua's `unpack` far below
/// its stack limit whatever a device sends (a key may then appear twice).
const METRICS_PER_ENTRY: usize = 200;

/// Pipelines of one flush in flight at once: enough to keep Redis busy while
/// the next one is built, few enough to bound the command buffers.
const PIPELINES_IN_FLIGHT: usize = 4;

/// KEYS[1] = the device's latest hash, KEYS[2..] = its bucket hashes.
/// ARGV[1] = number of bucket entries, ARGV[2] = arrival time (ms), ARGV[3] =
/// expiry of the latest hash (ms since epoch); then per bucket entry: its
/// expiry (ms), its number of metrics m, then m × 7 values: metric, count, sum,
/// min, max, last, last_ts; then per metric 3 values for the latest view:
/// metric, value, ts.
const MERGE_LUA: &str = r#"
local nb = tonumber(ARGV[1])
local a = 4
for i = 1, nb do
  local key, exp, nm = KEYS[i + 1], ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local fields = {}
  for j = 0, nm - 1 do
    local m = ARGV[a + j * 7]
    local b = j * 6
    fields[b + 1] = 'c:' .. m
    fields[b + 2] = 's:' .. m
    fields[b + 3] = 'mn:' .. m
    fields[b + 4] = 'mx:' .. m
    fields[b + 5] = 'l:' .. m
    fields[b + 6] = 'lt:' .. m
  end
  local cur = redis.call('HMGET', key, unpack(fields))
  local out, n, fresh = {}, 0, false
  local function put(f, v) out[n + 1] = f; out[n + 2] = v; n = n + 2 end
  for j = 0, nm - 1 do
    local p, b = a + j * 7, j * 6
    if cur[b + 1] then
      put(fields[b + 1], string.format('%d', tonumber(ARGV[p + 1]) + tonumber(cur[b + 1])))
      put(fields[b + 2], string.format('%.17g', tonumber(ARGV[p + 2]) + tonumber(cur[b + 2])))
      if tonumber(ARGV[p + 3]) < tonumber(cur[b + 3]) then put(fields[b + 3], ARGV[p + 3]) end
      if tonumber(ARGV[p + 4]) > tonumber(cur[b + 4]) then put(fields[b + 4], ARGV[p + 4]) end
      local lt, clt = tonumber(ARGV[p + 6]), tonumber(cur[b + 6])
      if lt > clt or (lt == clt and tonumber(ARGV[p + 5]) > tonumber(cur[b + 5])) then
        put(fields[b + 5], ARGV[p + 5])
        put(fields[b + 6], ARGV[p + 6])
      end
    else
      fresh = true
      for f = 1, 6 do put(fields[b + f], ARGV[p + f]) end
    end
  end
  redis.call('HSET', key, unpack(out))
  if fresh then redis.call('PEXPIREAT', key, exp) end
  a = a + nm * 7
end
local latest = KEYS[1]
local lf, la = {}, {}
while a <= #ARGV do
  lf[#lf + 1] = 't:' .. ARGV[a]
  lf[#lf + 1] = 'v:' .. ARGV[a]
  la[#la + 1] = a
  a = a + 3
end
lf[#lf + 1] = 'seen'
local cur = redis.call('HMGET', latest, unpack(lf))
local out, n = {}, 0
for j, p in ipairs(la) do
  local ct, cv = tonumber(cur[2 * j - 1]), tonumber(cur[2 * j])
  local t, v = tonumber(ARGV[p + 2]), tonumber(ARGV[p + 1])
  if not ct or t > ct or (t == ct and v > cv) then
    out[n + 1] = lf[2 * j]; out[n + 2] = ARGV[p + 1]
    out[n + 3] = lf[2 * j - 1]; out[n + 4] = ARGV[p + 2]
    n = n + 4
  end
end
if tonumber(ARGV[2]) > tonumber(cur[#lf] or '0') then
  out[n + 1] = 'seen'; out[n + 2] = ARGV[2]
  n = n + 2
end
if n > 0 then redis.call('HSET', latest, unpack(out)) end
redis.call('PEXPIREAT', latest, ARGV[3])
return nb
"#;

/// What one flush wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Readings whose buckets were merged.
    pub readings: u64,
    /// Readings of pipelines that failed.
    pub failed: u64,
    /// The first error, if any pipeline failed.
    pub error: Option<Error>,
}

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

    /// Writes every device's pending windows; fails if any pipeline failed.
    pub async fn write(&self, batch: &FlushBatch, now_ms: i64) -> Result<()> {
        match self.write_counted(batch, now_ms).await {
            Written { error: Some(e), .. } => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes every device's pending windows and says how many readings landed.
    /// A pipeline that fails counts all its devices' readings as failed: nothing
    /// can be said about which of its scripts were applied. The reconciler
    /// repairs those buckets from cold storage. Other pipelines are unaffected.
    pub async fn write_counted(&self, batch: &FlushBatch, now_ms: i64) -> Written {
        let devices: Vec<(&DeviceId, &DeviceBatch)> = batch.devices.iter().collect();
        let mut chunks = devices.chunks(self.devices_per_pipeline);
        let mut pipes = tokio::task::JoinSet::new();
        let mut out = Written::default();
        loop {
            // Build a pipeline only when one of the PIPELINES_IN_FLIGHT slots is
            // free: a flush of 100,000 devices must not hold every command in
            // memory at once.
            while pipes.len() < PIPELINES_IN_FLIGHT {
                let Some(chunk) = chunks.next() else { break };
                let pipe = self.pipeline(chunk, now_ms);
                let readings: u64 = chunk.iter().map(|(_, d)| d.readings).sum();
                let this = self.clone();
                pipes.spawn(async move { (readings, this.run(&pipe).await) });
            }
            let Some(done) = pipes.join_next().await else {
                break;
            };
            match done {
                Ok((n, Ok(()))) => out.readings += n,
                Ok((n, Err(e))) => {
                    out.failed += n;
                    out.error.get_or_insert(e);
                }
                Err(e) => {
                    out.error
                        .get_or_insert(Error::BadRequest(format!("flush task failed: {e}")));
                }
            }
        }
        // A panicked pipeline task: whatever is not accounted for failed.
        out.failed = batch.readings - out.readings;
        out
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
            // Group the device's buckets by hash key: (resolution, start).
            let mut hashes: BTreeMap<(u8, i64), Vec<(&MetricName, &Agg)>> = BTreeMap::new();
            for ((metric, res_idx, start), agg) in &batch.buckets {
                hashes
                    .entry((*res_idx, *start))
                    .or_default()
                    .push((metric, agg));
            }
            let entries: usize = hashes
                .values()
                .map(|m| m.len().div_ceil(METRICS_PER_ENTRY))
                .sum();
            let mut inv = self.script.prepare_invoke();
            inv.key(self.keys.latest(device));
            inv.arg(entries)
                .arg(batch.seen_ms)
                .arg(now_ms + max_retention);
            for ((res_idx, start), metrics) in &hashes {
                let res = &self.resolutions[*res_idx as usize];
                for part in metrics.chunks(METRICS_PER_ENTRY) {
                    inv.key(self.keys.bucket(device, &res.label, *start));
                    inv.arg(res.expires_at_ms(*start)).arg(part.len());
                    for (metric, agg) in part {
                        inv.arg(metric.as_str())
                            .arg(agg.count)
                            .arg(agg.sum)
                            .arg(agg.min)
                            .arg(agg.max)
                            .arg(agg.last)
                            .arg(agg.last_ts_ms);
                    }
                }
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
