"""benchmarks/carbon_ceiling.py, the bound docs/carbon.md quotes, on cases worked by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "carbon_ceiling.py"
G_PER_J = 3.6e6  # an intensity of this many g/kWh is 1 g per joule


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("carbon_ceiling", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["carbon_ceiling"] = module
    spec.loader.exec_module(module)
    return module


cc = load()


def curve(*points: tuple[int, float, float]) -> Any:
    """(limit, seconds per epoch, watts) points."""
    return cc.Curve(
        tuple(p[0] for p in points),
        np.array([1.0 / p[1] for p in points]),
        np.array([p[2] for p in points]),
    )


def test_least_carbon_buys_speed_in_the_clean_hour_first() -> None:
    # Two limits: slow (1 epoch/s at 1 W) and fast (2 epochs/s at 3 W); two one-second
    # hours at 1 and 3 g/J; 3 epochs. All slow does 2 epochs for 1 + 3 = 4 g; one more
    # epoch costs 2 g/epoch in the clean hour (3-1 W over 2-1 epochs/s, x 1 g/J), 6 in the
    # dirty one: the clean hour goes fast, for 6 g in all, at a price of 2 g per epoch.
    w, p = curve((100, 1.0, 1.0), (200, 0.5, 3.0)).hull()
    lengths, intensity = np.array([1.0, 1.0]), np.array([1.0, 3.0]) * G_PER_J
    solution = cc.least_carbon(lengths, intensity, w, p, 3.0)
    assert solution.grams == pytest.approx(6.0) and solution.price == pytest.approx(2.0)
    # The dual at that price: hour 1 min(1-2, 3-4) = -1, hour 2 min(3-2, 9-4) = 1, + 2 x 3.
    two = curve((100, 1.0, 1.0), (200, 0.5, 3.0))
    assert cc.dual_value(lengths, intensity, two, 3.0, 2.0) == pytest.approx(6.0)
    # 3.5 epochs: the dirty hour goes half fast, at 6 g per epoch: 6 + 0.5 x 6 = 9 g.
    assert cc.least_carbon(lengths, intensity, w, p, 3.5).grams == pytest.approx(9.0)
    # Too much work for the time, or too little to keep the GPU busy: no schedule.
    assert cc.least_carbon(lengths, intensity, w, p, 4.5) is None
    assert cc.least_carbon(lengths, intensity, w, p, 1.5) is None


def test_the_hull_keeps_only_mixes_worth_using() -> None:
    # (1.5 epochs/s, 2.5 W) lies above the chord from (1, 1) to (2, 3), which gives 1.5
    # epochs/s for 2 W; (0.5 epochs/s, 1.5 W) is slower than (1, 1) and costs more power.
    c = curve((150, 1.0, 1.0), (175, 1 / 1.5, 2.5), (200, 0.5, 3.0), (100, 2.0, 1.5))
    w, p = c.hull()
    assert list(w) == [1.0, 2.0] and list(p) == [1.0, 3.0]


def run_of(c: Any, epochs: float, kwatt_s: float, kwatt_w: float, hours: list[float]) -> Any:
    w, _ = c.hull()
    return cc.Run(
        np.array(hours) * G_PER_J,
        3600.0,
        epochs,
        kwatt_s,
        kwatt_w,
        epochs / float(c.work.max()),
        epochs / float(w[0]),
    )


def test_on_a_flat_grid_the_ceiling_is_what_the_extra_time_saves_in_energy() -> None:
    # kwatt runs 10 epochs fast (1 s and 2 J each): 10 s, 20 J. With 50% more time, x
    # epochs go slow (2 s and 1.5 J each): 10 + x <= 15, so x = 5 and 17.5 J: 12.5% less,
    # on a flat grid the same in carbon, and the same pooled or run by run.
    c = curve((250, 1.0, 2.0), (100, 2.0, 0.75))
    runs = [run_of(c, 10.0, 10.0, 2.0, [100.0] * 3) for _ in range(4)]
    kwatt = sum(r.kwatt_grams() for r in runs)
    for r in runs:
        grams, seconds = cc.per_run_best(r, c.hull(), 0.5)
        assert 1 - grams / r.kwatt_grams() == pytest.approx(0.125)
        assert seconds == pytest.approx(15.0, abs=0.5)
    pooled = cc.pooled_ceiling(runs, c.hull(), c, 0.5, 0.01, kwatt)
    assert pooled.achieved_pct == pytest.approx(12.5, abs=0.01)
    assert pooled.bound_pct == pytest.approx(12.5, abs=1e-6)
    assert pooled.bound_pct >= pooled.achieved_pct - 1e-9


def test_a_run_over_an_hour_boundary_goes_slow_in_the_dirty_hour() -> None:
    # 5,400 epochs, fast at 1 s and 2 J each, from a dirty hour (3 g/J) into a clean one
    # (1 g/J): kwatt emits 3600 x 2 x 3 + 1800 x 2 x 1 = 25,200 g. Without extra time the
    # run can only go fast throughout: the same 25,200 g.
    c = curve((250, 1.0, 2.0), (100, 2.0, 0.75))
    r = run_of(c, 5400.0, 5400.0, 2.0, [3.0, 1.0, 1.0, 1.0])
    assert r.kwatt_grams() == pytest.approx(25200.0)
    grams, _ = cc.per_run_best(r, c.hull(), 0.0)
    assert grams == pytest.approx(25200.0, rel=1e-6)
    # With a third more time (7,200 s), 1,800 epochs can go slow (2 s and 1.5 J each);
    # slowing saves 0.5 J an epoch, worth 3 g in the dirty hour and 1 g in the clean one,
    # so the dirty hour goes slow (1,800 epochs at 0.75 W: 8,100 g) and the clean one fast
    # (3,600 epochs: 7,200 g).
    grams, seconds = cc.per_run_best(r, c.hull(), 1.0 / 3.0)
    assert grams == pytest.approx(8100.0 + 7200.0, rel=1e-6)
    assert seconds == pytest.approx(7200.0, abs=1.0)
    # The pieces' duals find the same least grams (strong duality).
    (check,) = cc.piece_minima([r], c, 0.0, [7200.0])
    assert check == pytest.approx(grams, rel=1e-9)
