#!/usr/bin/env bash
# promtool-env.sh — make promtool available for the alert-rule tests
# (tests/it/contrib.rs runs `promtool check rules` and `promtool test rules` on
# contrib/prometheus/).
#
# promtool comes with Debian's prometheus package; installs it (without recommends, and
# without starting anything: the tests only need the promtool binary) when /usr/bin/promtool
# is missing; a no-op otherwise. Needs root (or sudo) and the Debian archive. Quiet unless
# it installs something.
#
# Usage: scripts/promtool-env.sh        # prints the promtool path on stdout
set -euo pipefail

PROMTOOL=/usr/bin/promtool

if [[ ! -x "$PROMTOOL" ]]; then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || { echo "promtool-env: need root (or sudo) to install prometheus" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "promtool-env: installing prometheus (Debian package, for promtool)" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    # policy-rc.d exit 101: the package's postinst must not start a Prometheus server here.
    cleanup=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 0755 /usr/sbin/policy-rc.d
        cleanup="/usr/sbin/policy-rc.d"
    fi
    $SUDO apt-get install -y -qq --no-install-recommends prometheus >&2 || { [[ -z "$cleanup" ]] || $SUDO rm -f "$cleanup"; exit 1; }
    [[ -z "$cleanup" ]] || $SUDO rm -f "$cleanup"
    [[ -x "$PROMTOOL" ]] || { echo "promtool-env: prometheus installed but $PROMTOOL is missing" >&2; exit 1; }
fi

echo "$PROMTOOL"
