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

use std::collections::{BTreeMap, HashMap};

use redis::{cluster_routing::Slot, Pipeline, Script};

use crate::connect::Conn;

use crate::{
    aggregate::{DeviceBatch, FlushBatch},
    keys::Keys,
    window::{Agg, Resolution},
    Error, Result,
};
use devices::{DeviceId, MetricName};

/// Metrics per bucket entry of one script call: keeps Lua's `unpack` (at most
/// ~8,000 values) far below its limit whatever a device sends (a key may then
/// appear twice). The script chunks the latest view the same way, 500 metrics
/// (2,000 HSET values) at a time.
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
local LATEST_CHUNK = 500
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
-- The latest view in chunks of LATEST_CHUNK metrics (two HMGET fields and up
-- to four HSET values each), like the bucket entries: a device may send more
-- metrics than Lua's unpack takes at once. `seen` rides on the first chunk;
-- the loop runs once even when there is no latest value to write.
local first = true
repeat
  local lf, la = {}, {}
  while a <= #ARGV and #la < LATEST_CHUNK do
    lf[#lf + 1] = 't:' .. ARGV[a]
    lf[#lf + 1] = 'v:' .. ARGV[a]
    la[#la + 1] = a
    a = a + 3
  end
  if first then lf[#lf + 1] = 'seen' end
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
  if first and tonumber(ARGV[2]) > tonumber(cur[#lf] or '0') then
    out[n + 1] = 'seen'; out[n + 2] = ARGV[2]
    n = n + 2
  end
  if n > 0 then redis.call('HSET', latest, unpack(out)) end
  first = false
until a > #ARGV
redis.call('PEXPIREAT', latest, ARGV[3])
return nb
"#;

/// What one flush wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Readings whose buckets were merged.
    pub readings: u64,
    /// Readings whose device's script did not run (or whose pipeline got no answer).
    pub failed: u64,
    /// Devices whose script was applied.
    pub devices: u64,
    /// Devices whose script failed or got no answer.
    pub failed_devices: u64,
    /// The first error, if any write failed (a failed fleet-index update is
    /// reported here too, without counting readings as failed: the buckets
    /// landed, and the reconciler restores the index).
    pub error: Option<Error>,
}

/// One pipeline's outcome: per device, readings and whether its script ran.
struct PipeOutcome {
    readings: u64,
    failed: u64,
    devices: u64,
    failed_devices: u64,
    error: Option<Error>,
}

/// The Redis side of the hot path: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Writer {
    conn: Conn,
    keys: Keys,
    resolutions: std::sync::Arc<[Resolution]>,
    script: Script,
    devices_per_pipeline: usize,
}

impl Writer {
    pub fn new(
        conn: Conn,
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

    /// Writes every device's pending windows; fails if any write failed.
    pub async fn write(&self, batch: &FlushBatch, now_ms: i64) -> Result<()> {
        match self.write_counted(batch, now_ms).await {
            Written { error: Some(e), .. } => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes every device's pending windows and says how many readings (and
    /// devices) landed. Each device's script is one atomic call whose own
    /// answer says whether it ran: a device whose script fails counts its
    /// readings as failed, the other devices of the same pipeline count as
    /// written. Only a pipeline that gets no answer at all (connection lost,
    /// timeout) counts every device in it as failed, since nothing can be said
    /// about which scripts ran. The reconciler repairs those buckets from cold
    /// storage.
    pub async fn write_counted(&self, batch: &FlushBatch, now_ms: i64) -> Written {
        let devices: Vec<(&DeviceId, &DeviceBatch)> = batch.devices.iter().collect();
        let cluster = self.conn.is_cluster();
        // On a cluster a pipeline must stay in one slot: devices are grouped by
        // their hash slot (each device's keys share its `{device}` tag), and the
        // fleet index, a slot of its own, gets pipelines of its own after them.
        let groups: Vec<Vec<(&DeviceId, &DeviceBatch)>> = if cluster {
            let mut by_slot: HashMap<Slot, Vec<(&DeviceId, &DeviceBatch)>> = HashMap::new();
            for d in &devices {
                by_slot
                    .entry(Slot::for_key(self.keys.latest(d.0)))
                    .or_default()
                    .push(*d);
            }
            by_slot.into_values().collect()
        } else {
            vec![devices.clone()]
        };
        let index_chunks = devices
            .chunks(self.devices_per_pipeline)
            .filter(|_| cluster)
            .map(|c| (c, true));
        let mut chunks = groups
            .iter()
            .flat_map(|g| g.chunks(self.devices_per_pipeline))
            .map(|c| (c, false))
            .chain(index_chunks);
        let mut pipes = tokio::task::JoinSet::new();
        let mut out = Written::default();
        loop {
            // Build a pipeline only when one of the PIPELINES_IN_FLIGHT slots is
            // free: a flush of 100,000 devices must not hold every command in
            // memory at once.
            while pipes.len() < PIPELINES_IN_FLIGHT {
                let Some((chunk, index_only)) = chunks.next() else {
                    break;
                };
                let (pipe, readings) = if index_only {
                    let mut pipe = redis::pipe();
                    pipe.ignore_errors();
                    self.add_index(&mut pipe, chunk, now_ms);
                    (pipe, Vec::new())
                } else {
                    let mut pipe = self.pipeline(chunk, now_ms);
                    if !cluster {
                        self.add_index(&mut pipe, chunk, now_ms);
                    }
                    (pipe, chunk.iter().map(|(_, d)| d.readings).collect())
                };
                let this = self.clone();
                pipes.spawn(async move { this.run(pipe, &readings).await });
            }
            let Some(done) = pipes.join_next().await else {
                break;
            };
            match done {
                Ok(o) => {
                    out.readings += o.readings;
                    out.failed += o.failed;
                    out.devices += o.devices;
                    out.failed_devices += o.failed_devices;
                    if let Some(e) = o.error {
                        out.error.get_or_insert(e);
                    }
                }
                Err(e) => {
                    out.error
                        .get_or_insert(Error::BadRequest(format!("flush task failed: {e}")));
                }
            }
        }
        // A panicked pipeline task: whatever is not accounted for failed.
        out.failed = batch.readings - out.readings;
        out.failed_devices = batch.devices.len() as u64 - out.devices;
        out
    }

    /// Runs one pipeline: the first `readings.len()` commands are the devices'
    /// scripts, any after them the fleet-index update.
    async fn run(&self, pipe: Pipeline, readings: &[u64]) -> PipeOutcome {
        let mut conn = self.conn.clone();
        let mut out = PipeOutcome {
            readings: 0,
            failed: 0,
            devices: 0,
            failed_devices: 0,
            error: None,
        };
        let mut results: Vec<redis::RedisResult<redis::Value>> =
            match pipe.query_async(&mut conn).await {
                Ok(r) => r,
                Err(e) => {
                    out.failed = readings.iter().sum();
                    out.failed_devices = readings.len() as u64;
                    out.error = Some(e.into());
                    return out;
                }
            };
        // After a Redis restart (or SCRIPT FLUSH) its script cache is empty:
        // the EVALSHAs answered NOSCRIPT ran without effect, so loading the
        // script and sending just those again is safe.
        let no_script = |r: &redis::RedisResult<redis::Value>| matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript));
        let again: Vec<usize> = (0..results.len())
            .filter(|i| no_script(&results[*i]))
            .collect();
        if !again.is_empty() {
            let retried = async {
                self.script.prepare_invoke().load_async(&mut conn).await?;
                let mut retry = redis::pipe();
                retry.ignore_errors();
                let cmds: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
                for i in &again {
                    retry.add_command(cmds[*i].clone());
                }
                retry
                    .query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut conn)
                    .await
            };
            match retried.await {
                Ok(r) => {
                    for (i, res) in again.iter().zip(r) {
                        results[*i] = res;
                    }
                }
                Err(e) => {
                    for i in &again {
                        results[*i] = Err(e.clone());
                    }
                }
            }
        }
        for (i, res) in results.into_iter().enumerate() {
            match (readings.get(i), res) {
                (Some(n), Ok(_)) => {
                    out.readings += n;
                    out.devices += 1;
                }
                (Some(n), Err(e)) => {
                    out.failed += n;
                    out.failed_devices += 1;
                    out.error.get_or_insert(e.into());
                }
                (None, Ok(_)) => {}
                (None, Err(e)) => {
                    out.error.get_or_insert(e.into());
                }
            }
        }
        out
    }

    fn max_retention(&self) -> i64 {
        self.resolutions
            .iter()
            .map(|r| r.width_ms + r.retention_ms)
            .max()
            .unwrap_or(0)
    }

    /// The fleet index update for these devices: `ZADD GT` of their arrival
    /// times, and forgetting devices unseen for longer than the longest
    /// retention (keeps the index bounded).
    fn add_index(&self, pipe: &mut Pipeline, devices: &[(&DeviceId, &DeviceBatch)], now_ms: i64) {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.keys.device_index()).arg("GT");
        for (device, batch) in devices {
            zadd.arg(batch.seen_ms).arg(device.as_str());
        }
        pipe.add_command(zadd);
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.device_index())
            .arg("-inf")
            .arg(format!("({}", now_ms - self.max_retention()));
    }

    /// One script call per device, in this order.
    fn pipeline(&self, devices: &[(&DeviceId, &DeviceBatch)], now_ms: i64) -> Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let max_retention = self.max_retention();
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
            pipe.invoke_script(&inv);
        }
        pipe
    }
}
