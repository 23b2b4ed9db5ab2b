#!/usr/bin/env bash
# conformance.sh — run the external SCIM 2.0 conformance suite against scimsync.
#
#   1. sets up .venv/ with the pinned scim2-cli / scim2-tester (scripts/python-env.sh);
#   2. builds the daemon (cargo build --bin scimsync), unless SCIMSYNC_BIN is set;
#   3. starts `scimsync serve` on an ephemeral loopback port with a temp data dir,
#      and creates a bearer token with `scimsync token create`;
#   4. runs `scim2 --url BASE test` (scim2-tester: discovery endpoints, CRUD,
#      attributes/excludedAttributes, POST /.search, PATCH add/remove/replace of
#      every published attribute) with the token;
#   5. prints the failed checks and a summary, and exits 1 if any check failed,
#      if no result could be parsed, or if the tester died.
# The daemon is always stopped and the temp dir removed. Full tester output:
# target/conformance.log; daemon stdout+stderr: target/conformance-daemon.log.
#
# Env: SCIMSYNC_BIN=PATH           use this binary, skip the cargo build
#      CONFORMANCE_VERBOSE=1       pass -v to `scim2 test` (payloads in the log)
#      CONFORMANCE_STRICT=1        count SKIPPED checks as failures
#      CONFORMANCE_STARTUP_TIMEOUT seconds to wait for "listening on" and "scimsync ready" (30)
#      CONFORMANCE_TIMEOUT         seconds allowed for the whole test run (600)
#      CONFORMANCE_STORE=postgres  run the daemon on the PostgreSQL store: a throw-away
#                                  cluster (the workspace's `testpg` binary, Debian's
#                                  postgresql from scripts/pg-env.sh) instead of SQLite
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG="$ROOT/target/conformance.log"
DAEMON_LOG="$ROOT/target/conformance-daemon.log"
STARTUP_TIMEOUT="${CONFORMANCE_STARTUP_TIMEOUT:-30}"
die() { echo "conformance: $*" >&2; exit 1; }

VENV="$("$ROOT/scripts/python-env.sh")"
if [[ -n "${SCIMSYNC_BIN:-}" ]]; then
    BIN="$SCIMSYNC_BIN"
else
    cargo build --manifest-path "$ROOT/Cargo.toml" --bin scimsync
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/scimsync"
fi
STORE="${CONFORMANCE_STORE:-sqlite}"
case "$STORE" in
    sqlite) ;;
    postgres)
        "$ROOT/scripts/pg-env.sh" >/dev/null
        cargo build --manifest-path "$ROOT/Cargo.toml" -p testpg --bin testpg
        TESTPG="${CARGO_TARGET_DIR:-$ROOT/target}/debug/testpg" ;;
    *) die "CONFORMANCE_STORE=$STORE: sqlite or postgres" ;;
esac
[[ -x "$BIN" ]] || die "no daemon binary at $BIN"
mkdir -p "$ROOT/target"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/scimsync-conformance.XXXXXX")"
PID=""
TESTER=""
PG=""
cleanup() {
    local rc=$?
    [[ -n "$TESTER" ]] && kill "$TESTER" 2>/dev/null || true
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$PID" 2>/dev/null || true
    fi
    [[ -n "$PID" ]] && wait "$PID" 2>/dev/null || true
    # The cluster's reaper stops it and removes its directory once `testpg` is gone.
    [[ -n "$PG" ]] && kill "$PG" 2>/dev/null || true
    cat "$WORK/daemon.out" "$WORK/daemon.err" >"$DAEMON_LOG" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CONFIG="$WORK/scimsync.toml"
mkdir -p "$WORK/data"
cat >"$CONFIG" <<EOF
[server]
listen = "127.0.0.1:0"
[store]
data_dir = "$WORK/data"
[admin]
listen = "127.0.0.1:0"
EOF
if [[ "$STORE" == postgres ]]; then
    "$TESTPG" >"$WORK/pg" &
    PG=$!
    for ((i = 0; i < 600; i++)); do
        [[ -s "$WORK/pg" ]] && break
        kill -0 "$PG" 2>/dev/null || die "testpg could not start a cluster"
        sleep 0.1
    done
    read -r PG_URL PG_PASSWORD <"$WORK/pg" || die "testpg printed no URL"
    printf '[store.postgres]\nurl = "%s"\n' "$PG_URL" >>"$CONFIG"
    # The password through the environment, as the README recommends.
    export SCIMSYNC_STORE__BACKEND=postgres SCIMSYNC_STORE__POSTGRES__PASSWORD="$PG_PASSWORD"
    echo "conformance: on the PostgreSQL store at $PG_URL"
fi

TOKEN="$("$BIN" token create --config "$CONFIG" --label conformance)" || die "token create failed"
[[ -n "$TOKEN" && "$TOKEN" != *[[:space:]]* ]] || die "token create must print exactly one token line"

: >"$WORK/daemon.out"
"$BIN" serve --config "$CONFIG" >"$WORK/daemon.out" 2>"$WORK/daemon.err" &
PID=$!
BASE=""
READY=""
for ((i = 0; i < STARTUP_TIMEOUT * 10; i++)); do
    # `read` only yields newline-terminated lines, so a half-written line is never used. The
    # SCIM listening line comes first; `scimsync ready` once the store is open (on PostgreSQL
    # the API answers 503 "starting" until then).
    BASE=""
    while IFS= read -r line; do
        if [[ -z "$BASE" && "$line" == *"listening on "* ]]; then BASE="${line#*listening on }"; BASE="${BASE%%[[:space:]]*}"; fi
        [[ "$line" == "scimsync ready" ]] && READY=1
    done <"$WORK/daemon.out"
    [[ -n "$BASE" && -n "$READY" ]] && break
    kill -0 "$PID" 2>/dev/null || { tail -n 20 "$WORK/daemon.err" >&2; die "daemon exited before listening"; }
    sleep 0.1
done
[[ "$BASE" == http://* && -n "$READY" ]] || { tail -n 20 "$WORK/daemon.err" >&2; die "no 'listening on http://…' and 'scimsync ready' lines within ${STARTUP_TIMEOUT}s"; }
echo "conformance: scimsync (pid $PID) at $BASE; running scim2 test…"

args=(test)
[[ "${CONFORMANCE_VERBOSE:-0}" == 1 ]] && args+=(-v)
# The header goes through the environment to keep the token off the process list.
# Run in the background and `wait`, so that a signal to this script acts at once.
SCIM_CLI_HEADERS="Authorization: Bearer $TOKEN" NO_COLOR=1 \
    timeout "${CONFORMANCE_TIMEOUT:-600}" "$VENV/bin/scim2" --url "$BASE" "${args[@]}" >"$LOG" 2>&1 &
TESTER=$!
rc=0
wait "$TESTER" || rc=$?
TESTER=""

# One result = a line "STATUS check_name" (STATUS from scim2_tester.Status), followed
# by its reason lines. Print every non-passing result in full, and tally per check.
awk -v counts="$WORK/counts" '
    { gsub(/\033\[[0-9;]*[A-Za-z]/, "") }
    /^(SUCCESS|COMPLIANT|ACCEPTABLE|DEVIATION|ERROR|CRITICAL|SKIPPED) [A-Za-z0-9_]+$/ {
        st = $1; name = $2
        kind = (st ~ /^(SUCCESS|COMPLIANT|ACCEPTABLE)$/) ? "p" : (st == "SKIPPED" ? "s" : "f")
        n[kind]++; if (!(name in seen)) { seen[name] = 1; order[++k] = name }
        t[name, kind]++; show = (kind != "p"); if (show) print "---"
    }
    show { print }   # the status line itself, then its reason lines
    END {
        print "--- per check (passed/failed/skipped):"
        for (i = 1; i <= k; i++) printf "  %-42s %4d %4d %4d\n", order[i], t[order[i], "p"], t[order[i], "f"], t[order[i], "s"]
        print n["p"] + 0, n["f"] + 0, n["s"] + 0 > counts
    }' "$LOG"
read -r passed failed skipped <"$WORK/counts"

verdict=ok
if ! kill -0 "$PID" 2>/dev/null; then echo "conformance: the daemon died during the run; see $DAEMON_LOG" >&2; verdict=fail; fi
if ((rc == 124)); then echo "conformance: scim2 test timed out" >&2; verdict=fail; fi
if ((passed + failed + skipped == 0)); then
    echo "conformance: no check result found (scim2 exit $rc); end of $LOG:" >&2
    tail -n 20 "$LOG" >&2; verdict=fail
fi
((failed > 0)) && verdict=fail
if ((rc != 0 && failed == 0 && skipped == 0)); then echo "conformance: scim2 exited $rc without a failed check; see $LOG" >&2; verdict=fail; fi
[[ "${CONFORMANCE_STRICT:-0}" == 1 ]] && ((skipped > 0)) && verdict=fail
echo "conformance: $passed passed, $failed failed, $skipped skipped"
echo "conformance: log $LOG, daemon log $DAEMON_LOG"
[[ "$verdict" == ok ]]
