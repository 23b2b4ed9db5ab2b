#!/usr/bin/env bash
# browser-env.sh — make headless Chromium available for the status-page test
# (tests/it/status_page.rs runs `chromium --headless --dump-dom` against the admin listener).
#
# Installs Debian's chromium package when /usr/bin/chromium is missing; a no-op otherwise.
# Needs root (or sudo) and the Debian archive. Quiet unless it installs something.
#
# Usage: scripts/browser-env.sh        # prints the browser path on stdout
set -euo pipefail

BROWSER=/usr/bin/chromium

if [[ ! -x "$BROWSER" ]]; then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || { echo "browser-env: need root (or sudo) to install chromium" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "browser-env: installing chromium (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends chromium >&2
    [[ -x "$BROWSER" ]] || { echo "browser-env: chromium installed but $BROWSER is missing" >&2; exit 1; }
fi

echo "$BROWSER"
