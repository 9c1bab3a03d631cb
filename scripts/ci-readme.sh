#!/usr/bin/env bash
# CI: run the README's commands as a reader would, taken from README.md
# itself so the two cannot drift apart.
#
#   scripts/ci-readme.sh [--duration-secs N]
#
# 1. The main-job command (the first line of the first ```sh block, i.e.
#    `cargo run -- demo`) with --duration-secs N (default 25). While it runs,
#    the "Observe it" commands go against it: the curl lines with the demo's
#    HTTP port for 9810, `mosquitto_sub` with the demo's broker for <broker>
#    and its gateway id for greenhouse-pi (three messages), and
#    `wasmgate outbox stats` on the demo's configuration (the live snapshot
#    path). At the end the demo's summary must name calibrate 1.1.0 as
#    activated and /readyz as ready.
# 2. The replay commands: the sample chain, and the single module with its
#    settings inline (on the sample recording instead of my-sensors.csv).
#
# Needs curl and mosquitto_sub (installed with apt-get as root when missing).
# The install commands are exercised by scripts/ci-deb.sh, the OTA and
# gateway commands by the integration tests (tests/ota_cli.rs,
# tests/check_config.rs, tests/run_mqtt.rs, tests/outbox_cli.rs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

duration=25
while (($#)); do
    case "$1" in
    --duration-secs) duration=$2; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ci-readme: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

say() { printf 'ci-readme: %s\n' "$*"; }
fail() { printf 'ci-readme: FAIL: %s\n' "$*" >&2; exit 1; }
# The command goes to the log (fd 3: the script's stdout), its output where
# the caller sends it.
exec 3>&1
run() { printf '  + %s\n' "$*" >&3; bash -c "$*"; }

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || fail "missing: sudo apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-ci-readme.XXXXXX")
demo_pid=
cleanup() {
    # The demo runs in a session of its own: stop cargo and the gateway both.
    if [[ -n "$demo_pid" ]]; then kill -INT -- "-$demo_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- 1. the main-job command, observed ------------------------------------------
demo_cmd=$(sed -n '/^```sh$/{n;p;q}' README.md | sed 's/ *#.*$//')
[[ "$demo_cmd" == *demo* ]] || fail "the README's first command is not the demo: $demo_cmd"
say "the README's main-job command, for $duration s"
# Build first, with the command's own cargo invocation (`cargo run` at the
# workspace root builds what `cargo build` there builds; `-p wasmgate` would
# unify features differently and make `cargo run` compile again), so the
# demo's clock is not spent compiling.
build_cmd=${demo_cmd%% -- *}
build_cmd=${build_cmd/cargo run/cargo build}
printf '+ %s\n' "$build_cmd"
bash -c "$build_cmd --quiet"
printf '+ %s --duration-secs %s\n' "$demo_cmd" "$duration"
setsid bash -c "exec $demo_cmd --duration-secs $duration" >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!

# The demo prints its broker and endpoint before it starts the gateway.
# (Within 5 minutes: on a loaded machine cargo may still have work to do.)
for _ in $(seq 3000); do
    grep -q '^  config ' "$work/demo.out" 2>/dev/null && break
    kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.out" "$work/demo.err" >&2; fail "the demo exited early"; }
    sleep 0.1
done
http_port=$(sed -n 's|^  health *curl 127.0.0.1:\([0-9]*\)/readyz$|\1|p' "$work/demo.out")
broker_port=$(sed -n 's|^  MQTT broker *127.0.0.1:\([0-9]*\)$|\1|p' "$work/demo.out")
demo_config=$(sed -n 's|^  config *||p' "$work/demo.out")
[[ -n "$http_port" && -n "$broker_port" && -n "$demo_config" ]] ||
    { cat "$work/demo.out" >&2; fail "could not read the demo's ports and configuration"; }
say "demo: broker 127.0.0.1:$broker_port, endpoint 127.0.0.1:$http_port"

# Ready: the gateway's own answer, polled (at most 30 s).
ready=false
for _ in $(seq 300); do
    if curl -fs "127.0.0.1:$http_port/readyz" >/dev/null 2>&1; then ready=true; break; fi
    sleep 0.1
done
$ready || { curl -s "127.0.0.1:$http_port/readyz" >&2 || true; fail "/readyz did not answer ready"; }

say "the README's \"Observe it\" commands, against the demo"
observe=$(sed -n '/^## Observe it/,/^## /p' README.md | sed -n '/^```sh$/,/^```$/p' | sed '1d;$d' | sed 's/ *# .*$//')
[[ -n "$observe" ]] || fail "no \"Observe it\" block in README.md"
n=0
while IFS= read -r line; do
    case "$line" in
    journalctl*)
        echo "  (skipped here, no journald: $line; the journald output is tested in daemon/src/logging.rs)"
        continue
        ;;
    curl*)
        cmd=${line//9810/$http_port}
        ;;
    mosquitto_sub*)
        cmd=${line//<broker>/127.0.0.1 -p $broker_port}
        cmd="${cmd//greenhouse-pi/demo} -C 3 -W 20"
        ;;
    wasmgate\ outbox*)
        cmd="cargo run --quiet -- ${line#wasmgate }"
        cmd=${cmd//\/etc\/wasmgate\/wasmgate.toml/$demo_config}
        ;;
    *) fail "ci-readme does not know how to run this README command: $line" ;;
    esac
    run "$cmd" >"$work/observe.out" 2>"$work/observe.err" || { cat "$work/observe.out" "$work/observe.err" >&2; fail "$cmd"; }
    awk 'NR <= 12 { print "    " $0 }' "$work/observe.out"
    [[ -s "$work/observe.out" ]] || fail "no output from: $cmd"
    n=$((n + 1))
done <<<"$observe"
((n >= 4)) || fail "only $n observe commands ran"

say "waiting for the demo to end by itself"
wait "$demo_pid" || { cat "$work/demo.out" "$work/demo.err" >&2; fail "the demo failed"; }
demo_pid=
tail -n 5 "$work/demo.out"
grep -q "calibrate 1.1.0 (activated), ready: yes" "$work/demo.out" ||
    fail "the demo's summary does not show calibrate 1.1.0 activated and ready"

# --- 2. replay -----------------------------------------------------------------
say "the README's replay commands"
cmd=$(grep -m1 '^cargo run -- replay --input samples/greenhouse.csv' README.md)
run "$cmd" >"$work/replay.out" 2>"$work/replay.err" || { cat "$work/replay.err" >&2; fail "$cmd"; }
tail -n 4 "$work/replay.err"
lines=$(wc -l <"$work/replay.out")
((lines > 0)) || fail "no output from: $cmd"
echo "  stdout: $lines lines"

# The single-module form spans two lines (a backslash continuation).
cmd=$(sed -n '/^cargo run -- replay --input my-sensors.csv/{N;s/\\\n *//;p}' README.md)
[[ -n "$cmd" ]] || fail "no single-module replay command in README.md"
cmd=${cmd//my-sensors.csv/samples/greenhouse.csv}
run "$cmd" >"$work/replay1.out" 2>"$work/replay1.err" || { cat "$work/replay1.err" >&2; fail "$cmd"; }
tail -n 2 "$work/replay1.err"
# greenhouse/north's first reading is 17.3 °C: 63.14 °F after calibrate.
head -n1 "$work/replay1.out" | grep -q '"temp":63.14' || fail "the inline-configured calibrate did not convert °C to °F"
echo "  stdout: $(wc -l <"$work/replay1.out") lines"
say "ok"
