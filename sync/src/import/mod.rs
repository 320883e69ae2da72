//! `thermocline import FILE`: readings a device buffered offline and uploaded
//! later, into the cold stores and the hot windows.
//!
//! # How a row lands exactly once
//!
//! The file is read in chunks of [`CHUNK_LINES`] lines. The valid rows of a
//! chunk become one [`Batch`] per event hour whose id depends only on the
//! file's content hash, the chunk and the hour (`import-{hash}-…`). Each batch
//! takes the gateway's shipping order: Parquet to S3 under [`Batch::s3_key`],
//! then `insert_batch` into ClickHouse (readings, then the `batches` row). A
//! batch `batches` already holds is skipped, so:
//!
//! - a rerun of a finished import changes nothing (the checkpoint says done;
//!   without it every batch is found in `batches`);
//! - an interrupted import (Ctrl-C stops after the current chunk; a crash
//!   anywhere) resumes from the checkpoint, and a chunk cut off half way is
//!   written again on the same S3 keys, its rows collapsing in `readings`.
//!
//! The input file plays the spool's part: it is already on disk, so the
//! import does not copy it into a spool before shipping.
//!
//! # Hot windows
//!
//! Rows of batches that were new to ClickHouse are merged into their hot
//! buckets still within retention ([`HotLoader`]). A batch found in `batches`
//! is not merged again, so reruns do not double count; a crash between the
//! ClickHouse insert and the Redis merge leaves those buckets short, which
//! `thermocline reconcile --repair` fixes.
//!
//! # Checkpoint
//!
//! `{FILE}.checkpoint.json` (or `--checkpoint PATH`), rewritten atomically
//! after every chunk: the file's hash and length, the next line, the running
//! totals and the bad lines so far. A checkpoint of another file is refused.

mod parse;

use std::path::{Path, PathBuf};

use cold::{
    clickhouse::ClickHouseSink,
    row::{Batch, BatchId, ColdRow, SpoolPos, HOUR_MS},
    s3::S3Sink,
};
use devices::{config::DevicesConfig, DeviceId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use self::parse::{Format, Input, Validator, CSV_HEADER};
use crate::{hotload::HotLoader, progress::Progress, Error, Result};

/// Lines per chunk: the unit of batches and of the checkpoint.
pub const CHUNK_LINES: usize = 10_000;
/// Bad lines kept with their reason (all are counted).
const MAX_BAD_KEPT: usize = 1000;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub path: PathBuf,
    /// From the extension when absent.
    pub format: Option<Format>,
    /// `{path}.checkpoint.json` when absent.
    pub checkpoint: Option<PathBuf>,
    pub devices: DevicesConfig,
}

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadLine {
    /// From 1 (for Parquet, the row number).
    pub line: u64,
    pub reason: String,
}

/// What an import did, this run and before it (from the checkpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportSummary {
    pub path: PathBuf,
    pub format: Option<Format>,
    /// Lines (rows for Parquet) in the file, header included.
    pub lines: u64,
    /// Lines done (resumed runs include earlier runs).
    pub lines_done: u64,
    /// The line this run started at (0 = from the beginning).
    pub resumed_from_line: u64,
    /// Valid readings written to the stores by this import.
    pub rows: u64,
    /// Batches written to S3 and ClickHouse.
    pub batches_written: u64,
    /// Batches ClickHouse already held (skipped).
    pub batches_present: u64,
    /// Of `rows` and `batches_written`, what this run wrote (0 on a rerun).
    pub rows_this_run: u64,
    pub batches_written_this_run: u64,
    /// Readings merged into hot windows, and readings past every retention.
    pub hot_readings: u64,
    pub hot_expired: u64,
    pub bad_lines: u64,
    /// The first 1000 bad lines.
    pub bad: Vec<BadLine>,
    /// Stopped by Ctrl-C; a rerun resumes at `lines_done`.
    pub interrupted: bool,
}

impl ImportSummary {
    pub fn done(&self) -> bool {
        self.lines_done >= self.lines
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "import {}: {} of {} lines done{}, {} readings in {} batches ({} this run; {} batches already present), hot windows: {} merged, {} past retention, {} bad lines",
            self.path.display(),
            self.lines_done,
            self.lines,
            if self.resumed_from_line > 0 {
                format!(" (resumed at line {})", self.resumed_from_line + 1)
            } else {
                String::new()
            },
            self.rows,
            self.batches_written,
            self.rows_this_run,
            self.batches_present,
            self.hot_readings,
            self.hot_expired,
            self.bad_lines,
        );
        for b in &self.bad {
            s += &format!("\nline {}: {}", b.line, b.reason);
        }
        if self.bad_lines > self.bad.len() as u64 {
            s += &format!("\n... and {} more", self.bad_lines - self.bad.len() as u64);
        }
        if self.interrupted {
            s += "\nINTERRUPTED: rerun the same command to resume";
        }
        s
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    content_hash: String,
    file_len: u64,
    chunk_lines: usize,
    summary: ImportSummary,
}

pub fn default_checkpoint(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoint.json");
    path.with_file_name(name)
}

fn read_checkpoint(path: &Path, hash: &str, len: u64) -> Result<Option<ImportSummary>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.into(),
                source,
            })
        }
    };
    let bad = |reason: String| Error::Checkpoint {
        path: path.into(),
        reason,
    };
    let c: Checkpoint = serde_json::from_str(&text)
        .map_err(|e| bad(format!("unreadable ({e}); delete it to start over")))?;
    if c.version != 1 || c.chunk_lines != CHUNK_LINES {
        return Err(bad(
            "written by another version; delete it to start over".into()
        ));
    }
    if c.content_hash != hash || c.file_len != len {
        return Err(bad(
            "belongs to a different file content (the input changed?); delete it to import this file from the start".into(),
        ));
    }
    Ok(Some(c.summary))
}

fn write_checkpoint(path: &Path, c: &Checkpoint) -> Result<()> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(c).map_err(|e| io(std::io::Error::other(e)))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Imports a file; stops after the current chunk once `stop` is cancelled.
/// Bad lines do not fail the import: they are in the summary.
pub async fn import(
    s3: &S3Sink,
    ch: &ClickHouseSink,
    hot: Option<&HotLoader>,
    opts: &ImportOptions,
    progress: &dyn Progress,
    stop: &CancellationToken,
) -> Result<ImportSummary> {
    let path = &opts.path;
    let format = match opts.format.or_else(|| Format::from_path(path)) {
        Some(f) => f,
        None => {
            return Err(Error::Input {
                path: path.clone(),
                line: None,
                reason: "unknown format: name it .ndjson, .csv or .parquet, or pass --format"
                    .into(),
            })
        }
    };
    let input = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Input::read(&path, format))
            .await
            .map_err(|e| Error::Ledger(format!("reading task failed: {e}")))??
    };
    let hash = format!("{:016x}", input.content_hash());
    let cp_path = opts
        .checkpoint
        .clone()
        .unwrap_or_else(|| default_checkpoint(path));
    let mut summary = read_checkpoint(&cp_path, &hash, input.len())?.unwrap_or_default();
    summary.path = path.clone();
    summary.format = Some(format);
    summary.lines = input.units() as u64;
    summary.resumed_from_line = summary.lines_done;
    summary.interrupted = false;
    summary.rows_this_run = 0;
    summary.batches_written_this_run = 0;
    progress.set_total(summary.lines);
    progress.advance(summary.lines_done, 0);
    if summary.done() {
        progress.finish();
        return Ok(summary);
    }

    // The import may be the bucket's first writer: create it rather than
    // list it (`check_stores` would call a missing bucket unreachable).
    ch.ping().await.map_err(|e| Error::Unreachable {
        store: "clickhouse",
        source: Box::new(e.into()),
    })?;
    s3.ensure_bucket().await.map_err(|e| Error::Unreachable {
        store: "s3",
        source: Box::new(e.into()),
    })?;
    ch.ensure_schema().await?;

    let now_ms = hot::service::now_ms();
    let gateway = DeviceId::parse(&format!("import-{hash}"))
        .map_err(|e| Error::Ledger(format!("import id: {e}")))?;
    let validator = Validator::new(&opts.devices, now_ms, gateway.clone());
    let mut start = usize::try_from(summary.lines_done).unwrap_or(usize::MAX);
    while start < input.units() {
        if stop.is_cancelled() {
            summary.interrupted = true;
            break;
        }
        let end = (start + CHUNK_LINES).min(input.units());
        let mut hours: std::collections::BTreeMap<i64, Vec<ColdRow>> = Default::default();
        for i in start..end {
            match input.unit(i, &validator) {
                Ok(rows) => {
                    for r in rows {
                        hours
                            .entry(r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS)
                            .or_default()
                            .push(r);
                    }
                }
                Err(reason) => {
                    summary.bad_lines += 1;
                    if summary.bad.len() < MAX_BAD_KEPT {
                        summary.bad.push(BadLine {
                            line: i as u64 + 1,
                            reason,
                        });
                    }
                }
            }
        }
        let chunk = (start / CHUNK_LINES) as u64;
        let mut chunk_rows = 0;
        for (hour_start_ms, rows) in hours {
            let batch = Batch {
                id: BatchId::new(
                    &gateway,
                    SpoolPos {
                        segment: chunk,
                        offset: start as u64,
                    },
                    hour_start_ms,
                ),
                hour_start_ms,
                rows,
            };
            if ch.has_batch(&batch.id).await? {
                summary.batches_present += 1;
                continue;
            }
            let key = s3.put_batch(&batch).await?;
            ch.insert_batch(&batch, &key).await?;
            summary.batches_written += 1;
            summary.batches_written_this_run += 1;
            summary.rows += batch.rows.len() as u64;
            summary.rows_this_run += batch.rows.len() as u64;
            chunk_rows += batch.rows.len() as u64;
            if let Some(h) = hot {
                let l = h.load(&batch.rows, now_ms).await?;
                summary.hot_readings += l.readings;
                summary.hot_expired += l.expired;
            }
        }
        summary.lines_done = end as u64;
        write_checkpoint(
            &cp_path,
            &Checkpoint {
                version: 1,
                content_hash: hash.clone(),
                file_len: input.len(),
                chunk_lines: CHUNK_LINES,
                summary: summary.clone(),
            },
        )?;
        progress.advance((end - start) as u64, chunk_rows);
        start = end;
    }
    progress.finish();
    Ok(summary)
}
