#!/usr/bin/env bash
# package.sh — build the Debian package with cargo-deb ([package.metadata.deb] in Cargo.toml):
# the binary, both systemd units, the example config as conffile, the README, the man pages
# and the bash/zsh/fish completions (generated from the clap definitions by the xtask crate),
# the alert rules and the dashboard. Prints the .deb's path on stdout; the debug symbols are
# in the -dbgsym .ddeb beside it.
#
# Usage: scripts/package.sh                 # release build: the package to install
#        scripts/package.sh --profile dev   # package the debug binary `cargo test` built
#
# `--profile dev` is what scripts/test.sh uses: the package test checks the packaging (files,
# modes, conffile, maintainer scripts), which does not depend on the optimiser, and CI's two
# cores are spared a release build. Never ship a dev package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

profile=release
case "${1:-}" in
    "") ;;
    --profile) profile="${2:?--profile needs release or dev}" ;;
    *) echo "usage: scripts/package.sh [--profile release|dev]" >&2; exit 2 ;;
esac
# --dbgsym: as Debian does, the binary is stripped and its debug symbols go to
# scimsync-dbgsym_VERSION_ARCH.ddeb beside the .deb (the release binary keeps line tables,
# [profile.release]: 94 MB unstripped, 16 MB stripped).
# --fast for the test package: xz at its default level takes ~50 s on the 33 MB debug
# binary, the fast level ~10 s; the release package gets the default (smaller) compression.
case "$profile" in
    release) outdir=release; fast="" ;;
    dev) outdir=debug; fast="--fast" ;;
    *) echo "package: profile must be release or dev, not $profile" >&2; exit 2 ;;
esac

cargo_deb="$(scripts/deb-env.sh)"
# The daemon and the generator, built together so they share one feature resolution.
cargo build --quiet --locked --profile "$profile" -p scimsync -p scimsync-xtask --bins >&2

assets=target/deb-assets
rm -rf "$assets"
"target/$outdir/xtask" docs "$assets" >&2
# Debian policy: man pages compressed with gzip -9, without a timestamp (-n) so the
# package is reproducible.
gzip -9n "$assets"/man/*.1

mkdir -p target/debian
PATH="$(dirname "$cargo_deb"):$PATH" cargo deb --no-build --profile "$profile" -p scimsync \
    --output target/debian/ --quiet --dbgsym $fast >&2
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
deb="$(ls -t target/debian/scimsync_"${version}"-*_*.deb | head -n1)"
echo "$ROOT/$deb"
