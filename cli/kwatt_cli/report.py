"""`kwatt report NAME`: a TrainingJob's runs, energy and saving, from its status alone.

Also `kubectl kwatt report NAME` (the `kubectl-kwatt` plugin). The TrainingJob is read
the way kubectl reads: `--kubeconfig`, else the files in KUBECONFIG (merged), else
~/.kube/config, else the Pod's ServiceAccount; `--context` picks a context; the
namespace is `-n`, else the context's, else `default`. Only `get` on that one object is
needed, so any user who may `kubectl get tj NAME` may run it.

The rows and the comparison with the default configuration come from
`kwatt_operator.status_report` (pure, shared with the reconcile pass); `render_table` and
`write_chart` here turn them into text and a PNG, for this command and for demos.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kwatt_cli.errors import CommandError, UsageError
from kwatt_operator.crd import GROUP, PLURAL, VERSION
from kwatt_operator.status_report import (
    RUNNING,
    JobReport,
    NoRunsError,
    RunRow,
    job_report,
    report_json,
)

HELP = (
    "Show a TrainingJob's runs (batch size, power limit, energy, time, result) and its "
    "saving against the default configuration, read from its status."
)
RESOURCE_PREFIXES = (
    "tj/",
    "trainingjob/",
    "trainingjobs/",
    "trainingjob.kwatt.dev/",
    "trainingjobs.kwatt.dev/",
)
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 10, 30
WIDTH = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the TrainingJob (NAME or tj/NAME)")
    parser.add_argument(
        "-n", "--namespace", default=None, help="its namespace (default: the context's)"
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", default=None, help="kubeconfig context (default: current)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="also write a PNG chart of energy per run"
    )


def run(args: argparse.Namespace) -> int:
    name = _resource_name(args.name)
    if args.plot is not None:
        if args.plot.suffix.lower() != ".png":
            raise UsageError(f"--plot needs a .png file name, got {args.plot}.")
        _pyplot()  # before the cluster is asked: no matplotlib, no report
    trainingjob = read_trainingjob(name, args.namespace, args.kubeconfig, args.context)
    try:
        report = job_report(trainingjob)
    except NoRunsError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        json.dump(report_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(report))
    if args.plot is not None:
        write_chart(report, args.plot)
        if not args.json:
            print(f"\nChart: {args.plot}")
    return 0


def _resource_name(text: str) -> str:
    for prefix in RESOURCE_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    if not text or "/" in text:
        raise UsageError(f"NAME must be a TrainingJob's name (or tj/NAME), got {text!r}.")
    return text


# --- reading the TrainingJob: the thin shell ----------------------------------------------


@dataclass(frozen=True)
class Connection:
    api: Any  # kubernetes.client.ApiClient
    namespace: str  # the context's namespace, else "default"
    server: str
    context: str  # the context's name, or "in-cluster"


def read_trainingjob(
    name: str, namespace: str | None, kubeconfig: str | None, context: str | None
) -> dict[str, Any]:
    """The TrainingJob as the API server returns it; every failure is a one-sentence error."""
    conn = connect(kubeconfig, context)
    ns = namespace or conn.namespace
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        with conn.api:
            obj = CustomObjectsApi(conn.api).get_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                name,
                _request_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
    except ApiException as exc:
        raise CommandError(api_error(exc.status, exc.reason, exc.body, ns, name, conn)) from None
    except ConfigException as exc:  # credentials refreshed at call time (exec plugins, tokens)
        raise CommandError(
            f"The credentials of context '{conn.context}' cannot be used: {_sentence(exc)}."
        ) from None
    except (HTTPError, OSError) as exc:
        raise CommandError(f"Cannot reach the cluster at {conn.server}: {_network(exc)}.") from None
    if not isinstance(obj, dict):
        raise CommandError(f"The cluster at {conn.server} answered with no TrainingJob object.")
    return obj


def kubeconfig_files(explicit: str | None) -> list[str]:
    """The kubeconfig files kubectl would merge, those that exist, in its order."""
    if explicit:
        path = os.path.expanduser(explicit)
        if not os.path.isfile(path):
            raise UsageError(f"The kubeconfig {explicit} does not exist.")
        return [path]
    env = os.environ.get("KUBECONFIG")
    candidates = env.split(os.pathsep) if env else [os.path.join("~", ".kube", "config")]
    return [p for p in (os.path.expanduser(c) for c in candidates if c) if os.path.isfile(p)]


def connect(kubeconfig: str | None, context: str | None) -> Connection:
    """An API client for the kubeconfig's context (or the Pod's ServiceAccount)."""
    try:
        import yaml
        from kubernetes import client
        from kubernetes.config import ConfigException, incluster_config, kube_config
        from urllib3.exceptions import InsecureRequestWarning
    except ModuleNotFoundError as exc:
        missing = exc.name or "the kubernetes client"
        raise UsageError(
            f"'kwatt report' needs {missing}, which is not installed: "
            "pip install 'kwatt[operator]'."
        ) from None
    # insecure-skip-tls-verify is the kubeconfig's choice: no warning per request.
    warnings.simplefilter("ignore", InsecureRequestWarning)
    configuration = client.Configuration()
    files = kubeconfig_files(kubeconfig)
    if not files:
        if context is None and os.environ.get(incluster_config.SERVICE_HOST_ENV_NAME):
            return _in_cluster(configuration)
        where = "the files in KUBECONFIG" if os.environ.get("KUBECONFIG") else "~/.kube/config"
        raise CommandError(
            f"No cluster to read from: {where} does not exist and this is not a Pod; "
            "pass --kubeconfig or set KUBECONFIG."
        )
    shown = kubeconfig or os.pathsep.join(files)
    try:
        paths = os.pathsep.join(files)
        merger = kube_config.KubeConfigMerger(paths)  # type: ignore[no-untyped-call]
        merged = merger.config
        contexts = [_node(c).get("name") for c in _node(merged).get("contexts") or []]
        # As kubectl: the first file that sets current-context wins (the merger keeps the last).
        current = next(
            (
                merger.config_files[p].get("current-context")
                for p in merger.paths
                if merger.config_files[p].get("current-context")
            ),
            None,
        )
        chosen = context or current
        if not chosen:
            raise UsageError(
                f"The kubeconfig {shown} sets no current context; pass --context "
                f"(it has {_names(contexts)})."
            )
        if chosen not in contexts:
            which = "--context" if context else "its current context"
            raise UsageError(
                f"The kubeconfig {shown} has no context {chosen!r} ({which}; it has "
                f"{_names(contexts)})."
            )
        loader = kube_config.KubeConfigLoader(  # type: ignore[no-untyped-call]
            config_dict=merged, active_context=chosen, config_base_path=None
        )
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
        namespace = _node(_node(loader.current_context).get("context")).get("namespace")
    except ConfigException as exc:
        raise CommandError(
            f"The kubeconfig {shown} cannot be used with context {context or 'current'}: "
            f"{_sentence(exc)}."
        ) from None
    except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"The kubeconfig {shown} is not a valid kubeconfig: {_sentence(exc)}."
        ) from None
    namespace = namespace or "default"
    return Connection(_client(configuration), str(namespace), configuration.host, str(chosen))


def _in_cluster(configuration: Any) -> Connection:
    from kubernetes.config import ConfigException, incluster_config

    try:
        incluster_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except ConfigException as exc:
        raise CommandError(f"The Pod's ServiceAccount cannot be used: {_sentence(exc)}.") from None
    namespace = "default"
    path = Path(incluster_config.SERVICE_TOKEN_FILENAME).with_name("namespace")
    if path.is_file():
        namespace = path.read_text().strip() or namespace
    return Connection(_client(configuration), namespace, configuration.host, "in-cluster")


def _client(configuration: Any) -> Any:
    from kubernetes import client

    configuration.retries = 0  # as kubectl: a refused connection is an answer, not a retry
    return client.ApiClient(configuration)


def _node(value: Any) -> dict[str, Any]:
    """A kubeconfig entry as a dict (the client wraps them in ConfigNode objects)."""
    value = getattr(value, "value", value)
    return value if isinstance(value, dict) else {}


def _names(names: list[Any]) -> str:
    shown = [repr(str(n)) for n in names if n]
    return "no contexts" if not shown else "contexts " + ", ".join(shown)


def api_error(
    status: int | None, reason: str | None, body: Any, namespace: str, name: str, conn: Connection
) -> str:
    """One sentence for an error answer of the API server to GET trainingjobs/NAME."""
    details: dict[str, Any] = {}
    message = ""
    try:
        data = json.loads(body) if isinstance(body, str | bytes) and body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        details = _node(data.get("details"))
    what = f"TrainingJob {namespace}/{name}"
    if status == 404:
        if details.get("name") == name:
            return f"{what} not found (context '{conn.context}', cluster {conn.server})."
        return (
            f"The cluster at {conn.server} serves no TrainingJobs ({GROUP}/{VERSION}): "
            "kwatt's CRD is not installed there."
        )
    if status == 403:
        return f"Not allowed to read {what}: {_clean(message) or 'forbidden'}."
    if status == 401:
        return (
            f"The cluster at {conn.server} did not accept the credentials of context "
            f"'{conn.context}' (401 Unauthorized)."
        )
    said = f": {_clean(message)}" if message else ""
    return f"The cluster at {conn.server} answered {status} {reason or ''}".rstrip() + f"{said}."


def _network(exc: BaseException) -> str:
    """Why a request got no answer, in a few words."""
    from urllib3.exceptions import (
        MaxRetryError,
        NameResolutionError,
        NewConnectionError,
        SSLError,
        TimeoutError,
    )

    cause: BaseException = exc
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        cause = exc.reason
    if isinstance(cause, SSLError):
        return f"TLS failed ({_clean(str(cause.args[-1] if cause.args else cause))})"
    if isinstance(cause, NameResolutionError):
        return "its host name does not resolve"
    text = str(cause)
    found = re.search(r"\[Errno -?\d+\] ([^'\"\)]+)", text)
    if found:
        return found.group(1).strip().rstrip(".").lower()
    if isinstance(cause, NewConnectionError):  # a subclass of urllib3's TimeoutError
        return "the connection failed"
    if isinstance(cause, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S} s (connect) or {READ_TIMEOUT_S} s (read)"
    return _clean(text) or type(cause).__name__


def _clean(text: str) -> str:
    """One line, no trailing full stop, not endless."""
    line = " ".join(str(text).split()).rstrip(".")
    return line if len(line) <= 300 else line[:297] + "..."


def _sentence(exc: BaseException) -> str:
    return _clean(str(exc)) or type(exc).__name__


# --- the table -----------------------------------------------------------------------------


def energy_unit(joules: float) -> tuple[str, float]:
    """A unit for energies up to `joules`: J, kJ, MJ or GJ, and its size in joules."""
    for unit, size in (("GJ", 1e9), ("MJ", 1e6), ("kJ", 1e3)):
        if joules >= size:
            return unit, size
    return "J", 1.0


def duration(seconds: float | None) -> str:
    """42.0s, 12m34s, 3h04m."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h{minutes:02d}m"


def render_table(report: JobReport) -> str:
    """The report as text: a header line, one row per run, totals and the saving."""
    unit, size = energy_unit(max(report.total_energy_j, *(r.energy_j or 0 for r in report.rows)))

    def energy(value: float | None) -> str:
        return "-" if value is None else f"{value / size:,.2f}" if size > 1 else f"{value:,.0f}"

    lines = [*(_wrap(line) for line in _header(report).splitlines()), ""]
    columns = [
        "RUN",
        "BATCH",
        "LIMIT W",
        "RESULT",
        "EPOCHS",
        f"ENERGY {unit}",
        f"CUMULATIVE {unit}",
        "TIME",
        "METRIC",
        "STARTED (UTC)",
    ]
    right = {"RUN", "BATCH", "LIMIT W", "EPOCHS", f"ENERGY {unit}", f"CUMULATIVE {unit}"}
    right |= {"TIME", "METRIC"}
    table = [columns]
    for row in report.rows:
        table.append(
            [
                str(row.run),
                _batch(row, report.default_batch_size),
                _limit(row),
                row.result,
                "-" if row.epochs is None else str(row.epochs),
                energy(row.energy_j),
                energy(row.cumulative_energy_j),
                duration(row.seconds),
                "-" if row.metric is None else f"{row.metric:.4g}",
                _when(row.start_time),
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        cells = [
            c.rjust(w) if columns[i] in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if not report.rows:
        lines.append("(status.history lists no runs: spec.historyLimit is 0)")
    keys = []
    if report.default_batch_size is not None and any(
        r.batch_size == report.default_batch_size for r in report.rows
    ):
        keys.append(f"* the default batch size ({report.default_batch_size})")
    if any(r.power_limit_w is None and r.result != RUNNING for r in report.rows):
        keys.append("LIMIT W -: none recorded (observe mode, or a run without a report)")
    if keys:
        lines.append("; ".join(keys) + ".")
    lines.append("")
    lines += [_wrap(p) for p in _summary(report, energy, unit)]
    if report.carbon is not None:
        lines.append(_wrap(_carbon_line(report.carbon)))
    return "\n".join(lines) + "\n"


def _carbon_line(carbon: dict[str, Any]) -> str:
    """The carbon-aware runs against the same work without carbon awareness (docs/carbon.md)."""
    runs = int(carbon["runs"])
    text = (
        f"Carbon: {carbon['grams'] / 1000:,.2f} kg CO2 over {runs} carbon-aware "
        f"run{'' if runs == 1 else 's'}; the same work at kwatt's limit without carbon "
        f"awareness, over the same hours: {carbon['baselineGrams'] / 1000:,.2f} kg"
    )
    saved, added = carbon.get("savedPercent"), carbon.get("timeAddedPercent")
    if saved is not None:
        text += f", {abs(saved):.2f}% {'less' if saved >= 0 else 'more'} carbon"
    if added is not None:
        text += f", time {abs(added):.2f}% {'longer' if added >= 0 else 'shorter'}"
    return text + "."


def _header(report: JobReport) -> str:
    text = (
        f"TrainingJob {report.namespace}/{report.name}: {report.state}, "
        f"{report.runs_started} {_plural(report.runs_started, 'run')} started, "
        f"{report.runs_recorded} recorded."
    )
    gpu = report.gpu or {}
    if gpu.get("model"):
        text += f"\nGPU: {gpu['model']} x{gpu.get('count', 1)}"
        if gpu.get("minLimitWatts") and gpu.get("maxLimitWatts"):
            text += f", power limits {gpu['minLimitWatts']}-{gpu['maxLimitWatts']} W"
            if gpu.get("startLimitWatts") not in (None, gpu["maxLimitWatts"]):
                text += f", capped at {gpu['startLimitWatts']} W before kwatt"
        text += "."
    if report.objective is not None:
        text += "\n" + _objective_line(report.objective)
    return text


def _objective_line(objective: dict[str, Any]) -> str:
    """eta and beta as the runs use them, saying which came from the operator's defaults."""
    defaulted = set(objective.get("operatorDefaults") or ())
    parts = [
        f"{key} {objective[key]:g}" + (" (the operator's default)" if key in defaulted else "")
        for key in ("eta", "beta")
    ]
    return f"Objective: {parts[0]}, {parts[1]}."


def _summary(report: JobReport, energy: Any, unit: str) -> list[str]:
    out = [
        f"Total: {report.runs_recorded} recorded {_plural(report.runs_recorded, 'run')}, "
        f"{energy(report.total_energy_j)} {unit}, {duration(report.total_seconds)} of GPU time."
    ]
    if report.earlier_runs:
        limit = report.history_limit
        out[0] += (
            f" {report.earlier_runs} earlier {_plural(report.earlier_runs, 'run')} "
            f"({energy(report.earlier_energy_j)} {unit}) "
            f"{'is' if report.earlier_runs == 1 else 'are'} no longer listed in status.history"
            + (f" (spec.historyLimit {limit})" if limit is not None else "")
            + "; the totals and the cumulative energy include them."
        )
    gpu = report.gpu or {}
    capped = gpu.get("startLimitWatts") and gpu.get("startLimitWatts") != gpu.get("maxLimitWatts")
    default = f"batch size {report.default_batch_size or '(unknown)'} at " + (
        f"{report.max_limit_w} W, the limit the GPU had before kwatt (an admin's cap; its "
        f"highest is {gpu.get('maxLimitWatts')} W)"
        if capped
        else f"{report.max_limit_w} W, the GPU's highest power limit"
        if report.max_limit_w
        else "the GPU's highest power limit"
    )
    c = report.comparison
    if c is None:
        out.append(f"Default configuration: {default}.")
        if report.savings:
            s = report.savings
            out.append(
                f"Saving (status.savings, basis {s.get('basis', 'unknown')}): "
                f"{_pct(s.get('energyPercent'))} energy, {_time_change(s.get('timePercent'))} "
                "per run that reached the target."
            )
        else:
            out.append(
                "Saving: not known yet. No run at the default batch size has reached the "
                "target, so the default configuration's energy is neither measured nor "
                "estimated; the first such run gives it."
            )
        return out
    if c.basis == "measured":
        how = (
            f"measured: the mean of {c.default_runs} {_plural(c.default_runs, 'run')} that ran "
            "it and reached the target"
        )
    else:
        how = (
            f"estimated (kwatt never ran it to the target): from the power profiles of "
            f"{c.default_runs} default-size {_plural(c.default_runs, 'run')} that reached the "
            "target at a lower limit, their energy and time scaled by their per-step energy "
            "and time at the highest profiled limit"
        )
    out.append(
        f"Default configuration: {default}: {energy(c.default_energy_j)} {unit} and "
        f"{duration(c.default_seconds)} a run, {how}."
    )
    out.append(
        f"kwatt: {energy(c.energy_j)} {unit} and {duration(c.seconds)} a run, the mean of the "
        f"{c.runs} {_plural(c.runs, 'run')} that reached the target."
    )
    saved = report.energy_saved_j or 0.0
    text = (
        f"Saving ({c.basis}): {_pct(c.energy_percent)} energy per run "
        f"({'about ' if c.basis == 'estimated' else ''}{energy(abs(saved))} {unit} "
        f"{'saved' if saved >= 0 else 'more'} over those {c.runs} {_plural(c.runs, 'run')}), "
        f"{_time_change(c.time_percent)}."
    )
    all_runs = report.energy_percent_all_runs
    others = report.runs_recorded - c.runs
    if all_runs is not None and others > 0:
        text += (
            f" Counting the energy of all {report.runs_recorded} recorded runs, the {others} "
            f"that did not reach the target too: {_pct(all_runs)}."
        )
    out.append(text)
    return out


def _pct(value: Any) -> str:
    return "?" if not isinstance(value, int | float) else f"{value:.2f}%"


def _time_change(percent: Any) -> str:
    """timePercent is time saved: positive is faster."""
    if not isinstance(percent, int | float):
        return "time change unknown"
    if percent >= 0:
        return f"time {percent:.2f}% shorter"
    return f"time {-percent:.2f}% longer"


def _batch(row: RunRow, default: int | None) -> str:
    if row.batch_size is None:
        return "- "
    return f"{row.batch_size}*" if row.batch_size == default else f"{row.batch_size} "


def _limit(row: RunRow) -> str:
    if row.power_limit_w is not None:
        return str(row.power_limit_w)
    return "profiling" if row.result == RUNNING else "-"


def _when(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return stamp.replace("T", " ").removesuffix("Z")[:16]


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=WIDTH, subsequent_indent="  ", break_long_words=False)


# --- the chart -----------------------------------------------------------------------------

RESULT_COLOURS = {
    "reached": "tab:green",
    "stopped": "tab:orange",
    "exhausted": "tab:olive",
    "failed": "tab:red",
    "interrupted": "tab:red",
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        raise UsageError("--plot needs matplotlib: pip install 'kwatt[plot]'.") from None
    return plt


def write_chart(report: JobReport, path: Path) -> None:
    """A PNG: energy per recorded run (bars by result, the default configuration's energy a
    run as a line) and the cumulative energy of every recorded run."""
    plt = _pyplot()
    rows = report.recorded_rows
    unit, size = energy_unit(max(report.total_energy_j, 1.0))
    xs = list(range(len(rows)))
    labels = [str(r.run) for r in rows]
    fig, (per_run, cumulative) = plt.subplots(1, 2, figsize=(12, 4.5))
    seen: set[str] = set()
    for x, row in zip(xs, rows, strict=True):
        label = row.result if row.result not in seen else None
        seen.add(row.result)
        per_run.bar(
            x,
            (row.energy_j or 0.0) / size,
            color=RESULT_COLOURS.get(row.result, "tab:gray"),
            label=label,
        )
    c = report.comparison
    if c is not None:
        per_run.axhline(
            c.default_energy_j / size,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"default configuration ({c.basis})",
        )
        per_run.axhline(
            c.energy_j / size,
            color="tab:blue",
            linestyle=":",
            linewidth=1,
            label="kwatt, mean of runs that reached the target",
        )
    per_run.set_title("energy per run")
    per_run.set_ylabel(unit)
    cumulative.plot(xs, [(r.cumulative_energy_j or 0.0) / size for r in rows], marker="o")
    title = "cumulative energy, every recorded run"
    if report.earlier_runs:
        earlier = report.earlier_energy_j / size
        title += f"\n(from {report.earlier_runs} earlier runs' {earlier:.2f} {unit})"
    cumulative.set_title(title)
    cumulative.set_ylabel(unit)
    cumulative.set_ylim(bottom=0)
    for ax in (per_run, cumulative):
        ax.set_xlabel("run")
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
    if rows:
        top = max([(r.energy_j or 0.0) / size for r in rows] + [0.0])
        if c is not None:
            top = max(top, c.default_energy_j / size)
        per_run.set_ylim(0, (top or 1.0) * 1.45)  # room for the legend above the bars
        per_run.legend(fontsize="small", loc="upper left", ncol=2)
    headline = f"TrainingJob {report.namespace}/{report.name}"
    if c is not None:
        headline += f": {c.energy_percent:.2f}% energy saved per run ({c.basis})"
    fig.suptitle(headline)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"Cannot write the chart to {path}: {exc.strerror}.") from None
    finally:
        plt.close(fig)
