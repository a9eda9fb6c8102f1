"""Real Zeus's regret on the bundled traces, stored for the test of the `zeus` policy.

    .venv/bin/python benchmarks/zeus_peer_figures.py [--seeds 100] [--eta 0.5] [--beta 2]
        [--noise realistic|none] [--gpu v100 --gpu p100] [--out tests/core/data/zeus_upstream.json]

Runs PyPI's zeus==0.16.0 (its own legacy trace simulator, through `kwatt_core.sim.peer`,
which builds its environment once) on every workload of each GPU's trace, with kwatt's
recurrence count (2 x batch sizes x power limits) and seed numbers 0 .. seeds-1, and
writes each workload's per-seed regret, as % of the oracle's expected cost over the same
recurrences (all of them, and the first 20), and last-10 energy saving, to `--out`. With
`--noise realistic` (the benchmark's default) both simulators run in the same noisy world
(kwatt_core.sim.simulator's `Noise`, which the peer's runner applies to upstream's
simulator too), and the noise is stored beside the figures, so that the test runs the
`zeus` policy under the same.
`tests/core/test_zeus_fidelity.py` checks the `zeus` policy against these figures, so
`make test` needs no Zeus environment.
It also prints the `zeus` policy's figures beside them (upstream charge, same seeds).

100 seeds, not the benchmark's 20: a seed's regret has a long tail (a rare unlucky
exploration costs many recurrences), so 20 seeds' standard error understates the spread
(P100 ImageNet: real Zeus at 7.83% ± 0.15 over seeds 0-19, 8.26% ± 0.06 over 200 seeds),
and the test's "within two standard errors" is only as strict as those errors are small.
Upstream's simulator takes about 4 CPU-seconds a seed for both GPUs (pandas); its
results are cached beside the peer environment, so running this again is quick.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from kwatt_core.policies import ZeusPolicy
from kwatt_core.sim.bench import (
    FIRST,
    BenchConfig,
    last10_saving_pct_per_seed,
    recurrences_for,
    regret_pct_per_seed,
)
from kwatt_core.sim.peer import ZEUS_VERSION, run_peer
from kwatt_core.sim.simulator import NO_NOISE, Noise, SimConfig, cost_model_for, simulate_job
from kwatt_core.sim.trace import load_workloads

REPO = Path(__file__).resolve().parents[1]
TRACE_DIR = REPO / "traces" / "zeus" / "trace"
DEFAULT_OUT = REPO / "tests" / "core" / "data" / "zeus_upstream.json"


def compact_json(data: Any) -> str:
    """Indented JSON with each list of numbers on one line."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: f"[{' '.join(m.group(1).split())}]", text)


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def first20_pct(runs: list[list[Any]], oracle_cost: float) -> list[float]:
    return [regret_pct_per_seed([run[:FIRST]], oracle_cost)[0] for run in runs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--eta", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--noise", choices=["realistic", "none"], default="realistic")
    parser.add_argument("--gpu", action="append", help="default: v100 and p100")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    gpus = args.gpu or ["v100", "p100"]
    noise = Noise() if args.noise == "realistic" else NO_NOISE
    command = (
        f".venv/bin/python benchmarks/zeus_peer_figures.py --seeds {args.seeds} "
        f"--eta {args.eta:g} --beta {args.beta:g} --noise {args.noise} "
        + " ".join(f"--gpu {g}" for g in gpus)
    )
    data: dict[str, Any] = {
        "command": command,
        "peer": f"zeus=={ZEUS_VERSION}, zeus._legacy Simulator.simulate_one_job",
        "eta": args.eta,
        "beta": args.beta,
        "noise": dataclasses.asdict(noise),
        "seeds": list(range(args.seeds)),
        "gpus": {},
    }
    config = BenchConfig(seeds=args.seeds, sim=SimConfig(args.eta, args.beta, "upstream", noise))
    for gpu in gpus:
        traces = load_workloads(TRACE_DIR, gpu)
        counts = {t.spec.name: recurrences_for(t, config) for t in traces}
        peer = run_peer(traces, TRACE_DIR, args.seeds, counts, args.eta, args.beta, noise=noise)
        data["versions"] = peer.versions
        workloads = {}
        for trace in traces:
            name = trace.spec.name
            _, _, oracle_cost = trace.best_config(cost_model_for(trace, args.eta))
            runs = peer.runs[name]
            ours = [
                simulate_job(trace, ZeusPolicy(), seed, counts[name], config.sim)
                for seed in range(args.seeds)
            ]
            real, mine = (
                regret_pct_per_seed(runs, oracle_cost),
                regret_pct_per_seed(ours, oracle_cost),
            )
            workloads[name] = {
                "recurrences": counts[name],
                "batch_sizes": list(trace.batch_sizes),
                "power_limits_w": list(trace.limits_w),
                "oracle_expected_cost": oracle_cost,
                "regret_pct": [round(x, 6) for x in real],
                "regret_first20_pct": [round(x, 6) for x in first20_pct(runs, oracle_cost)],
                "last10_energy_saving_pct": [
                    round(x, 6) for x in last10_saving_pct_per_seed(runs, trace, args.eta)
                ],
            }
            (m_real, se_real), (m_mine, se_mine) = mean_se(real), mean_se(mine)
            spread = math.hypot(se_real, se_mine)
            gap = (m_mine - m_real) / spread if spread > 0 else 0.0
            print(
                f"{gpu} {name:<13} zeus-upstream {m_real:6.2f}% ± {se_real:.2f}   "
                f"zeus {m_mine:6.2f}% ± {se_mine:.2f}   gap {gap:+.1f} SE",
                file=sys.stderr,
            )
        data["gpus"][gpu] = workloads
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(compact_json(data) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
