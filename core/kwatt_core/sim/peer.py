"""Real Zeus beside kwatt's policies: upstream's own legacy trace simulator, as a peer.

`kwatt bench --peer zeus` runs PyPI's `zeus==0.16.0` (its `zeus._legacy` simulator,
batch-size optimizer and power-limit optimizer, with upstream's defaults) on the same
trace, workloads, batch sizes, limits, eta, beta, seed numbers and recurrence count as
kwatt's simulator, and turns its histories into the same figures, shown as the row
`zeus-upstream`. Upstream's simulator charges profiling its own way (the first epoch
of a new batch size at the mean over all limits; see `simulator._run_upstream`). With
noise (the benchmark's default), the runner gives upstream's simulator the same noise
model as kwatt's (`simulator.Noise`): noisy profiling windows and each epoch's pace.

Zeus needs packages kwatt does not (pandas, scikit-learn), so it runs in a separate
virtual environment, built once per machine into `$KWATT_CACHE_DIR` (else
`${XDG_CACHE_HOME:-~/.cache}/kwatt`) under `peers/zeus-<version>-<key>/`, the key naming
the Python and a hash of the pinned requirements. Only what the legacy simulator
imports is installed (`REQUIREMENTS`): zeus itself without its dependencies, and
numpy, pandas and scikit-learn with theirs, every version pinned; zeus's other
dependencies (NVML and AMD SMI bindings, pydantic, rich, tyro, httpx) serve its live
monitoring and servers and are left out. The build is the only download: it goes to a
temporary folder renamed into place when complete, under a lock, like the sandbox's
control plane. A run's histories are cached beside the environment under a hash of
everything they depend on (request, trace files, runner), since upstream's simulator is
deterministic for a seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kwatt_core import cache
from kwatt_core.cost import CostModel
from kwatt_core.sim.simulator import NO_NOISE, Noise, Recurrence, RunResult, cost_model_for
from kwatt_core.sim.trace import POWER_PREFIX, TRAIN_FILE, WorkloadTrace

PEERS = ("zeus",)
ROW = "zeus-upstream"  # the peer's row in the benchmark's tables and JSON
ZEUS_VERSION = "0.16.0"
# What `zeus._legacy.simulate` imports, with every dependency, pinned (Python 3.11+, wheels).
# scikit-learn only because `zeus.utils.metric` imports `sklearn.metrics.auc` at the top;
# scipy, joblib, threadpoolctl and narwhals are scikit-learn's, python-dateutil and tzdata
# pandas's; cloudpickle is joblib's.
REQUIREMENTS = (
    f"zeus=={ZEUS_VERSION}",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "python-dateutil==4.0.0",
    "tzdata==2026.6",
    "scikit-learn==1.9.1",
    "scipy==1.17.1",
    "joblib==1.6.0",
    "threadpoolctl==3.8.0",
    "narwhals==2.29.0",
    "cloudpickle==3.1.3",
)
RUNNER = Path(__file__).with_name("zeus_runner.py")
UPSTREAM_WINDOW_STEPS = 40  # JITPowerLimitOptimizer: 10 warm-up steps, then 40 measured
RECORD = "peer.json"  # inside the environment: what it holds and how long it took to build

_PIP_TIMEOUT_S = 1800
_RUN_TIMEOUT_S = 3600
# pip's words when the package index cannot be reached at all.
_OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|Connection refused|"
    r"ConnectTimeout|No matching distribution found|ProxyError|nodename nor servname",
)


class PeerError(RuntimeError):
    """The peer could not be built or run; the message is one sentence for a person."""


@dataclass(frozen=True)
class PeerEnv:
    """A complete peer environment."""

    directory: Path

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"


@dataclass(frozen=True)
class PeerRuns:
    """What the peer did: per workload, per seed (in order), its recurrences."""

    runs: dict[str, list[list[Recurrence]]]
    versions: dict[str, str]
    cached: bool
    elapsed_s: float
    env: Path


def cache_root() -> Path:
    try:
        return cache.cache_root()
    except cache.CacheError as e:
        raise PeerError(str(e)) from None


def env_dir(peer: str = "zeus") -> Path:
    """`<cache root>/peers/zeus-<version>-py<X.Y>-<hash of the requirements>`."""
    _check_peer(peer)
    digest = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:10]
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_root() / "peers" / f"zeus-{ZEUS_VERSION}-{python}-{digest}"


def find_env(peer: str = "zeus") -> PeerEnv | None:
    """The built environment, or None; never builds."""
    directory = env_dir(peer)
    return PeerEnv(directory) if _complete(directory) else None


def _complete(directory: Path) -> bool:
    return (directory / RECORD).is_file() and (directory / "bin" / "python").exists()


def _check_peer(peer: str) -> None:
    if peer not in PEERS:
        raise PeerError(f"Unknown peer {peer!r}; the only peer is {', '.join(PEERS)}.")


def _locked(lock_path: Path, out: TextIO) -> contextlib.AbstractContextManager[None]:
    return cache.locked(lock_path, out, "the Zeus peer")


def ensure_env(peer: str = "zeus", out: TextIO = sys.stderr) -> PeerEnv:
    """The peer's environment, built first (the one download) when missing."""
    final = env_dir(peer)
    if _complete(final):
        return PeerEnv(final)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PeerError(f"Cannot create the cache folder {parent} ({e.strerror}).") from e
    with _locked(parent / f"{final.name}.lock", out):
        if _complete(final):  # whoever held the lock built it meanwhile
            return PeerEnv(final)
        for stale in parent.glob(f".{final.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
        try:
            _build(work, final, out)
            if final.exists():  # an incomplete one: move it aside
                old = parent / f".{final.name}.old-{os.getpid()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            work.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return PeerEnv(final)


def _build(work: Path, final: Path, out: TextIO) -> None:
    started = time.monotonic()
    out.write(
        f"Building the Zeus peer once (zeus=={ZEUS_VERSION} with numpy, pandas and "
        f"scikit-learn, about 400 MB) into {final}…\n"
    )
    out.flush()
    _call([sys.executable, "-m", "venv", str(work)], "create a virtual environment", final)
    python = str(work / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-input"]
    pip += ["--disable-pip-version-check", "--quiet", "--retries", "2", "--timeout", "30"]
    _call([*pip, *REQUIREMENTS], "install", final)
    _call([python, "-I", "-c", "import zeus._legacy.simulate"], "import zeus", final)
    seconds = round(time.monotonic() - started, 1)
    record = {"requirements": list(REQUIREMENTS), "python": sys.version, "build_s": seconds}
    (work / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    out.write(f"Built the Zeus peer in {seconds:.0f} s.\n")
    out.flush()


def _call(command: list[str], what: str, final: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_CONSTRAINT", "PYTHON"))}
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_PIP_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerError(f"Building the Zeus peer in {final} failed ({what}): {e}.") from e
    if result.returncode == 0:
        return
    text = result.stdout + result.stderr
    if what == "install" and _OFFLINE.search(text):
        raise PeerError(
            f"The Zeus peer (zeus=={ZEUS_VERSION} and what its simulator needs) is built once "
            f"into {final}, and that needs the Python package index, which pip cannot reach "
            "from here (no network?): run it once where it can, or without --peer."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[-1] if lines else f"exit status {result.returncode}"
    raise PeerError(f"Building the Zeus peer in {final} failed ({what}): {detail}")


# --- running it ---------------------------------------------------------------------------


def request_for(
    traces: Sequence[WorkloadTrace],
    trace_dir: Path,
    seeds: int,
    recurrences: Mapping[str, int],
    eta: float,
    beta: float,
    noise: Noise = NO_NOISE,
) -> dict[str, Any]:
    """What the runner needs: the same workloads, seeds, knobs and noise as kwatt's simulator.

    Upstream's profiling windows are 40 steps: the noise goes with that length."""
    window_time_sd, window_power_sd = noise.window_sds(UPSTREAM_WINDOW_STEPS)
    return {
        "trace_dir": str(trace_dir.resolve()),
        "gpu": traces[0].gpu if traces else "",
        "eta": float(eta),
        "beta": float(beta),
        "noise": {
            "epoch_time_sd": noise.epoch_time_sd,
            "window_time_sd": window_time_sd,
            "window_power_sd": window_power_sd,
        },
        "jobs": [
            {
                "name": t.spec.name,
                "dataset": t.spec.dataset,
                "network": t.spec.network,
                "optimizer": t.spec.optimizer,
                "target_metric": t.spec.target_metric,
                "max_epochs": t.spec.max_epochs,
                "default_batch_size": t.default_batch_size,
                "batch_sizes": list(t.batch_sizes),
                "limits_w": list(t.limits_w),
                "recurrences": int(recurrences[t.spec.name]),
                "seeds": list(range(seeds)),
            }
            for t in traces
        ],
    }


def run_peer(
    traces: Sequence[WorkloadTrace],
    trace_dir: Path,
    seeds: int,
    recurrences: Mapping[str, int],
    eta: float,
    beta: float,
    *,
    noise: Noise = NO_NOISE,
    peer: str = "zeus",
    workers: int | None = None,
    out: TextIO = sys.stderr,
) -> PeerRuns:
    """Upstream's simulator on every trace and seed, its histories as kwatt's recurrences."""
    started = time.monotonic()
    env = ensure_env(peer, out)
    request = request_for(traces, trace_dir, seeds, recurrences, eta, beta, noise)
    key = _results_key(request, trace_dir, traces)
    cache = env.directory / "results" / f"{key}.json"
    answer: dict[str, Any] | None = None
    with contextlib.suppress(OSError, ValueError):
        answer = json.loads(cache.read_text())
    cached = answer is not None
    if answer is None:
        request["workers"] = workers or len(os.sched_getaffinity(0))
        answer = _run_runner(env, request)
        with contextlib.suppress(OSError):  # a cache that cannot be written costs time only
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(f".tmp-{os.getpid()}")
            partial.write_text(json.dumps(answer))
            partial.replace(cache)
    runs = {
        t.spec.name: recurrences_of(
            answer["jobs"][t.spec.name], t, cost_model_for(t, eta), seeds, recurrences
        )
        for t in traces
    }
    return PeerRuns(
        runs=runs,
        versions={str(k): str(v) for k, v in answer["versions"].items()},
        cached=cached,
        elapsed_s=time.monotonic() - started,
        env=env.directory,
    )


def _results_key(request: dict[str, Any], trace_dir: Path, traces: Sequence[WorkloadTrace]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(request, sort_keys=True).encode())
    digest.update(RUNNER.read_bytes())
    gpu = traces[0].gpu if traces else ""
    for name in (TRAIN_FILE, f"{POWER_PREFIX}{gpu}.csv"):
        with contextlib.suppress(OSError):
            digest.update((trace_dir / name).read_bytes())
    return digest.hexdigest()[:20]


def _run_runner(env: PeerEnv, request: dict[str, Any]) -> dict[str, Any]:
    try:
        result = subprocess.run(
            [str(env.python), "-I", str(RUNNER)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_RUN_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerError(f"Zeus's simulator could not run with {env.python}: {e}.") from e
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 0:
        detail = lines[-1] if lines else f"exit status {result.returncode}"
        raise PeerError(f"Zeus's simulator failed ({env.python}): {detail}")
    try:
        answer: dict[str, Any] = json.loads(result.stdout)
    except ValueError as e:
        raise PeerError(f"Zeus's simulator printed something other than JSON: {e}.") from e
    return answer


def recurrences_of(
    job: Mapping[str, Any],
    trace: WorkloadTrace,
    model: CostModel,
    seeds: int,
    recurrences: Mapping[str, int],
) -> list[list[Recurrence]]:
    """Upstream's runs of each seed, grouped into recurrences and costed by kwatt's model.

    A recurrence is the runs up to and including the one that reached the target
    (upstream's history leaves out runs the threshold kept from starting: they cost
    nothing). Upstream profiles a batch size's limits in the first run of that size, so
    that run is counted with one epoch of profiling steps, as `--charge upstream` does.
    """
    name = trace.spec.name
    if float(job["max_power_w"]) != float(trace.max_limit_w):
        raise PeerError(
            f"Zeus's simulator took {job['max_power_w']:g} W as the {trace.gpu} maximum power "
            f"for {name} and kwatt {trace.max_limit_w} W, so their costs would differ."
        )
    out = []
    for seed in range(seeds):
        result = job["seeds"][str(seed)]
        if "error" in result:
            raise PeerError(
                f"Zeus's simulator failed on {trace.gpu} {name}, seed {seed}: {result['error']}"
            )
        history: list[Recurrence] = []
        tries: list[RunResult] = []
        profiled: set[int] = set()
        for bs, limit, energy, time_s, reached in result["runs"]:
            steps = 0 if bs in profiled else trace.spec.iterations_per_epoch(bs)
            profiled.add(bs)
            tries.append(
                RunResult(
                    batch_size=int(bs),
                    power_limit_w=int(limit),
                    energy_j=float(energy),
                    time_s=float(time_s),
                    cost=model.cost(float(energy), float(time_s)),
                    reached=bool(reached),
                    epochs=0,  # upstream's history does not say
                    started=True,
                    profiled_limit_w=None,
                    profiling_steps=steps,
                )
            )
            if reached:
                history.append(_recurrence(tries))
                tries = []
        if tries or len(history) != recurrences[name]:
            raise PeerError(
                f"Zeus's simulator ran {len(history)} complete recurrences of {trace.gpu} "
                f"{name} (seed {seed}), not {recurrences[name]}."
            )
        out.append(history)
    return out


def _recurrence(runs: list[RunResult]) -> Recurrence:
    return Recurrence(
        energy_j=sum(r.energy_j for r in runs),
        time_s=sum(r.time_s for r in runs),
        cost=sum(r.cost for r in runs),
        reached=runs[-1].reached,
        runs=tuple(runs),
    )
