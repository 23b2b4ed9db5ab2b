#!/usr/bin/env bash
# test.sh — the whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. module boundaries (scripts/check-layers.sh), rustfmt and clippy -D warnings;
#   2. cargo test: unit tests, property tests, and the one integration-test binary that
#      starts the real daemon on 127.0.0.1:0 and talks HTTP to it, provisioning into the real
#      scim2-server (from .venv) as the downstream app, and loading the status page in
#      headless Chromium (scripts/browser-env.sh); the bench crate compiles; then the
#      integration binary once more with SCIMSYNC_TEST_STORE=postgres (the PostgreSQL store);
#   3. a short coverage-guided fuzz run of the parsers and the PATCH engine (scripts/fuzz.sh:
#      20 s per target, two at a time, on stable; FUZZ_SECONDS changes the 20); any panic,
#      crash or hang fails the run and leaves the input in tests/fixtures/fuzzed/;
#   4. external conformance: scim2-tester (pinned, installed into .venv by the script itself)
#      against a freshly started daemon, on SQLite and on a throw-away PostgreSQL; any
#      failed check fails the run;
#   5. the Debian package (scripts/package.sh, cargo-deb built once into target/tools/),
#      made from the debug binary step 2 built, installed into a throw-away root and checked
#      (scripts/package-test.sh).
#   The alert rules' tests (promtool check/test rules, the metric-name check against a real
#   daemon) and both units' systemd-analyze checks run in step 2 (tests/it/contrib.rs,
#   tests/it/lifecycle.rs); scripts/promtool-env.sh installs Debian's prometheus for promtool.
#   The PostgreSQL store's tests run throw-away clusters (testpg/); scripts/pg-env.sh installs
#   Debian's postgresql for its server binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/check-layers.sh
# Formatting and lints (rustfmt.toml; clippy with warnings as errors). Both come with
# rustup's default profile; a toolchain without them skips the step and says so.
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check || { echo "formatting differs: run cargo fmt"; exit 1; }
else
    echo "cargo fmt not installed: format check skipped"
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    echo "cargo clippy not installed: lint step skipped"
fi
# The provisioning tests run the real scim2-server as the downstream app: make the pinned
# Python tools ready once, before tests start in parallel.
scripts/python-env.sh >/dev/null
# The status-page test loads the admin listener's page in headless Chromium (Debian's
# package; installed once, a no-op afterwards).
scripts/browser-env.sh >/dev/null
# The alert-rule tests run promtool (Debian's prometheus package; installed once).
scripts/promtool-env.sh >/dev/null
# The PostgreSQL store's tests start throw-away clusters (testpg/) from Debian's postgresql
# server binaries (installed once).
scripts/pg-env.sh >/dev/null
cargo test --workspace --locked
# The same integration suite again on the PostgreSQL store: one switch, every daemon on a
# fresh database of one throw-away cluster (tests/it/support.rs, store_backend_env).
SCIMSYNC_TEST_STORE=postgres cargo test --locked --test it
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
scripts/conformance.sh
CONFORMANCE_STORE=postgres scripts/conformance.sh
# Package the debug binary the tests built (no release build on CI's cores) and install it
# into a throw-away root: files, modes, conffile, --version, remove and purge.
scripts/package-test.sh "$(scripts/package.sh --profile dev)"
