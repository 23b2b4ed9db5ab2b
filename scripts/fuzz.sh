#!/usr/bin/env bash
# fuzz.sh [SECONDS] [TARGET...] — a short coverage-guided fuzz run of the parsers (STYLE habit
# 8), on the stable toolchain; scripts/test.sh (so CI) runs it with the defaults.
#
# Runs each target of fuzz/ (default: all four) for SECONDS (default 20), up to `nproc` at a
# time, starting from its seed corpus fuzz/corpus/<target>/ (read-only: new inputs go to a
# temporary directory). Fails if any target panics, crashes, or spends more than 10 s on
# one input (a hang); the input that did it is copied to tests/fixtures/fuzzed/<target>/,
# where `cargo test` (tests/it/fuzzed.rs) replays it from then on: commit it with the fix.
#
# Why no `cargo fuzz` here: it only sets RUSTFLAGS and runs `cargo build`, and its default
# AddressSanitizer needs nightly. The flags below are the ones `cargo fuzz build -s none`
# passes, all stable; libfuzzer-sys (a normal crates.io dependency of fuzz/) brings libFuzzer
# itself and compiles it with the system C++ compiler. So a fresh CI machine needs nothing
# installed beyond rustup stable and a C++ compiler. For long runs, see README.md "Fuzzing".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(filter_parse path_parse patch_apply resource_parse)
fi
jobs=${FUZZ_JOBS:-$(nproc)}
per_input_timeout=10

host=$(rustc -vV | sed -n 's/^host: //p')
# Its own target directory: every crate in it is built with different flags from the rest.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
unset CARGO_ENCODED_RUSTFLAGS
# `--target` keeps these flags off build scripts and proc-macros (serde_derive).
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares" \
    cargo build --release --locked --manifest-path fuzz/Cargo.toml --bins --target "$host" --target-dir "$target_dir"
bin="$target_dir/$host/release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_target() {
    local t=$1
    mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
    local status=0
    # The first corpus directory is where libFuzzer writes; the seeds stay untouched.
    "$bin/$t" "$work/$t/corpus" "fuzz/corpus/$t" \
        -max_total_time="$seconds" -timeout="$per_input_timeout" -rss_limit_mb=2048 \
        -dict=fuzz/scim.dict -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 \
        >"$work/$t/log" 2>&1 || status=$?
    echo "$status" >"$work/$t/status"
}

for t in "${targets[@]}"; do
    [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: no target $t (no fuzz/corpus/$t)" >&2; exit 2; }
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_target "$t" &
done
wait

failed=0
for t in "${targets[@]}"; do
    status=$(cat "$work/$t/status")
    artifacts=("$work/$t/artifacts"/*)
    if [ "$status" = 0 ] && [ ! -e "${artifacts[0]}" ]; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log")
        cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1)
        echo "fuzz $t: ok, ${runs:-?} inputs in ${seconds}s, ${cov:-cov: ?}"
        continue
    fi
    failed=1
    echo "fuzz $t: FAILED (exit $status); from libFuzzer's log:" >&2
    grep -E -A2 'panicked at|ALARM|ERROR: libFuzzer' "$work/$t/log" | head -n 20 >&2 || true
    tail -n 8 "$work/$t/log" >&2
    mkdir -p "tests/fixtures/fuzzed/$t"
    for a in "${artifacts[@]}"; do
        [ -e "$a" ] || continue
        cp "$a" "tests/fixtures/fuzzed/$t/"
        echo "fuzz $t: input kept as tests/fixtures/fuzzed/$t/$(basename "$a"): fix the bug, commit the input" >&2
    done
done
exit "$failed"
