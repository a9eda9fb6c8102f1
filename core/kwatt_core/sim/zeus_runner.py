"""Run Zeus's own legacy trace simulator and print what happened, as JSON.

This script is executed by the Python of the peer environment that
`kwatt_core.sim.peer` builds once (zeus==0.16.0 with numpy, pandas and
scikit-learn); kwatt never imports it, and it imports nothing of kwatt. It drives
upstream's code exactly as upstream's `run_single.py` does (its
`PruningGTSBatchSizeOptimizer` and `JITPowerLimitOptimizer` with their defaults,
its `Simulator.simulate_one_job`), one simulation per workload and seed, and
reports each run of the history; kwatt computes every figure from those runs.

With `noise` in the request, upstream's simulator sees the same noisy world as kwatt's
(`kwatt_core.sim.simulator.Noise`): its power-limit profile measures each limit's time
and average power with a profiling window's spread, and each epoch of a run has its
pace (its time and energy times a mean-one log-normal factor), with the numbers kwatt's
simulator draws for the same recurrence and try, from a stream of their own so that
upstream's own random numbers stay as they are. Only those two methods
of its `Simulator` are wrapped (`_profile_power_limit`, `_run_job`); its optimizers,
early stop and bookkeeping are untouched. Without noise nothing is wrapped.

Input, one JSON object on stdin:
    {"trace_dir": str, "gpu": str, "eta": float, "beta": float, "workers": int,
     "noise": {"epoch_time_sd", "window_time_sd", "window_power_sd"} (optional),
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
import math
import multiprocessing
import sys
import warnings
from typing import Any

# Filled in the parent before the workers fork, so that they read and import nothing.
_TABLES: dict[str, tuple[Any, Any]] = {}
_ZEUS: dict[str, Any] = {}
NOISE_STREAM = 104729  # the noise's own seed-sequence tag, beside the seed


def _factor(sd: float, z: float) -> float:
    """A mean-one log-normal factor: exp(sd z - sd^2 / 2)."""
    return math.exp(sd * z - 0.5 * sd * sd)


def _add_noise(simulator: Any, noise: dict[str, float], job: dict[str, Any], seed: int) -> None:
    """Wrap the simulator's profile and run so that they measure and run with noise.

    Recurrence r, try t of a seed draws the very numbers kwatt's simulator draws for it
    (`simulator.RunLuck`: one standard normal per epoch, then two per profiling window,
    highest limit first, from the seed sequence [seed, NOISE_STREAM, r, t]), so that
    where both run the same configuration they meet the same noise."""
    numpy = importlib.import_module("numpy")
    run_job = simulator._run_job
    epochs_drawn, windows_drawn = int(job["max_epochs"]), len(job["limits_w"])
    rows: dict[int, Any] = {}
    at = {"recurrence": 0, "try": 0}

    def draws() -> list[float]:
        key = [seed, NOISE_STREAM, at["recurrence"], at["try"]]
        normals: list[float] = (
            numpy.random.default_rng(key).standard_normal(epochs_drawn + 2 * windows_drawn).tolist()
        )
        return normals

    def power_rows(spec: Any, batch_size: int) -> Any:
        if batch_size not in rows:
            df = spec.filter_df(simulator.df)
            rows[batch_size] = df.loc[df.batch_size == batch_size]
        return rows[batch_size]

    def profile_power_limit(spec: Any, batch_size: int, eta_knob: float) -> dict[int, float]:
        # Upstream's Equation 7 over each limit's measured window, highest limit first.
        df = power_rows(spec, batch_size)
        max_pl = df.power_limit.max().item()
        df = df.groupby(["power_limit"], as_index=False).mean(numeric_only=True)
        df = df.sort_values(by="power_limit", ascending=False)
        z = draws()[epochs_drawn:]
        result = {}
        for i, rec in enumerate(df.to_records(index=False)):
            time = rec.time_per_epoch * _factor(noise["window_time_sd"], z[2 * i])
            power = rec.average_power * _factor(noise["window_power_sd"], z[2 * i + 1])
            result[int(rec.power_limit)] = (eta_knob * power + (1 - eta_knob) * max_pl) * time
        return result

    def run(**kwargs: Any) -> tuple[float, float, bool]:
        energy, time, reached = run_job(**kwargs)
        z = draws()
        at["try"] += 1
        if reached:
            at["recurrence"], at["try"] = at["recurrence"] + 1, 0
        if energy == 0 and time == 0 and not reached:
            return energy, time, reached  # it never ran
        df = power_rows(kwargs["job"], kwargs["batch_size"])
        point = df.loc[df.power_limit == kwargs["power_limit"]].iloc[0]
        epe, tpe = float(point.energy_per_epoch), float(point.time_per_epoch)
        first_e, first_t = epe, tpe
        if kwargs["profile_power"]:  # upstream's first epoch, at the mean over all limits
            first_e, first_t = df.energy_per_epoch.mean().item(), df.time_per_epoch.mean().item()
        epochs = round((time - first_t) / tpe) + 1
        paces = [_factor(noise["epoch_time_sd"], z[e]) for e in range(epochs)]
        rest = sum(paces[1:])
        return first_e * paces[0] + epe * rest, first_t * paces[0] + tpe * rest, reached

    simulator._profile_power_limit = profile_power_limit
    simulator._run_job = run


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


def _simulate(
    task: tuple[dict[str, Any], float, float, int, dict[str, float] | None],
) -> tuple[str, int, dict[str, Any]]:
    job, eta, beta, seed, noise = task
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
            if noise and any(noise.values()):
                _add_noise(simulator, noise, job, seed)
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
        (job, float(request["eta"]), float(request["beta"]), int(seed), request.get("noise"))
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
