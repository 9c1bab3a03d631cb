# shellcheck shell=bash
# Shared helpers of scripts/bench.sh and scripts/soak.sh (sourced, not run).
#
# The caller sets PROG (a name for messages), runs under `set -euo pipefail`
# and calls `bg_cleanup` from its EXIT trap: every process started here is
# recorded in BG_PIDS and stopped by its id (TERM, then KILL after 5 s).
#
# Waiting is on events, polled with a deadline (`wait_until`): a log line, a
# subscription seen by the broker, /readyz answering 200.

BG_PIDS=()

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# Stop every recorded background process (by pid), politely first.
bg_cleanup() {
    local pid deadline
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 5))
    for pid in "${BG_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BG_PIDS=()
}

# Forget a pid that has been stopped and reaped.
bg_forget() {
    local pid=$1 keep=() p
    for p in "${BG_PIDS[@]}"; do
        [[ "$p" == "$pid" ]] || keep+=("$p")
    done
    BG_PIDS=("${keep[@]}")
}

# Stop one recorded process: TERM, wait up to `grace` s, then KILL.
bg_stop() {
    local pid=$1 grace=${2:-10} deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    bg_forget "$pid"
}

# wait_until SECONDS WHAT COMMAND...: run COMMAND until it succeeds; die
# naming WHAT after SECONDS.
wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || die "timed out after ${timeout} s waiting for $what"
        sleep 0.05
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# mosquitto and its clients, installed with apt-get when missing (as root).
ensure_mosquitto() {
    local missing=()
    [[ -x /usr/sbin/mosquitto ]] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
    command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 ||
        missing+=(mosquitto-clients)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) -ne 0 ]]; then
        die "missing ${missing[*]}: sudo apt-get install -y mosquitto mosquitto-clients"
    fi
    say "installing mosquitto mosquitto-clients (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
    # The package starts a system broker on :1883; ours use their own ports.
}

mosquitto_bin() {
    if [[ -x /usr/sbin/mosquitto ]]; then echo /usr/sbin/mosquitto; else command -v mosquitto; fi
}

# start_mosquitto DIR: a private broker on a free loopback port, no
# persistence, unbounded queues (nothing dropped when a consumer lags),
# otherwise mosquitto's defaults. Sets MOSQ_PORT, MOSQ_PID, MOSQ_LOG.
start_mosquitto() {
    local dir=$1
    mkdir -p "$dir"
    MOSQ_PORT=$(free_port)
    MOSQ_LOG=$dir/mosquitto.log
    {
        echo "listener $MOSQ_PORT 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence false"
        echo "max_queued_messages 0"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type warning"
        echo "log_type notice"
        echo "log_type information"
        echo "log_type subscribe"
        [[ $(id -u) -eq 0 ]] && echo "user root"
    } >"$dir/mosquitto.conf"
    : >"$MOSQ_LOG"
    "$(mosquitto_bin)" -c "$dir/mosquitto.conf" 2>"$MOSQ_LOG" &
    MOSQ_PID=$!
    BG_PIDS+=("$MOSQ_PID")
    wait_until 10 "mosquitto to start (log: $MOSQ_LOG)" grep -q ' running$' "$MOSQ_LOG"
}

# The broker logged that CLIENT subscribed to TOPIC.
subscribed() { grep -qF ": $1 1 $2" "$MOSQ_LOG" || grep -qF ": $1 0 $2" "$MOSQ_LOG"; }

# wait_subscribed CLIENT TOPIC
wait_subscribed() { wait_until 10 "subscription of $1 to $2" subscribed "$1" "$2"; }

# http_get PORT PATH: the whole response (status line, headers, body) of
# the gateway's endpoint (HTTP/1.0, one request per connection), no curl.
http_get() {
    local port=$1 path=$2 fd
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&"$fd"
    cat <&"$fd"
    exec {fd}>&-
}

# ready PORT: /readyz answers 200.
ready() { http_get "$1" /readyz 2>/dev/null | head -1 | grep -q ' 200 '; }

# metric PORT NAME: the value of an unlabelled metric in /metrics.
metric() {
    http_get "$1" /metrics 2>/dev/null | awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print "nan" }'
}

# metrics PORT NAME...: the values of unlabelled metrics, one /metrics
# request, space-separated, in the order given ("nan" when absent).
metrics() {
    local port=$1
    shift
    http_get "$port" /metrics 2>/dev/null | awk -v names="$*" '
        BEGIN { n = split(names, want, " ") }
        { v[$1] = $2 }
        END { for (i = 1; i <= n; i++) printf "%s%s", (want[i] in v ? v[want[i]] : "nan"), (i < n ? " " : "\n") }'
}

# proc_kb PID FIELD: VmRSS / VmHWM of a process, in kB.
proc_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# start_gateway BINARY CONFIG LOG: `wasmgate run`, awaited until /readyz is
# 200. Sets GW_PID and GW_HTTP (the endpoint's port; [http] listen must be
# 127.0.0.1:0 or a fixed port).
start_gateway() {
    local bin=$1 config=$2 log=$3
    : >"$log"
    WASMGATE_LOG=${WASMGATE_LOG:-info} "$bin" run --config "$config" --log-format text 2>"$log" &
    GW_PID=$!
    BG_PIDS+=("$GW_PID")
    gw_listening() {
        kill -0 "$GW_PID" 2>/dev/null || die "wasmgate exited at start; log: $log: $(tail -5 "$log")"
        GW_HTTP=$(sed -n 's/.*HTTP endpoint.*listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
        [[ -n "$GW_HTTP" ]]
    }
    wait_until 30 "the gateway's HTTP endpoint (log: $log)" gw_listening
    wait_until 30 "the gateway to be ready (/readyz; log: $log)" ready "$GW_HTTP"
}

# gateway_head_toml ID STATE_DIR TOPIC [SENSOR_SEGMENT]: the start of a
# benchmark gateway's configuration, without streams: the private broker at
# MOSQ_PORT, the endpoint on a free port, one MQTT source (JSON, QoS 1).
gateway_head_toml() {
    local id=$1 state=$2 topic=$3 segment=${4:-}
    cat <<EOF
[gateway]
id = "$id"
[mqtt]
host = "127.0.0.1"
port = $MOSQ_PORT
[http]
listen = "127.0.0.1:0"
[storage]
path = "$state"
[log]
level = "info"
[sources.in]
type = "mqtt"
topics = ["$topic"]
format = "json"
${segment:+sensor_segment = $segment}
qos = 1
EOF
}

# calibrate_gateway_toml ID STATE_DIR TOPIC SENSOR_GLOB [SENSOR_SEGMENT]: the
# configuration both bench.sh (end to end) and soak.sh run: the head above
# and one stream running calibrate.wasm, then EWMA and range detectors,
# into the durable outbox. ROOT must be the repository.
calibrate_gateway_toml() {
    local sensors=$4
    gateway_head_toml "$1" "$2" "$3" "${5:-}"
    cat <<EOF
[streams.s]
sensors = ["$sensors"]
[[streams.s.processors]]
module = "$ROOT/guest-sdk/examples/wasm/calibrate.wasm"
config = { fields = { temp = { scale = 1.8, offset = 32.0 } } }
[[streams.s.detectors]]
kind = "ewma"
fields = ["temp"]
[[streams.s.detectors]]
kind = "range"
fields = ["temp"]
min = -40.0
max = 200.0
EOF
}
