#!/usr/bin/env bash
# Check the systemd files in systemd/ and print what systemd thinks of them:
#
#   1. `systemd-analyze verify` on wasmgate.service: must print nothing and
#      exit 0 (unknown or misspelt directives, bad values, missing commands).
#   2. `systemd-analyze security --offline=true`: the per-directive table and
#      the "Overall exposure level", which must be at most $MAX_EXPOSURE
#      (default 2.5; 0 = fully locked down, 10 = unprotected).
#   3. wasmgate.sysusers and wasmgate.tmpfiles applied to a scratch root:
#      the user and groups are created, /etc/wasmgate and /var/lib/wasmgate
#      get their owners and modes.
#
#   scripts/ci-systemd.sh
#
# Needs systemd-analyze (Debian package `systemd`); as root it installs it
# when missing. No running systemd is needed: everything works offline on
# scratch copies, nothing is installed on this machine.
#
# `verify` insists that ExecStart= points at an executable, so it runs with
# --root on a scratch tree holding the unit, the distribution's units it
# depends on (sysinit.target, …) and /usr/bin/wasmgate: the built binary
# ($WASMGATE_BIN, else target/release or target/debug), or a stub when none
# is built yet (verify checks that the file is executable, it never runs it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNIT=$ROOT/systemd/wasmgate.service
SYSUSERS=$ROOT/systemd/wasmgate.sysusers
TMPFILES=$ROOT/systemd/wasmgate.tmpfiles
MAX_EXPOSURE=${MAX_EXPOSURE:-2.5}
# Plain output in CI logs.
export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat SYSTEMD_LOG_COLOR=0

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "systemd-analyze is missing: apt-get install systemd (as root)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
systemd-analyze --version | head -n 1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- 1. verify ---------------------------------------------------------------
vroot=$scratch/verify
mkdir -p "$vroot/etc/systemd/system" "$vroot/usr/bin" "$vroot/usr/lib/systemd"
for dir in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -d "$dir" ]; then
        cp -a "$dir" "$vroot/usr/lib/systemd/"
        break
    fi
done
cp "$UNIT" "$vroot/etc/systemd/system/wasmgate.service"
bin=${WASMGATE_BIN:-}
if [ -z "$bin" ]; then
    for b in "$ROOT/target/release/wasmgate" "$ROOT/target/debug/wasmgate"; do
        if [ -x "$b" ]; then bin=$b; break; fi
    done
fi
if [ -n "$bin" ]; then
    cp "$bin" "$vroot/usr/bin/wasmgate"
    echo "verify: /usr/bin/wasmgate is $bin"
else
    printf '#!/bin/sh\nexit 0\n' > "$vroot/usr/bin/wasmgate"
    chmod 0755 "$vroot/usr/bin/wasmgate"
    echo "verify: no wasmgate built; /usr/bin/wasmgate is a stub"
fi

echo "\$ systemd-analyze verify systemd/wasmgate.service"
status=0
verify_out=$(systemd-analyze verify --man=no --root="$vroot" wasmgate.service 2>&1) || status=$?
if [ -n "$verify_out" ]; then
    printf '%s\n' "$verify_out" | sed "s|$vroot||g"
fi
if [ "$status" -ne 0 ] || [ -n "$verify_out" ]; then
    echo "FAIL: systemd-analyze verify is not clean (exit $status)" >&2
    exit 1
fi
echo "verify: clean"

# --- 2. security -------------------------------------------------------------
echo
echo "\$ systemd-analyze security --offline=true systemd/wasmgate.service"
security_out=$(systemd-analyze security --no-pager --offline=true "$UNIT" 2>&1) || true
printf '%s\n' "$security_out"
exposure=$(printf '%s\n' "$security_out" |
    sed -n 's/.*Overall exposure level for [^:]*: *\([0-9][0-9.]*\).*/\1/p' | head -n 1)
if [ -z "$exposure" ]; then
    echo "FAIL: no \"Overall exposure level\" line in the output" >&2
    exit 1
fi
if ! awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
    echo "FAIL: exposure $exposure is above $MAX_EXPOSURE" >&2
    exit 1
fi
echo "security: exposure $exposure (limit $MAX_EXPOSURE)"

# --- 3. sysusers and tmpfiles on a scratch root -------------------------------
echo
froot=$scratch/files
mkdir -p "$froot/etc"
# A base system's accounts (dialout exists on Debian; i2c and gpio may not).
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$froot/etc/passwd"
printf 'root:x:0:\ndialout:x:20:\n' > "$froot/etc/group"
echo "\$ systemd-sysusers systemd/wasmgate.sysusers"
systemd-sysusers --root="$froot" "$SYSUSERS"
grep -q '^wasmgate:x:[0-9]*:[0-9]*:.*:/var/lib/wasmgate:' "$froot/etc/passwd" ||
    { echo "FAIL: sysusers did not create the wasmgate user" >&2; exit 1; }
for g in wasmgate dialout i2c gpio; do
    grep -q "^$g:" "$froot/etc/group" ||
        { echo "FAIL: sysusers did not create group $g" >&2; exit 1; }
done
echo "\$ systemd-tmpfiles --create systemd/wasmgate.tmpfiles"
systemd-tmpfiles --root="$froot" --create "$TMPFILES"
gid=$(awk -F: '$1 == "wasmgate" { print $3 }' "$froot/etc/group")
uid=$(awk -F: '$1 == "wasmgate" { print $3 }' "$froot/etc/passwd")
check_dir() { # path expected "mode uid gid"
    local got
    got=$(stat -c '%a %u %g' "$froot$1")
    echo "  $1: $got"
    [ "$got" = "$2" ] || { echo "FAIL: $1 is '$got', expected '$2'" >&2; exit 1; }
}
check_dir /etc/wasmgate "750 0 $gid"
check_dir /var/lib/wasmgate "700 $uid $gid"
echo "sysusers/tmpfiles: ok"
