#!/usr/bin/env bash
# Build the wasmgate Debian package (cargo-deb; contents and maintainer
# scripts: [package.metadata.deb] in daemon/Cargo.toml).
#
#   scripts/build-deb.sh                  amd64 (the host): builds
#                                         target/release/wasmgate if needed
#   scripts/build-deb.sh --target TARGET  arm64 / armhf: builds
#                                         target/TARGET/release/wasmgate with
#                                         scripts/build-arm.sh if needed
#       TARGET: aarch64-unknown-linux-gnu (arm64),
#               armv7-unknown-linux-gnueabihf (armhf),
#               arm-unknown-linux-gnueabihf (armhf, ARMv6: see build-arm.sh)
#   --no-build   package the binary as it is, fail if it is missing
#
# Output: target/debian/wasmgate_<version>-1_amd64.deb, or
# target/TARGET/debian/wasmgate_<version>-1_<arm64|armhf>.deb; the path is
# printed on the last line of stdout. Inspect with `dpkg-deb -c FILE`
# (contents) and `dpkg-deb -I FILE` (control); install with
# `sudo apt install ./FILE`.
#
# cargo-deb is installed if missing: `cargo install cargo-deb --locked
# --version $CARGO_DEB_VERSION` into ~/.cargo/bin (from crates.io; about a
# minute on two cores). The binary is packaged as built (`cargo deb
# --no-build --no-strip`): the release profile already strips it, and the
# host's strip cannot read an ARM binary.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACKAGE=wasmgate
# The cargo-deb release this packaging was written against (3.x: units to
# /usr/lib/systemd/system, sysusers.d support).
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
say() { printf 'build-deb: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

target=
build=true
while (($#)); do
    case "$1" in
    --target)
        [[ $# -ge 2 ]] || die "--target needs a value"
        target=$2
        shift
        ;;
    --target=*) target=${1#--target=} ;;
    --no-build) build=false ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
case "$target" in
arm64 | aarch64) target=aarch64-unknown-linux-gnu ;;
armhf | armv7) target=armv7-unknown-linux-gnueabihf ;;
armv6) target=arm-unknown-linux-gnueabihf ;;
"" | aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | arm-unknown-linux-gnueabihf) ;;
*) die "unsupported target $target" ;;
esac

cd "$ROOT"
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}

# --- cargo-deb ---------------------------------------------------------------
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
have=$(cargo deb --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "${CARGO_DEB_VERSION%%.*}".* ]]; then
    say "installing cargo-deb $CARGO_DEB_VERSION (found: ${have:-none})"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
    have=$(cargo deb --version | awk '{print $2}')
fi
say "cargo-deb $have"

# --- the binary --------------------------------------------------------------
if [[ -z "$target" ]]; then
    bin=$target_dir/release/$PACKAGE
    # A no-op when the binary is up to date.
    $build && cargo build --release --locked -p "$PACKAGE"
    target_args=()
else
    bin=$target_dir/$target/release/$PACKAGE
    # build-arm.sh --deb has just built it: do not run cargo a second time.
    if $build && [[ "${WASMGATE_BUILT_TARGET:-}" != "$target" ]]; then
        "$ROOT/scripts/build-arm.sh" "$target"
    fi
    target_args=(--target "$target")
fi
[[ -x "$bin" ]] || die "$bin missing (build it first, or drop --no-build)"
say "packaging $bin ($(stat -c %s "$bin") bytes, built $(date -r "$bin" '+%F %T'))"

# --- package -----------------------------------------------------------------
# Where cargo-deb puts them by default: target/debian/ for the host,
# target/<TARGET>/debian/ for a cross target.
out_dir=$target_dir/${target:+$target/}debian
mkdir -p "$out_dir"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# cargo-deb prints the path of the .deb on stdout.
if ! cargo deb -p "$PACKAGE" --no-build --no-strip --locked "${target_args[@]}" \
    --output "$out_dir/" >"$log"; then
    cat "$log" >&2
    die "cargo deb failed"
fi
deb=$(grep '\.deb$' "$log" | tail -n1)
[[ -f "$deb" ]] || { cat "$log" >&2; die "cargo deb did not report a .deb"; }
say "$(dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ')($(stat -c %s "$deb") bytes)"
echo "$deb"
