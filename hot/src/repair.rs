//! The reconciler's Redis side: read whole bucket hashes, rewrite one
//! metric's fields from the system of record, and the reconcile lease.
//!
//! Key layout knowledge stays here (see [`crate::keys`]); the `sync` crate
//! decides *what* a bucket should hold, this module only writes it.
//!
//! A repair is one Lua script call per bucket hash. For each metric it names,
//! it first checks that the six fields still hold what the reconciler read
//! (compare-and-set): a flush of the hot path that landed between the read and
//! the repair makes the check fail, and that metric is left alone until the
//! next run rather than undoing the flush. Then it replaces the six fields
//! (`c:` `s:` `mn:` `mx:` `l:` `lt:`) with the given aggregate, or deletes
//! them, and leaves every other metric's fields alone. A bucket key the script
//! creates gets the same expiry the writer gives it (bucket end + retention).
//! The latest view is only ever raised: a repaired bucket whose last reading
//! is newer than the latest view's (a rebuild after Redis lost its data) moves
//! it forward, value and `seen` alike; nothing moves it back. `seen` restored
//! this way is the newest *event* time (cold data keeps no arrival time per
//! bucket), as a backfill's hot load sets it. The fleet index lives in another
//! hash slot, so it is raised by [`Repairer::index_devices`] (`ZADD GT`), not
//! by the bucket script.

use std::{collections::BTreeMap, time::Duration};

use devices::{DeviceId, MetricName};
use redis::Script;

use crate::connect::Conn;

use crate::{
    keys::Keys,
    window::{Agg, Resolution},
    Error, Result,
};

/// Fields per metric entry of the repair script: metric, expect mode, six
/// expected values, action, six new values.
const ARGS_PER_ENTRY: usize = 15;

/// KEYS[1] = bucket hash, KEYS[2] = the device's latest hash.
/// ARGV[1] = bucket expiry (ms), ARGV[2] = latest expiry (ms), then per metric
/// entry ARGS_PER_ENTRY values (see [`ARGS_PER_ENTRY`]). Expect mode:
/// `absent` (no field of the metric may exist), `agg` (all six must equal the
/// expected numbers), `any`. Action: `set` or `del`. Returns one 1 (applied)
/// or 0 (the bucket changed since it was read) per entry.
const REPAIR_LUA: &str = r#"
local key, latest = KEYS[1], KEYS[2]
local existed = redis.call('EXISTS', key)
local out = {}
local a = 3
local created = false
while a <= #ARGV do
  local m = ARGV[a]
  local f = {'c:' .. m, 's:' .. m, 'mn:' .. m, 'mx:' .. m, 'l:' .. m, 'lt:' .. m}
  local cur = redis.call('HMGET', key, unpack(f))
  local ok = true
  local mode = ARGV[a + 1]
  if mode == 'absent' then
    for i = 1, 6 do if cur[i] then ok = false end end
  elseif mode == 'agg' then
    for i = 1, 6 do
      if not cur[i] or tonumber(cur[i]) ~= tonumber(ARGV[a + 1 + i]) then ok = false end
    end
  end
  if ok then
    if ARGV[a + 8] == 'del' then
      redis.call('HDEL', key, unpack(f))
    else
      local n = a + 9
      redis.call('HSET', key, f[1], ARGV[n], f[2], ARGV[n + 1], f[3], ARGV[n + 2],
        f[4], ARGV[n + 3], f[5], ARGV[n + 4], f[6], ARGV[n + 5])
      created = true
      local lt, lv = tonumber(ARGV[n + 5]), tonumber(ARGV[n + 4])
      local cl = redis.call('HMGET', latest, 't:' .. m, 'v:' .. m, 'seen')
      local ct, cv, cs = tonumber(cl[1]), tonumber(cl[2]), tonumber(cl[3])
      local lexisted = redis.call('EXISTS', latest)
      if not ct or lt > ct or (lt == ct and lv > cv) then
        redis.call('HSET', latest, 't:' .. m, ARGV[n + 5], 'v:' .. m, ARGV[n + 4])
      end
      if not cs or lt > cs then
        redis.call('HSET', latest, 'seen', ARGV[n + 5])
      end
      if lexisted == 0 then redis.call('PEXPIREAT', latest, ARGV[2]) end
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  a = a + 15
end
if created and existed == 0 then redis.call('PEXPIREAT', key, ARGV[1]) end
return out
"#;

/// KEYS[1] = the lease key; ARGV[1] = holder, ARGV[2] = ttl (ms).
/// Renews the lease if `holder` has it, takes it if nobody does.
const LEASE_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// What a bucket hash holds for one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stored {
    Agg(Agg),
    /// Some of the six fields are missing or not numbers.
    Corrupt,
}

/// One bucket hash read back: every metric in it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBucket {
    pub start_ms: i64,
    pub metrics: BTreeMap<String, Stored>,
}

/// What a repair expects the metric's fields to hold before it writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// The metric has no field in the bucket.
    Absent,
    /// The fields hold exactly this (as read).
    Agg(Agg),
    /// Overwrite whatever is there (a corrupt entry).
    Any,
}

/// One metric of one bucket to rewrite: `Some(agg)` replaces its fields,
/// `None` deletes them.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRepair {
    pub metric: MetricName,
    pub expect: Expect,
    pub value: Option<Agg>,
}

/// Reads and rewrites bucket hashes for the reconciler. Cheap to clone.
#[derive(Clone)]
pub struct Repairer {
    conn: Conn,
    keys: Keys,
    max_retention_ms: i64,
    script: Script,
    lease: Script,
}

impl Repairer {
    pub fn new(conn: Conn, keys: Keys, resolutions: &[Resolution]) -> Self {
        Self {
            conn,
            keys,
            max_retention_ms: resolutions
                .iter()
                .map(|r| r.width_ms + r.retention_ms)
                .max()
                .unwrap_or(0),
            script: Script::new(REPAIR_LUA),
            lease: Script::new(LEASE_LUA),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The bucket hashes of `device` at these starts, with every metric they
    /// hold; absent buckets are left out. One pipeline.
    pub async fn read_buckets(
        &self,
        device: &DeviceId,
        res: &Resolution,
        starts: &[i64],
    ) -> Result<Vec<StoredBucket>> {
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for s in starts {
            pipe.cmd("HGETALL")
                .arg(self.keys.bucket(device, &res.label, *s));
        }
        let rows: Vec<BTreeMap<String, String>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(starts
            .iter()
            .zip(rows)
            .filter(|(_, h)| !h.is_empty())
            .map(|(s, h)| StoredBucket {
                start_ms: *s,
                metrics: parse_hash(&h),
            })
            .collect())
    }

    /// Rewrites metrics of one bucket hash atomically; returns, per entry,
    /// whether it was applied (false: the bucket changed since it was read).
    pub async fn repair_bucket(
        &self,
        device: &DeviceId,
        res: &Resolution,
        start_ms: i64,
        entries: &[MetricRepair],
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.script.prepare_invoke();
        inv.key(self.keys.bucket(device, &res.label, start_ms))
            .key(self.keys.latest(device))
            .arg(res.expires_at_ms(start_ms))
            .arg(now_ms + self.max_retention_ms);
        for e in entries {
            inv.arg(e.metric.as_str());
            let (mode, expected) = match e.expect {
                Expect::Absent => ("absent", None),
                Expect::Agg(a) => ("agg", Some(a)),
                Expect::Any => ("any", None),
            };
            inv.arg(mode);
            push_agg(&mut inv, expected.as_ref());
            inv.arg(if e.value.is_some() { "set" } else { "del" });
            push_agg(&mut inv, e.value.as_ref());
        }
        debug_assert_eq!(ARGS_PER_ENTRY, 15);
        let applied: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
        if applied.len() != entries.len() {
            return Err(Error::BadRequest(format!(
                "repair script answered {} results for {} entries",
                applied.len(),
                entries.len()
            )));
        }
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    /// Raises the fleet index (`{prefix}:devices`) to at least these times
    /// (ms): `ZADD GT`, so a device seen later keeps its newer score. Used
    /// after repairs that rebuilt a device's buckets, so the active-devices
    /// API lists it again without waiting for it to publish.
    pub async fn index_devices(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.keys.device_index()).arg("GT");
        for (device, ts) in seen {
            zadd.arg(*ts).arg(device.as_str());
        }
        let _: i64 = zadd.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Takes or renews the reconcile lease for `holder` for `ttl`; true when
    /// `holder` has it. Another holder's lease is left alone until it expires.
    pub async fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<bool> {
        let got: i64 = self
            .lease
            .key(self.keys.reconcile_lease())
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(got == 1)
    }

    /// Who holds the reconcile lease, if anyone.
    pub async fn lease_holder(&self) -> Result<Option<String>> {
        Ok(redis::cmd("GET")
            .arg(self.keys.reconcile_lease())
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Round trip to Redis.
    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// Six values of an aggregate as script arguments (empty strings for none).
fn push_agg(inv: &mut redis::ScriptInvocation<'_>, agg: Option<&Agg>) {
    match agg {
        Some(a) => {
            inv.arg(a.count)
                .arg(fmt_f64(a.sum))
                .arg(fmt_f64(a.min))
                .arg(fmt_f64(a.max))
                .arg(fmt_f64(a.last))
                .arg(a.last_ts_ms);
        }
        None => {
            for _ in 0..6 {
                inv.arg("");
            }
        }
    }
}

/// Shortest string that reads back as the same `f64` (Rust's `Display`);
/// Lua's `tonumber` and the reader's `parse` both read it exactly.
fn fmt_f64(v: f64) -> String {
    format!("{v}")
}

/// Groups a bucket hash's fields by metric.
fn parse_hash(h: &BTreeMap<String, String>) -> BTreeMap<String, Stored> {
    let mut metrics: BTreeMap<String, [Option<f64>; 6]> = BTreeMap::new();
    for (field, raw) in h {
        let Some((kind, metric)) = field.split_once(':') else {
            continue;
        };
        let i = match kind {
            "c" => 0,
            "s" => 1,
            "mn" => 2,
            "mx" => 3,
            "l" => 4,
            "lt" => 5,
            _ => continue,
        };
        metrics.entry(metric.to_string()).or_default()[i] = raw.parse::<f64>().ok();
    }
    metrics
        .into_iter()
        .map(|(m, v)| {
            let stored = match v {
                [Some(c), Some(s), Some(mn), Some(mx), Some(l), Some(lt)] => Stored::Agg(Agg {
                    count: c as u64,
                    sum: s,
                    min: mn,
                    max: mx,
                    last: l,
                    last_ts_ms: lt as i64,
                }),
                _ => Stored::Corrupt,
            };
            (m, stored)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_fields_group_by_metric_and_names_may_hold_colons() {
        let h: BTreeMap<String, String> = [
            ("c:urn:x:t", "2"),
            ("s:urn:x:t", "3.5"),
            ("mn:urn:x:t", "1"),
            ("mx:urn:x:t", "2.5"),
            ("l:urn:x:t", "2.5"),
            ("lt:urn:x:t", "1000"),
            ("c:h", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let m = parse_hash(&h);
        assert_eq!(
            m["urn:x:t"],
            Stored::Agg(Agg {
                count: 2,
                sum: 3.5,
                min: 1.0,
                max: 2.5,
                last: 2.5,
                last_ts_ms: 1000
            })
        );
        assert_eq!(m["h"], Stored::Corrupt);
    }

    #[test]
    fn floats_round_trip() {
        for v in [0.1 + 0.2, 1e300, -1e-7, 123456.789, 0.0] {
            assert_eq!(fmt_f64(v).parse::<f64>().unwrap(), v);
        }
    }
}
