#!/usr/bin/env bash
# Build a stripped release binary of the gateway for an ARM board, without
# Docker (with Docker, `cross build` and Cross.toml do the same):
#
#   scripts/build-arm.sh TARGET [--deb] [--install]
#
#   TARGET     aarch64-unknown-linux-gnu      (alias arm64, aarch64): 64-bit
#                Raspberry Pi OS / Debian / Ubuntu; Pi 3/4/5, Zero 2 W
#              armv7-unknown-linux-gnueabihf  (alias armhf, armv7): 32-bit
#                ARMv7 (Pi 2/3/4 on a 32-bit OS, BeagleBone Black)
#              arm-unknown-linux-gnueabihf    (alias armv6): Pi Zero/1; see
#                the ARMv6 note below: use cross for that one
#   --deb      also package it: scripts/build-deb.sh --target TARGET
#   --install  install missing Debian packages first (apt-get; implied when
#              CI=true and running as root); otherwise the script prints the
#              apt-get command and stops when something is missing
#
# Output: target/<TARGET>/release/wasmgate (or $CARGO_TARGET_DIR/...), as
# with cross; cargo's own files go to target/build-arm/. The script prints
# the build time and the stripped size.
#
# Toolchain: rustup's, if it has TARGET's standard library installed
# (`rustup target add TARGET`); otherwise Debian's rustc (packages rustc-web
# cargo-web rust-web-src), which ships no ARM standard library, so std is
# built from rust-src with -Zbuild-std (RUSTC_BOOTSTRAP=1: the flag is
# unstable; nothing else of nightly is used). Either way the C parts (ring's
# C and assembly) and the link use Debian's cross gcc: gcc-aarch64-linux-gnu
# + libc6-dev-arm64-cross, or gcc-arm-linux-gnueabihf + libc6-dev-armhf-cross.
#
# The binary links against the building machine's glibc (Debian 12: the
# board needs glibc 2.34 or newer, i.e. Raspberry Pi OS bookworm, Debian 12,
# Ubuntu 22.04 or later). For older board images use cross (Cross.toml).
#
# ARMv6 (arm-unknown-linux-gnueabihf): rustc and the cc crate compile for
# ARMv6 (-march=armv6 -marm -mfpu=vfp), but Debian's armhf C start-up files
# and libc_nonshared.a, which gcc links into every binary, are ARMv7 Thumb-2
# code that an ARMv6 core (Pi Zero/1) cannot execute. The script builds the
# target (it links, and runs on ARMv7 and later), then reads the binary's ARM
# attributes and warns when they say ARMv7. Build Pi Zero/1 binaries with
# `cross build --target arm-unknown-linux-gnueabihf`, whose toolchain is ARMv6.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACKAGE=wasmgate
RUST_PACKAGES=(rustc-web cargo-web rust-web-src)

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
say() { printf 'build-arm: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

target=
deb=false
install=false
[[ "${CI:-}" == "true" && $(id -u) -eq 0 ]] && install=true
for arg in "$@"; do
    case "$arg" in
    --deb) deb=true ;;
    --install) install=true ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $arg" ;;
    *)
        [[ -z "$target" ]] || die "one TARGET only (got $target and $arg)"
        target=$arg
        ;;
    esac
done
[[ -n "$target" ]] || { usage >&2; exit 2; }

case "$target" in
arm64 | aarch64) target=aarch64-unknown-linux-gnu ;;
armhf | armv7) target=armv7-unknown-linux-gnueabihf ;;
armv6) target=arm-unknown-linux-gnueabihf ;;
esac
case "$target" in
aarch64-unknown-linux-gnu)
    gnu=aarch64-linux-gnu
    cross_packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
    ;;
armv7-unknown-linux-gnueabihf | arm-unknown-linux-gnueabihf)
    gnu=arm-linux-gnueabihf
    cross_packages=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
    ;;
*) die "unsupported target $target (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf, arm-unknown-linux-gnueabihf)" ;;
esac
env_target=${target//-/_}              # for CC_<target>, CFLAGS_<target>
ENV_TARGET=${env_target^^}             # for CARGO_TARGET_<TARGET>_LINKER

# --- packages ----------------------------------------------------------------

missing_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
    done
}

ensure_packages() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]} == 0)) && return 0
    if ! $install; then
        say "missing Debian packages: ${missing[*]}"
        say "install them with:  sudo apt-get install ${missing[*]}"
        say "(or run this script with --install)"
        exit 1
    fi
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    say "installing ${missing[*]}"
    # Update the package lists only if they do not know a missing package.
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# --- toolchain ---------------------------------------------------------------

if command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    toolchain=rustup
    ensure_packages "${cross_packages[@]}"
    CARGO=(cargo)
    BUILD_STD=()
    identity="rustup $(rustc --version), prebuilt $target std"
else
    toolchain=debian
    ensure_packages "${RUST_PACKAGES[@]}" "${cross_packages[@]}"
    [[ -d /usr/lib/rustlib/src/rust/library/std ]] ||
        die "Debian's rust-src is missing (/usr/lib/rustlib/src/rust); install rust-web-src"
    CARGO=(env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo)
    # The release profile unwinds on panic, so std is built with panic_unwind.
    BUILD_STD=(-Zbuild-std=std,panic_unwind)
    identity="debian $(/usr/bin/rustc --version), -Zbuild-std from rust-web-src $(dpkg-query -W -f='${Version}' rust-web-src 2>/dev/null || echo '?')"
fi
command -v "$gnu-gcc" >/dev/null 2>&1 || die "$gnu-gcc not found (packages ${cross_packages[*]})"

say "target:    $target"
say "toolchain: $identity"
say "C and link: $("$gnu-gcc" --version | head -n1)"

# --- build -------------------------------------------------------------------

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
# cargo works in a directory of its own, target/build-arm: the artifacts of
# Debian's rustc stay apart from rustup's, and a build here does not hold the
# lock on target/release (cargo locks the host's profile directory even for a
# --target build), so `cargo build --release` can run at the same time
# (scripts/ci-arm.sh does). The binary is then copied to where cross and
# cargo-deb --target expect it.
build_dir=$target_dir/build-arm
built=$build_dir/$target/release/$PACKAGE
bin=$target_dir/$target/release/$PACKAGE

export "CARGO_TARGET_${ENV_TARGET}_LINKER=$gnu-gcc"
export "CC_${env_target}=$gnu-gcc"
export "AR_${env_target}=$gnu-ar"
if [[ $target == arm-unknown-linux-gnueabihf ]]; then
    # The cc crate already passes -march=armv6 -marm -mfpu=vfp for this
    # target; said again so it holds whatever cc version builds ring.
    export "CFLAGS_${env_target}=-march=armv6 -marm -mfpu=vfp -mfloat-abi=hard"
fi

start=$(date +%s)
(
    cd "$ROOT"
    export CARGO_TARGET_DIR=$build_dir
    "${CARGO[@]}" build --release --locked "${BUILD_STD[@]}" --target "$target" -p "$PACKAGE"
)
elapsed=$(($(date +%s) - start))

[[ -x "$built" ]] || die "cargo finished but $built is missing"
mkdir -p "$(dirname "$bin")"
cp -p "$built" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
# The release profile strips (strip = true); strip again in case a profile
# override or RUSTFLAGS left symbols in.
if "$gnu-readelf" -S "$bin" | grep -q '\.symtab'; then
    say "stripping $bin"
    "$gnu-strip" "$bin"
fi

if [[ $target == arm-unknown-linux-gnueabihf ]]; then
    arch=$("$gnu-readelf" -A "$bin" | sed -n 's/^ *Tag_CPU_arch: *//p' | head -n1)
    say "ARM attributes of the binary: Tag_CPU_arch: ${arch:-?}"
    if [[ "$arch" != v6* ]]; then
        say "WARNING: the binary contains ${arch:-non-ARMv6} code (Debian's armhf start-up files);"
        say "WARNING: it will not run on an ARMv6 Pi Zero/1. Use: cross build --release --target $target -p $PACKAGE"
    fi
fi

glibc=$("$gnu-objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1 || true)
size=$(stat -c %s "$bin")
say "built $bin in ${elapsed}s ($toolchain toolchain)"
say "needs ${glibc:-GLIBC_?} or newer on the board"
printf 'stripped size %s: %s bytes (%s MiB)\n' "$target" "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')"

if $deb; then
    WASMGATE_BUILT_TARGET=$target "$ROOT/scripts/build-deb.sh" --target "$target"
fi
