#!/usr/bin/env bash
# check-layers.sh — fail if a module reaches across the boundaries of docs/ARCHITECTURE.md:
# the SCIM protocol code must not name SQLite, HTTP frameworks or the store, the store must
# not name HTTP frameworks, its face and shared types name no backend and no caller names one,
# and nothing but the front doors reaches up into the wiring
# (`app`): configuration is validated without building the app.
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
check src/downstream '\b(warp|rusqlite)\b|crate::(store|http|service|config|app|outbox_worker|reconcile)\b' 'warp/rusqlite/store/http/service/config/app/worker/reconcile'
# The store's face and its shared types are backend-neutral: no driver in them, and no
# caller outside the store names a backend (they all go through `store::Store`).
check src/store/face.rs '\b(rusqlite|tokio_postgres|deadpool_postgres)\b|store::(sqlite|postgres)' 'a backend or its driver'
check src/store/types '\b(rusqlite|tokio_postgres|deadpool_postgres)\b|store::(sqlite|postgres)' 'a backend or its driver'
for f in $(find src -name '*.rs' ! -path 'src/store/*' | sort); do
    check "$f" 'store::(sqlite|postgres)\b' 'a store backend (callers go through store::Store)'
done
# `config` sits below everything that reads it: it may name the settings types of the
# modules it configures (downstream, policy) and the shared vocabulary (model), nothing else.
check src/config.rs 'crate::(app|cli|reload|store|http|service|outbox_worker|reconcile|scim)\b' 'app/cli/reload/store/http/service/worker/reconcile/scim'
# Only the front doors (main, cli) and the wiring itself name `app`.
for f in $(find src -name '*.rs' ! -path src/app.rs ! -path src/cli.rs ! -path src/main.rs ! -path src/lib.rs | sort); do
    check "$f" 'crate::(app\b|\{[^}]*\bapp\b)' 'app (the wiring: only main.rs and cli.rs call it)'
done
[[ $fail -eq 0 ]] && echo "layers: ok"
exit $fail
