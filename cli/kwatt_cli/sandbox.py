"""`kwatt sandbox`: run the sandbox cluster's API server in the foreground.

The sandbox is a Kubernetes API emulator for tests and demos; production is a
real cluster. This command starts it on 127.0.0.1, writes a kubeconfig that
kubectl, kopf and the `kubernetes` client can use, and stops on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from kwatt_cli.errors import UsageError

if TYPE_CHECKING:
    from kwatt_sandbox.nodes import NodeSpec
    from kwatt_sandbox.server import SandboxServer

HELP = (
    "Run the sandbox cluster: a local Kubernetes API emulator for tests and demos "
    "(production is a real cluster). Serves plain HTTP on 127.0.0.1 and writes a "
    "kubeconfig for kubectl and operators."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        required=True,
        type=Path,
        help="where to write the kubeconfig that points at the sandbox (replaced if present)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: pick a free one)"
    )
    parser.add_argument(
        "--history",
        type=int,
        default=5000,
        help="watch events kept for resuming watches; older resourceVersions get 410 Gone",
    )
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME[=MODELxCOUNT]",
        help="add a simulated node that runs pods as local processes, e.g. --node gpu-0=v100x2 "
        "--node cpu-0 (repeatable; without nodes the sandbox is a bare API server)",
    )
    parser.add_argument(
        "--gpu-dir",
        type=Path,
        default=None,
        help="where the simulated GPUs keep their state (default: a temporary folder)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    port: int = args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"The port must be between 0 and 65535, not {port}.")
    if args.history < 1:
        raise UsageError(f"The watch history must keep at least 1 event, not {args.history}.")
    kubeconfig: Path = args.kubeconfig
    if kubeconfig.is_dir():
        raise UsageError(f"The kubeconfig path {kubeconfig} is a directory; give a file name.")
    nodes = _nodes(args.node)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(port, kubeconfig, args.history, nodes, args.gpu_dir))
    except OSError as exc:
        raise UsageError(
            f"The sandbox could not listen on 127.0.0.1:{port}: {exc.strerror}."
        ) from exc
    return 0


def _nodes(options: list[str]) -> list[NodeSpec]:
    from kwatt_sandbox.nodes import parse_node_option

    nodes = []
    for option in options:
        try:
            nodes.append(parse_node_option(option))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"The node {duplicates[0]} is given more than once.")
    return nodes


async def _serve(
    port: int, kubeconfig: Path, history: int, nodes: list[NodeSpec], gpu_dir: Path | None
) -> None:
    import tempfile

    from kwatt_sandbox.gpu.provider import SimulatedGpuProvider
    from kwatt_sandbox.server import SandboxConfig, SandboxServer

    with tempfile.TemporaryDirectory(prefix="kwatt-gpus-") as scratch:
        # GPU nodes get simulated GPUs whose speed and power follow the traces.
        provider = SimulatedGpuProvider(gpu_dir or Path(scratch))
        config = SandboxConfig(port=port, history_size=history, nodes=nodes, gpu_provider=provider)
        await _run_server(SandboxServer(config), kubeconfig)


async def _run_server(server: SandboxServer, kubeconfig: Path) -> None:
    from kwatt_sandbox.kubeconfig import write_kubeconfig

    await server.start()
    try:
        write_kubeconfig(kubeconfig, server.url)
    except OSError as exc:
        await server.stop()
        raise UsageError(
            f"The kubeconfig {kubeconfig} could not be written: {exc.strerror}."
        ) from exc
    logging.getLogger("kwatt_sandbox").info(
        "Kubeconfig written to %s; stop with Ctrl-C.", kubeconfig
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
        logging.getLogger("kwatt_sandbox").info("Sandbox cluster stopped.")
