//! The fuzz corpus on stable: every input in `fuzz/corpus/<target>/`
//! (seeds, what the fuzzers kept, and each crash or hang they found, named
//! `crash-*`) goes through the same checks as the fuzz targets
//! (`fuzz/src/checks.rs`, compiled in here), so a fixed crash stays fixed
//! without nightly. The seeds are checked to be in the corpus as
//! `fuzz/src/seeds.rs` makes them (`FRAMEHUB_WRITE_SEEDS=1` writes them).
//! The `config` corpus is replayed by `framehub-cli`'s `fuzz_config_corpus`.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/checks.rs"]
mod checks;
#[path = "../../../fuzz/src/seeds.rs"]
mod seeds;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `check` on every file of `fuzz/corpus/<target>/`, naming the one
/// that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let name = file.display().to_string();
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name}: {why}");
        }
    }
}

#[test]
fn seeds_are_in_the_corpus() {
    let write = std::env::var_os("FRAMEHUB_WRITE_SEEDS").is_some();
    let seeds = seeds::seeds(&root());
    for target in [
        "codec",
        "json_envelope",
        "node_session",
        "proxy_header",
        "config",
    ] {
        assert!(
            seeds.iter().any(|s| s.target == target),
            "no seed for {target}"
        );
    }
    for seed in seeds {
        let path = root()
            .join("fuzz/corpus")
            .join(seed.target)
            .join(&seed.name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &seed.bytes).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_default();
        assert!(
            stored == seed.bytes,
            "{} is missing or stale: run FRAMEHUB_WRITE_SEEDS=1 cargo test -p framehub --test fuzz_corpus",
            path.display()
        );
    }
}

#[test]
fn codec_corpus() {
    replay("codec", checks::codec);
}

#[test]
fn json_envelope_corpus() {
    replay("json_envelope", checks::json_envelope);
}

#[test]
fn node_session_corpus() {
    replay("node_session", checks::node_session);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", checks::proxy_header);
}
