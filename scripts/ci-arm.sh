#!/usr/bin/env bash
# CI: the gateway built for 64-bit ARM and smoke-tested under qemu-user.
#
#   scripts/ci-arm.sh [--armv7]
#
# 1. installs what it needs (as root, idempotently): qemu-user-static and
#    what scripts/build-arm.sh needs (Debian's rustc/cargo/rust-src and the
#    aarch64 cross gcc) -- apt-get runs only for missing packages;
# 2. builds target/aarch64-unknown-linux-gnu/release/wasmgate with
#    scripts/build-arm.sh and, at the same time, the x86_64 release binary
#    with the normal toolchain (cargo build --release -p wasmgate:
#    target/release/wasmgate, which scripts/ci-deb.sh then packages);
# 3. under qemu-aarch64-static: `wasmgate --version` (must equal x86's),
#    `wasmgate check-config` on every board-configs/*.toml, and
#    `wasmgate replay --input samples/greenhouse.csv --config
#    samples/greenhouse.toml` (three example modules, two detectors), whose
#    stdout must equal the x86_64 binary's byte for byte;
# 4. prints the stripped binary size per target built.
#
# --armv7 (or WASMGATE_CI_ARMV7=1) also builds armv7-unknown-linux-gnueabihf
# and runs the same smoke test under qemu-arm-static (about as long again as
# the aarch64 build: not part of the default CI run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

armv7=false
[[ "${WASMGATE_CI_ARMV7:-}" == 1 ]] && armv7=true
for arg in "$@"; do
    case "$arg" in
    --armv7) armv7=true ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ci-arm: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { printf 'ci-arm: %s\n' "$*"; }
fail() { printf 'ci-arm: FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-ci-arm.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- packages ------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null 2>&1 ||
    { $armv7 && ! command -v qemu-arm-static >/dev/null 2>&1; }; then
    [[ $(id -u) -eq 0 ]] || fail "qemu-user-static missing: sudo apt-get install qemu-user-static"
    say "installing qemu-user-static"
    apt-cache show qemu-user-static >/dev/null 2>&1 || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi
install=()
[[ $(id -u) -eq 0 ]] && install=(--install)

declare -A sizes seconds

# --- builds ------------------------------------------------------------------------
# Both release builds end in a long single-threaded fat-LTO step, so the x86_64
# one runs in the background (its own lock: build-arm.sh builds in
# target/build-arm) while the ARM ones run in the foreground.
arm_targets=(aarch64-unknown-linux-gnu)
$armv7 && arm_targets+=(armv7-unknown-linux-gnueabihf)

say "building the x86_64 release binary in the background (reference output, amd64 .deb)"
# In a session of its own, so a failure here stops it with all its rustc's.
setsid bash -c 'start=$(date +%s)
    cargo build --release --locked -p wasmgate >"$1/x86_64.log" 2>&1 || exit
    echo $(($(date +%s) - start)) >"$1/x86_64.seconds"' _ "$work" &
x86_pid=$!
trap 'if [[ -n "$x86_pid" ]]; then kill -- "-$x86_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

for target in "${arm_targets[@]}"; do
    say "[$target] building (scripts/build-arm.sh)"
    t=$(now)
    "$ROOT/scripts/build-arm.sh" "$target" "${install[@]}"
    seconds[$target]=$(($(now) - t))
    sizes[$target]=$(stat -c %s "$target_dir/$target/release/wasmgate")
done

say "waiting for the x86_64 build"
x86_rc=0
wait "$x86_pid" || x86_rc=$?
x86_pid=
if ((x86_rc != 0)); then
    cat "$work/x86_64.log" >&2
    fail "x86_64 release build failed"
fi
grep -v '^ *Compiling ' "$work/x86_64.log" || true
seconds[x86_64-unknown-linux-gnu]=$(cat "$work/x86_64.seconds")
x86=$target_dir/release/wasmgate
[[ -x $x86 ]] || fail "$x86 missing"
sizes[x86_64-unknown-linux-gnu]=$(stat -c %s "$x86")

# --- x86_64 reference ----------------------------------------------------------------
x86_version=$("$x86" --version)
"$x86" replay --input samples/greenhouse.csv --config samples/greenhouse.toml \
    >"$work/replay.x86_64" 2>"$work/replay.x86_64.err" ||
    { cat "$work/replay.x86_64.err" >&2; fail "x86_64 replay failed"; }

# --- smoke tests under qemu-user -------------------------------------------------------
# smoke TARGET QEMU SYSROOT
smoke() {
    local target=$1 qemu=$2 sysroot=$3
    local bin=$target_dir/$target/release/wasmgate
    local run=("$qemu" -L "$sysroot" "$bin")

    say "[$target] under $qemu: --version"
    local version
    version=$("${run[@]}" --version) || fail "[$target] --version failed"
    echo "  $version"
    [[ "$version" == "$x86_version" ]] || fail "[$target] --version says '$version', x86_64 says '$x86_version'"

    say "[$target] under $qemu: check-config board-configs/*.toml"
    local f n=0
    for f in board-configs/*.toml; do
        [[ -e "$f" ]] || continue
        "${run[@]}" check-config "$f" >"$work/check.out" 2>&1 ||
            { cat "$work/check.out" >&2; fail "[$target] check-config $f"; }
        echo "  ok  $f"
        n=$((n + 1))
    done
    ((n > 0)) || fail "no board-configs/*.toml to check"

    say "[$target] under $qemu: replay --input samples/greenhouse.csv --config samples/greenhouse.toml"
    "${run[@]}" replay --input samples/greenhouse.csv --config samples/greenhouse.toml \
        >"$work/replay.$target" 2>"$work/replay.$target.err" ||
        { cat "$work/replay.$target.err" >&2; fail "[$target] replay failed"; }
    sed -n '1p' "$work/replay.$target.err" | sed 's/^/  /'
    if ! cmp -s "$work/replay.x86_64" "$work/replay.$target"; then
        diff "$work/replay.x86_64" "$work/replay.$target" | head -n 20 >&2 || true
        fail "[$target] replay output differs from x86_64's"
    fi
    echo "  stdout: $(wc -l <"$work/replay.$target") lines, $(wc -c <"$work/replay.$target") bytes," \
        "sha256 $(sha256sum <"$work/replay.$target" | cut -c1-16)…: byte-identical to x86_64"
}

smoke aarch64-unknown-linux-gnu qemu-aarch64-static /usr/aarch64-linux-gnu
$armv7 && smoke armv7-unknown-linux-gnueabihf qemu-arm-static /usr/arm-linux-gnueabihf

say "stripped binary sizes (release profile: fat LTO, codegen-units = 1, opt-level 3, panic = unwind)"
for target in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    [[ -n "${sizes[$target]:-}" ]] || continue
    printf '  %-32s %9d bytes  %5.1f MiB   built in %ss\n' "$target" "${sizes[$target]}" \
        "$(awk -v s="${sizes[$target]}" 'BEGIN { print s / 1048576 }')" "${seconds[$target]}"
done
say "ok"
