"""What a carbon-aware run tells the policy: the cost of one epoch at its limit, as the
sidecar reports the kept epoch (kwatt_core.sim.carbon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwatt_core import carbon
from kwatt_core.policies.base import Choice
from kwatt_core.sim import carbon as sc
from kwatt_core.sim import simulator as sim
from kwatt_core.sim.trace import load_workloads

TRACES = Path(__file__).resolve().parents[2] / "traces" / "zeus" / "trace"


def test_a_run_at_one_limit_reports_the_cost_of_one_epoch_at_it() -> None:
    (trace,) = load_workloads(TRACES, "v100", ["imagenet"])
    s = carbon.parse_series(
        "datetime,g_co2_per_kwh\n"
        + "".join(f"2026-01-01T{h:02d}:00Z,{v}\n" for h, v in enumerate((100, 250, 80)))
    )
    model = sim.cost_model_for(trace, 0.5)
    run = sc.CarbonRunner(
        trace, model, sim.SimConfig(noise=sim.NO_NOISE), s, carbon.CarbonSettings(), [s.start_s]
    )
    result = run(Choice(256, 175, None, "exploit"), 3.0, None, 0, 0)
    point = trace.power[(256, 175)]
    assert result.epochs == 3 and result.power_limit_w == 175
    assert result.epoch_cost == pytest.approx(
        model.cost(point.energy_per_epoch_j, point.time_per_epoch_s)
    )
