#!/usr/bin/env bash
# Build and run the fuzz targets (fuzz/, docs/FUZZING.md).
#
#   scripts/fuzz.sh [--seconds N | --runs N] [--fresh] [--sanitizer S] [TARGET...]
#
#   --seconds N   run each target for N seconds (libFuzzer -max_total_time);
#                 default 30: the short run CI makes
#   --runs N      run each target for N executions instead (libFuzzer -runs):
#                 the long runs, e.g. --runs 10000000
#   --fresh       empty the scratch corpus (fuzz/work/<target>/) first
#   --sanitizer S address (default), none (≈2× faster, no ASan checks), …
#   TARGET        bundle guest_output payload config (default: all four)
#
# Installs cargo-fuzz if missing (idempotently; nightly must be installed:
# rustup toolchain install nightly). Targets run one after another, niced:
# the machine is shared with CI and other builds. For each target it prints
# executions, execs/s, corpus size and coverage, and it exits non-zero if any
# target crashed, timed out or ran out of memory, naming the reproducer.
#
# Corpora: each run reads the committed seeds (fuzz/corpus/<target>/) as a
# second, read-only corpus and writes what it finds to the scratch corpus
# fuzz/work/<target>/ (git-ignored; kept between runs, so a long run can be
# continued). Reproducers go to fuzz/artifacts/<target>/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(bundle guest_output payload config)
seconds=30
runs=""
fresh=0
sanitizer=address
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; runs=""; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --fresh) fresh=1; shift ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    case " ${ALL_TARGETS[*]} " in
        *" $t "*) ;;
        *) echo "fuzz.sh: unknown target $t (one of: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
done

# -max_len: the largest input libFuzzer makes, per target. Large enough for
# every structure the decoder has (and every committed seed), small enough
# that executions stay fast:
#   bundle        8 KiB: a manifest, 17 signatures (one over the cap of 16),
#                 a key set of a dozen keys; module bytes are only hashed, so
#                 bigger modules add time, not coverage.
#   guest_output  8 KiB: 257 fields (one over the cap of 256) in the host's
#                 encoding take ≈ 3.5 KiB.
#   payload       8 KiB: over the 4 KiB payload cap of the replay context,
#                 so `too-large` is reachable; many lines for the framer
#                 (line limit 64).
#   config        24 KiB: the largest real configuration
#                 (daemon/config/wasmgate.toml) is 14.5 KiB.
max_len() {
    case "$1" in
        config) echo 24576 ;;
        *) echo 8192 ;;
    esac
}
# -timeout=10 (seconds per input): the slowest legitimate input of any target
# takes milliseconds even under ASan; 10 s flags hangs and super-linear
# blow-ups while tolerating a loaded 2-core CI machine (libFuzzer's default,
# 1200 s, would let one hang eat 20 minutes).
TIMEOUT=10
# -rss_limit_mb=1024: the targets need well under 200 MB (ASan's shadow and
# quarantine included; see peak RSS in docs/FUZZING.md); half libFuzzer's
# default of 2048 still leaves room and stops a leak sooner.
RSS_LIMIT_MB=1024
# -malloc_limit_mb=256 (enforced with ASan): no input of ≤ 24 KiB has any
# business making a single 256 MB allocation; one that does trusts a length
# prefix from the input (an amplification bug) and is reported as an OOM.
MALLOC_LIMIT_MB=256

step() { printf '\n== %s\n' "$*"; }

step "toolchain and cargo-fuzz"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
rustup run nightly rustc --version
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    nice -n 10 cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz --version

step "build (sanitizer: $sanitizer)"
build_start=$(date +%s)
if [ ${#targets[@]} -eq ${#ALL_TARGETS[@]} ]; then
    nice -n 10 cargo +nightly fuzz build --sanitizer "$sanitizer"
else
    for t in "${targets[@]}"; do
        nice -n 10 cargo +nightly fuzz build --sanitizer "$sanitizer" "$t"
    done
fi
echo "built in $(( $(date +%s) - build_start )) s"

triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="fuzz/target/$triple/release"

failed=()
summary=()
for t in "${targets[@]}"; do
    if [ -n "$runs" ]; then
        step "$t: $runs executions"
        limit=(-runs="$runs")
    else
        step "$t: $seconds s"
        limit=(-max_total_time="$seconds")
    fi
    work="fuzz/work/$t"
    artifacts="fuzz/artifacts/$t"
    [ "$fresh" = 1 ] && rm -rf "$work"
    mkdir -p "$work" "$artifacts"
    before=$(ls "$artifacts")
    log="fuzz/work/$t.log"
    start=$(date +%s)
    set +e
    nice -n 10 "$bin_dir/$t" \
        "${limit[@]}" \
        -max_len="$(max_len "$t")" \
        -timeout="$TIMEOUT" \
        -rss_limit_mb="$RSS_LIMIT_MB" \
        -malloc_limit_mb="$MALLOC_LIMIT_MB" \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "$work" "fuzz/corpus/$t" >"$log" 2>&1
    status=$?
    set -e
    wall=$(( $(date +%s) - start ))
    fstat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    execs=$(fstat number_of_executed_units)
    rate=$(fstat average_exec_per_sec)
    rss=$(fstat peak_rss_mb)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    scratch=$(find "$work" -type f | wc -l)
    line=$(printf '%-13s execs %-10s %6s s  %7s exec/s  corpus %-12s (scratch %s files)  cov %-6s ft %-6s peak RSS %s MB' \
        "$t" "${execs:-?}" "$wall" "${rate:-?}" "${corp:-?}" "$scratch" "${cov:-?}" "${ft:-?}" "${rss:-?}")
    echo "$line"
    echo "stat::number_of_executed_units: ${execs:-?}"
    new=$(comm -13 <(echo "$before") <(ls "$artifacts") | grep -E '^(crash|timeout|oom|leak)-' || true)
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        failed+=("$t")
        summary+=("$line  FAILED (exit $status)")
        echo "FAILED: $t (libFuzzer exit $status); log: $log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|thread .* panicked|panicked at)' "$log" | head -5 || true
        for a in $new; do
            echo "reproducer: $artifacts/$a"
            echo "  reproduce: cargo +nightly fuzz run --sanitizer $sanitizer $t $artifacts/$a"
            echo "  minimise:  cargo +nightly fuzz tmin --sanitizer $sanitizer $t $artifacts/$a"
        done
        [ -z "$new" ] && tail -20 "$log"
    else
        summary+=("$line  ok")
    fi
done

step "summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing FAILED: ${failed[*]}"
    exit 1
fi
echo "no crash, timeout or OOM"
