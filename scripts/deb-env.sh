#!/usr/bin/env bash
# deb-env.sh — make the pinned cargo-deb available for scripts/package.sh.
#
# cargo-deb (crates.io) turns Cargo.toml's [package.metadata.deb] into a .deb. Debian does not
# package it, so it is built once with `cargo install --locked` into target/tools/ (a cache
# beside the build, about 2 minutes on 2 cores the first time; a no-op afterwards, and
# rebuilt only when CARGO_DEB_VERSION changes). Quiet unless it installs something.
#
# Usage: scripts/deb-env.sh        # prints the cargo-deb path on stdout
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_DEB_VERSION=3.8.0
TOOLS="$ROOT/target/tools"
BIN="$TOOLS/bin/cargo-deb"

if [[ "$("$BIN" --version 2>/dev/null || true)" != *" $CARGO_DEB_VERSION"* ]]; then
    echo "deb-env: installing cargo-deb $CARGO_DEB_VERSION into $TOOLS" >&2
    cargo install --quiet --locked --force --root "$TOOLS" cargo-deb --version "=$CARGO_DEB_VERSION" >&2
fi

echo "$BIN"
