"""`kwatt sandbox`: run the sandbox cluster in the foreground.

The sandbox is a test and demo harness: a real Kubernetes control plane (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, built once per machine
from their Go modules) on 127.0.0.1, with kwatt's simulated nodes and GPUs.
Production is a real cluster. This command writes an admin kubeconfig that
kubectl, kopf and the `kubernetes` client can use, and stops everything it
started on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kwatt_cli.errors import UsageError

if TYPE_CHECKING:
    from kwatt_sandbox.cluster import Sandbox
    from kwatt_sandbox.controlplane.build import Binaries
    from kwatt_sandbox.nodes import NodeSpec

HELP = (
    "Run the sandbox cluster: a real Kubernetes control plane on 127.0.0.1 with "
    "simulated GPU nodes, for tests and demos (production is a real cluster). "
    "Writes an admin kubeconfig for kubectl and operators."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        required=True,
        type=Path,
        help="where to write the admin kubeconfig (replaced if present)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="kube-apiserver's port on 127.0.0.1 (default 0: pick a free one)",
    )
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME[=MODELxCOUNT]",
        help="a simulated node that runs pods as local processes, e.g. --node gpu-0=v100x2 "
        "--node cpu-0 (repeatable; default: cpu-0 and gpu-0=v100x2)",
    )
    parser.add_argument(
        "--proxy-kubeconfig",
        type=Path,
        default=None,
        help="also write a kubeconfig that goes through the fault-injection proxy",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write the cluster's addresses here as JSON once the nodes are registered",
    )
    parser.add_argument(
        "--gpu-dir",
        type=Path,
        default=None,
        help="where the simulated GPUs keep their state (default: in the sandbox's folder)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="keep the cluster's state, certificates and logs here (default: a temporary "
        "folder, removed at exit)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at debug level")


def run(args: argparse.Namespace) -> int:
    port: int = args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"The port must be between 0 and 65535, not {port}.")
    for option in ("kubeconfig", "proxy_kubeconfig", "ready_file"):
        path = getattr(args, option)
        if path is not None and path.is_dir():
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"The {flag} path {path} is a directory; give a file name.")
    nodes = _nodes(args.node)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for noisy in ("aiohttp", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from kwatt_sandbox.controlplane.build import BuildError, ensure_binaries
    from kwatt_sandbox.nodes.shim import namespaces_problem

    problem = namespaces_problem()
    if problem is not None:
        raise UsageError(problem)
    try:
        binaries = ensure_binaries(sys.stderr)
    except BuildError as exc:
        raise UsageError(str(exc)) from exc
    return asyncio.run(_serve(args, binaries, nodes))


def _nodes(options: list[str]) -> list[NodeSpec]:
    from kwatt_core.sim.trace import available_gpus
    from kwatt_sandbox.cluster import default_nodes
    from kwatt_sandbox.gpu.provider import default_trace_dir
    from kwatt_sandbox.nodes import parse_node_option

    if not options:
        return default_nodes()
    known = available_gpus(default_trace_dir())
    nodes = []
    for option in options:
        try:
            nodes.append(parse_node_option(option, known))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"The node {duplicates[0]} is given more than once.")
    return nodes


async def _serve(args: argparse.Namespace, binaries: Binaries, nodes: list[NodeSpec]) -> int:
    from kwatt_sandbox.cluster import HARNESS_NOTICE, Sandbox, SandboxConfig
    from kwatt_sandbox.controlplane.cluster import ControlPlaneError

    logger = logging.getLogger("kwatt_sandbox")
    config = SandboxConfig(nodes=nodes, port=args.port, gpu_dir=args.gpu_dir, directory=args.dir)
    sandbox = Sandbox(binaries, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        logger.info(HARNESS_NOTICE)
        starting = loop.create_task(sandbox.start())
        stopped = loop.create_task(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            return 130
        stopped.cancel()
        try:
            starting.result()
        except ControlPlaneError as exc:
            raise UsageError(f"The sandbox cluster did not start: {exc}") from exc
        _write_files(sandbox, args)
        logger.info(
            "Kubeconfig written to %s (try: KUBECONFIG=%s kubectl get nodes); stop with Ctrl-C.",
            args.kubeconfig,
            args.kubeconfig,
        )
        failed = loop.create_task(sandbox.wait_failed())
        stopped = loop.create_task(stop.wait())
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if failed.done():
            logger.error("%s", failed.result())
            return 1
        failed.cancel()
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await sandbox.stop()
        logger.info("Sandbox cluster stopped.")


def _write_files(sandbox: Sandbox, args: argparse.Namespace) -> None:
    try:
        sandbox.write_kubeconfig(args.kubeconfig)
        if args.proxy_kubeconfig is not None:
            sandbox.write_kubeconfig(args.proxy_kubeconfig, through_proxy=True)
        if args.ready_file is not None:
            sandbox.write_state(args.ready_file)
    except OSError as exc:
        raise UsageError(f"A file could not be written: {exc.strerror} ({exc.filename}).") from exc
