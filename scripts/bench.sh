#!/usr/bin/env bash
# The benchmark suite, one command: measures everything in one run, prints a
# table of figures and ratios, and writes it with the machine's details to
# BENCHMARKS.md (issue 7).
#
#   scripts/bench.sh            full run (~15 min after the builds); writes BENCHMARKS.md
#   scripts/bench.sh --quick    smoke check (~2 min after the builds): fewer runs,
#                               smaller N; writes target/bench/BENCHMARKS.quick.md
#   options:
#     --arm        also build the aarch64 binary (scripts/build-arm.sh
#                  aarch64-unknown-linux-gnu, ~15 min) to report its size;
#                  without it the size of an existing one is reported, or
#                  "not built"
#     --out FILE   write the Markdown there instead
#
# What it measures (every figure the median of several runs, with min–max):
#   1. end to end, with the release binary and a private mosquitto (apt-get
#      installs mosquitto and mosquitto-clients when missing, as root):
#      readings/s from mosquitto_pub through wasmgate (calibrate.wasm, EWMA
#      and range detectors, durable outbox) to mosquitto_sub, QoS 1 both
#      ways, against mosquitto's own passthrough (mosquitto_pub ->
#      mosquitto_sub) on the same broker with the same payloads, as a ratio;
#      and publish -> arrival latency at a steady 200 readings/s, both ways;
#   2. memory of the daemon from /proc/<pid>/status: VmRSS idle (1 module,
#      and 10 modules in 10 streams), and VmRSS / VmHWM under load with the
#      10 modules;
#   3. the cargo benches (daemon/benches/): processors (wasm per batch vs
#      native, fuel on/off, cold start of a ~5 KB and a ~51 KB module),
#      detectors, outbox (durable ingest readings/s, p99 ack latency), ota
#      (swap latency) and hostile (normal streams' throughput and latency
#      with the hostile-module corpus loaded, against them alone); they
#      report through WASMGATE_BENCH_OUT;
#   4. the stripped release binary's size (x86_64; aarch64 if built).
#
# Builds: `cargo bench --no-run` (bench profile: unstripped, and it writes
# target/release/wasmgate), then `cargo build --release -p wasmgate`, whose
# stripped binary is copied and measured; so target/release/wasmgate is the
# stripped release binary again when the script ends. Everything the run
# uses is copied to a temporary directory first, so concurrent cargo runs
# in the tree cannot swap binaries under it.
#
# Raw output: target/bench/last/ (results.jsonl: one JSON line per figure
# and run; the benches' own output; the gateway and broker logs).
#
# The machine should be quiet: the load average at the start and the end is
# written to the file, with a warning when it was busy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # used by bench/lib.sh
PROG=bench
# shellcheck source=bench/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/bench/lib.sh"
TOOL=$ROOT/bench/tool.py

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

quick=false
arm=false
out=
while (($#)); do
    case "$1" in
    --quick) quick=true ;;
    --arm) arm=true ;;
    --out)
        out=${2:?--out needs a file}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
    shift
done

if $quick; then
    E2E_N=3000 E2E_RUNS=2
    LAT_RATE=200 LAT_COUNT=600 LAT_RUNS=1
    RSS_N=5000 RSS_RUNS=1
    BENCH_RUNS=3 BENCH_BATCHES=50 DETECTOR_RUNS=2
    OUTBOX_RUNS=1 OUTBOX_N=3000
    OTA_RUNS=1 OTA_N=5
    HOSTILE_RUNS=1 HOSTILE_SECS=4
    mode="quick run (--quick: fewer runs, smaller N — not for publication)"
    command="scripts/bench.sh --quick"
    [[ -n "$out" ]] || out=$ROOT/target/bench/BENCHMARKS.quick.md
else
    E2E_N=20000 E2E_RUNS=5
    LAT_RATE=200 LAT_COUNT=2000 LAT_RUNS=3
    RSS_N=50000 RSS_RUNS=3
    BENCH_RUNS=7 BENCH_BATCHES=200 DETECTOR_RUNS=7
    OUTBOX_RUNS=5 OUTBOX_N=20000
    OTA_RUNS=3 OTA_N=20
    HOSTILE_RUNS=5 HOSTILE_SECS=20
    mode="full run"
    command="scripts/bench.sh"
    [[ -n "$out" ]] || out=$ROOT/BENCHMARKS.md
fi
$arm && command+=" --arm"

started=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-bench.XXXXXX")
KEEP=$ROOT/target/bench/last
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
finish() {
    local rc=$?
    bg_cleanup
    mkdir -p "$KEEP"
    cp -r "$WORK"/logs "$WORK"/results.jsonl "$WORK"/machine.json "$KEEP"/ 2>/dev/null || true
    rm -rf "$WORK"
    ((rc == 0)) || say "failed (exit $rc); logs in $KEEP"
}
trap finish EXIT
trap 'exit 130' INT TERM
rm -rf "$KEEP"
mkdir -p "$WORK/logs" "$WORK/bin"

# record BENCH NAME VALUE UNIT [MIN MAX]: one figure for the report.
record() {
    printf '{"bench":"%s","name":"%s","value":%s,"unit":"%s","min":%s,"max":%s}\n' \
        "$1" "$2" "$3" "$4" "${5:-$3}" "${6:-$3}" >>"$RESULTS"
}

step() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- builds

step "prerequisites"
command -v python3 >/dev/null || die "python3 is needed (number crunching)"
ensure_mosquitto
say "mosquitto $("$(mosquitto_bin)" -h 2>/dev/null | head -1 | awk '{print $3}')"

cd "$ROOT"
step "build: cargo benches (bench profile)"
benches=(processors detectors outbox ota hostile)
cargo bench --locked -p wasmgate --no-run --message-format=json-render-diagnostics \
    "${benches[@]/#/--bench=}" >"$WORK/bench-build.json"
python3 - "$WORK/bench-build.json" "$WORK/bin" "${benches[@]}" <<'EOF'
import json, shutil, sys
src, dest, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
found = {}
for line in open(src):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and "bench" in t.get("kind", []) and m.get("executable"):
        if t["name"] in wanted:
            found[t["name"]] = m["executable"]
missing = wanted - set(found)
if missing:
    sys.exit("bench executables not found: %s" % ", ".join(sorted(missing)))
for name, exe in found.items():
    shutil.copy2(exe, "%s/bench-%s" % (dest, name))
EOF

step "build: release binary (cargo build --release -p wasmgate)"
cargo build --release --locked -p wasmgate
cp target/release/wasmgate "$WORK/bin/wasmgate"
WASMGATE=$WORK/bin/wasmgate
if readelf -S "$WASMGATE" 2>/dev/null | grep -q '\.symtab'; then
    die "target/release/wasmgate has a symbol table: not the stripped release build (did a concurrent 'cargo bench' overwrite it?); run again"
fi

if $arm; then
    step "build: aarch64 release binary (scripts/build-arm.sh aarch64-unknown-linux-gnu)"
    scripts/build-arm.sh aarch64-unknown-linux-gnu
fi

# ---------------------------------------------------------------- machine

measure_started=$SECONDS

python3 "$TOOL" machine --root "$ROOT" --disk "$WORK" >"$WORK/machine.json"
say "machine: $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("%(cpu)s, %(cores)s cores, load %(loadavg_start)s" % m)' "$WORK/machine.json")"

# ---------------------------------------------------------------- end to end

step "end to end: mosquitto alone vs wasmgate ($E2E_RUNS runs of $E2E_N readings, QoS 1)"
start_mosquitto "$WORK/mosquitto"
cp "$MOSQ_LOG" "$WORK/logs/" 2>/dev/null || true
GW_ID=bench
# End-to-end benchmark: one stream, calibrate.wasm, EWMA + range detectors.
calibrate_gateway_toml "$GW_ID" "$WORK/e2e-state" "bench/+/data" "*" 1 >"$WORK/e2e.toml"
"$WASMGATE" check-config "$WORK/e2e.toml" >/dev/null
start_gateway "$WASMGATE" "$WORK/e2e.toml" "$WORK/logs/gateway-e2e.log"
E2E_PID=$GW_PID

# Idle memory: sampled every 0.2 s for 2 s after /readyz turned ready.
idle_rss() {
    local pid=$1 max=0 v
    for _ in $(seq 10); do
        v=$(proc_kb "$pid" VmRSS)
        ((v > max)) && max=$v
        sleep 0.2
    done
    echo "$max"
}
record memory idle-1-module/vmrss "$(idle_rss "$E2E_PID")" kB

python3 "$TOOL" payloads --count "$E2E_N" >"$WORK/payloads.txt"

# CPU time (user + system) of a process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
per_reading_us() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$E2E_N" 'BEGIN { printf "%.2f\n", t / hz / n * 1e6 }'; }

# throughput WHO RUN: one timed run; sets RATE (readings/s) and records the
# CPU time the broker and the gateway spent per reading.
throughput() {
    local who=$1 run=$2 in out sub=bench-sub-$1-$2 subpid t0 t1 got rc=0
    if [[ $who == passthrough ]]; then
        in=pt/$run out=pt/$run
    else
        in=bench/s1/data out=wasmgate/$GW_ID/out/s
    fi
    timeout 600 mosquitto_sub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i "$sub" -t "$out" -C "$E2E_N" \
        >"$WORK/sub.out" &
    subpid=$!
    BG_PIDS+=("$subpid")
    wait_subscribed "$sub" "$out"
    local gw0 br0 gw1 br1
    gw0=$(cpu_ticks "$E2E_PID")
    br0=$(cpu_ticks "$MOSQ_PID")
    t0=$(date +%s%N)
    mosquitto_pub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i "bench-pub-$who-$run" -t "$in" -l \
        <"$WORK/payloads.txt"
    wait "$subpid" || rc=$?
    t1=$(date +%s%N)
    gw1=$(cpu_ticks "$E2E_PID")
    br1=$(cpu_ticks "$MOSQ_PID")
    bg_forget "$subpid"
    got=$(wc -l <"$WORK/sub.out")
    ((rc == 0 && got == E2E_N)) ||
        die "$who run $run: $got of $E2E_N outputs arrived (mosquitto_sub exit $rc)"
    RATE=$(awk -v n="$E2E_N" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f\n", n / (ns / 1e9) }')
    # CPU time (user + system) per reading, µs.
    record e2e "$who/broker-cpu-us" "$(per_reading_us $((br1 - br0)))" us
    [[ $who == wasmgate ]] && record e2e "$who/gateway-cpu-us" "$(per_reading_us $((gw1 - gw0)))" us
    return 0
}

for run in $(seq "$E2E_RUNS"); do
    for who in passthrough wasmgate; do
        throughput "$who" "$run"
        say "run $run: $who $RATE readings/s"
        record e2e "$who/readings-per-s" "$RATE" readings/s
    done
done

# latency WHO RUN: paced publishing, publish -> arrival per reading.
latency() {
    local who=$1 run=$2 in out sub=bench-lat-$1-$2 subpid rc=0 j
    if [[ $who == passthrough ]]; then
        in=lat/$run out=lat/$run
    else
        in=bench/s2/data out=wasmgate/$GW_ID/out/s
    fi
    timeout 600 mosquitto_sub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i "$sub" -t "$out" -C "$LAT_COUNT" \
        -F '%U %p' >"$WORK/lat.out" &
    subpid=$!
    BG_PIDS+=("$subpid")
    wait_subscribed "$sub" "$out"
    python3 "$TOOL" pace --rate "$LAT_RATE" --count "$LAT_COUNT" |
        mosquitto_pub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i "bench-latpub-$who-$run" -t "$in" -l
    wait "$subpid" || rc=$?
    bg_forget "$subpid"
    ((rc == 0)) || die "$who latency run $run: mosquitto_sub exit $rc"
    j=$(python3 "$TOOL" latency "$WORK/lat.out")
    say "latency run $run: $who $j"
    record e2e "$who/latency-p50" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p50"])' "$j")" ms
    record e2e "$who/latency-p99" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p99"])' "$j")" ms
}

step "latency: $LAT_COUNT readings at $LAT_RATE/s, $LAT_RUNS run(s) each"
for run in $(seq "$LAT_RUNS"); do
    for who in passthrough wasmgate; do
        latency "$who" "$run"
    done
done
bg_stop "$E2E_PID"

# ---------------------------------------------------------------- memory, 10 modules

step "memory: 10 modules in 10 streams, idle and under load ($RSS_RUNS run(s) of $RSS_N readings)"
GW10=bench10
modules=(calibrate moving-average window-stats threshold-alert c-clamp)
module_config() {
    case "$1" in
    calibrate) echo '{ fields = { temp = { scale = 1.8, offset = 32.0 } } }' ;;
    moving-average) echo '{ window = 8 }' ;;
    window-stats) echo '{ count = 16 }' ;;
    threshold-alert) echo '{ field = "temp", warning = 23.0, critical = 24.5, hysteresis = 0.5 }' ;;
    c-clamp) echo '{ min = 18.0, max = 24.0 }' ;;
    esac
}
write_config10() {
    local state=$1 k m
    echo "# Memory benchmark: 10 streams, one sensor each, the 5 example modules twice."
    gateway_head_toml "$GW10" "$state" "bench10/data"
    for k in $(seq 0 9); do
        m=${modules[$((k % 5))]}
        cat <<EOF
[streams.st$k]
sensors = ["m$k"]
[[streams.st$k.processors]]
module = "$ROOT/guest-sdk/examples/wasm/$m.wasm"
name = "$m"
config = $(module_config "$m")
[[streams.st$k.detectors]]
kind = "ewma"
EOF
    done
}
python3 "$TOOL" payloads --count "$RSS_N" --sensors m0,m1,m2,m3,m4,m5,m6,m7,m8,m9 >"$WORK/payloads10.txt"

# All readings of $burst bursts processed and the outbox empty (polled
# every 0.1 s).
drained() {
    local n e
    read -r n e < <(metrics "$GW_HTTP" wasmgate_readings_total wasmgate_outbox_entries)
    [[ $n != nan && $e != nan ]] && ((n >= RSS_N * burst && e == 0)) && return 0
    sleep 0.05
    return 1
}

# Each run: a fresh gateway, idle RSS, then two identical bursts of RSS_N
# readings at full speed (the second shows whether what the first left
# resident is retained or keeps growing).
for run in $(seq "$RSS_RUNS"); do
    write_config10 "$WORK/state10-$run" >"$WORK/mem10.toml"
    "$WASMGATE" check-config "$WORK/mem10.toml" >/dev/null
    start_gateway "$WASMGATE" "$WORK/mem10.toml" "$WORK/logs/gateway-mem10-$run.log"
    pid=$GW_PID
    record memory idle-10-modules/vmrss "$(idle_rss "$pid")" kB
    # A consumer of everything the gateway publishes.
    timeout 600 mosquitto_sub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i "bench10-sub-$run" \
        -t "wasmgate/$GW10/#" >/dev/null &
    subpid=$!
    BG_PIDS+=("$subpid")
    wait_subscribed "bench10-sub-$run" "wasmgate/$GW10/#"
    # Sampler: VmRSS and the outbox's entries every 100 ms while the load runs.
    (while kill -0 "$pid" 2>/dev/null; do
        echo "$(proc_kb "$pid" VmRSS) $(metrics "$GW_HTTP" wasmgate_outbox_entries)"
        sleep 0.1
    done) >"$WORK/rss-samples.txt" 2>/dev/null &
    sampler=$!
    BG_PIDS+=("$sampler")
    for burst in 1 2; do
        t0=$(date +%s%N)
        mosquitto_pub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i "bench10-pub-$run-$burst" -t bench10/data -l \
            <"$WORK/payloads10.txt"
        wait_until 600 "the 10-module gateway to process burst $burst ($RSS_N readings) and drain its outbox" drained
        t1=$(date +%s%N)
        after=$(proc_kb "$pid" VmRSS)
        r=$(awk -v n="$RSS_N" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f\n", n / (ns / 1e9) }')
        record memory load-10-modules/readings-per-s "$r" readings/s
        if ((burst == 1)); then
            record memory load-10-modules/vmrss-after "$after" kB
        else
            record memory load-10-modules/vmrss-after-2 "$after" kB
        fi
        say "run $run, burst $burst: $r readings/s, VmRSS after $after kB"
    done
    bg_stop "$sampler" 1
    max=$(awk '$1 > m { m = $1 } END { print m + 0 }' "$WORK/rss-samples.txt")
    backlog=$(awk '$2 ~ /^[0-9]+$/ && $2 > m { m = $2 } END { print m + 0 }' "$WORK/rss-samples.txt")
    record memory load-10-modules/vmrss-max "$max" kB
    record memory load-10-modules/outbox-max-entries "$backlog" entries
    record memory load-10-modules/vmhwm "$(proc_kb "$pid" VmHWM)" kB
    say "run $run: max VmRSS $max kB, VmHWM $(proc_kb "$pid" VmHWM) kB, outbox backlog up to $backlog entries"
    bg_stop "$subpid" 2
    bg_stop "$pid"
done
bg_stop "$MOSQ_PID"
cp "$MOSQ_LOG" "$WORK/logs/mosquitto.log"

# ---------------------------------------------------------------- cargo benches

export WASMGATE_BENCH_OUT=$RESULTS
step "cargo bench: processors"
WASMGATE_BENCH_RUNS=$BENCH_RUNS WASMGATE_BENCH_BATCHES=$BENCH_BATCHES \
    "$WORK/bin/bench-processors" --bench | tee "$WORK/logs/bench-processors.txt"
step "cargo bench: detectors"
WASMGATE_BENCH_RUNS=$DETECTOR_RUNS "$WORK/bin/bench-detectors" --bench |
    tee "$WORK/logs/bench-detectors.txt"
for run in $(seq "$OUTBOX_RUNS"); do
    step "cargo bench: outbox (run $run of $OUTBOX_RUNS, N = $OUTBOX_N)"
    WASMGATE_BENCH_N=$OUTBOX_N WASMGATE_BENCH_DIR=$WORK/outbox-bench \
        "$WORK/bin/bench-outbox" --bench | tee "$WORK/logs/bench-outbox-$run.txt"
done
for run in $(seq "$OTA_RUNS"); do
    step "cargo bench: ota (run $run of $OTA_RUNS, N = $OTA_N)"
    WASMGATE_BENCH_N=$OTA_N WASMGATE_BENCH_DIR=$WORK/ota-bench \
        "$WORK/bin/bench-ota" --bench | tee "$WORK/logs/bench-ota-$run.txt"
done
HOSTILE_RATE=2000
step "cargo bench: hostile corpus under load ($HOSTILE_RUNS runs, saturation $((HOSTILE_SECS / 2)) s + paced $HOSTILE_SECS s at $HOSTILE_RATE/s per set-up)"
WASMGATE_BENCH_RUNS=$HOSTILE_RUNS WASMGATE_BENCH_SECS=$HOSTILE_SECS WASMGATE_BENCH_RATE=$HOSTILE_RATE \
    "$WORK/bin/bench-hostile" --bench | tee "$WORK/logs/bench-hostile.txt"
unset WASMGATE_BENCH_OUT

# ---------------------------------------------------------------- binary sizes

step "binary sizes"
record binary x86_64 "$(stat -c %s "$WASMGATE")" B
arm_bin=$ROOT/target/aarch64-unknown-linux-gnu/release/wasmgate
aarch64_note=
if [[ -f "$arm_bin" ]]; then
    record binary aarch64 "$(stat -c %s "$arm_bin")" B
    aarch64_note="built $(date -r "$arm_bin" '+%Y-%m-%d %H:%M')"
    $arm && aarch64_note+=" by this run" || aarch64_note+=", not rebuilt by this run"
    if readelf -S "$arm_bin" 2>/dev/null | grep -q '\.symtab'; then
        aarch64_note+="; NOT stripped"
    fi
fi

# ---------------------------------------------------------------- report

elapsed=$((SECONDS - started))
measured=$((SECONDS - measure_started))
meta=$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
    command "$command" mode "$mode" \
    elapsed "measuring took $((measured / 60)) min $((measured % 60)) s, $((elapsed / 60)) min $((elapsed % 60)) s with the builds" \
    e2e_n "$E2E_N" latency_rate "$LAT_RATE" hostile_rate "$HOSTILE_RATE" rss_n "$RSS_N" aarch64_note "$aarch64_note" \
    runs_note "$E2E_RUNS runs (end to end), $LAT_RUNS × $LAT_COUNT paced readings (latency), $RSS_RUNS (memory), $BENCH_RUNS (processors), $DETECTOR_RUNS (detectors), $OUTBOX_RUNS (outbox), $OTA_RUNS × $OTA_N deployments (OTA), $HOSTILE_RUNS (hostile corpus)")
mkdir -p "$(dirname "$out")"
step "results"
python3 "$TOOL" report --results "$RESULTS" --machine "$WORK/machine.json" --meta "$meta" --out "$out"
echo
say "wrote $out ($((elapsed / 60)) min $((elapsed % 60)) s)"
