"""The chart's Grafana dashboard (charts/kwatt/dashboards/kwatt.json), query by query.

- without a cluster: the JSON is a dashboard whose every query goes to the `datasource`
  variable, uses only the variables it defines (and Grafana's `$__range`,
  `$__rate_interval`), and names only series that the operator's or the sidecar's
  exposition has, each documented (docs/operator.md, docs/sidecar.md);
- on the sandbox: a real Prometheus (built from its Go module, kwatt_sandbox.controlplane.tools;
  `make prometheus`) on 127.0.0.1 scrapes `kwatt operator`'s metrics port and its sidecars'
  metrics port while a TrainingJob runs twice, and then EVERY PromQL expression of the
  dashboard, its variables replaced by that namespace and TrainingJob, is asked of
  Prometheus's HTTP API the way Grafana asks it (an instant query for instant targets, a
  range query over the test's window for the others), and must answer at least one series.
  The variables' `label_values(...)` queries are asked of the series API and must list them.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chart_support import CHART, REPO, operator_support

from kwatt_operator.metrics import OperatorMetrics
from kwatt_sandbox.controlplane.cluster import free_port
from kwatt_sandbox.controlplane.tools import ensure_tool
from kwatt_sandbox.testing import Cluster, eventually
from kwatt_sidecar.metrics import GpuReading, Reading, render

DASHBOARD = CHART / "dashboards" / "kwatt.json"
VARIABLES = {"datasource", "namespace", "trainingjob"}
GRAFANA_VARIABLES = {"__range", "__rate_interval"}
SCRAPE_S = 1  # Prometheus's scrape interval here; Grafana's $__rate_interval is 4 of them
STEP_S = 1  # the range queries' step


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str
    instant: bool


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(board: dict[str, Any]) -> list[Query]:
    """Every target of every panel (rows' nested panels too)."""
    found = []
    stack = list(board["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            instant = bool(target.get("instant")) and not target.get("range")
            found.append(Query(panel["title"], target["refId"], target["expr"], instant))
    return found


def substitute(expr: str, values: dict[str, str]) -> str:
    """The expression as Grafana sends it: `$name` and `${name}` replaced."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def series_names(expr: str) -> set[str]:
    return set(re.findall(r"\bkwatt_[a-z_]+\b", expr))


# --- without a cluster ---------------------------------------------------------------------


def exposed_series() -> set[str]:
    """Every series name the operator's and the sidecar's expositions can have."""
    operator = OperatorMetrics()
    operator.run_finished("ml", "cifar", "reached", 1.0, 1.0, profiling_energy_j=0.1)
    operator.current("ml", "cifar", 8, 250)
    operator.savings("ml", "cifar", 0.2, 0.1, "estimated")
    operator.reconcile_error("ml", "cifar", "ApiError")
    from prometheus_client import generate_latest

    text = generate_latest(operator.registry).decode()
    reading = Reading(
        namespace="ml",
        pod="cifar-run-1-abcde",
        phase="measure",
        epochs=1,
        cost=1.0,
        gpus=[GpuReading("GPU-1", 1.0, 100.0, 250.0)],
    )
    text += render(reading).decode()
    return {
        line.split("{")[0].split()[0] for line in text.splitlines() if line.startswith("kwatt_")
    }


def test_the_dashboard_is_one_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "kwatt-trainingjobs" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == VARIABLES
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = []
    stack = list(board["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels") or [])
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == [
        "Energy per TrainingJob",
        "Saving against the default configuration",
        "Power limits and batch sizes",
        "Run outcomes",
        "Profiling overhead",
    ]


def test_every_query_uses_known_variables_and_exposed_documented_series() -> None:
    board = dashboard()
    found = queries(board)
    assert len(found) >= 15
    exposed = exposed_series()
    docs = (REPO / "docs" / "operator.md").read_text() + (REPO / "docs" / "sidecar.md").read_text()
    known = {name: "x" for name in VARIABLES | GRAFANA_VARIABLES}
    for query in found:
        substitute(query.expr, known)  # raises on an unknown variable
        names = series_names(query.expr)
        assert names, query
        for name in names:
            assert name in exposed, f"{query.panel}: {name} is in no exposition"
            assert f"`{name}`" in docs or f"`{name}{{" in docs, f"{name} is not documented"
    for variable in board["templating"]["list"][1:]:
        substitute(variable["query"]["query"], known)
        assert series_names(variable["query"]["query"]) <= exposed


# --- against Prometheus, on the sandbox ------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    return ensure_tool("prometheus")


class Prometheus:
    """The real server on 127.0.0.1, its data and log in a test folder."""

    def __init__(self, binary: Path, folder: Path, targets: dict[str, list[str]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": addresses}]}
                for job, addresses in targets.items()
            ],
        }
        (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log_path = folder / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: Any) -> Any:
        assert self.proc.poll() is None, f"Prometheus exited:\n{self.log()[-3000:]}"
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            assert self.proc.poll() is None, f"Prometheus exited:\n{self.log()[-3000:]}"
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def prometheus_run(
    sandbox: Cluster, namespace: str, tmp_path: Path, prometheus_binary: Path
) -> Iterator[tuple[Prometheus, Any]]:
    """`kwatt operator` for the namespace and Prometheus scraping it and its sidecars."""
    support = operator_support()
    with support.running_operator(sandbox, namespace, tmp_path) as operator:
        found = eventually(
            lambda: re.findall(r"Metrics on http://(127\.0\.0\.1:\d+)/metrics", operator.log()),
            timeout=60,
            interval=0.2,
        )
        # Sandbox Pods share the host's network: every run's sidecar serves on this port.
        sidecars = f"127.0.0.1:{flag(operator.argv, '--sidecar-metrics-port')}"
        server = Prometheus(
            prometheus_binary,
            tmp_path,
            {"kwatt-operator": [found[-1]], "kwatt-sidecar": [sidecars]},
        )
        try:
            eventually(server.ready, timeout=60, interval=0.2)
            # Scraping starts after Prometheus's first target update (up to 5 s): wait for a
            # scrape of the operator, so that its counters are seen at 0 before the first run.
            eventually(
                lambda: server.get("/api/v1/query", query='up{job="kwatt-operator"} == 1')[
                    "result"
                ],
                timeout=30,
                interval=0.2,
            )
            yield server, operator
        finally:
            server.stop()
            print(server.log()[-3000:])


@pytest.mark.timeout(240)
def test_every_dashboard_query_answers_from_a_real_run(
    sandbox: Cluster, namespace: str, prometheus_run: tuple[Prometheus, Any]
) -> None:
    prometheus, operator = prometheus_run
    support = operator_support()
    start = time.time()
    sandbox.kubectl("create", "-f", "-", input=json.dumps(support.trainingjob(namespace)))

    def recorded(n: int) -> bool:
        operator.alive()
        return int(support.status_of(sandbox, namespace).get("recordedRuns") or 0) >= n

    eventually(lambda: recorded(1), timeout=120, interval=0.5)
    support.request_run(sandbox, namespace, "second")
    eventually(lambda: recorded(2), timeout=120, interval=0.5)

    # Prometheus has scraped the final state: both runs counted, a limit kept, a saving.
    selector = f'namespace="{namespace}", trainingjob="cifar"'

    def scraped() -> bool:
        reached = prometheus.get(
            "/api/v1/query",
            query=f'kwatt_trainingjob_runs_total{{{selector}, result="reached"}} == 2',
        )["result"]
        saving = prometheus.get(
            "/api/v1/query", query=f"kwatt_trainingjob_energy_saving_ratio{{{selector}}}"
        )["result"]
        return bool(reached and saving)

    eventually(scraped, timeout=30, interval=0.5)
    end = time.time()
    targets = {t["labels"]["job"]: t for t in prometheus.get("/api/v1/targets")["activeTargets"]}
    assert set(targets) == {"kwatt-operator", "kwatt-sidecar"}
    assert targets["kwatt-operator"]["health"] == "up"

    values = {
        "namespace": namespace,
        "trainingjob": "cifar",
        "__range": f"{math.ceil(end - start) + 1}s",
        "__rate_interval": f"{4 * SCRAPE_S}s",
    }

    # Range queries are evaluated at start, start + step, ... up to end: start is put a whole
    # number of steps before the end, so that the end (the scrape just waited for) is one.
    steps = math.ceil(end - start) + 5

    def ask(query: Query, values: dict[str, str]) -> list[Any]:
        expr = substitute(query.expr, values)
        if query.instant:
            data = prometheus.get("/api/v1/query", query=expr, time=f"{end:.3f}")
        else:
            data = prometheus.get(
                "/api/v1/query_range",
                query=expr,
                start=f"{end - steps * STEP_S:.3f}",
                end=f"{end:.3f}",
                step=f"{STEP_S}s",
            )
        result: list[Any] = data["result"]
        return result

    def samples(expr: str) -> str:
        """What Prometheus holds of each series the expression names, for a failure."""
        lines = []
        for name in sorted(series_names(expr)):
            raw = prometheus.get(
                "/api/v1/query",
                query=f'{name}{{namespace="{namespace}"}}[{steps}s]',
                time=f"{end:.3f}",
            )["result"]
            for series in raw:
                points = [(round(float(t) - start, 1), v) for t, v in series["values"]]
                lines.append(f"    {series['metric']}: {points}")
        return "\n".join(lines) or "    (no samples)"

    empty, answered = [], 0
    for query in queries(dashboard()):
        result = ask(query, values)
        print(f"{query.panel} [{query.ref}]: {len(result)} series")
        if result:
            answered += 1
        else:
            kind = "instant" if query.instant else "range"
            expr = substitute(query.expr, values)
            empty.append(f"{query.panel} [{query.ref}, {kind}]: {expr}\n{samples(expr)}")
    assert not empty, "queries without a series:\n" + "\n".join(empty)
    assert answered == len(queries(dashboard())) >= 15
    # A control: the same queries for a TrainingJob that never ran answer nothing.
    nobody = {**values, "trainingjob": "never-ran"}
    assert not any(ask(query, nobody) for query in queries(dashboard()))

    # The variables' label_values(metric{...}, label), as Grafana asks them.
    for variable in dashboard()["templating"]["list"][1:]:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable["query"]["query"]
        series = substitute(match.group(1), values)
        listed = prometheus.get(
            f"/api/v1/label/{match.group(2)}/values",
            **{"match[]": series, "start": f"{start:.3f}", "end": f"{end:.3f}"},
        )
        assert values[variable["name"]] in listed, (variable["name"], listed)
