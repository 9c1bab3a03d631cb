#!/usr/bin/env bash
# Soak test: the real gateway under steady load for a while; RSS and the
# outbox sampled over time; fails on unbounded growth or on any lost reading.
#
#   scripts/soak.sh [--duration 10m] [--rate 200] [--interval 5s] [--sensors 4]
#                   [--debug | --binary PATH] [--samples FILE]
#
#   --duration D   how long the load runs (s, m or h suffix; default 10m)
#   --rate R       readings per second, spread over the sensors (default 200)
#   --interval I   sampling interval (s suffix optional; default 5s)
#   --sensors N    sensors publishing (default 4)
#   --debug        use the debug binary (cargo build -p wasmgate) instead of
#                  the release one (cargo build --release -p wasmgate)
#   --binary PATH  use this wasmgate binary, build nothing
#   --samples FILE also write the samples there (TSV)
#
# Set-up: a private mosquitto on a free loopback port (installed with
# apt-get when missing, as root), the gateway reading soak/in at QoS 1 into
# one stream: calibrate.wasm -> EWMA and range detectors -> the durable
# outbox (default budget) -> QoS 1 uplink; a publisher (mosquitto_pub -l fed
# by a pacer) at --rate readings/s, one reading per message, round robin
# over the sensors; a subscriber (mosquitto_sub, QoS 1) consuming the
# outputs, so the outbox drains as fast as the broker acknowledges.
#
# Every --interval it prints and records: VmRSS and VmHWM of the gateway
# (/proc/<pid>/status), the outbox's entries and bytes (/metrics
# wasmgate_outbox_entries, wasmgate_outbox_bytes), the sled directory's size
# on disk (du -sb), readings processed and outputs received so far.
#
# Verdict (only samples taken while the load runs count; the first 20 % of
# the duration, at least one interval, is warm-up and ignored; the rest is
# cut into thirds, and at least 6 samples are needed):
#   - RSS: max VmRSS of the last third - max VmRSS of the middle third must be
#     <= max(10 % of the middle third's max, 4 MiB). Allocators and caches
#     settle during the warm-up; a leak keeps climbing into the last third.
#     The thirds are (duration x 0.8 / 3) apart, so a run catches leaks above
#     about 4 MiB / (rate x duration x 0.27) per reading: ~170 B at 1000/s
#     for 90 s, ~130 B at 200/s for 10 min; longer runs catch smaller ones.
#   - outbox: entries must stay <= max(2 s of readings, 500) in every sample
#     after the warm-up. The subscriber keeps up, so the outbox should hold
#     only what is in flight; a backlog that builds up means the uplink
#     does not keep up or entries are not deleted.
#   - sled directory: max of the last third - max of the middle third must be
#     <= max(25 %, 8 MiB), and it must stay <= 256 MiB. sled's log grows and
#     is compacted in steps, so it is judged with slack; a directory that
#     keeps growing while the outbox stays empty means space is not reclaimed.
#   - intake: after the warm-up, the gateway must never be more than
#     max(5 s of readings, 1000) behind the publisher (rate x t - readings
#     processed): otherwise the backlog grows at the broker instead.
#   - delivery: after the load stops, the gateway gets up to 60 s to deliver
#     everything; every published reading must have arrived at the
#     subscriber (distinct (sensor, n); duplicates are allowed — delivery is
#     at-least-once — and reported).
#   - the gateway must not exit during the run.
# Exit status 0: pass; 1: fail (the reasons are printed as FAIL lines).
#
# Processes started here are stopped on exit (trap), by their pid.
# CI (.ci/run) runs: scripts/soak.sh --duration 90s --rate 1000 --interval 5s
# (about 95 s when the release binary is already built).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # used by bench/lib.sh
PROG=soak
# shellcheck source=bench/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/bench/lib.sh"
TOOL=$ROOT/bench/tool.py

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# seconds D: 90, 90s, 10m, 1h -> seconds.
seconds() {
    case "$1" in
    *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;;
    *s) echo $((${1%s})) ;;
    *) echo $(($1)) ;;
    esac
}

duration=600
rate=200
interval=5
sensors=4
profile=release
binary=
samples_out=
while (($#)); do
    case "$1" in
    --duration) duration=$(seconds "${2:?--duration needs a value}") && shift ;;
    --rate) rate=${2:?--rate needs a value} && shift ;;
    --interval) interval=$(seconds "${2:?--interval needs a value}") && shift ;;
    --sensors) sensors=${2:?--sensors needs a value} && shift ;;
    --debug) profile=debug ;;
    --binary) binary=${2:?--binary needs a path} && shift ;;
    --samples) samples_out=${2:?--samples needs a file} && shift ;;
    -h | --help) usage && exit 0 ;;
    *) usage >&2 && die "unknown argument: $1" ;;
    esac
    shift
done
[[ "$duration" =~ ^[0-9]+$ && "$rate" =~ ^[0-9]+$ && "$interval" =~ ^[0-9]+$ && "$sensors" =~ ^[0-9]+$ ]] ||
    die "--duration, --rate, --interval and --sensors take whole numbers"
((duration > 0 && rate > 0 && interval > 0 && sensors > 0)) || die "values must be positive"
count=$((rate * duration))
warmup=$((duration / 5))
((warmup >= interval)) || warmup=$interval
max_entries=$((rate * 2))
((max_entries >= 500)) || max_entries=500

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-soak.XXXXXX")
finish() {
    local rc=$?
    bg_cleanup
    if ((rc != 0)) && [[ -f "$WORK/gateway.log" ]]; then
        say "last lines of the gateway log:"
        tail -20 "$WORK/gateway.log" >&2 || true
    fi
    rm -rf "$WORK"
}
trap finish EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ set-up

command -v python3 >/dev/null || die "python3 is needed"
ensure_mosquitto
if [[ -z "$binary" ]]; then
    cd "$ROOT"
    if [[ $profile == release ]]; then
        say "cargo build --release -p wasmgate"
        cargo build --release --locked -p wasmgate
        binary=$ROOT/target/release/wasmgate
    else
        say "cargo build -p wasmgate"
        cargo build --locked -p wasmgate
        binary=$ROOT/target/debug/wasmgate
    fi
fi
[[ -x "$binary" ]] || die "no executable at $binary"
# A private copy: a concurrent cargo build cannot replace it mid-run.
cp "$binary" "$WORK/wasmgate"

start_mosquitto "$WORK/mosquitto"
GW_ID=soak
STATE=$WORK/state
calibrate_gateway_toml "$GW_ID" "$STATE" "soak/in" "soak-*" >"$WORK/soak.toml"
"$WORK/wasmgate" check-config "$WORK/soak.toml" >/dev/null
start_gateway "$WORK/wasmgate" "$WORK/soak.toml" "$WORK/gateway.log"
out_topic=wasmgate/$GW_ID/out/s
mosquitto_sub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i soak-sub -t "$out_topic" >"$WORK/received.jsonl" &
SUB_PID=$!
BG_PIDS+=("$SUB_PID")
wait_subscribed soak-sub "$out_topic"

say "$("$WORK/wasmgate" --version 2>/dev/null || echo wasmgate) ($profile${binary:+, $binary}), mosquitto on :$MOSQ_PORT"
say "load: $rate readings/s over $sensors sensors for ${duration} s ($count readings); sample every ${interval} s; warm-up ${warmup} s"

# ------------------------------------------------------------------ load

python3 "$TOOL" pace --rate "$rate" --count "$count" --sensors "$sensors" --prefix soak- |
    mosquitto_pub -h 127.0.0.1 -p "$MOSQ_PORT" -q 1 -i soak-pub -t soak/in -l &
PUB_PID=$!
BG_PIDS+=("$PUB_PID")
t0=$SECONDS

SAMPLES=$WORK/samples.tsv
printf 't_s\trss_kb\thwm_kb\tentries\tbytes\tdisk_bytes\treadings\treceived\n' >"$SAMPLES"
printf '%7s %9s %9s %9s %11s %10s %10s %10s  %s\n' time RSS HWM outbox "outbox B" "sled dir" readings received phase
sample() {
    local phase=$1 t rss hwm ent byt disk rd rcv
    kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited during the soak"
    t=$((SECONDS - t0))
    rss=$(proc_kb "$GW_PID" VmRSS)
    hwm=$(proc_kb "$GW_PID" VmHWM)
    read -r ent byt rd < <(metrics "$GW_HTTP" wasmgate_outbox_entries wasmgate_outbox_bytes wasmgate_readings_total)
    # du still prints the total when sled deletes a file under it (exit 1).
    disk=$( (du -sb "$STATE" 2>/dev/null || true) | cut -f1)
    rcv=$(wc -l <"$WORK/received.jsonl")
    [[ $ent != nan && $byt != nan && $rd != nan ]] || die "/metrics lacks the outbox or readings figures"
    [[ $phase == load ]] && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rss" "$hwm" "$ent" "$byt" "$disk" "$rd" "$rcv" >>"$SAMPLES"
    printf '%6ss %6.1f MiB %6.1f MiB %9s %11s %6.1f MiB %10s %10s  %s\n' "$t" \
        "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" \
        "$ent" "$byt" "$(awk -v b="$disk" 'BEGIN { print b / 1048576 }')" "$rd" "$rcv" "$phase"
}

next=$interval
while kill -0 "$PUB_PID" 2>/dev/null; do
    if ((SECONDS - t0 >= next)); then
        sample load
        next=$((next + interval))
    fi
    sleep 0.2
done
pub_rc=0
wait "$PUB_PID" || pub_rc=$?
bg_forget "$PUB_PID"
((pub_rc == 0)) || die "the publisher failed (exit $pub_rc)"
load_secs=$((SECONDS - t0))
say "load done after ${load_secs} s; draining"

# ------------------------------------------------------------------ drain

delivered() {
    local rcv
    rcv=$(wc -l <"$WORK/received.jsonl")
    ((rcv >= count)) && return 0
    sleep 0.2
    return 1
}
drain_deadline=$((SECONDS + 60))
until delivered || ((SECONDS >= drain_deadline)); do :; done
sample drained

hwm=$(proc_kb "$GW_PID" VmHWM)
warnings=$(grep -c -E ' (WARN|ERROR) ' "$WORK/gateway.log" || true)
bg_stop "$SUB_PID" 2
bg_stop "$GW_PID" 15
[[ -n "$samples_out" ]] && cp "$SAMPLES" "$samples_out"

# ------------------------------------------------------------------ verdict

echo
echo "soak: $count readings published at $rate/s in ${load_secs} s; gateway peak RSS (VmHWM) $(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }') MiB; $warnings warning/error log lines"
rc=0
python3 "$TOOL" soak-check --samples "$SAMPLES" --warmup "$warmup" --max-entries "$max_entries" \
    --rate "$rate" || rc=1
python3 "$TOOL" delivery --received "$WORK/received.jsonl" --count "$count" --sensors "$sensors" --prefix soak- || rc=1
if ((warnings > 0)); then
    say "gateway warnings/errors (first 10):"
    grep -E ' (WARN|ERROR) ' "$WORK/gateway.log" | head -10 >&2
fi
if ((rc == 0)); then
    echo "soak: PASS"
else
    echo "soak: FAIL"
fi
exit "$rc"
