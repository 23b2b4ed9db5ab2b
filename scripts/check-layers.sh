#!/usr/bin/env bash
# check-layers.sh — fail if a module reaches across the boundaries of docs/ARCHITECTURE.md:
# the SCIM protocol code must not name SQLite, HTTP frameworks or the store, and the store
# must not name HTTP frameworks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fail=0
check() { # dir pattern what
    # Comments may name what a module must not touch; code may not.
    if hits=$(grep -rnE "$2" "$1" --include='*.rs' | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'); then
        echo "layering violation: $1 must not use $3:"; echo "$hits"; fail=1
    fi
}
check src/scim '\b(rusqlite|warp|reqwest|tokio)\b|crate::(store|http|config|service)' 'rusqlite/warp/reqwest/tokio/store/http/config'
check src/store '\b(warp|reqwest)\b|crate::(http|scim|service)' 'warp/reqwest/http/scim/service'
check src/model '\b(rusqlite|warp|reqwest)\b|crate::(store|http|scim|service)' 'I/O layers'
check src/reconcile '\b(warp|rusqlite)\b|crate::http' 'warp/rusqlite/http'
[[ $fail -eq 0 ]] && echo "layers: ok"
exit $fail
