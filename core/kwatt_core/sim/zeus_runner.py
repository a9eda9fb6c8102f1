"""Run Zeus's own legacy trace simulator and print what happened, as JSON.

This script is executed by the Python of the peer environment that
`kwatt_core.sim.peer` builds once (zeus==0.16.0 with numpy, pandas and
scikit-learn); kwatt never imports it, and it imports nothing of kwatt. It drives
upstream's code exactly as upstream's `run_single.py` does (its
`PruningGTSBatchSizeOptimizer` and `JITPowerLimitOptimizer` with their defaults,
its `Simulator.simulate_one_job`), one simulation per workload and seed, and
reports each run of the history; kwatt computes every figure from those runs.

Input, one JSON object on stdin:
    {"trace_dir": str, "gpu": str, "eta": float, "beta": float, "workers": int,
     "jobs": [{"name", "dataset", "network", "optimizer", "target_metric",
               "max_epochs", "default_batch_size", "batch_sizes", "limits_w",
               "recurrences", "seeds"}]}
Output, one JSON object on stdout:
    {"versions": {package: version},
     "jobs": {name: {"max_power_w": float,
                     "seeds": {seed: {"runs": [[batch size, limit, energy J, time s,
                                                reached], ...]} | {"error": str}}}}}
Upstream prints to stdout (some lines even with verbose off); those are dropped.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import multiprocessing
import sys
import warnings
from typing import Any

# Filled in the parent before the workers fork, so that they read and import nothing.
_TABLES: dict[str, tuple[Any, Any]] = {}
_ZEUS: dict[str, Any] = {}


def _tables(request: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each job's train and power rows, as upstream's Simulator reads them.

    A job's rows are restricted to the batch sizes and limits kwatt simulates, so that
    both simulate the same workload (on the bundled traces this leaves nothing out).
    Rows of other workloads and other target metrics are left out too: upstream filters
    them out itself before it uses them (`Job.filter_df`), and keeping them makes every
    simulated run several times slower. The one place upstream reads every row is its
    MaxPower (the largest limit of the merged table), so other workloads' rows stay
    where leaving them out would change it.
    """
    pd = importlib.import_module("pandas")
    train = pd.read_csv(f"{request['trace_dir']}/summary_train.csv")
    power = pd.read_csv(f"{request['trace_dir']}/summary_power_{request['gpu']}.csv")
    file_max = power.power_limit.max()
    tables = {}
    for job in request["jobs"]:

        def rows(df: Any, job: dict[str, Any] = job) -> Any:
            same = (
                (df.dataset == job["dataset"])
                & (df.network == job["network"])
                & (df.optimizer == job["optimizer"])
            )
            return df.loc[same & df.batch_size.isin(job["batch_sizes"])]

        job_train = rows(train)
        job_train = job_train.loc[job_train.target_metric == job["target_metric"]]
        job_power = rows(power)
        job_power = job_power.loc[job_power.power_limit.isin(job["limits_w"])]
        if job_power.power_limit.max() != file_max:
            others_train = train.loc[~train.index.isin(rows(train).index)]
            others_power = power.loc[~power.index.isin(rows(power).index)]
            job_train = pd.concat([others_train, job_train])
            job_power = pd.concat([others_power, job_power])
        tables[job["name"]] = (job_train, job_power)
    return tables


def _simulate(task: tuple[dict[str, Any], float, float, int]) -> tuple[str, int, dict[str, Any]]:
    job, eta, beta, seed = task
    warnings.simplefilter("ignore")  # upstream's cold-arm and divide-by-zero warnings
    optimizer, simulate = _ZEUS["optimizer"], _ZEUS["simulate"]
    train, power = _TABLES[job["name"]]
    spec = _ZEUS["job"].Job(
        job["dataset"],
        job["network"],
        job["optimizer"],
        job["target_metric"],
        job["max_epochs"],
        job["default_batch_size"],
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            simulator = simulate.Simulator(
                train,
                power,
                optimizer.PruningGTSBatchSizeOptimizer(seed=seed, verbose=False),
                optimizer.JITPowerLimitOptimizer(verbose=False),
                seed=seed,
                verbose=False,
            )
            history = simulator.simulate_one_job(spec, job["recurrences"], beta, eta)
    except Exception as exc:  # upstream raises RuntimeError for jobs it cannot finish
        return job["name"], seed, {"error": f"{type(exc).__name__}: {exc}"}
    runs = [
        [int(h.bs), int(h.pl), float(h.energy), float(h.time), bool(h.reached)] for h in history
    ]
    return job["name"], seed, {"runs": runs}


def _max_power(job: dict[str, Any]) -> float:
    train, power = _TABLES[job["name"]]
    return float(train.merge(power, how="inner").power_limit.max())


def main() -> int:
    request = json.load(sys.stdin)
    for name in ("job", "policy.optimizer", "simulate"):
        _ZEUS[name.rsplit(".", 1)[-1]] = importlib.import_module(f"zeus._legacy.{name}")
    _TABLES.update(_tables(request))
    tasks = [
        (job, float(request["eta"]), float(request["beta"]), int(seed))
        for job in request["jobs"]
        for seed in job["seeds"]
    ]
    workers = max(1, min(int(request.get("workers", 1)), len(tasks)))
    if workers == 1:
        results = [_simulate(task) for task in tasks]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_simulate, tasks, chunksize=1)
    jobs: dict[str, Any] = {
        job["name"]: {"max_power_w": _max_power(job), "seeds": {}} for job in request["jobs"]
    }
    for name, seed, result in results:
        jobs[name]["seeds"][str(seed)] = result
    versions = {
        name: str(importlib.import_module(name).__version__)
        for name in ("zeus", "numpy", "pandas", "sklearn")
    }
    json.dump({"versions": versions, "jobs": jobs}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
