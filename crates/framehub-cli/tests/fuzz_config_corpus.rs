//! The `config` fuzz target's corpus (`fuzz/corpus/config/`: the docs'
//! examples, what the fuzzer kept, and any crash it found) through
//! `framehub check-config` as a real process: each file is accepted (0) or
//! refused naming a key (64), never a panic or another exit. The other
//! targets' corpora replay in `framehub`'s `tests/fuzz_corpus.rs`.

mod common;

use std::path::Path;

use common::framehub;

#[test]
fn check_config_accepts_or_refuses_every_corpus_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: {} files", dir.display(), files.len());
    let mut accepted = 0;
    for file in &files {
        let out = framehub()
            .arg("check-config")
            .arg(file)
            .output()
            .expect("run framehub");
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 64)),
            "{}: exit {code:?}\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        accepted += usize::from(code == Some(0));
    }
    // The docs' examples are valid configs.
    assert!(accepted >= 3, "only {accepted} of {} accepted", files.len());
}
