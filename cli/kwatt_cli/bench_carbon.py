"""`kwatt bench --carbon SERIES.csv`: the `kwatt-carbon` row beside `kwatt`, and what it saves.

Kept apart from `kwatt_cli.bench`, which only calls `add_arguments`, `extend` and
`print_summary` (docs/carbon.md has the method and the figures)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kwatt_cli.errors import UsageError
from kwatt_core import carbon
from kwatt_core.sim import carbon as simcarbon
from kwatt_core.sim.bench import BenchConfig
from kwatt_core.sim.trace import WorkloadTrace

DEFAULT_SERIES = (
    Path(__file__).resolve().parents[2] / "traces" / "carbon" / "gb-2023q3-synthetic.csv"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--carbon",
        type=Path,
        metavar="SERIES.csv",
        help=(
            "also run kwatt-carbon (kwatt whose runs follow the grid's carbon intensity) and "
            "price every kwatt and kwatt-carbon run in g CO2 with this hourly series "
            f"(columns datetime, g_co2_per_kwh; bundled: {DEFAULT_SERIES.name}, synthetic)"
        ),
    )
    parser.add_argument(
        "--carbon-interval",
        type=float,
        default=carbon.DEFAULT_INTERVAL_S / 60.0,
        metavar="MINUTES",
        help="minutes between two carbon-aware decisions (default: 30)",
    )
    parser.add_argument(
        "--carbon-forecast",
        choices=carbon.METHODS,
        default="last",
        help="forecast of the next interval's intensity (default: last, the last reading)",
    )
    parser.add_argument(
        "--carbon-reference",
        type=float,
        metavar="G_PER_KWH",
        help=(
            "the intensity at which kwatt-carbon runs as kwatt does, slower above it and faster "
            "below (default: the mean of the run's readings of the last day, and slower only); "
            "lower saves more carbon and costs time"
        ),
    )


@dataclass(frozen=True)
class CarbonBench:
    """What --carbon asked for, read and checked before anything runs."""

    path: Path
    series: carbon.Series
    settings: carbon.CarbonSettings


def load(args: argparse.Namespace) -> CarbonBench | None:
    """The series and settings of --carbon (None without it); UsageError names the problem."""
    if args.carbon is None:
        return None
    try:
        text = args.carbon.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--carbon {args.carbon} cannot be read: {exc.strerror}.") from None
    try:
        series = carbon.parse_series(text, f"--carbon {args.carbon}")
        settings = carbon.CarbonSettings(
            interval_s=args.carbon_interval * 60.0,
            method=args.carbon_forecast,
            reference_g=args.carbon_reference,
        )
    except carbon.CarbonError as exc:
        raise UsageError(str(exc)) from None
    return CarbonBench(args.carbon, series, settings)


def extend(
    bench: CarbonBench | None,
    config: BenchConfig,
    traces: Sequence[WorkloadTrace],
    results: list[dict[str, Any]],
    progress: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Add carbon to each workload's results (in place): the kwatt-carbon row after kwatt,
    kwatt's carbon, and the comparison; returns what was run (None without --carbon)."""
    if bench is None:
        return None
    for trace, result in zip(traces, results, strict=True):
        out = simcarbon.bench_carbon(trace, config, bench.series, bench.settings, progress)
        policies: dict[str, Any] = {}
        for name, figures in result["policies"].items():
            policies[name] = figures
            if name == "kwatt":
                figures.update(out["kwatt"])
                policies[simcarbon.ROW] = out[simcarbon.ROW]
        if simcarbon.ROW not in policies:
            policies[simcarbon.ROW] = out[simcarbon.ROW]
        result["policies"] = policies
        result["carbon"] = {
            "kwatt": out["kwatt"],
            **out["comparison"],
            "against_default": out["against_default"],
        }
    return {
        "series": str(bench.path),
        "hours": len(bench.series.readings),
        "mean_g_per_kwh": bench.series.mean(),
        "interval_s": bench.settings.interval_s,
        "forecast": bench.settings.method,
        "reference_g_per_kwh": bench.settings.reference_g,
    }


def print_summary(report: dict[str, Any], out: TextIO) -> None:
    """Carbon saved and time added by kwatt-carbon against kwatt, per workload, and on a
    second line against the default configuration (the default batch size at the highest
    limit, the job before kwatt)."""
    info = report.get("carbon")
    if not info:
        return
    reference = info["reference_g_per_kwh"]
    out.write(
        f"\n{simcarbon.ROW} against kwatt: {info['series']} ({info['hours']} hours, mean "
        f"{info['mean_g_per_kwh']:.0f} g CO2/kWh), a decision every "
        f"{info['interval_s'] / 60:.0f} min, forecast {info['forecast']}, reference "
        + (f"{reference:g} g CO2/kWh" if reference is not None else "the day's mean")
        + "; runs start at staggered hours, the same for both (± a standard error over "
        "seeds)\n"
    )
    for wl in report["workloads"]:
        c = wl.get("carbon")
        if not c:
            continue
        aware = wl["policies"][simcarbon.ROW]
        d = c["against_default"]
        out.write(
            f"  {wl['name']:<14} carbon {c['kwatt']['carbon_g'] / 1000:9.2f} -> "
            f"{aware['carbon_g'] / 1000:9.2f} kg  saved {_pct(c, 'carbon_saved_pct')}  "
            f"time added {_pct(c, 'time_added_pct')}\n"
            f"  {'':<14} against the default configuration: saved "
            f"{_pct(d, 'carbon_saved_pct')}  time added {_pct(d, 'time_added_pct')}\n"
        )


def _pct(figures: dict[str, Any], key: str) -> str:
    se = figures.get(f"{key}_se")
    return f"{figures[key]:+6.2f}%" + (f" ± {se:.2f}" if se is not None else "")
