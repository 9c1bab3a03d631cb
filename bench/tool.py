#!/usr/bin/env python3
"""Number crunching for scripts/bench.sh and scripts/soak.sh (Python 3
standard library only).

    tool.py payloads --count N [--sensors a,b,...]   payload lines for mosquitto_pub -l
    tool.py pace --rate R --count N                   the same, paced, each stamped with t_us
    tool.py latency FILE                              mosquitto_sub -F '%U %p' output -> JSON
    tool.py machine                                   machine info as JSON (load average now)
    tool.py report --results F --machine F ...        aggregate, print the table, write BENCHMARKS.md
    tool.py soak-check --samples F ...                the soak's growth criterion

Result records are JSON lines {"bench","name","value","unit","min","max"}
(the cargo benches write them when WASMGATE_BENCH_OUT is set; the scripts
add their own). Records with the same (bench, name) from repeated runs are
aggregated: value = median of the values, min/max = the smallest and
largest value seen (for a single record: as recorded, i.e. the bench's own
spread over its internal runs).
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time


# ------------------------------------------------------------------ payloads


def payload(i, sensor=None, t_us=None):
    """One reading: flat fields (the sensor comes from the topic), or with
    its sensor in the payload. `n` numbers it; `t_us` stamps it."""
    temp = 20.0 + (i % 50) / 10.0
    humidity = 40.0 + (i % 30)
    fields = '"temp":%.2f,"humidity":%.1f,"n":%d' % (temp, humidity, i)
    if t_us is not None:
        fields += ',"t_us":%d' % t_us
    if sensor is None:
        return "{%s}" % fields
    return '{"sensor":"%s","fields":{%s}}' % (sensor, fields)


def cmd_payloads(a):
    sensors = a.sensors.split(",") if a.sensors else None
    out = sys.stdout
    for i in range(a.count):
        out.write(payload(i, sensors[i % len(sensors)] if sensors else None))
        out.write("\n")


def cmd_pace(a):
    """Write `count` lines at `rate` lines/s (on an absolute schedule, so a
    late line does not shift the rest), each stamped with the wall clock
    (µs) at the moment it is written, flushed one by one. With --sensors,
    round robin over <prefix>0 .. <prefix>N-1, named in the payload."""
    out = sys.stdout
    start = time.monotonic()
    for i in range(a.count):
        delay = start + i / a.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sensor = "%s%d" % (a.prefix, i % a.sensors) if a.sensors else None
        out.write(payload(i, sensor=sensor, t_us=time.time_ns() // 1000) + "\n")
        out.flush()


def cmd_delivery(a):
    """Did every published reading arrive? `received` holds the gateway's
    outputs as mosquitto_sub printed them (one JSON object per line)."""
    seen = set()
    lines = 0
    bad = 0
    for line in open(a.received):
        line = line.strip()
        if not line:
            continue
        lines += 1
        try:
            j = json.loads(line)
            seen.add((j["sensor"], int(j["fields"]["n"])))
        except (ValueError, KeyError, TypeError):
            bad += 1
    expected = {("%s%d" % (a.prefix, i % a.sensors), i) for i in range(a.count)}
    lost = sorted(expected - seen, key=lambda k: k[1])
    unexpected = len(seen - expected)
    print(
        "%s delivery: published %d, received %d outputs, %d distinct, lost %d, duplicates %d%s%s"
        % (
            "FAIL " if lost or bad or unexpected else "ok   ",
            a.count,
            lines,
            len(seen & expected),
            len(lost),
            lines - bad - len(seen),
            (", unparsable %d" % bad) if bad else "",
            (", unexpected %d" % unexpected) if unexpected else "",
        )
    )
    if lost:
        print("      first lost: %s" % ", ".join("%s n=%d" % k for k in lost[:10]))
    sys.exit(1 if lost or bad or unexpected else 0)


def percentile(xs, p):
    """Nearest-rank percentile of sorted xs."""
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, -(-len(xs) * p // 100) - 1))
    return xs[int(k)]


def cmd_latency(a):
    """Arrival time (mosquitto_sub %U, s) minus the t_us stamped in the
    payload (top level for the passthrough, under "fields" for wasmgate)."""
    xs = []
    for line in open(a.file):
        line = line.strip()
        if not line:
            continue
        stamp, body = line.split(" ", 1)
        j = json.loads(body)
        t_us = j.get("fields", j)["t_us"]
        xs.append((float(stamp) * 1e6 - t_us) / 1000.0)
    xs.sort()
    print(
        json.dumps(
            {
                "n": len(xs),
                "p50": percentile(xs, 50),
                "p99": percentile(xs, 99),
                "max": xs[-1] if xs else float("nan"),
            }
        )
    )


# ------------------------------------------------------------------ machine


def sh(*args):
    try:
        return subprocess.run(
            args, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def cmd_machine(a):
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    root = a.root or "."
    commit = sh("git", "-C", root, "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "-C", root, "status", "--porcelain", "--untracked-files=no")
    fs = "?"
    try:
        target = os.path.realpath(a.disk or root)
        best = -1
        for line in open("/proc/mounts"):
            dev, at, kind = line.split()[:3]
            if (target == at or target.startswith(at.rstrip("/") + "/")) and len(at) > best:
                best, fs = len(at), "%s on %s" % (kind, dev)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "arch": platform.machine(),
        "os": sh("sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""),
        "rustc": sh("rustc", "-V"),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3]),
        "mosquitto": sh("sh", "-c", "mosquitto -h 2>/dev/null | head -1").replace(
            "mosquitto version ", ""
        ),
        "disk": fs,
    }
    print(json.dumps(info))


# ------------------------------------------------------------------ report


def load_results(path):
    groups = {}
    order = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        key = (r["bench"], r["name"])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    agg = {}
    for key in order:
        rs = groups[key]
        if len(rs) == 1:
            r = rs[0]
            agg[key] = dict(value=r["value"], min=r["min"], max=r["max"], unit=r["unit"], runs=1)
        else:
            vals = [r["value"] for r in rs]
            agg[key] = dict(
                value=statistics.median(vals),
                min=min(vals),
                max=max(vals),
                unit=rs[0]["unit"],
                runs=len(rs),
            )
    return agg


def fmt(v, unit):
    if v is None or v != v:
        return "—"
    if unit == "readings/s":
        return "{:,.0f}/s".format(v)
    if unit == "us":
        return "%.1f µs" % v if v < 1000 else "%.2f ms" % (v / 1000)
    if unit == "ms":
        return "%.2f ms" % v if v < 100 else "%.0f ms" % v
    if unit == "x":
        return "%.2f×" % v
    if unit in ("ns/value", "ns/reading"):
        return "%.0f ns" % v
    if unit == "B":
        if v >= 1 << 20:
            return "%.2f MiB" % (v / (1 << 20))
        if v >= 1024:
            return "%.1f KiB" % (v / 1024)
        return "%d B" % v
    if unit == "kB":
        return "%.1f MiB" % (v / 1024)
    if unit in ("readings", "entries"):
        return "{:,.0f}".format(v)
    return "%g %s" % (v, unit)


class Table:
    def __init__(self, agg):
        self.agg = agg
        self.rows = []

    def get(self, bench, name):
        return self.agg.get((bench, name))

    def section(self, title):
        self.rows.append(("section", title))

    def row(self, label, bench, name, ratio="", spread=True):
        r = self.get(bench, name)
        if r is None:
            self.rows.append(("row", label, "not measured", "", ratio))
            return None
        value = fmt(r["value"], r["unit"])
        noise = ""
        if spread and r["min"] != r["max"]:
            pct = (r["max"] - r["min"]) / r["value"] * 100 if r["value"] else 0
            noise = "%s – %s (%.0f %%)" % (fmt(r["min"], r["unit"]), fmt(r["max"], r["unit"]), pct)
        elif spread and r["runs"] > 1:
            noise = "identical (%d runs)" % r["runs"]
        self.rows.append(("row", label, value, noise, ratio))
        return r["value"]

    def text(self, label, value, noise="", ratio=""):
        self.rows.append(("row", label, value, noise, ratio))

    def markdown(self):
        out = ["| figure | median | noise: min – max (spread) | ratio / note |", "|---|---:|---|---|"]
        for r in self.rows:
            if r[0] == "section":
                out.append("| **%s** | | | |" % r[1])
            else:
                out.append("| %s | %s | %s | %s |" % r[1:])
        return "\n".join(out)

    def plain(self):
        w = [0, 0, 0]
        for r in self.rows:
            if r[0] == "row":
                for i in range(3):
                    w[i] = max(w[i], len(r[1 + i]))
        out = []
        for r in self.rows:
            if r[0] == "section":
                out.append("")
                out.append(r[1])
            else:
                out.append(
                    ("  %-*s  %*s  %-*s  %s" % (w[0], r[1], w[1], r[2], w[2], r[3], r[4])).rstrip()
                )
        return "\n".join(out)


def ratio(a, b, fmt_="%.2f×"):
    if a is None or b is None or not b:
        return ""
    return fmt_ % (a / b)


def build_table(agg, meta):
    t = Table(agg)
    g = lambda b, n: (agg.get((b, n)) or {}).get("value")

    n = meta.get("e2e_n", "?")
    t.section(
        "End to end: MQTT in → calibrate.wasm → ewma + range detectors → outbox (fsync) → MQTT out; "
        "QoS 1 both ways, %s readings, one per message" % n
    )
    pt = t.row("mosquitto alone: mosquitto_pub → broker → mosquitto_sub", "e2e", "passthrough/readings-per-s")
    gw = g("e2e", "wasmgate/readings-per-s")
    t.row(
        "wasmgate: mosquitto_pub → broker → wasmgate → broker → mosquitto_sub",
        "e2e",
        "wasmgate/readings-per-s",
        ratio=(("%.2f× mosquitto alone" % (gw / pt)) if gw and pt else ""),
    )
    t.row("CPU per reading: mosquitto, passthrough (one hop)", "e2e", "passthrough/broker-cpu-us")
    t.row("CPU per reading: mosquitto, wasmgate run (in and out)", "e2e", "wasmgate/broker-cpu-us")
    t.row("CPU per reading: wasmgate (everything: MQTT, wasm, detectors, sled)", "e2e", "wasmgate/gateway-cpu-us")
    rate = meta.get("latency_rate", "?")
    for who, label in (("passthrough", "mosquitto alone"), ("wasmgate", "wasmgate")):
        t.row("latency publish → arrival at %s/s, %s, p50" % (rate, label), "e2e", who + "/latency-p50")
        t.row("latency publish → arrival at %s/s, %s, p99" % (rate, label), "e2e", who + "/latency-p99")

    t.section("Wasm processors: one call with a batch of 64 readings (wasmi interpreter)")
    for mod in ("calibrate", "moving-average"):
        on = t.row("%s, wasm, fuel on (as deployed)" % mod, "processors", "batch/%s/fuel-on" % mod)
        off = g("processors", "batch/%s/fuel-off" % mod)
        t.row(
            "%s, wasm, fuel off" % mod,
            "processors",
            "batch/%s/fuel-off" % mod,
            ratio=("fuel costs %s" % ratio(on, off)) if on and off else "",
        )
        t.row(
            "%s, wasm, fuel off, other limits at max" % mod,
            "processors",
            "batch/%s/fuel-off-limits-max" % mod,
        )
        nat = g("processors", "batch/%s/native" % mod)
        t.row(
            "%s, same algorithm in native Rust" % mod,
            "processors",
            "batch/%s/native" % mod,
            ratio=("wasm (fuel on) = %s native" % ratio(on, nat, "%.1f×")) if on and nat else "",
        )
    for mod in ("window-stats", "threshold-alert", "c-clamp"):
        on = t.row("%s, wasm, fuel on" % mod, "processors", "batch/%s/fuel-on" % mod)
        off = g("processors", "batch/%s/fuel-off" % mod)
        if on and off:
            t.rows[-1] = t.rows[-1][:4] + ("fuel costs %s" % ratio(on, off),)

    t.section("Module cold start: load (parse + validate + compile) + instantiate (+ init)")
    for mod in ("c-clamp", "calibrate"):
        size = g("processors", "size/%s" % mod)
        label = "%s.wasm (%s)" % (mod, fmt(size, "B") if size else "?")
        t.row("%s: load + validate + compile" % label, "processors", "cold/%s/load" % mod)
        t.row("%s: instantiate + init" % label, "processors", "cold/%s/instantiate" % mod)
        t.row("%s: cold start, total" % label, "processors", "cold/%s/total" % mod)

    t.section("OTA: signed bundle bytes → new version live (verify + persist + compile + shadow run + swap)")
    for mod in ("calibrate", "moving-average"):
        t.row("%s, new module bytes (compiled)" % mod, "ota", "%s/cold/total" % mod)
        t.row("%s, module already cached" % mod, "ota", "%s/warm/total" % mod)

    t.section("Durable ingest (outbox bench: sled append + group commit + ack)")
    gc = t.row("group commit, commit_wait_ms 5 (default), full speed", "outbox", "group-commit-wait5/readings-per-s")
    t.row("  p99 receipt → ack", "outbox", "group-commit-wait5/p99")
    t.row("group commit, commit_wait_ms 0, full speed", "outbox", "group-commit-wait0/readings-per-s")
    t.row("  p99 receipt → ack", "outbox", "group-commit-wait0/p99")
    fl = g("outbox", "flush-per-reading/readings-per-s")
    t.row(
        "one flush per reading (the naive way)",
        "outbox",
        "flush-per-reading/readings-per-s",
        ratio=("group commit = %s this" % ratio(gc, fl, "%.0f×")) if gc and fl else "",
    )
    t.row("  p99 receipt → ack", "outbox", "flush-per-reading/p99")
    t.row("paced 200 readings/s, commit_wait_ms 5: p99 receipt → ack", "outbox", "paced-wait5/p99")

    t.section(
        "Hostile-module corpus under load (hostile bench, in process): two calibrate streams, "
        "alone vs with the 19 hostile modules of tests/hostile_modules/corpus.rs in their own streams "
        "(target: within 20 %)"
    )
    for key, label, paced in (
        ("throughput", "saturation, normal readings/s, whole phase", False),
        ("throughput_steady", "saturation, normal readings/s, 2nd half (all hostile quarantined)", False),
        ("p99", "paced %s/s, p99 send → output, whole phase (incl. the quarantine transient)"
         % meta.get("hostile_rate", "?"), True),
        ("p99_steady", "paced, p99 send → output, 2nd half", True),
        ("max", "paced, max send → output, whole phase", True),
    ):
        base = g("hostile", "baseline_%s" % key)
        t.row("%s: normal streams alone" % label, "hostile", "baseline_%s" % key)
        r = g("hostile", "hostile_%s_ratio" % key)
        h = g("hostile", "hostile_%s" % key)
        if r is None and h is not None and base:
            r = h / base
        note = ""
        if r is not None and key == "max":
            note = "%.2f× baseline (the longest stall: no target)" % r
        elif r is not None:
            within = r >= 0.8 if key.startswith("throughput") else r <= 1.2
            note = "%.2f× baseline (%s)" % (r, "within 20 %" if within else "NOT within 20 %")
        t.row("%s: with the hostile corpus" % label, "hostile", "hostile_%s" % key, ratio=note)
    t.row("quarantine transient: processing time in hostile calls, saturation", "hostile",
          "hostile_transient_saturation")
    t.row("quarantine transient: processing time in hostile calls, paced", "hostile",
          "hostile_transient_paced")

    t.section("Detectors (native, per value / per reading)")
    t.row("ewma, one value", "detectors", "detector/ewma")
    t.row("mad w=60, one value", "detectors", "detector/mad w=60")
    t.row("set of all 7 kinds, one reading of 2 fields", "detectors", "set/all 7 kinds")

    t.section("Memory of the daemon (release binary, /proc/<pid>/status)")
    t.row("idle, 1 module (the end-to-end config), VmRSS", "memory", "idle-1-module/vmrss")
    t.row("idle, 10 modules in 10 streams, VmRSS", "memory", "idle-10-modules/vmrss")
    t.row(
        "under load, 10 modules (2 bursts of %s readings at full speed), max VmRSS" % meta.get("rss_n", "?"),
        "memory",
        "load-10-modules/vmrss-max",
    )
    t.row("under load, 10 modules, VmHWM (peak) at the end", "memory", "load-10-modules/vmhwm")
    t.row("after the first burst, outbox drained, VmRSS", "memory", "load-10-modules/vmrss-after")
    t.row("after the second burst, outbox drained, VmRSS", "memory", "load-10-modules/vmrss-after-2")
    t.row("outbox backlog during a burst, max entries", "memory", "load-10-modules/outbox-max-entries")
    t.row("throughput with 10 modules in 10 streams (to outbox empty)", "memory", "load-10-modules/readings-per-s")

    t.section("Binary (release profile: fat LTO, opt-level 3, stripped)")
    t.row("x86_64-unknown-linux-gnu", "binary", "x86_64", spread=False)
    if g("binary", "aarch64") is not None:
        t.row("aarch64-unknown-linux-gnu", "binary", "aarch64", spread=False,
              ratio=meta.get("aarch64_note", ""))
    else:
        t.text("aarch64-unknown-linux-gnu", "not built", "", "scripts/bench.sh --arm builds it")
    return t


MD_HEAD = """# wasmgate benchmarks

What wasmgate costs and how fast it goes, measured in one run by

```sh
{command}
```

({mode}; {elapsed}). The same command regenerates this file; `scripts/bench.sh
--quick` is a smoke check with fewer runs and smaller N that writes
elsewhere. Raw figures of the run: `target/bench/last/` (`results.jsonl`
and the benches' own output).

## Machine

| | |
|---|---|
| CPU | {cpu} ({arch}) |
| cores | {cores} |
| RAM | {ram_gib} GiB |
| OS, kernel | {os}, {kernel} |
| disk (state, sled) | {disk} |
| rustc | {rustc} |
| mosquitto | {mosquitto} |
| commit | {commit} |
| date | {date} |
| load average (1, 5, 15 min) | at start {loadavg_start}; at end {loadavg_end} |

{load_note}

## Results

Median of {runs_note}; the noise column gives the smallest and largest
value over those runs and their spread, (max − min) / median.

"""

MD_NOTES = """
## How to read each figure

- **End to end.** Both rows use the same broker (a private mosquitto,
  `max_queued_messages 0` so nothing is dropped, otherwise defaults,
  including `max_inflight_messages 20`), the same client tools and the same
  payloads (`{{"temp":…,"humidity":…,"n":…}}`, one reading per message), QoS 1
  in and out. *mosquitto alone* publishes to a topic the subscriber reads
  directly. *wasmgate* publishes to the gateway's input topic; the gateway
  (release binary, the default configuration apart from the broker, storage
  and endpoint) runs each reading through `calibrate.wasm`, an EWMA and a
  range detector, appends the result to the sled outbox, acknowledges the
  inbound message only after the group commit's fsync, and publishes the
  result at QoS 1 (deleting it on PUBACK); the subscriber reads the output
  topic. Time runs from the start of `mosquitto_pub -l` to the arrival of
  the last output at `mosquitto_sub -C N`. The ratio is wasmgate / mosquitto
  alone: the broker carries every reading twice in the wasmgate case (in and
  out), the gateway holds at most the broker's in-flight window (20) of
  unacknowledged inbound messages, and every acknowledgement waits for an
  fsync — so a ratio well below 1 is expected; the row says how much of the
  broker's own speed survives durable processing.
- **CPU per reading** is the user + system time the process used during
  the timed runs (`/proc/<pid>/stat`, 10 ms ticks) divided by the readings:
  with 2 cores shared by the broker, the gateway and both clients, it shows
  where the time goes and what a board's CPU would have to carry. {cpu_split}
- **Latency** is publish → arrival at the subscriber for readings paced at a
  steady rate, each stamped with the wall clock (µs) as it is handed to
  `mosquitto_pub`, compared with `mosquitto_sub`'s arrival time (`%U`). The
  wasmgate figure includes the group commit's wait (`commit_wait_ms` 5), the
  fsync and two broker hops.
- **Wasm processors.** One `process` call on 64 readings, after a warm-up
  call: CBOR encoding of the batch, the guest's work in the wasmi
  interpreter, decoding and validating its result. *Native* is the same
  algorithm in Rust on the same `Reading`s (no encoding). *Fuel off* is a
  runtime without fuel metering (not a deployable setting: an endless loop
  would never end); *other limits at max* also raises the memory, table,
  call-depth and output caps, which are checked only when the guest grows
  memory or tables, so they cost nothing per call.
- **Cold start** is a fresh runtime each time (the sha256-keyed module cache
  would otherwise skip the compile); wasmi translates functions lazily, so
  *load* is parse + validate + set-up, and *instantiate + init* includes
  translating every function the module's `init` runs (calibrate parses a
  nested configuration there; the first `process` call pays for the rest). `c-clamp.wasm` is the small module (C); `calibrate.wasm` is the
  ~50 KB one (a Rust guest: SDK, allocator, CBOR).
- **OTA** is the library path the daemon runs (`ota` bench): verify the
  ed25519-signed bundle, store the release counter (flushed), compile,
  shadow-run the new version on the stream's last 64 readings, swap, store
  the active bundle (flushed). p50 over the deployments of a run; not
  included: the MQTT hop and waiting for the current batch.
- **Durable ingest** is the outbox alone (`outbox` bench): append a
  ~150-byte result to sled and acknowledge it after the group commit's
  flush covering it. *One flush per reading* is the same with an fsync per
  message, the design the group commit replaces. On this machine's disk a
  flush takes {flush_p50} (p50 of one flush per reading), so the group
  commit's gain here is modest; on slower storage (SD cards, eMMC) each
  flush costs more and the gain grows with it. At full speed the p99
  latency is mostly queueing behind earlier groups; the paced row shows
  the latency at a realistic rate (≈ `commit_wait_ms` + one flush).
- **Hostile-module corpus** is the `hostile` bench: the daemon's
  `Pipeline`, built as `wasmgate run` builds it, on one processing thread
  behind a bounded queue of 256 (the processing task every stream shares:
  the only way one module can slow another), two normal streams running
  `calibrate.wasm`, and, in the *hostile* set-up, 19 more streams each
  running one module of `tests/hostile_modules/corpus.rs` (endless loops,
  recursion, memory and table growth, huge initial memory or tables, init
  traps and loops, a 4 MiB data segment, huge, malformed and wild outputs,
  log, clock and state spam), fed one reading per 200 normal readings each.
  Every hostile module goes from its first reading to quarantine within the
  phase; the *transient* rows are the processing time spent in its failed
  calls until then (with the default fuel budget, 2 M + 50 k per reading).
  *Saturation* feeds as fast as the queue takes readings; *paced* feeds
  {hostile_rate} normal readings/s and measures each one's scheduled send
  time → its output (no coordinated omission). *Whole phase* includes the
  quarantine transient; *2nd half* is the steady state once every hostile
  module is quarantined. Ratios are taken within each run (the set-ups run
  back to back) and their median reported. Sub-millisecond p99s are the
  most noise-sensitive figures here: a preempted processing thread on a
  shared machine shows in them directly.
  All 19 hostile modules start together, so their failed calls cluster in
  the first ~0.5 s of the phase (each fails 5 times, or once at start,
  within it): for that half second the processing thread spends ~10 % of
  its time in hostile calls of up to a few ms each, and the readings queued
  behind them are what lifts the whole-phase p99 (20 s) of the hostile
  set-up. A single hostile module, as an OTA update would bring it, stalls
  the thread at most 5 times, for one fuel budget each (3–7 ms per
  failed call of a looping module here, for 1 to 64 readings: the table in
  `target/bench/last/logs/bench-hostile.txt`). Throughput and the
  steady-state latency are the figures for a gateway that carries hostile
  modules (they stay quarantined for `quarantine_secs`, 300 s, and are
  then tried again: another transient).
- **Memory.** VmRSS is the resident set now, VmHWM its peak since start,
  both from `/proc/<pid>/status` of the real daemon. *Idle* is sampled for
  2 s after `/readyz` turned ready. *Under load* samples every 100 ms while
  two bursts of {rss_n} readings (10 sensors, one per stream), published as
  fast as mosquitto_pub goes, run through 10 streams, each with an example
  module (the 5 examples twice) and an EWMA detector, while a subscriber
  consumes the outputs; a fresh gateway per run. Processing outpaces the
  uplink (QoS 1, 32 in flight) in such a burst, so the outbox backs up
  (the *backlog* row) and sled holds it in memory and on disk: that, not
  the modules, is most of the rise over idle. What a burst leaves resident
  is mostly kept by the allocator: compare the RSS after the second burst
  with that after the first to tell retention (about the same) from growth.
  At a steady rate the outbox stays near empty and RSS flat
  (`scripts/soak.sh`).
- **Binary** is the file cargo writes for `cargo build --release -p
  wasmgate` (the release profile strips it). {arm_note}
- **Growth over time** is not in this table: `scripts/soak.sh` runs the
  gateway under steady load (default 200 readings/s for 10 min), samples
  RSS, the outbox and the sled directory, and fails on unbounded growth or
  on a lost reading; its header defines the criterion.
- **Noise.** The machine may be shared (2 cores; builds, fuzzers or tests
  of other work can run at the same time): the load average at start and
  end is recorded above. Figures that depend on fsync (end to end, latency,
  durable ingest, OTA) also depend on the disk and whatever else writes to
  it. Compare ratios measured in the same run rather than absolute figures
  across runs; for publishable figures re-run on a quiet machine.
"""


def cmd_report(a):
    agg = load_results(a.results)
    machine = json.load(open(a.machine))
    meta = json.loads(a.meta) if a.meta else {}
    machine["loadavg_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    t = build_table(agg, meta)
    print(t.plain())
    if not a.out:
        return
    la = float(machine["loadavg_start"].split()[0])
    cores = machine.get("cores") or 1
    if la > 0.5:
        load_note = (
            "**The machine was not quiet**: the load average at the start was %s on %s cores "
            "(other builds, tests or fuzzers were running). Treat absolute figures as a lower bound "
            "for speed and an upper bound for latency; re-run on a quiet machine for publication."
            % (machine["loadavg_start"].split()[0], cores)
        )
    else:
        load_note = "The machine was quiet at the start (load average %s)." % machine["loadavg_start"].split()[0]
    aarch = agg.get(("binary", "aarch64"))
    arm_note = (
        "The aarch64 binary is `target/aarch64-unknown-linux-gnu/release/wasmgate` "
        "from `scripts/build-arm.sh aarch64-unknown-linux-gnu` (%s)." % meta.get("aarch64_note", "")
        if aarch
        else "aarch64: not built (`scripts/bench.sh --arm` builds it with "
        "`scripts/build-arm.sh aarch64-unknown-linux-gnu`, ~15 min)."
    )
    text = MD_HEAD.format(
        command=meta.get("command", "scripts/bench.sh"),
        mode=meta.get("mode", "full run"),
        elapsed=meta.get("elapsed", ""),
        load_note=load_note,
        runs_note=meta.get("runs_note", "several runs"),
        **machine,
    )
    text += t.markdown() + "\n"
    gw_cpu = agg.get(("e2e", "wasmgate/gateway-cpu-us"))
    wasm = agg.get(("processors", "batch/calibrate/fuel-on"))
    cpu_split = ""
    if gw_cpu and wasm:
        cpu_split = (
            "Of the gateway's %s per reading, the calibrate call itself is about %s "
            "(its batch of 64 figure / 64): the rest is per-message work — MQTT in and "
            "out, JSON decoding and encoding, routing, detectors, the outbox and its acks."
            % (fmt(gw_cpu["value"], "us"), fmt(wasm["value"] / 64, "us"))
        )
    fp = agg.get(("outbox", "flush-per-reading/p50"))
    text += MD_NOTES.format(
        rss_n=meta.get("rss_n", "?"),
        hostile_rate=meta.get("hostile_rate", "?"),
        arm_note=arm_note,
        flush_p50=fmt(fp["value"], "ms") if fp else "?",
        cpu_split=cpu_split,
    )
    with open(a.out, "w") as f:
        f.write(text)


# ------------------------------------------------------------------ soak


def cmd_soak_check(a):
    """Decide whether the soak's samples show unbounded growth (the
    criterion is explained in scripts/soak.sh's header).

    samples: TSV with a header naming at least t_s, rss_kb, entries,
    disk_bytes; only samples taken under load. Prints the verdict lines;
    exits 1 on failure."""
    rows = []
    with open(a.samples) as f:
        header = f.readline().split()
        for line in f:
            parts = line.split()
            if len(parts) == len(header):
                rows.append(dict(zip(header, (float(p) for p in parts))))
    warm = [r for r in rows if r["t_s"] >= a.warmup]
    failures = []
    notes = []
    if len(warm) < 6:
        print("soak: only %d samples after the warm-up: too few to judge growth "
              "(need 6; lengthen --duration or shorten --interval)" % len(warm))
        sys.exit(1)
    third = len(warm) // 3
    middle = warm[third : 2 * third]
    last = warm[2 * third :]
    print(
        "growth check: %d samples after the %g s warm-up; middle third t = %g..%g s, last third t = %g..%g s"
        % (len(warm), a.warmup, middle[0]["t_s"], middle[-1]["t_s"], last[0]["t_s"], last[-1]["t_s"])
    )

    def mx(rs, k):
        return max(r[k] for r in rs)

    rss_mid, rss_last = mx(middle, "rss_kb"), mx(last, "rss_kb")
    rss_allow = max(rss_mid * a.rss_pct / 100.0, a.rss_abs_kib)
    grew = rss_last - rss_mid
    line = "RSS: max of the middle third %.1f MiB, of the last third %.1f MiB: %+.1f MiB (allowed %+.1f MiB)" % (
        rss_mid / 1024, rss_last / 1024, grew / 1024, rss_allow / 1024)
    (failures if grew > rss_allow else notes).append(line)

    ent_mid, ent_last = mx(middle, "entries"), mx(last, "entries")
    line = "outbox entries: max %d (middle third) / %d (last third), bound %d" % (ent_mid, ent_last, a.max_entries)
    (failures if ent_last > a.max_entries or mx(warm, "entries") > a.max_entries else notes).append(line)

    disk_mid, disk_last = mx(middle, "disk_bytes"), mx(last, "disk_bytes")
    disk_allow = max(disk_mid * a.disk_pct / 100.0, a.disk_abs_kib * 1024)
    line = "sled directory: max %.1f MiB (middle third) / %.1f MiB (last third): %+.1f MiB (allowed %+.1f MiB, and ≤ %.0f MiB)" % (
        disk_mid / 2**20, disk_last / 2**20, (disk_last - disk_mid) / 2**20, disk_allow / 2**20, a.disk_max_mib)
    bad_disk = disk_last - disk_mid > disk_allow or mx(warm, "disk_bytes") > a.disk_max_mib * 2**20
    (failures if bad_disk else notes).append(line)

    if a.rate:
        # Readings published so far (the publisher starts at t = 0) minus
        # those the gateway has processed: what waits at the broker.
        lag = [max(0.0, a.rate * r["t_s"] - r["readings"]) for r in warm]
        bound = max(a.rate * 5.0, 1000.0)
        line = "intake: the gateway is at most %d readings behind the publisher after the warm-up (bound %d = 5 s of readings)" % (
            max(lag), bound)
        (failures if max(lag) > bound else notes).append(line)

    for l in notes:
        print("ok    " + l)
    for l in failures:
        print("FAIL  " + l)
    sys.exit(1 if failures else 0)


def main():
    # Die quietly when the reader of stdout goes away (mosquitto_pub
    # stopped), like any other filter.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("payloads")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--sensors")
    s.set_defaults(f=cmd_payloads)
    s = sub.add_parser("pace")
    s.add_argument("--rate", type=float, required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--sensors", type=int, default=0)
    s.add_argument("--prefix", default="s")
    s.set_defaults(f=cmd_pace)
    s = sub.add_parser("delivery")
    s.add_argument("--received", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--sensors", type=int, required=True)
    s.add_argument("--prefix", required=True)
    s.set_defaults(f=cmd_delivery)
    s = sub.add_parser("latency")
    s.add_argument("file")
    s.set_defaults(f=cmd_latency)
    s = sub.add_parser("machine")
    s.add_argument("--root")
    s.add_argument("--disk")
    s.set_defaults(f=cmd_machine)
    s = sub.add_parser("report")
    s.add_argument("--results", required=True)
    s.add_argument("--machine", required=True)
    s.add_argument("--meta")
    s.add_argument("--out")
    s.set_defaults(f=cmd_report)
    s = sub.add_parser("soak-check")
    s.add_argument("--samples", required=True)
    s.add_argument("--warmup", type=float, required=True)
    s.add_argument("--rss-pct", type=float, default=10.0)
    s.add_argument("--rss-abs-kib", type=float, default=4096.0)
    s.add_argument("--max-entries", type=int, required=True)
    s.add_argument("--rate", type=float, default=0.0)
    s.add_argument("--disk-pct", type=float, default=25.0)
    s.add_argument("--disk-abs-kib", type=float, default=8192.0)
    s.add_argument("--disk-max-mib", type=float, default=256.0)
    s.set_defaults(f=cmd_soak_check)
    a = p.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
