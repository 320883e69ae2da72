//! Writes the seed corpus (`fuzz_harness::seeds::all`) to `fuzz/seeds/{target}/{name}`.

fn main() -> std::io::Result<()> {
    for seed in fuzz_harness::seeds::all() {
        let dir = fuzz_harness::replay::seeds_dir(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(seed.name), &seed.data)?;
    }
    Ok(())
}
