#!/usr/bin/env bash
# package-test.sh DEB — install the Debian package into a throw-away root and check it.
#
# `dpkg --root DIR` installs, removes and purges exactly as on a host, into DIR (an empty
# dpkg database; --force-depends because that database has no libc6), and with
# --force-script-chrootless runs the package's maintainer scripts on this machine with
# DPKG_ROOT=DIR, which they honour: they never touch this host's systemd. Checks: every file
# in place with its mode and owner, the conffile registered, `scimsync --version`, the man
# page and completions, that installing enables and starts nothing, that remove keeps the
# configuration, that purge removes it but keeps the state unless SCIMSYNC_PURGE_STATE=yes,
# and that an upgrade keeps an edited configuration. Needs root (dpkg sets owners).
#
# Usage: scripts/package-test.sh "$(scripts/package.sh --profile dev)"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deb="${1:?usage: scripts/package-test.sh DEB}"
[[ "$(id -u)" == 0 ]] || { echo "package-test: needs root (dpkg --root installs files owned by root)" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status"

checks=0
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); }
# dpkg's output (its warnings about libc6, our scripts' messages) goes to $out; shown on failure.
out="$root/.dpkg-output"
pkg() {
    dpkg --root="$root" --force-script-chrootless --force-depends --log="$root/var/log/dpkg.log" "$@" >"$out" 2>&1 \
        || { cat "$out" >&2; fail "dpkg $*"; }
}
status() { dpkg-query --root="$root" -W -f='${db:Status-Abbrev}' scimsync 2>/dev/null | tr -d ' ' || true; }
# mode owner:group of a path inside the root, or "missing"
mode() { stat -c '%a %U:%G' "$root/$1" 2>/dev/null || echo missing; }
expect_mode() { # path mode
    [[ "$(mode "$1")" == "$2 root:root" ]] || fail "$1: want mode $2 owned by root, got $(mode "$1")"
    ok
}
expect_absent() { [[ ! -e "$root/$1" && ! -L "$root/$1" ]] || fail "$1 should not exist"; ok; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
info="$(dpkg-deb --field "$deb" Package Version Architecture Depends Section)"
grep -qx "Package: scimsync" <<<"$info" || fail "package name: $info"
grep -q "^Version: $version-" <<<"$info" || fail "version $version: $info"
grep -q "^Depends: .*libc6" <<<"$info" || fail "no libc6 dependency: $info"
ok

# --- install ---------------------------------------------------------------------------------
pkg -i "$deb"
[[ "$(status)" == "ii" ]] || fail "not installed: status $(status)"
ok
expect_mode usr/bin/scimsync 755
for f in usr/lib/systemd/system/scimsync.service usr/lib/systemd/system/scimsync@.service \
         etc/scimsync/scimsync.toml usr/share/doc/scimsync/README.md usr/share/doc/scimsync/copyright \
         usr/share/man/man1/scimsync.1.gz usr/share/man/man1/scimsync-outbox-list.1.gz \
         usr/share/bash-completion/completions/scimsync usr/share/zsh/vendor-completions/_scimsync \
         usr/share/fish/vendor_completions.d/scimsync.fish \
         usr/share/doc/scimsync/contrib/prometheus/scimsync-alerts.yml \
         usr/share/doc/scimsync/contrib/grafana/scimsync.json; do
    expect_mode "$f" 644
done
expect_mode etc/scimsync 755
dpkg-query --root="$root" -W -f='${Conffiles}\n' scimsync | grep -q '^ /etc/scimsync/scimsync.toml ' \
    || fail "/etc/scimsync/scimsync.toml is not a conffile"
ok
cmp -s "$root/etc/scimsync/scimsync.toml" "$ROOT/config.example.toml" || fail "the config is not config.example.toml"
ok
# Stripped, as Debian ships binaries (the symbols are in the -dbgsym package).
if command -v readelf >/dev/null; then
    if readelf -S "$root/usr/bin/scimsync" | grep -q '\.debug_info'; then fail "usr/bin/scimsync is not stripped"; fi
    ok
fi
got="$("$root/usr/bin/scimsync" --version)"
[[ "$got" == "scimsync $version" ]] || fail "scimsync --version said: $got"
ok
# The shipped config loads as-is (check-config validates it).
"$root/usr/bin/scimsync" --config "$root/etc/scimsync/scimsync.toml" check-config >/dev/null \
    || fail "check-config refuses the shipped /etc/scimsync/scimsync.toml"
ok
for unit in scimsync.service scimsync@.service; do
    grep -q '^ExecStart=/usr/bin/scimsync serve' "$root/usr/lib/systemd/system/$unit" \
        || fail "$unit does not start /usr/bin/scimsync"
    ok
done
zcat "$root/usr/share/man/man1/scimsync.1.gz" | grep -q '^\.TH scimsync 1' || fail "scimsync.1 has no title"
ok
if command -v man >/dev/null; then
    MANWIDTH=100 man -l "$root/usr/share/man/man1/scimsync.1.gz" 2>/dev/null | grep -q 'scimsync-outbox(1)' \
        || fail "man cannot render scimsync.1, or it lacks the outbox subcommand"
    ok
fi
bash -c "source '$root/usr/share/bash-completion/completions/scimsync' && complete -p scimsync" >/dev/null \
    || fail "the bash completion does not register for scimsync"
ok
# Installing enables and starts nothing: no unit is wanted by any target, no state exists.
if find "$root/etc" -path '*systemd*' -name 'scimsync*' | grep -q .; then fail "a unit was enabled"; fi
ok
expect_absent var/lib/scimsync
expect_absent var/lib/private/scimsync

# --- upgrade keeps the operator's edits ------------------------------------------------------
echo '# edited by the operator' >>"$root/etc/scimsync/scimsync.toml"
pkg -i --force-confold "$deb"
grep -q 'edited by the operator' "$root/etc/scimsync/scimsync.toml" || fail "an upgrade replaced the edited config"
ok

# --- remove keeps the configuration ----------------------------------------------------------
# State as systemd leaves it under DynamicUser=yes, and an instance's config.
mkdir -p "$root/var/lib/private/scimsync/payroll"
echo db >"$root/var/lib/private/scimsync/scimsync.db"
ln -s private/scimsync "$root/var/lib/scimsync"
echo '[server]' >"$root/etc/scimsync/payroll.toml"
pkg -r scimsync
[[ "$(status)" == "rc" ]] || fail "after remove: status $(status), want rc (config-files)"
ok
expect_absent usr/bin/scimsync
expect_absent usr/lib/systemd/system/scimsync.service
expect_absent usr/lib/systemd/system/scimsync@.service
[[ -f "$root/etc/scimsync/scimsync.toml" ]] || fail "remove deleted the config"
ok

# --- purge removes the configuration, keeps the state ----------------------------------------
pkg -P scimsync
[[ -z "$(status)" || "$(status)" == "pn" || "$(status)" == "un" ]] || fail "after purge: status $(status)"
ok
expect_absent etc/scimsync
[[ -f "$root/var/lib/private/scimsync/scimsync.db" && -L "$root/var/lib/scimsync" ]] || fail "purge removed the state"
ok
grep -q 'kept the state in /var/lib/scimsync' "$out" || fail "purge did not say it kept the state: $(cat "$out")"
ok

# --- purge removes the state when asked ------------------------------------------------------
pkg -i "$deb"
SCIMSYNC_PURGE_STATE=yes pkg -P scimsync
expect_absent var/lib/scimsync
expect_absent var/lib/private/scimsync
expect_absent etc/scimsync
expect_absent usr/bin/scimsync

echo "package-test: checked $(basename "$deb")"
# (a failed check exits above, so a summary line is always all passed)
echo "package-test: $checks passed, 0 failed"
