//! Replaying a corpus: every file of a directory through a target.

use std::{
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

/// An input that made a target panic, and what the panic said.
#[derive(Debug)]
pub struct Failure {
    pub file: PathBuf,
    pub message: String,
}

/// What one directory's replay found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Files fed to the target.
    pub inputs: usize,
    pub failures: Vec<Failure>,
}

/// Feeds every file of `dir` (not recursive; a missing directory is empty) to
/// `run`, catching panics, in file-name order.
pub fn replay_dir(dir: &Path, run: fn(&[u8])) -> std::io::Result<Replayed> {
    let mut files = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.retain(|p| p.is_file());
    files.sort();
    let mut out = Replayed::default();
    for file in files {
        let data = std::fs::read(&file)?;
        out.inputs += 1;
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            out.failures.push(Failure { file, message });
        }
    }
    Ok(out)
}

/// `fuzz/` in the source tree.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/harness has a parent")
        .to_owned()
}

/// The committed seed corpus of a target: `fuzz/seeds/{name}`.
pub fn seeds_dir(name: &str) -> PathBuf {
    fuzz_dir().join("seeds").join(name)
}

/// Inputs that once failed and were fixed: `fuzz/regressions/{name}`.
pub fn regressions_dir(name: &str) -> PathBuf {
    fuzz_dir().join("regressions").join(name)
}
