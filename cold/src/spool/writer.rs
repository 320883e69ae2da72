//! The group-commit writer: one thread that takes the buffered frames every
//! `fsync_interval` (or sooner, once `flush_size` bytes wait), writes them to
//! their segment files, `sync_data`s, and only then publishes the new durable
//! end. A new segment file is created on the first frame for it, after the
//! previous segment was synced, and the directory is synced so the file exists
//! after a crash. Blocking file I/O stays off the async runtime.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    sync::Arc,
    thread::JoinHandle,
    time::Instant,
};

use super::{segment, Shared, Stop};
use crate::row::SpoolPos;

pub(crate) fn spawn(shared: Arc<Shared>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || run(&shared))
}

fn run(shared: &Shared) {
    let interval = shared.cfg.fsync_interval;
    let mut current: Option<(u64, File)> = None;
    let mut next_tick = Instant::now() + interval;
    loop {
        let (chunks, end, last) = {
            let mut st = shared.lock();
            loop {
                match st.stop {
                    Stop::Abandon => return,
                    Stop::Flush => break,
                    Stop::Run => {}
                }
                if st.buffered >= shared.cfg.flush_size_bytes {
                    break;
                }
                let now = Instant::now();
                if now >= next_tick {
                    break;
                }
                st = shared
                    .wake_writer
                    .wait_timeout(st, next_tick - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            next_tick = Instant::now() + interval;
            shared.update_age_gauge(&st);
            st.buffered = 0;
            (
                std::mem::take(&mut st.chunks),
                st.appended_end,
                st.stop == Stop::Flush,
            )
        };
        if !chunks.is_empty() {
            let started = Instant::now();
            if let Err((what, e)) = write_chunks(shared, &mut current, chunks) {
                tracing::error!(error = %e, what, "spool: write failed; the spool stops accepting records");
                shared.fail(e.kind(), format!("{what}: {e}"));
                return;
            }
            shared
                .metrics
                .fsync_duration
                .observe(started.elapsed().as_secs_f64());
            publish(shared, end);
        }
        if last {
            return;
        }
    }
}

fn publish(shared: &Shared, end: SpoolPos) {
    shared.durable.send_modify(|d| d.end = d.end.max(end));
}

/// Writes the frames to their segments and syncs; the error names the step.
fn write_chunks(
    shared: &Shared,
    current: &mut Option<(u64, File)>,
    chunks: Vec<(u64, Vec<u8>)>,
) -> Result<(), (String, io::Error)> {
    let dir = &shared.cfg.dir;
    for (seg, bytes) in chunks {
        if current.as_ref().map(|(id, _)| *id) != Some(seg) {
            if let Some((id, f)) = current.take() {
                f.sync_data()
                    .map_err(|e| (format!("sync segment {id:016x}"), e))?;
            }
            let path = segment::segment_path(dir, seg);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| (format!("create {}", path.display()), e))?;
            segment::sync_dir(dir).map_err(|e| match e {
                crate::Error::Io { source, .. } => (format!("sync dir {}", dir.display()), source),
                other => (
                    format!("sync dir {}", dir.display()),
                    io::Error::other(other.to_string()),
                ),
            })?;
            *current = Some((seg, f));
        }
        let (id, f) = current.as_mut().expect("set above");
        f.write_all(&bytes)
            .map_err(|e| (format!("write segment {id:016x}"), e))?;
    }
    if let Some((id, f)) = current.as_ref() {
        f.sync_data()
            .map_err(|e| (format!("sync segment {id:016x}"), e))?;
    }
    Ok(())
}
