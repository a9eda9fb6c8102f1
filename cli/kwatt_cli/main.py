"""Dispatch `kwatt <subcommand>` to the module that implements it.

Subcommand modules are imported lazily so that `kwatt bench` never pulls in
Kubernetes libraries and a missing optional extra is reported as a sentence.
Each module exposes `HELP`, `add_arguments(parser)` and `run(args) -> int`.

The same entry point is installed as `kubectl-kwatt`, so that `kubectl kwatt report NAME`
works: kubectl runs the first `kubectl-kwatt` on PATH with every argument after `kwatt`,
flags included and unparsed (kubectl's own flags cannot come before a plugin's name), and
its environment, KUBECONFIG included.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from kwatt_cli.errors import CommandError, UsageError

# subcommand -> (module, one-line help, extra that provides its dependencies)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("kwatt_cli.bench", "Compare batch-size policies on Zeus traces.", "core"),
    "operator": (
        "kwatt_cli.operator",
        "Run the TrainingJob operator (kopf) against a cluster.",
        "operator",
    ),
    "sandbox": (
        "kwatt_cli.sandbox",
        "Run the sandbox cluster: real control plane, simulated GPU nodes (tests, demos).",
        "sandbox",
    ),
    "demo": (
        "kwatt_cli.demo",
        "Run kwatt end to end on the sandbox cluster: Helm install, two TrainingJobs, savings.",
        "all,plot",
    ),
    "report": (
        "kwatt_cli.report",
        "Show a TrainingJob's runs, energy and saving against the default configuration.",
        "operator",
    ),
}


def _load(name: str) -> ModuleType:
    module, _, extra = SUBCOMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        raise UsageError(
            f"'kwatt {name}' needs {missing}, which is not installed: pip install 'kwatt[{extra}]'."
        ) from exc


def main(argv: Sequence[str] | None = None, prog: str = "kwatt") -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=prog, description="kwatt: less GPU energy for recurring training jobs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text, _) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not args_list or args_list[0] not in SUBCOMMANDS:
        parser.parse_args(args_list or ["--help"])
        return 2
    name = args_list[0]
    try:
        module = _load(name)
        sub_parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=module.HELP)
        module.add_arguments(sub_parser)
        args = sub_parser.parse_args(args_list[1:])
        result: int = module.run(args)
        return result
    except UsageError as exc:
        print(f"{prog} {name}: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"{prog} {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def kubectl_plugin() -> int:
    """`kubectl-kwatt`: kubectl's plugin for `kubectl kwatt report NAME` (and the rest)."""
    return main(prog="kubectl kwatt")


if __name__ == "__main__":
    sys.exit(main())
