//! Fuzz regressions: every input under `tests/fixtures/fuzzed/<target>/` (kept there by
//! `scripts/fuzz.sh` when a fuzz target failed on it) goes through the same checks as in the
//! fuzzer, `fuzz/src/checks.rs`, against the real `scimsync` crate, so a fixed crash stays
//! fixed in every `cargo test`, with no fuzzer installed. Unlike the rest of this binary it
//! starts no daemon: the targets are the pure parsers.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// What `checks` calls the code under test.
mod sut {
    pub use scimsync::{model, scim};
}

#[path = "../../fuzz/src/checks.rs"]
mod checks;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzzed")
}

/// Files in `dir`, sorted, without dotfiles (`.gitkeep`).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn every_kept_fuzz_input_passes_its_target() {
    let root = fixtures();
    // A folder per target, and no folder for a target that does not exist (a typo would
    // otherwise hide its inputs from this test).
    for t in checks::TARGETS {
        assert!(root.join(t).is_dir(), "missing {}", root.join(t).display());
    }
    for entry in fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(checks::TARGETS.contains(&name.as_str()), "{}: no fuzz target {name}", path.display());
        }
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for t in checks::TARGETS {
        for file in inputs(&root.join(t)) {
            let data = fs::read(&file).unwrap();
            ran += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| assert!(checks::run(t, &data)))) {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {msg}", file.display()));
            }
        }
    }
    eprintln!("replayed {ran} kept fuzz inputs");
    assert!(failures.is_empty(), "{} of {ran} kept fuzz inputs fail again:\n{}", failures.len(), failures.join("\n"));
}

/// The checks hold on the seed corpora too: real IdP requests, which must all pass.
#[test]
fn every_seed_input_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut ran = 0;
    for t in checks::TARGETS {
        let files = inputs(&corpus.join(t));
        assert!(!files.is_empty(), "no seeds for {t}");
        for file in files {
            let data = fs::read(&file).unwrap();
            let ok = catch_unwind(AssertUnwindSafe(|| checks::run(t, &data)));
            assert!(matches!(ok, Ok(true)), "{} fails its target", file.display());
            ran += 1;
        }
    }
    eprintln!("ran {ran} seed inputs");
}
