#!/usr/bin/env python3
"""Generate samples/greenhouse.csv, a deterministic recording for `wasmgate replay`.

Two sensors, greenhouse/north and greenhouse/south, report every 10 s for
50 minutes from 2024-05-01T06:00:00Z (300 timestamps, 600 rows):

- temp (degrees C): the morning warm-up, a slow sine ramp from about 17.5 C to
  24.5 C, plus Gaussian noise; south runs about 1.2 C warmer than north.
- Between 06:22 and 06:30 the south sensor sees a heat spike (a vent stuck
  shut in the sun): a 2-minute rise to about 37.5 C, a 4-minute plateau and
  a 2-minute fall. In Fahrenheit the plateau is ~99.5 F, above the 95 F
  critical threshold of samples/greenhouse.toml; the ramp never reaches the
  90 F warning level.
- humidity (%): falls as the air warms, plus noise.
- One humidity cell (north, 06:41:00) is empty: a missed read, which replay
  treats as "field absent in that reading".

Only the standard library is used and the random generator has a fixed seed,
so running this script again reproduces the file byte for byte:

    python3 samples/generate.py            # writes samples/greenhouse.csv
"""

import math
import os
import random
from datetime import datetime, timedelta, timezone

SEED = 20240501
START = datetime(2024, 5, 1, 6, 0, 0, tzinfo=timezone.utc)
STEP_S = 10
STEPS = 300  # 50 minutes
SENSORS = (("greenhouse/north", -0.8), ("greenhouse/south", 0.4))
SPIKE_SENSOR = "greenhouse/south"
SPIKE_START_MIN, RISE_MIN, PLATEAU_MIN, FALL_MIN = 22.0, 2.0, 4.0, 2.0
SPIKE_PEAK_C = 37.5
GAP = ("greenhouse/north", 246)  # step 246 = 06:41:00


def smoothstep(x):
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def spike_shape(minute):
    """0 outside the spike, 1 on its plateau, smooth in between."""
    t = minute - SPIKE_START_MIN
    if t <= 0.0:
        return 0.0
    if t < RISE_MIN:
        return smoothstep(t / RISE_MIN)
    t -= RISE_MIN
    if t <= PLATEAU_MIN:
        return 1.0
    t -= PLATEAU_MIN
    return 1.0 - smoothstep(t / FALL_MIN)


def main():
    rng = random.Random(SEED)
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "greenhouse.csv")
    lines = ["timestamp,sensor,temp,humidity"]
    for step in range(STEPS):
        ts = START + timedelta(seconds=step * STEP_S)
        minute = step * STEP_S / 60.0
        ramp = 18.0 + 7.0 * math.sin(math.pi / 2.0 * minute / 50.0)
        for sensor, offset in SENSORS:
            temp = ramp + offset
            if sensor == SPIKE_SENSOR:
                temp += (SPIKE_PEAK_C - temp) * spike_shape(minute)
            temp += rng.gauss(0.0, 0.15)
            humidity = 78.0 - 1.6 * (temp - 18.0) + rng.gauss(0.0, 0.4)
            humidity = min(max(humidity, 5.0), 100.0)
            hum_cell = "" if (sensor, step) == GAP else f"{humidity:.1f}"
            lines.append(f"{ts:%Y-%m-%dT%H:%M:%SZ},{sensor},{temp:.2f},{hum_cell}")
    with open(out_path, "w", newline="\n", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
