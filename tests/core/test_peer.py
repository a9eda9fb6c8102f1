"""The Zeus peer's plumbing: its runs turned into recurrences, its one-time build, its CLI.

None of these needs the peer's environment except the last, which runs only where it
has been built (`kwatt bench --peer zeus` builds it once).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kwatt_cli.bench import _print_summary, baseline_of
from kwatt_core.cost import CostModel
from kwatt_core.sim import peer
from kwatt_core.sim.bench import BenchConfig, bench_workload
from kwatt_core.sim.trace import load_workloads

from .conftest import TRACE_DIR

MODEL = CostModel(0.5, 250.0)


def answer(runs: list[list[Any]], max_power: float = 250.0) -> dict[str, Any]:
    return {"max_power_w": max_power, "seeds": {"0": {"runs": runs}}}


def test_runs_are_grouped_into_recurrences_and_costed_by_kwatt(tiny_trace: Path) -> None:
    (trace,) = load_workloads(tiny_trace, "t4")
    runs = [
        [128, 200, 4500.0, 30.0, True],
        [64, 250, 1000.0, 5.0, False],  # a failed try: the recurrence goes on
        [64, 250, 2400.0, 15.0, True],
        [64, 250, 2400.0, 15.0, True],
    ]
    (history,) = peer.recurrences_of(answer(runs), trace, MODEL, 1, {"cifar100": 3})
    assert [len(r.runs) for r in history] == [1, 2, 1]
    assert history[1].cost == pytest.approx(MODEL.cost(3400.0, 20.0))
    assert history[1].reached and not history[1].runs[0].reached
    # Upstream profiles in the first run of each batch size: one epoch of steps.
    steps = [x.profiling_steps for r in history for x in r.runs]
    assert steps == [391, 782, 0, 0]


@pytest.mark.parametrize(
    ("job", "count", "message"),
    [
        (answer([[64, 250, 1.0, 1.0, True]]), 2, "ran 1 complete recurrences"),
        (answer([[64, 250, 1.0, 1.0, False]]), 1, "ran 0 complete recurrences"),
        (answer([], max_power=300.0), 0, "took 300 W as the t4 maximum power"),
        ({"max_power_w": 250, "seeds": {"0": {"error": "RuntimeError: no"}}}, 1, "seed 0"),
    ],
)
def test_what_upstream_did_wrong_is_one_sentence(
    tiny_trace: Path, job: dict[str, Any], count: int, message: str
) -> None:
    (trace,) = load_workloads(tiny_trace, "t4")
    with pytest.raises(peer.PeerError, match=message):
        peer.recurrences_of(job, trace, MODEL, 1, {"cifar100": count})


def test_the_request_names_the_same_workload_seeds_and_knobs() -> None:
    (trace,) = load_workloads(TRACE_DIR, "p100", ["squad"])
    request = peer.request_for([trace], TRACE_DIR, 3, {"squad": 60}, 0.2, 3.0)
    (job,) = request["jobs"]
    assert (request["gpu"], request["eta"], request["beta"]) == ("p100", 0.2, 3.0)
    assert job["default_batch_size"] == 24  # the P100 trace's largest size below 32
    assert job["batch_sizes"] == [4, 8, 12, 16, 24] and job["seeds"] == [0, 1, 2]
    assert (job["recurrences"], job["max_epochs"], job["target_metric"]) == (60, 6, 84.0)


def test_peer_rows_sit_beside_zeus_with_the_same_figures() -> None:
    (trace,) = load_workloads(TRACE_DIR, "v100", ["sentiment140"])
    config = BenchConfig(seeds=2, recurrences=12, policies=("default", "zeus", "kwatt"))
    ours = bench_workload(trace, config)
    # Any recurrences will do: here the kwatt policy's own, under the peer's row name.
    from kwatt_core.policies import KwattPolicy
    from kwatt_core.sim.simulator import simulate_job

    runs = [simulate_job(trace, KwattPolicy(), s, 12, config.sim) for s in range(2)]
    figures = bench_workload(trace, config, peers={peer.ROW: runs})
    assert list(figures["policies"]) == ["default", "zeus", peer.ROW, "kwatt"]
    assert figures["policies"][peer.ROW] == ours["policies"]["kwatt"]
    assert set(figures["policies"][peer.ROW]) >= {"regret_pct", "regret_pct_se"}


def fake_report(upstream: bool) -> dict[str, Any]:
    def fig(regret_kwh: float) -> dict[str, Any]:
        return {
            "regret": regret_kwh * 3.6e6,
            "regret_first20": regret_kwh * 3.6e6 / 5,
            "regret_pct": regret_kwh,
            "regret_pct_se": 0.5,
            "last10_energy_saving_pct": 10.0,
        }

    policies = {"zeus": fig(10.0), "kwatt": fig(4.0)}
    if upstream:
        policies[peer.ROW] = fig(8.0)
    wl = {"name": "w", "recurrences": 100, "oracle": {"expected_cost": 3.6e6}}
    return {"workloads": [{**wl, "policies": policies}]}


def test_kwatt_is_measured_against_real_zeus_where_it_ran() -> None:
    out = io.StringIO()
    _print_summary(fake_report(upstream=True), out)
    text = out.getvalue()
    assert baseline_of(fake_report(upstream=True)) == peer.ROW
    assert f"kwatt against {peer.ROW}" in text
    assert "w              regret  0.50" in text  # 4 / 8, not 4 / 10
    # and the zeus policy beside real Zeus: 10% vs 8%, 2 / hypot(0.5, 0.5) = 2.8 SE apart
    assert "10.00% ± 0.50 vs  8.00% ± 0.50  gap +2.8 SE" in text
    out = io.StringIO()
    _print_summary(fake_report(upstream=False), out)
    assert "kwatt against zeus (" in out.getvalue() and "gap" not in out.getvalue()


def kwatt(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwatt_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_without_the_package_index_the_build_says_so_in_one_sentence(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KWATT_CACHE_DIR": str(tmp_path / "cache"),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens on the discard port
        "PIP_FIND_LINKS": str(tmp_path),  # and no local wheels either
        "PIP_RETRIES": "0",
    }
    args = ["bench", "--gpu", "p100", "--workload", "squad", "--seeds", "1", "--peer", "zeus"]
    out = kwatt(*args, env=env)
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "needs the Python package index" in last and "no network" in last
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "cache" / "peers").glob("zeus-*/bin"))  # nothing half-built


@pytest.mark.skipif(peer.find_env() is None, reason="the Zeus peer is not built on this machine")
def test_bench_with_the_real_peer() -> None:
    args = ["bench", "--gpu", "p100", "--workload", "sentiment140", "--seeds", "2"]
    out = kwatt(*args, "--recurrences", "15", "--peer", "zeus", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["peer"]["versions"]["zeus"] == peer.ZEUS_VERSION
    (wl,) = report["workloads"]
    assert list(wl["policies"]) == ["default", "zeus", peer.ROW, "kwatt", "oracle"]
    assert wl["policies"][peer.ROW]["seeds"] == 2
    text = kwatt(*args, "--recurrences", "15", "--peer", "zeus")
    assert f"kwatt against {peer.ROW}" in text.stdout


def test_a_complete_environment_is_found_and_used_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built once per machine: a complete environment (its record and its python) is used
    as it is; a folder without its record is a build that did not finish."""
    monkeypatch.setenv("KWATT_CACHE_DIR", str(tmp_path))
    directory = peer.env_dir()
    assert directory.parent == tmp_path / "peers"
    assert directory.name.startswith(f"zeus-{peer.ZEUS_VERSION}-py{sys.version_info[0]}.")
    assert peer.find_env() is None
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / "python").write_text("")
    assert peer.find_env() is None  # no record: an unfinished build
    (directory / peer.RECORD).write_text("{}")
    assert peer.find_env() == peer.PeerEnv(directory)
    out = io.StringIO()
    assert peer.ensure_env(out=out) == peer.PeerEnv(directory)
    assert out.getvalue() == ""  # nothing was built, nothing said
    assert peer.find_env().python == directory / "bin" / "python"  # type: ignore[union-attr]
    with pytest.raises(peer.PeerError, match="Unknown peer 'mlperf'"):
        peer.find_env("mlperf")
