"""`kwatt bench`: compare the batch-size policies on a Zeus-format trace."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from kwatt_cli import bench_carbon
from kwatt_cli.errors import CommandError, UsageError
from kwatt_core.sim import peer as peer_mod
from kwatt_core.sim.bench import (
    FIRST,
    POLICIES,
    BenchConfig,
    BenchError,
    bench_workload,
    recurrences_for,
    summary_row,
)
from kwatt_core.sim.simulator import NO_NOISE, Noise, SimConfig
from kwatt_core.sim.trace import TraceError, load_workloads

HELP = (
    "Simulate recurring training jobs from a trace and compare the default setting, "
    "Zeus, kwatt and the best configuration in hindsight; --peer zeus adds real Zeus."
)
DEFAULT_TRACE_DIR = Path(__file__).resolve().parents[2] / "traces" / "zeus" / "trace"
COLUMNS = [
    "policy",
    "energy kWh",
    "time h",
    "cost kWh",
    "regret",
    "regret %",
    "regret@20 %",
    "last10 save%",
    "last10 time%",
    "converged",
    "prof steps",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace-dir",
        type=Path,
        default=DEFAULT_TRACE_DIR,
        help="folder with summary_train.csv and summary_power_<gpu>.csv (default: bundled)",
    )
    parser.add_argument(
        "--gpu", default="v100", help="GPU whose power trace to use (default: v100)"
    )
    parser.add_argument("--workload", action="append", help="only this workload (repeatable)")
    parser.add_argument(
        "--seeds", type=int, default=20, help="seeds per workload and policy (default: 20)"
    )
    parser.add_argument(
        "--recurrences",
        type=int,
        default=None,
        help="recurrences per job (default: 2 x batch sizes x power limits)",
    )
    parser.add_argument(
        "--eta", type=float, default=0.5, help="energy weight in [0, 1] (default: 0.5)"
    )
    parser.add_argument(
        "--beta", type=float, default=2.0, help="early-stop multiple, > 1 (default: 2)"
    )
    parser.add_argument(
        "--charge",
        choices=["step", "upstream"],
        default="step",
        help="profiling charge: step by step (default) or upstream's first epoch at the mean",
    )
    parser.add_argument(
        "--noise",
        choices=["realistic", "none"],
        default="realistic",
        help=(
            "realistic (default): noisy epochs and profiling windows, the run's epoch cost "
            "known as the sidecar measures it; none: the trace's exact figures"
        ),
    )
    parser.add_argument(
        "--policy", action="append", choices=POLICIES, help="only this policy (repeatable)"
    )
    parser.add_argument(
        "--peer",
        choices=peer_mod.PEERS,
        help=(
            f"also run real Zeus (PyPI zeus=={peer_mod.ZEUS_VERSION}, its own legacy simulator) "
            f"as the row {peer_mod.ROW} and compare kwatt with it; its Python environment is "
            "built once into ~/.cache/kwatt/peers (the one download)"
        ),
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of tables"
    )
    parser.add_argument("--plot", type=Path, help="also write a PNG chart of regret per workload")
    bench_carbon.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        config = BenchConfig(
            seeds=args.seeds,
            recurrences=args.recurrences,
            sim=SimConfig(
                eta=args.eta,
                beta=args.beta,
                charge=args.charge,
                noise=Noise() if args.noise == "realistic" else NO_NOISE,
            ),
            policies=tuple(args.policy) if args.policy else POLICIES,
        )
        traces = load_workloads(args.trace_dir, args.gpu, args.workload)
    except (BenchError, TraceError) as exc:
        raise UsageError(str(exc)) from None
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot needs a .png file name, got {args.plot}.")
    carbon_bench = bench_carbon.load(args)

    started = time.monotonic()
    peer_runs: dict[str, Any] = {}
    peer_info: dict[str, Any] | None = None
    if args.peer is not None:
        peer_runs, peer_info = _run_peer(args, config, traces)
    total = sum(len(config.policies) * config.seeds for _ in traces)
    progress = _Progress(total, sys.stderr)
    results = []
    for trace in traces:
        progress.label = trace.spec.name
        peers = {peer_mod.ROW: peer_runs[trace.spec.name]} if peer_runs else None
        results.append(bench_workload(trace, config, progress.tick, peers))
    progress.close()
    carbon_info = bench_carbon.extend(carbon_bench, config, traces, results)
    report: dict[str, Any] = {
        "gpu": args.gpu,
        "trace_dir": str(args.trace_dir),
        "eta": args.eta,
        "beta": args.beta,
        "seeds": args.seeds,
        "charge": args.charge,
        "noise": dataclasses.asdict(config.sim.noise),
        "peer": peer_info,
        "elapsed_s": round(time.monotonic() - started, 3),
        "workloads": results,
    }
    if carbon_info is not None:
        report["carbon"] = carbon_info
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_tables(report, sys.stdout)
        _print_summary(report, sys.stdout)
        bench_carbon.print_summary(report, sys.stdout)
    if args.plot is not None:
        _plot(report, args.plot)
    return 0


def _run_peer(
    args: argparse.Namespace, config: BenchConfig, traces: list[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Real Zeus on the same workloads, seeds and knobs: its runs and what ran them."""
    if sys.stderr.isatty():
        sys.stderr.write(f"Running zeus=={peer_mod.ZEUS_VERSION}'s own simulator…\r")
        sys.stderr.flush()
    try:
        result = peer_mod.run_peer(
            traces,
            args.trace_dir,
            config.seeds,
            {t.spec.name: recurrences_for(t, config) for t in traces},
            config.sim.eta,
            config.sim.beta,
            noise=config.sim.noise,
            peer=args.peer,
        )
    except peer_mod.PeerError as exc:
        raise CommandError(str(exc)) from None
    info = {
        "name": args.peer,
        "row": peer_mod.ROW,
        "versions": result.versions,
        "environment": str(result.env),
        "cached": result.cached,
        "elapsed_s": round(result.elapsed_s, 3),
    }
    return dict(result.runs), info


class _Progress:
    """A one-line progress bar on a terminal; silent when stderr is not one."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = ""
        self.stream = stream
        self.enabled = stream.isatty()

    def tick(self) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.label:<14}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


def _noisy(report: dict[str, Any]) -> bool:
    return any(v for k, v in report["noise"].items() if k.endswith("_sd"))


def _print_tables(report: dict[str, Any], out: TextIO) -> None:
    out.write(
        f"kwatt bench: {report['gpu']} trace, eta {report['eta']}, beta {report['beta']}, "
        f"{report['seeds']} seeds, {report['charge']} profiling charge, "
        f"{'noisy' if _noisy(report) else 'exact'} epochs and profiling windows "
        f"({report['elapsed_s']:.1f} s). Energy, cost and regret in kWh(-equivalent); regret % "
        "of the oracle's expected cost over the same recurrences; ± a standard error over "
        "seeds.\n"
    )
    peer = report.get("peer")
    if peer:
        versions = ", ".join(f"{k} {v}" for k, v in peer["versions"].items())
        out.write(
            f"{peer['row']}: real Zeus ({versions}), its own legacy simulator and charge on "
            f"the same workloads, seeds and knobs{' (cached result)' if peer['cached'] else ''}.\n"
        )
    for wl in report["workloads"]:
        oracle = wl["oracle"]
        default = wl["default"]
        out.write(
            f"\n{wl['name']}: {wl['recurrences']} recurrences; default {default['batch_size']} @ "
            f"{default['power_limit_w']} W; oracle {oracle['batch_size']} @ "
            f"{oracle['power_limit_w']} W\n"
        )
        for note in wl["notes"]:
            out.write(f"  note: {note}\n")
        rows = [COLUMNS] + [[name, *summary_row(fig)] for name, fig in wl["policies"].items()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        for row in rows:
            out.write(
                "  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) + "\n"
            )


# A regret ratio is only meaningful against a baseline regret clearly above zero. Regret is
# measured against the oracle's *expected* cost, so a few seeds' luck moves every regret
# by about what the oracle itself gains or loses (its own regret, zero in expectation),
# and a regret below 1% of what the oracle spends over the same recurrences is no
# difference worth a ratio (ratios to it can be anything, negative included).
NOISE_FRACTION = 0.01
RATIO_KEYS = {"regret": "regret", "regret_first20": "first 20"}
UPSTREAM = peer_mod.ROW


def baseline_of(report: dict[str, Any]) -> str:
    """What kwatt is measured against: real Zeus where it ran, else the `zeus` policy."""
    rows = [wl["policies"] for wl in report["workloads"]]
    return UPSTREAM if rows and all(UPSTREAM in p for p in rows) else "zeus"


def _noise(wl: dict[str, Any], key: str) -> float:
    """The regret (cost units) below which a difference from the oracle is not clear."""
    n = wl["recurrences"] if key == "regret" else min(FIRST, wl["recurrences"])
    floor = float(NOISE_FRACTION * n * wl["oracle"]["expected_cost"])
    oracle = wl["policies"].get("oracle")
    return max(floor, abs(float(oracle[key]))) if oracle is not None else floor


def _regret_ratio(
    wl: dict[str, Any], policy: str, key: str, baseline: str = "zeus"
) -> tuple[float | None, str]:
    """`policy`'s regret over the baseline's, or None and a sentence saying why it means
    nothing."""
    base, mine = wl["policies"][baseline][key], wl["policies"][policy][key]
    noise = _noise(wl, key)
    if base <= noise:
        return None, (
            f"{baseline}'s regret ({base / 3.6e6:.2f} kWh) is not clearly above zero "
            f"(noise {noise / 3.6e6:.2f} kWh), so a ratio to it means nothing."
        )
    if mine < 0:
        return None, (
            f"{policy}'s regret ({mine / 3.6e6:.2f} kWh) is below zero: it beat the oracle's "
            "expected cost by luck of the draws, so the ratio means nothing."
        )
    return mine / base, ""


def _print_summary(report: dict[str, Any], out: TextIO) -> None:
    """kwatt against Zeus in one glance: regret ratios and last-10 savings.

    The baseline is real Zeus (`zeus-upstream`) where the peer ran, else the `zeus`
    policy. A ratio whose baseline regret is within the noise (or either regret below
    zero) is shown as n/a with a footnote, and left out of the mean."""
    baseline = baseline_of(report)
    rows = [wl for wl in report["workloads"] if {baseline, "kwatt"} <= set(wl["policies"])]
    if rows:
        _print_ratios(rows, baseline, out)
    _print_fidelity(report, out)


def _print_ratios(rows: list[dict[str, Any]], baseline: str, out: TextIO) -> None:
    out.write(f"\nkwatt against {baseline} (regret ratio: lower is better)\n")
    ratios: dict[str, list[float]] = {key: [] for key in RATIO_KEYS}
    notes = []
    noisy = False  # some baseline regret was within the noise: say what the noise is
    for wl in rows:
        base, kwatt = wl["policies"][baseline], wl["policies"]["kwatt"]
        cells = []
        for key, label in RATIO_KEYS.items():
            ratio, why = _regret_ratio(wl, "kwatt", key, baseline)
            if ratio is None:
                noisy = noisy or base[key] <= _noise(wl, key)
                cells.append("  n/a")
                notes.append(f"  n/a  {wl['name']} {label}: {why}\n")
            else:
                ratios[key].append(ratio)
                cells.append(f"{ratio:5.2f}")
        saving = kwatt["last10_energy_saving_pct"], base["last10_energy_saving_pct"]
        out.write(
            f"  {wl['name']:<14} regret {cells[0]}  first 20 {cells[1]}  last-10 saving "
            f"{saving[0]:+.1f}% vs {saving[1]:+.1f}%\n"
        )
    means = {k: f"{sum(v) / len(v):5.2f}" if v else "  n/a" for k, v in ratios.items()}
    left_out = [
        f"{label} {len(rows) - len(ratios[key])} of {len(rows)}"
        for key, label in RATIO_KEYS.items()
        if len(ratios[key]) < len(rows)
    ]
    out.write(
        f"  {'mean':<14} regret {means['regret']}  first 20 {means['regret_first20']}"
        + (f"  (n/a left out: {', '.join(left_out)})" if left_out else "")
        + "\n"
    )
    out.writelines(notes)
    if noisy:
        oracle = any("oracle" in wl["policies"] for wl in rows)
        out.write(
            "  (noise: 1% of the oracle's expected cost over those recurrences"
            + (
                ", or the size of the oracle's own regret if larger, which is luck alone"
                if oracle
                else ""
            )
            + "; more --seeds shrink it)\n"
        )


def _print_fidelity(report: dict[str, Any], out: TextIO) -> None:
    """The `zeus` policy beside real Zeus: regret % and the gap in standard errors.

    Only under upstream's charge, the one real Zeus's simulator applies: under the step
    charge the two differ by how profiling is paid for, not by the policy."""
    rows = [wl for wl in report["workloads"] if {"zeus", UPSTREAM} <= set(wl["policies"])]
    if not rows:
        return
    if report.get("charge", "upstream") != "upstream":
        out.write(
            f"\n(zeus and {UPSTREAM} differ here in how profiling is charged too; "
            "--charge upstream compares the policies alone)\n"
        )
        return
    out.write(
        f"\nzeus against {UPSTREAM} (regret % of the oracle's cost, ± standard error; gap in "
        "standard errors of the difference)\n"
    )
    for wl in rows:
        ours, real = wl["policies"]["zeus"], wl["policies"][UPSTREAM]
        se = [ours.get("regret_pct_se"), real.get("regret_pct_se")]
        gap = ""
        if None not in se and (spread := math.hypot(se[0], se[1])) > 0:
            gap = f"  gap {(ours['regret_pct'] - real['regret_pct']) / spread:+.1f} SE"
        out.write(f"  {wl['name']:<14} {_pct_cell(ours)} vs {_pct_cell(real)}{gap}\n")


def _pct_cell(figures: dict[str, Any]) -> str:
    se = figures.get("regret_pct_se")
    return f"{figures['regret_pct']:5.2f}%" + (f" ± {se:.2f}" if se is not None else "")


def _plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        raise UsageError("--plot needs matplotlib: pip install 'kwatt[plot]'.") from None
    names = [wl["name"] for wl in report["workloads"]]
    baseline = baseline_of(report)
    policies = [
        p
        for p in ("zeus", UPSTREAM, "kwatt")
        if all(p in wl["policies"] for wl in report["workloads"])
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in (
        (axes[0], "regret", "regret, all recurrences"),
        (axes[1], "regret_first20", "regret, first 20 recurrences"),
    ):
        width = 0.8 / max(len(policies), 1)
        for i, policy in enumerate(policies):
            values = []
            for wl in report["workloads"]:
                # No bar where the ratio means nothing (see the summary's n/a).
                ratio = (
                    _regret_ratio(wl, policy, key, baseline)[0]
                    if baseline in wl["policies"]
                    else None
                )
                values.append(float("nan") if ratio is None else ratio)
            ax.bar([x + i * width for x in range(len(names))], values, width, label=policy)
        ax.set_xticks([x + width * (len(policies) - 1) / 2 for x in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(f"regret relative to {baseline}")
        ax.set_title(title)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.legend()
    fig.suptitle(
        f"kwatt bench on the {report['gpu']} trace (eta {report['eta']}, {report['seeds']} seeds)"
    )
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"Cannot write the plot to {path}: {exc.strerror}.") from None
    finally:
        plt.close(fig)
