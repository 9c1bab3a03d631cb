#!/usr/bin/env bash
# Build the example processors in guest-sdk/examples to WebAssembly and copy
# them to guest-sdk/examples/wasm/ (where they are committed), recording the
# toolchain in guest-sdk/examples/wasm/TOOLCHAIN.
#
#   scripts/build-guests.sh            build and copy
#   scripts/build-guests.sh --check    rebuild into a temporary directory and
#                                      fail, listing every module whose bytes
#                                      differ from the committed one
#   scripts/build-guests.sh --install  first install missing Debian packages
#                                      (implied when CI=true)
#
# Rust toolchain: rustup's, if it has the wasm32-unknown-unknown target
# installed; otherwise Debian's (packages rustc-web cargo-web rust-web-src
# lld-19), which has no prebuilt wasm32 std, so core and alloc are built from
# rust-src with -Zbuild-std. C (c-clamp): clang-19 with wasm-ld from lld-19.
#
# Reproducible: the same toolchain gives the same bytes wherever the checkout
# is. Paths compiled into the modules (panic locations) are remapped with
# --remap-path-prefix (sources, CARGO_HOME, rust-src, target directory). And
# since cargo hashes the absolute path of a path dependency outside the
# workspace (the SDK, seen from guest-sdk/examples) into every symbol name,
# which changes the code layout, the build runs on a copy of the sources at
# the fixed path $STAGE (serialised with flock).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES=$ROOT/guest-sdk/examples
WASM_DIR=$EXAMPLES/wasm
# crate (directory) names; cargo writes <name with _ for ->.wasm
RUST_EXAMPLES=(calibrate moving-average window-stats threshold-alert)
MODULES=("${RUST_EXAMPLES[@]}" c-clamp)
DEB_PACKAGES=(rustc-web cargo-web rust-web-src lld-19 clang-19)
STAGE=/tmp/wasmgate-guests-build
WASM_LD=/usr/lib/llvm-19/bin/wasm-ld
CLANG=clang-19
# Stay within the wasm features the host enables (wit/ABI.md §1): in
# particular no reference types, which rustc/clang enable by default.
RUST_TARGET_FLAGS=(-Ctarget-cpu=mvp -Ctarget-feature=+mutable-globals,+sign-ext,+nontrapping-fptoint,+bulk-memory)
C_TARGET_FLAGS=(-mcpu=mvp -mmutable-globals -msign-ext -mnontrapping-fptoint -mbulk-memory)

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
say() { printf 'build-guests: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

check=false
install=false
[[ "${CI:-}" == "true" ]] && install=true
for arg in "$@"; do
    case "$arg" in
    --check) check=true ;;
    --install) install=true ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

# --- toolchain -------------------------------------------------------------

install_packages() {
    local missing=() pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        say "Debian packages present: ${DEB_PACKAGES[*]}"
        return
    fi
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    say "installing ${missing[*]}"
    # Update the package lists only if they do not know a missing package.
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
}

$install && install_packages

if command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    toolchain=rustup
    CARGO=(cargo)
    RUSTC_BIN=$(rustup which rustc)
    SYSROOT=$("$RUSTC_BIN" --print sysroot)
    RUST_SRC=$SYSROOT/lib/rustlib/src/rust # unused: std comes prebuilt
    REAL_LINKER=$(ls "$SYSROOT"/lib/rustlib/*/bin/rust-lld 2>/dev/null | head -n1)
    [[ -n "$REAL_LINKER" ]] || REAL_LINKER=$WASM_LD
    BUILD_STD=()
    rust_identity="rustup $("$RUSTC_BIN" --version), prebuilt wasm32-unknown-unknown std"
else
    toolchain=debian
    [[ -x /usr/bin/rustc && -x /usr/bin/cargo ]] ||
        die "no Rust toolchain for wasm32: install rustup's wasm32-unknown-unknown target, or run with --install (Debian: ${DEB_PACKAGES[*]})"
    RUST_SRC=/usr/lib/rustlib/src/rust
    [[ -d $RUST_SRC/library/core ]] || die "Debian rust-src missing ($RUST_SRC); run with --install"
    [[ -x $WASM_LD ]] || die "$WASM_LD missing (package lld-19); run with --install"
    RUSTC_BIN=/usr/bin/rustc
    CARGO=(env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo)
    REAL_LINKER=$WASM_LD
    BUILD_STD=(-Zbuild-std=core,alloc)
    rust_identity="debian $("$RUSTC_BIN" --version), -Zbuild-std=core,alloc from rust-web-src $(dpkg-query -W -f='${Version}' rust-web-src 2>/dev/null || echo '?')"
fi
command -v "$CLANG" >/dev/null 2>&1 || die "$CLANG missing (package clang-19); run with --install"
[[ -x $WASM_LD ]] || die "$WASM_LD missing (package lld-19); run with --install"

identity() {
    printf 'rust: %s\n' "$rust_identity"
    printf 'rust linker: %s (%s)\n' "$("$REAL_LINKER" -flavor wasm --version 2>/dev/null || "$REAL_LINKER" --version)" "$(basename "$REAL_LINKER")"
    printf 'c: %s, %s\n' "$("$CLANG" --version | head -n1)" "$("$WASM_LD" --version)"
}
say "toolchain: $toolchain"
identity | sed 's/^/build-guests:   /' >&2

# --- build -----------------------------------------------------------------

# build OUT_DIR TARGET_DIR: build every module into OUT_DIR/<module>.wasm
build() {
    local out=$1 target=$2
    mkdir -p "$out" "$target"

    # The fixed-path copy of the sources (see the top of this file); tar
    # keeps modification times, so cargo's fingerprints stay valid.
    mkdir -p "$STAGE"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$STAGE.lock"
        flock 9
    fi
    rm -rf "$STAGE/src"
    mkdir -p "$STAGE/src"
    tar -C "$ROOT" --exclude=./guest-sdk/examples/target --exclude=./guest-sdk/examples/wasm \
        -cf - ./Cargo.toml ./guest-sdk | tar -C "$STAGE/src" -xf -
    local src=$STAGE/src
    # rustc exports __heap_base and __data_end from every wasm32 cdylib; the
    # ABI needs neither, so a wrapper drops those two linker arguments.
    local wrapper=$target/wasm-ld-filter.sh
    cat >"$wrapper" <<'EOF'
#!/bin/sh
# Generated by scripts/build-guests.sh: run the real wasm linker without
# rustc's --export=__heap_base / --export=__data_end.
for arg do
    shift
    case $arg in
    --export=__heap_base | --export=__data_end) ;;
    *) set -- "$@" "$arg" ;;
    esac
done
exec "$WASMGATE_REAL_LINKER" "$@"
EOF
    chmod +x "$wrapper"

    local cargo_home=${CARGO_HOME:-$HOME/.cargo}
    local flags=("${RUST_TARGET_FLAGS[@]}"
        "--remap-path-prefix=$cargo_home=/cargo"
        "--remap-path-prefix=$RUST_SRC=/rust-src"
        "--remap-path-prefix=$src=/wasmgate"
        "--remap-path-prefix=$target=/target")
    local encoded
    encoded=$(printf '%s\x1f' "${flags[@]}")
    encoded=${encoded%$'\x1f'}

    local packages=()
    for m in "${RUST_EXAMPLES[@]}"; do packages+=(-p "$m"); done
    say "cargo build (${RUST_EXAMPLES[*]})"
    (
        cd "$src/guest-sdk/examples"
        unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER
        export CARGO_ENCODED_RUSTFLAGS=$encoded
        export CARGO_TARGET_DIR=$target
        export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=$wrapper
        export WASMGATE_REAL_LINKER=$REAL_LINKER
        export CARGO_INCREMENTAL=0
        "${CARGO[@]}" build --release --locked --target wasm32-unknown-unknown \
            "${BUILD_STD[@]}" "${packages[@]}"
    )
    for m in "${RUST_EXAMPLES[@]}"; do
        cp "$target/wasm32-unknown-unknown/release/${m//-/_}.wasm" "$out/$m.wasm"
    done

    say "clang (c-clamp)"
    "$CLANG" --target=wasm32-unknown-unknown -O2 -nostdlib -std=c11 -Wall -Wextra -Werror \
        "${C_TARGET_FLAGS[@]}" "-ffile-prefix-map=$src=/wasmgate" \
        "-fuse-ld=$WASM_LD" -Wl,--no-entry -Wl,--strip-all \
        -o "$out/c-clamp.wasm" "$src/guest-sdk/examples/c-clamp/clamp.c"
}

# verify OUT_DIR: exports and imports are exactly what the ABI allows
verify() {
    local out=$1 m
    if ! command -v wasm-objdump >/dev/null 2>&1; then
        say "wabt not installed: skipping the import/export check"
        return
    fi
    for m in "${MODULES[@]}"; do
        local f=$out/$m.wasm dump exports imports
        dump=$(wasm-objdump -x "$f")
        exports=$(sed -n '/^Export\[/,/^[A-Z]/s/.* -> "\(.*\)"$/\1/p' <<<"$dump" | sort | tr '\n' ' ')
        case "$exports" in
        "memory wasmgate_abi_v1 wasmgate_alloc wasmgate_dealloc wasmgate_init wasmgate_process ") ;;
        "memory wasmgate_abi_v1 wasmgate_alloc wasmgate_dealloc wasmgate_process ") ;;
        *) die "$m.wasm: unexpected exports: $exports" ;;
        esac
        imports=$(sed -n '/^Import\[/,/^[A-Z]/s/.* <- \([^ ]*\)$/\1/p' <<<"$dump" | sort | tr '\n' ' ')
        for i in $imports; do
            case "$i" in
            wasmgate.log | wasmgate.now_ms | wasmgate.state_get | wasmgate.state_set | wasmgate.state_delete | wasmgate.config_get) ;;
            *) die "$m.wasm: unexpected import $i" ;;
            esac
        done
        if command -v wasm-validate >/dev/null 2>&1; then
            wasm-validate --disable-reference-types --disable-simd "$f" ||
                die "$m.wasm: not valid under the host's feature set"
        fi
        say "  $m.wasm: $(wc -c <"$f") bytes; imports: ${imports:-none}"
    done
}

if $check; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-guests.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    build "$tmp/wasm" "$tmp/target"
    verify "$tmp/wasm"
    differ=()
    for m in "${MODULES[@]}"; do
        if ! cmp -s "$tmp/wasm/$m.wasm" "$WASM_DIR/$m.wasm"; then
            differ+=("$m.wasm")
        fi
    done
    if ((${#differ[@]} > 0)); then
        say "these committed modules differ from a rebuild of their source:"
        printf 'build-guests:   guest-sdk/examples/wasm/%s\n' "${differ[@]}" >&2
        say "committed modules were built with:"
        sed 's/^/build-guests:   /' "$WASM_DIR/TOOLCHAIN" >&2 2>/dev/null || say "  (no TOOLCHAIN file)"
        say "this rebuild used:"
        identity | sed 's/^/build-guests:   /' >&2
        say "run scripts/build-guests.sh and commit guest-sdk/examples/wasm/"
        exit 1
    fi
    say "all ${#MODULES[@]} committed modules match their source"
else
    build "$WASM_DIR" "$EXAMPLES/target"
    verify "$WASM_DIR"
    {
        echo "# The toolchain that built the modules in this directory"
        echo "# (scripts/build-guests.sh; --check compares against a rebuild)."
        echo "toolchain: $toolchain"
        identity
    } >"$WASM_DIR/TOOLCHAIN"
    say "wrote ${#MODULES[@]} modules to guest-sdk/examples/wasm/ ($toolchain toolchain)"
fi
