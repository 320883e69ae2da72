//! The committed corpus, replayed on stable Rust as part of `cargo test`:
//! every seed and every regression input of every fuzz target goes through
//! the same function the target calls (`fuzz_harness::run`).

mod regressions;

use std::{collections::BTreeSet, path::Path};

use fuzz_harness::{
    replay::{fuzz_dir, regressions_dir, replay_dir, seeds_dir},
    TARGETS,
};

fn names_in(dir: &Path, strip: Option<&str>) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| match strip {
            Some(ext) => n.strip_suffix(ext).map(str::to_owned),
            None => Some(n),
        })
        .collect()
}

#[test]
fn every_seed_and_regression_input_passes_its_target() {
    let mut failures = Vec::new();
    for t in TARGETS {
        let seeds = replay_dir(&seeds_dir(t.name), t.run).unwrap();
        assert!(seeds.inputs > 0, "target {} has no seeds", t.name);
        let regressions = replay_dir(&regressions_dir(t.name), t.run).unwrap();
        failures.extend(seeds.failures.into_iter().chain(regressions.failures));
    }
    assert!(
        failures.is_empty(),
        "{} inputs failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| format!("{}: {}", f.file.display(), f.message))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn fuzz_target_files_corpus_dirs_and_the_target_table_agree() {
    let table: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    let files = names_in(&fuzz_dir().join("fuzz_targets"), Some(".rs"));
    assert_eq!(
        files, table,
        "fuzz/fuzz_targets/*.rs vs fuzz_harness::TARGETS"
    );
    for name in &table {
        let src =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            src.contains(&format!("fuzz_harness::run({name:?}, data)")),
            "fuzz_targets/{name}.rs does not call fuzz_harness::run({name:?}, data)"
        );
    }
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &table {
        assert!(
            manifest.contains(&format!("name = {name:?}")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    for dir in ["seeds", "regressions"] {
        let extra: Vec<_> = names_in(&fuzz_dir().join(dir), None)
            .difference(&table)
            .cloned()
            .collect();
        assert!(
            extra.is_empty(),
            "fuzz/{dir}/ of unknown targets: {extra:?}"
        );
    }
}

#[test]
fn committed_seeds_are_what_the_generator_writes() {
    for seed in fuzz_harness::seeds::all() {
        let path = seeds_dir(seed.target).join(seed.name);
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run the write-seeds example", path.display()));
        assert!(
            on_disk == seed.data,
            "{} differs from fuzz_harness::seeds; run the write-seeds example",
            path.display()
        );
    }
}

#[test]
fn replay_reports_each_input_that_panics_by_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-fine"), b"fine").unwrap();
    std::fs::write(dir.path().join("b-boom"), b"boom").unwrap();
    fn target(data: &[u8]) {
        assert_ne!(data, b"boom", "the target rejected boom");
    }
    let r = replay_dir(dir.path(), target).unwrap();
    assert_eq!(r.inputs, 2);
    assert_eq!(r.failures.len(), 1);
    assert!(r.failures[0].file.ends_with("b-boom"));
    assert!(
        r.failures[0].message.contains("the target rejected boom"),
        "{}",
        r.failures[0].message
    );
    assert_eq!(
        replay_dir(&dir.path().join("missing"), target)
            .unwrap()
            .inputs,
        0
    );
}
