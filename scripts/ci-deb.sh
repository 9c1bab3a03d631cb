#!/usr/bin/env bash
# CI: build the Debian packages and show what is in them.
#
#   scripts/ci-deb.sh
#
# Builds the amd64 package from target/release/wasmgate and the arm64 one
# from target/aarch64-unknown-linux-gnu/release/wasmgate (both reused when
# scripts/ci-arm.sh has built them; otherwise they are built here, the arm64
# one with scripts/build-arm.sh, which takes about ten minutes), with
# scripts/build-deb.sh. For each: `dpkg-deb -I` (control) and `dpkg-deb -c`
# (contents), then checks that the files the unit and docs refer to are in
# place, that /etc/wasmgate/wasmgate.toml is a conffile, that the maintainer
# scripts run systemd-sysusers, systemd-tmpfiles and daemon-reload and do not
# enable or start the service, and (amd64) that the packaged binary accepts
# the packaged default configuration and board configurations. As root on a
# machine without wasmgate installed (CI), the amd64 package is also
# installed with apt as the README says (user, state directory and both
# configurations checked) and purged again.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf 'ci-deb: %s\n' "$*"; }
fail() { printf 'ci-deb: FAIL: %s\n' "$*" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-ci-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

install=()
[[ $(id -u) -eq 0 ]] && install=(--install)

# check DEB ARCH
check() {
    local deb=$1 arch=$2
    say "$(basename "$deb"): control (dpkg-deb -I)"
    dpkg-deb -I "$deb" | sed 's/^/  /'
    say "$(basename "$deb"): contents (dpkg-deb -c)"
    dpkg-deb -c "$deb" | awk '{ printf "  %s %s %10s  %s\n", $1, $2, $3, $6 }'

    [[ "$(dpkg-deb -f "$deb" Architecture)" == "$arch" ]] || fail "$deb: Architecture is not $arch"
    local listing
    listing=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
    local path
    for path in \
        ./usr/bin/wasmgate \
        ./usr/lib/systemd/system/wasmgate.service \
        ./usr/lib/sysusers.d/wasmgate.conf \
        ./usr/lib/tmpfiles.d/wasmgate.conf \
        ./etc/wasmgate/wasmgate.toml \
        ./usr/share/wasmgate/modules/calibrate.wasm \
        ./usr/share/wasmgate/modules/moving-average.wasm \
        ./usr/share/wasmgate/modules/threshold-alert.wasm \
        ./usr/share/doc/wasmgate/README.md \
        ./usr/share/doc/wasmgate/OTA.md \
        ./usr/share/doc/wasmgate/copyright; do
        grep -qx -- "$path" <<<"$listing" || fail "$deb: $path missing"
    done
    local board
    for board in board-configs/*.toml; do
        grep -qx -- "./usr/share/wasmgate/$board" <<<"$listing" || fail "$deb: /usr/share/wasmgate/$board missing"
    done

    local control=$work/control.$arch
    rm -rf "$control"
    dpkg-deb -e "$deb" "$control"
    grep -qx /etc/wasmgate/wasmgate.toml "$control/conffiles" || fail "$deb: /etc/wasmgate/wasmgate.toml is not a conffile"
    grep -q 'systemd-sysusers.* wasmgate.conf' "$control/postinst" || fail "$deb: postinst does not run systemd-sysusers"
    grep -q 'systemd-tmpfiles --create wasmgate.conf' "$control/postinst" || fail "$deb: postinst does not run systemd-tmpfiles"
    grep -q 'daemon-reload' "$control/postinst" || fail "$deb: postinst does not reload systemd"
    # Installed, not enabled or started: only an upgrade try-restarts it.
    ! grep -Eq 'deb-systemd-invoke (start|restart) ' "$control/postinst" || fail "$deb: postinst starts the service"
    ! grep -q 'new installations run enable' "$control/postinst" || fail "$deb: postinst enables the service"
    say "$(basename "$deb"): files, conffile and maintainer scripts as expected"
}

# --- amd64 ---------------------------------------------------------------------
say "amd64 package"
amd64=$("$ROOT/scripts/build-deb.sh" | tail -n1)
check "$amd64" amd64

say "amd64: the packaged binary checks the packaged configurations"
root=$work/root
mkdir -p "$root"
dpkg-deb -x "$amd64" "$root"
"$root/usr/bin/wasmgate" --version
"$root/usr/bin/wasmgate" check-config "$root/etc/wasmgate/wasmgate.toml"
for f in "$root"/usr/share/wasmgate/board-configs/*.toml; do
    "$root/usr/bin/wasmgate" check-config "$f" >/dev/null || fail "check-config ${f#"$root"}"
    echo "  ok  ${f#"$root"}"
done

# --- amd64: installed as the README says, then removed ------------------------------
# Only as root on a machine without wasmgate installed (CI): a real install
# runs the maintainer scripts (sysusers, tmpfiles) and checks the Depends.
if [[ $(id -u) -eq 0 ]] && ! dpkg-query -W -f='${Status}' wasmgate 2>/dev/null | grep -q 'install ok'; then
    say "amd64: apt install ./$(basename "$amd64") (the README's install command), then purge"
    trap 'apt-get purge -y -qq wasmgate >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$amd64" >"$work/apt.log" 2>&1 ||
        { cat "$work/apt.log" >&2; fail "apt-get install $amd64"; }
    getent passwd wasmgate >/dev/null || fail "the package did not create the wasmgate user"
    # postinst applies tmpfiles.d only on a running systemd (as cargo-deb and
    # dh do); without one (a container), do what the next boot would.
    if [[ ! -d /run/systemd/system ]]; then
        echo "  (no running systemd: systemd-tmpfiles --create wasmgate.conf, as at boot)"
        systemd-tmpfiles --create wasmgate.conf
    fi
    owner=$(stat -c %U /var/lib/wasmgate) || fail "/var/lib/wasmgate missing"
    [[ "$owner" == wasmgate ]] || fail "/var/lib/wasmgate belongs to $owner, not wasmgate"
    echo "  user: $(getent passwd wasmgate)"
    echo "  groups: $(id -nG wasmgate)"
    echo "  state: $(stat -c '%A %U:%G %n' /var/lib/wasmgate)"
    echo "  config: $(stat -c '%A %U:%G %n' /etc/wasmgate/wasmgate.toml)"
    wasmgate --version
    wasmgate check-config /etc/wasmgate/wasmgate.toml
    cp /usr/share/wasmgate/board-configs/raspberry-pi-4.toml /etc/wasmgate/wasmgate.toml
    wasmgate check-config /etc/wasmgate/wasmgate.toml
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq wasmgate >"$work/apt.log" 2>&1 ||
        { cat "$work/apt.log" >&2; fail "apt-get purge wasmgate"; }
    [[ ! -e /usr/bin/wasmgate && ! -e /etc/wasmgate/wasmgate.toml ]] || fail "purge left files behind"
    trap 'rm -rf "$work"' EXIT
    say "amd64: installed, checked its configuration, purged"
fi

# --- arm64 ---------------------------------------------------------------------
say "arm64 package"
if [[ -x $target_dir/aarch64-unknown-linux-gnu/release/wasmgate ]]; then
    say "reusing ${target_dir#"$ROOT"/}/aarch64-unknown-linux-gnu/release/wasmgate (scripts/ci-arm.sh)"
else
    "$ROOT/scripts/build-arm.sh" aarch64-unknown-linux-gnu "${install[@]}"
fi
arm64=$(WASMGATE_BUILT_TARGET=aarch64-unknown-linux-gnu \
    "$ROOT/scripts/build-deb.sh" --target aarch64-unknown-linux-gnu | tail -n1)
check "$arm64" arm64

say "packages:"
for deb in "$amd64" "$arm64"; do
    printf '  %-40s %9d bytes  Depends: %s\n' "$(basename "$deb")" "$(stat -c %s "$deb")" \
        "$(dpkg-deb -f "$deb" Depends)"
done
say "ok"
