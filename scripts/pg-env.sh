#!/usr/bin/env bash
# pg-env.sh — make PostgreSQL's server binaries available for the tests' throw-away clusters
# (testpg/: initdb into a temp dir, postgres on a free loopback port).
#
# Installs Debian's postgresql package (without recommends, and without starting or creating
# any cluster: the tests start their own) when no /usr/lib/postgresql/*/bin/initdb exists; a
# no-op otherwise. Needs root (or sudo) and the Debian archive. Quiet unless it installs
# something.
#
# Usage: scripts/pg-env.sh        # prints the newest server bin directory on stdout
set -euo pipefail

newest_bin() {
    local dirs
    dirs=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V) || true
    local dir best=""
    for dir in $dirs; do
        [[ -x "$dir/initdb" ]] && best="$dir"
    done
    echo "$best"
}

if [[ -z "$(newest_bin)" ]]; then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || { echo "pg-env: need root (or sudo) to install postgresql" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "pg-env: installing postgresql (Debian package, for the tests' throw-away clusters)" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    # policy-rc.d exit 101: the package's postinst must not start the system's cluster here.
    cleanup=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 0755 /usr/sbin/policy-rc.d
        cleanup="/usr/sbin/policy-rc.d"
    fi
    # postgresql-common would create a "main" cluster on install; the tests need none.
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/scimsync-tests.conf >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >&2 || { [[ -z "$cleanup" ]] || $SUDO rm -f "$cleanup"; exit 1; }
    [[ -z "$cleanup" ]] || $SUDO rm -f "$cleanup"
    [[ -n "$(newest_bin)" ]] || { echo "pg-env: postgresql installed but no /usr/lib/postgresql/*/bin/initdb" >&2; exit 1; }
fi

newest_bin
