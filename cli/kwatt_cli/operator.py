"""`kwatt operator`: run the TrainingJob operator (kopf underneath), here or in a Pod.

The same command runs in the operator's image, in the demo and in the tests. In a
Pod it uses the Pod's ServiceAccount; elsewhere `--kubeconfig`, then KUBECONFIG, then
~/.kube/config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kwatt_cli.errors import UsageError

if TYPE_CHECKING:
    from kwatt_operator.spec import ObjectiveDefaults

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_RESOURCE_KEYS = ("requests", "limits", "claims")

HELP = (
    "Run the kwatt operator: every TrainingJob's recurrences as Jobs, with the batch size "
    "and power limit kwatt chose, learning from each run."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, default=None, help="cluster to manage")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; default: every namespace)",
    )
    parser.add_argument(
        "--sidecar-image",
        default=os.environ.get("KWATT_SIDECAR_IMAGE", "ghcr.io/kwatt/sidecar:0.1.0"),
        help="image of the sidecar injected into each run (env KWATT_SIDECAR_IMAGE)",
    )
    parser.add_argument(
        "--sidecar-image-pull-policy",
        default=os.environ.get("KWATT_SIDECAR_IMAGE_PULL_POLICY") or None,
        choices=PULL_POLICIES,
        help="imagePullPolicy of the injected sidecar (default: Kubernetes' own for its tag)",
    )
    parser.add_argument(
        "--sidecar-resources",
        default=os.environ.get("KWATT_SIDECAR_RESOURCES") or None,
        metavar="JSON",
        help="the injected sidecar's resources as a JSON object, e.g. "
        '\'{"requests":{"cpu":"50m","memory":"64Mi"}}\' (env KWATT_SIDECAR_RESOURCES; '
        "default: those requests)",
    )
    parser.add_argument(
        "--sidecar-state-dir",
        default=None,
        help="node folder (hostPath) where sidecars keep power-limit restore records",
    )
    parser.add_argument(
        "--sidecar-port",
        type=int,
        default=None,
        help="localhost port of the sidecar's protocol server in each run's Pod (default 8931)",
    )
    parser.add_argument(
        "--sidecar-metrics-port",
        type=int,
        default=None,
        help="port of each sidecar's /metrics (default 8932)",
    )
    parser.add_argument(
        "--default-eta",
        type=float,
        default=os.environ.get("KWATT_DEFAULT_ETA") or None,
        metavar="ETA",
        help="eta of TrainingJobs whose spec.objective leaves it out, 0 to 1 "
        "(env KWATT_DEFAULT_ETA; default 0.5)",
    )
    parser.add_argument(
        "--default-beta",
        type=float,
        default=os.environ.get("KWATT_DEFAULT_BETA") or None,
        metavar="BETA",
        help="beta of TrainingJobs whose spec.objective leaves it out, above 1 "
        "(env KWATT_DEFAULT_BETA; default 2)",
    )
    parser.add_argument("--workers", type=int, default=4, help="TrainingJobs reconciled at once")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8000,
        help="serve Prometheus metrics on this port (0: pick one; -1: off; default 8000)",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="address for the metrics (default 127.0.0.1; the chart sets 0.0.0.0 in its Pod)",
    )
    parser.add_argument(
        "--liveness",
        default="",
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz (default: off)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at debug level")


def parse_resources(text: str) -> dict[str, Any]:
    """`--sidecar-resources`: a container's resources as a JSON object, checked for shape."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--sidecar-resources must be a JSON object: {exc}.") from exc
    if not isinstance(value, dict):
        raise UsageError(f"--sidecar-resources must be a JSON object, not {text!r}.")
    unknown = sorted(set(value) - set(_RESOURCE_KEYS))
    if unknown:
        raise UsageError(
            f"--sidecar-resources may have only {', '.join(_RESOURCE_KEYS)}, "
            f"not {', '.join(unknown)}."
        )
    for key in ("requests", "limits"):
        amounts = value.get(key, {})
        if not isinstance(amounts, dict) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in amounts.values()
        ):
            raise UsageError(
                f"--sidecar-resources' {key} must map resource names to quantities "
                '(e.g. {"cpu": "50m"}).'
            )
    return value


def objective_defaults(args: argparse.Namespace) -> ObjectiveDefaults:
    """`--default-eta` and `--default-beta` as the operator's ObjectiveDefaults, checked with
    the CRD's bounds for spec.objective (eta from 0 to 1, beta above 1)."""
    from kwatt_operator import spec

    eta = spec.DEFAULT_ETA if args.default_eta is None else float(args.default_eta)
    beta = spec.DEFAULT_BETA if args.default_beta is None else float(args.default_beta)
    if not 0.0 <= eta <= 1.0:
        raise UsageError(f"--default-eta must be a number from 0 to 1, not {eta}.")
    if not 1.0 < beta < float("inf"):
        raise UsageError(f"--default-beta must be a finite number above 1, not {beta}.")
    return spec.ObjectiveDefaults(eta, beta)


def run(args: argparse.Namespace) -> int:
    if args.kubeconfig is not None:
        if not args.kubeconfig.is_file():
            raise UsageError(f"The kubeconfig {args.kubeconfig} does not exist.")
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers must be between 1 and 64, not {args.workers}.")
    if not -1 <= args.metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be -1 (off) or 0 to 65535, not {args.metrics_port}.")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for noisy in ("kopf.objects", "kopf._core", "aiohttp", "kubernetes", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    import kopf

    from kwatt_operator.handlers import OperatorConfig, register
    from kwatt_operator.jobs import SidecarSettings

    options: dict[str, Any] = {"image": args.sidecar_image}
    if args.sidecar_image_pull_policy:
        options["image_pull_policy"] = args.sidecar_image_pull_policy
    if args.sidecar_resources:
        options["resources"] = parse_resources(args.sidecar_resources)
    if args.sidecar_state_dir:
        options["state_dir_host_path"] = args.sidecar_state_dir
    for flag, key in (("sidecar_port", "port"), ("sidecar_metrics_port", "metrics_port")):
        value = getattr(args, flag)
        if value is not None:
            if not 1 <= value <= 65535:
                name = "--" + flag.replace("_", "-")
                raise UsageError(f"{name} must be between 1 and 65535, not {value}.")
            options[key] = value
    if options.get("port") is not None and options.get("port") == options.get("metrics_port"):
        raise UsageError("--sidecar-port and --sidecar-metrics-port must differ.")
    options["objective_defaults"] = objective_defaults(args)
    sidecar = SidecarSettings(**options)
    from kwatt_operator.metrics import OperatorMetrics

    metrics = OperatorMetrics() if args.metrics_port >= 0 else None
    stop_metrics = None
    if metrics is not None:
        try:
            stop_metrics = metrics.serve(args.metrics_address, args.metrics_port)
        except OSError as exc:
            raise UsageError(
                f"The metrics could not be served on {args.metrics_address}:{args.metrics_port}: "
                f"{exc.strerror}."
            ) from exc
        logging.getLogger("kwatt_operator").info(
            "Metrics on http://%s:%s/metrics.", metrics.address, metrics.port
        )
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    config = OperatorConfig(sidecar=sidecar, workers=args.workers, metrics=metrics)
    register(registry, config)
    namespaces = list(args.namespace)
    try:
        asyncio.run(
            kopf.operator(
                registry=registry,
                standalone=True,
                namespaces=namespaces,
                clusterwide=not namespaces,
                liveness_endpoint=args.liveness or None,
            )
        )
    except KeyboardInterrupt:
        return 130
    finally:
        if stop_metrics is not None:
            stop_metrics()
    return 0
