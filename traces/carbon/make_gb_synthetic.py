"""Write `gb-2023q3-synthetic.csv`: a SYNTHETIC hourly carbon-intensity series (see SOURCE.md).

It is shaped after Great Britain's grid in July-September 2023 as published figures
describe it: a quarterly mean of 143 g CO2/kWh and a lowest half-hour of 27 g CO2/kWh.
Everything else is an assumption of this script, not a measurement: weather swings that
last a day or two (an AR(1) process), an evening peak and a midday solar dip. The same
seed always writes the same file:

    .venv/bin/python traces/carbon/make_gb_synthetic.py
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("gb-2023q3-synthetic.csv")
START = datetime(2023, 7, 1, tzinfo=UTC)
HOURS = 92 * 24  # 1 July to 30 September
MEAN_G = 143.0  # published: Q3 2023 average
FLOOR_G = 27.0  # published: the record low of 18 September 2023
WEATHER_SD_G = 45.0  # assumed: spread of the day-to-day weather swings
WEATHER_KEEP = 0.97  # assumed: hourly persistence of the weather (a 1-2 day memory)
SEED = 2023


def diurnal(hour_utc: int) -> float:
    """Assumed daily shape (g, mean about 0): an evening peak near 17:00 UTC and a solar
    dip around noon."""
    evening = 20.0 * math.cos(2 * math.pi * (hour_utc - 17) / 24)
    solar = -25.0 * math.exp(-(((hour_utc - 12) / 3.0) ** 2))
    return evening + solar


def series() -> list[tuple[datetime, int]]:
    gen = np.random.default_rng(SEED)
    weather = np.zeros(HOURS)
    x = 0.0
    for i in range(HOURS):
        x = WEATHER_KEEP * x + gen.normal(0.0, 1.0)
        weather[i] = x
    weather = (weather - weather.mean()) / weather.std()
    shape = np.array([diurnal(i % 24) for i in range(HOURS)])
    shape -= shape.mean()
    raw = WEATHER_SD_G * weather + shape
    offset = MEAN_G
    for _ in range(50):  # keep the mean at MEAN_G after the floor
        values = np.maximum(raw + offset, FLOOR_G)
        offset += MEAN_G - values.mean()
    values = np.maximum(raw + offset, FLOOR_G)
    return [(START + timedelta(hours=i), round(float(v))) for i, v in enumerate(values)]


def main() -> None:
    rows = series()
    lines = ["datetime,g_co2_per_kwh"]
    lines += [f"{t.strftime('%Y-%m-%dT%H:%MZ')},{v}" for t, v in rows]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    values = np.array([v for _, v in rows], dtype=float)
    print(
        f"{OUT.name}: {len(rows)} hours, mean {values.mean():.1f}, min {values.min():.0f}, "
        f"max {values.max():.0f}, sd {values.std():.1f} g CO2/kWh"
    )


if __name__ == "__main__":
    main()
