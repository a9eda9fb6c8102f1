"""Mutation testing of kwatt's product code: `make mutation` (see docs/testing.md).

For each part (core, client, sidecar, operator) this lays out a stage under
`.mutation/<part>/` that mutmut 3 understands (one package under `src/`, a snapshot of
the tests and of the data files they read), picks a deterministic sample of the part's
mutants, runs them with mutmut against the part's own fast tests, and prints the
mutation score per file and overall and every mutant that no test caught.

mutmut expects one source root named `src`; kwatt has one root per part (`core/`,
`operator/`...), and `operator/` must never be importable as a top-level package, so
each part gets its own stage and its own mutmut run rather than one run over the repo.

The sample: a mutant is run when the SHA-256 of its name (e.g.
`kwatt_core.cost.xǁCostModelǁcost__mutmut_3`) falls below the part's rate, so the same
code always gives the same sample, and an edit to one function changes only which of
that function's mutants are run.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOOKS = REPO / "tools" / "mutation_hooks"
WORK = REPO / ".mutation"
# Data the tests read through paths relative to the repository root.
DATA = ("traces", "crds", "examples", "operator/rbac", "benchmarks")


@dataclass(frozen=True)
class Part:
    root: str  # the part's folder in the repository
    package: str
    tests: tuple[str, ...]  # what pytest runs for each mutant
    rate: float  # the share of its mutants run by default
    deselect: dict[str, str] = field(default_factory=dict)  # node id -> why
    keep: dict[str, str] = field(default_factory=dict)  # file never mutated -> why
    # Test files that need the cluster and still run under mutation, against one sandbox
    # started for the part, but only for the mutants of these modules: the thin shell
    # around the API server, which only tests against a real one can check.
    cluster_tests: tuple[str, ...] = ()
    cluster_modules: tuple[str, ...] = ()


# Measured on 2 cores, two mutants at a time (docs/testing.md): a mutant costs about 1.3 s
# of wall time in core, 0.5 s in client, 1.2 s in operator and 3.3 s in sidecar, whose tests
# run the sidecar as a process; a part's stats and clean runs add about a minute (core's
# four). These rates keep a whole `make mutation` near 25 minutes on 2 otherwise idle cores
# (24 in the last run). Each part runs all of its
# test folder; tests that need the sandbox's Kubernetes control plane (the `cluster`
# fixture) are deselected by the plugin, which leaves the operator's pure tests.
PARTS: dict[str, Part] = {
    "core": Part(
        "core",
        "kwatt_core",
        ("tests/core",),
        # 2.5% of about 6,900 mutants: as many as 4% ran before core grew by half (the
        # carbon objective, the noise model), since its tests make its mutants the dearest.
        rate=0.025,
        keep={
            "core/kwatt_core/sim/zeus_runner.py": (
                "a script that Zeus's own virtual environment runs with `python -I`, "
                "where mutmut's trampolines cannot be imported"
            ),
        },
    ),
    "client": Part(
        "client",
        "kwatt_client",
        ("tests/client",),
        rate=0.2,
        deselect={
            "tests/client/test_client.py::test_imports_only_the_standard_library": (
                "runs `python -I -S`, without site-packages, where the mutated modules' "
                "import of mutmut's trampoline cannot be found"
            ),
        },
    ),
    "sidecar": Part("sidecar", "kwatt_sidecar", ("tests/sidecar",), rate=0.02),
    "operator": Part(
        "operator",
        "kwatt_operator",
        ("tests/operator",),
        rate=0.035,
        cluster_tests=(
            "tests/operator/test_operator_kube.py",
            "tests/operator/test_operator_kopf.py",
        ),
        cluster_modules=("kwatt_operator.kube", "kwatt_operator.handlers"),
    ),
}

# Every file gets at least this many of its mutants run, whatever the rate (`pick`).
MIN_PER_FILE = 10
DEF = ("def ", "async def ")
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
UNDETECTED = {"survived", "no tests"}


@dataclass
class Survivor:
    file: str
    line: int
    function: str
    status: str
    change: str
    name: str


@dataclass
class FileResult:
    file: str
    generated: int = 0
    counts: Counter[str] = field(default_factory=Counter)


@dataclass
class PartResult:
    part: str
    seconds: float = 0.0
    files: list[FileResult] = field(default_factory=list)
    survivors: list[Survivor] = field(default_factory=list)


def score(counts: Counter[str]) -> str:
    detected = sum(counts[s] for s in DETECTED)
    judged = detected + sum(counts[s] for s in UNDETECTED)
    return f"{100 * detected / judged:5.1f}%" if judged else "    -"


def _copytree(src: Path, dst: Path) -> None:
    shutil.copytree(
        src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
    )


def stage(part: Part, only: list[str]) -> Path:
    """A fresh stage: a snapshot of the part's package under src/, the tests and the data,
    the mutmut configuration, and mutants/ laid out ahead so that symlinks stay symlinks."""
    where = WORK / part.root
    if where.exists():
        shutil.rmtree(where)
    package = REPO / part.root / part.package
    _copytree(package, where / "src" / part.package)
    _copytree(package, where / "mutants" / "src" / part.package)
    _copytree(REPO / "tests", where / "tests")
    for data in DATA:
        _copytree(REPO / data, where / data)
        _copytree(REPO / data, where / "mutants" / data)
    only_mutate = [f"src/{pattern.removeprefix(part.root + '/')}" for pattern in only]
    do_not_mutate = [f"src/{path.removeprefix(part.root + '/')}" for path in part.keep]
    args = ["-p", "kwatt_mutation_plugin", "-p", "no:cacheprovider"]
    (where / "pyproject.toml").write_text(
        "# Written by tools/mutation.py for one part's mutmut run.\n"
        "[tool.mutmut]\n"
        f"source_paths = {json.dumps(['src/' + part.package])}\n"
        f"only_mutate = {json.dumps(only_mutate)}\n"
        f"do_not_mutate = {json.dumps(do_not_mutate)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(list(part.tests))}\n"
        f"pytest_add_cli_args = {json.dumps(args)}\n"
        "use_git_change_detection = false\n"
        # A mutant's tests may take (their time as mutmut measured it + 10 s) x 3: mutmut's
        # figure leaves out fixture setup (the benchmark's claims take 6 s to set up), and
        # its default (x 15) spends minutes on each mutant that makes a loop endless.
        "timeout_constant = 10.0\n"
        "timeout_multiplier = 3.0\n"
        "use_setproctitle = false\n"
        "\n[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        'addopts = "-q"\n'
    )
    return where


def _position(name: str) -> int:
    """A mutant's place in the sampling order: the first 8 bytes of the SHA-256 of its name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def in_sample(name: str, rate: float) -> bool:
    """Whether a mutant is in the sample: its position, read as a fraction of 2^64, falls
    below the rate. Each mutant's fate depends on its name alone, so an edit elsewhere
    never changes which of a function's mutants are run."""
    return _position(name) < rate * 2**64


def pick(generated: dict[str, list[str]], rate: float, minimum: int) -> list[str]:
    """The sample: every mutant `in_sample` at `rate`, and, in a file where that leaves fewer
    than `minimum`, that file's first `minimum` in the same order (all, if it has fewer).
    A small file at a rate of a few percent would otherwise have no mutant run and no score;
    the top-up is the same mutants run after run, and a lower rate's sample is still part of
    a higher one's."""
    names: list[str] = []
    for file_names in generated.values():
        chosen = [n for n in file_names if in_sample(n, rate)]
        if len(chosen) < minimum:
            first = set(sorted(file_names, key=_position)[:minimum])
            chosen = [n for n in file_names if n in first]
        names.extend(chosen)
    return names


def enumerate_mutants(where: Path) -> dict[str, list[str]]:
    """Every mutant mutmut will generate, by source path (relative to the stage)."""
    from mutmut.configuration import reset_config
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.file_utils import walk_mutatable_files
    from mutmut.utils.format_utils import get_mutant_name

    os.chdir(where)
    reset_config()
    mutants: dict[str, list[str]] = {}
    for path in sorted(walk_mutatable_files()):
        mutated = mutate_file_contents(str(path), path.read_text())
        mutants[str(path)] = [get_mutant_name(path, name) for name in mutated.mutant_names]
    os.chdir(REPO)
    return mutants


def run_mutmut(
    where: Path, part: Part, names: list[str], jobs: int, extra: dict[str, str] | None = None
) -> None:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(where / "mutants" / "src"), str(HOOKS), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["KWATT_MUTATION_HITS"] = str(where / "hits.txt")
    env["KWATT_MUTATION_DURATIONS"] = str(where / "durations.json")
    env["KWATT_MUTATION_DESELECT"] = "\n".join(part.deselect)
    env["KWATT_MUTATION_CLUSTER_TESTS"] = "\n".join(part.cluster_tests)
    env["KWATT_MUTATION_CLUSTER_MODULES"] = "\n".join(part.cluster_modules)
    env.pop("MUTANT_UNDER_TEST", None)
    mutmut = Path(sys.executable).parent / "mutmut"
    log = where / "mutmut.log"
    with log.open("w") as out:
        done = subprocess.run(
            [str(mutmut), "run", "--max-children", str(jobs), *names],
            cwd=where,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-40:]
        sys.exit(f"mutmut failed on {part.root} (exit {done.returncode}):\n" + "\n".join(tail))


@contextmanager
def cluster_for(part: Part, names: list[str]) -> Iterator[dict[str, str]]:
    """The environment that points the part's cluster tests at a cluster: the one in
    KWATT_TEST_KUBECONFIG if set, else a sandbox started here for the whole part (about
    5 s), stopped after. Nothing when no sampled mutant is in a module they judge."""
    modules = tuple(f"{m}." for m in part.cluster_modules)
    if not part.cluster_tests or not any(n.startswith(modules) for n in names):
        yield {}
        return
    external = os.environ.get("KWATT_TEST_KUBECONFIG")
    if external:
        yield {"KWATT_TEST_KUBECONFIG": external}
        return
    from kwatt_sandbox.testing import running_sandbox

    where = WORK / part.root / "sandbox"
    with running_sandbox(where, stop_with_parent=True) as cluster:
        # The ready file too: tests can read the sandbox's audit log (tests/conftest.py).
        ready = where / "ready.json"
        yield {
            "KWATT_TEST_KUBECONFIG": str(cluster.kubeconfig),
            "KWATT_TEST_SANDBOX_STATE": str(ready),
        }


def _def_line(source: str, function: str, cls: str | None) -> int | None:
    tree = ast.parse(source)
    body: list[ast.stmt] = tree.body
    if cls is not None:
        owners = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
        if not owners:
            return None
        body = owners[0].body
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            return node.lineno
    return None


def _changes(orig: str, mutant: str) -> Iterator[tuple[int, str]]:
    """(line index in `orig`, 'old -> new') for each changed stretch of lines."""
    a, b = orig.splitlines(), mutant.splitlines()
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old = " / ".join(line.strip() for line in a[i1:i2]) or "(nothing)"
        new = " / ".join(line.strip() for line in b[j1:j2]) or "(nothing)"
        yield i1, f"{old}  ->  {new}"


def describe(where: Path, part: Part, path: str, name: str, status: str) -> Survivor:
    import libcst as cst
    from mutmut.mutation.diff_apply import (
        read_functions_from_index,
        read_mutant_function,
        read_mutants_module,
        read_original_function,
    )
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    function, cls = orig_function_and_class_names_from_key(name)
    qualified = f"{cls}.{function}" if cls else function
    repo_file = f"{part.root}/{path.removeprefix('src/')}"
    functions = read_functions_from_index(name, path)
    if functions is None:
        module = read_mutants_module(path)
        functions = (read_original_function(module, name), read_mutant_function(module, name))
    orig, mutant = (cst.Module(body=[f]).code.strip("\n") for f in functions)
    def_line = _def_line((where / path).read_text(), function, cls)
    heads = [i for i, text in enumerate(orig.splitlines()) if text.lstrip().startswith(DEF)]
    def_index = heads[0] if heads else 0
    changes = list(_changes(orig, mutant)) or [(def_index, "(no textual change)")]
    line = def_line + changes[0][0] - def_index if def_line is not None else 0
    text = "; ".join(c for _, c in changes)
    return Survivor(repo_file, line, qualified, status, text, name)


def collect(
    where: Path, part: Part, generated: dict[str, list[str]], sampled: set[str]
) -> PartResult:
    from mutmut.configuration import reset_config
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    os.chdir(where)
    reset_config()
    result = PartResult(part.root)
    try:
        for path, names in generated.items():
            data = SourceFileMutationData(path=path)
            data.load()
            file = FileResult(f"{part.root}/{path.removeprefix('src/')}", generated=len(names))
            for name, code in sorted(data.exit_code_by_key.items()):
                if name not in sampled:
                    continue
                status = status_by_exit_code[code]  # "not checked" if mutmut skipped it
                file.counts[status] += 1
                if status not in DETECTED | {"not checked"}:
                    result.survivors.append(describe(where, part, path, name, status))
            result.files.append(file)
    finally:
        os.chdir(REPO)
    return result


def table(results: list[PartResult]) -> str:
    statuses = ["killed", "timeout", "survived", "no tests"]
    head = f"{'file':<44} {'mutants':>7} {'run':>5} " + " ".join(f"{s:>8}" for s in statuses)
    lines = [head + f" {'other':>6} {'score':>7}", "-" * (len(head) + 15)]
    total: Counter[str] = Counter()
    generated = 0

    def row(label: str, gen: int, counts: Counter[str]) -> str:
        other = sum(v for k, v in counts.items() if k not in statuses)
        cells = " ".join(f"{counts[s]:>8}" for s in statuses)
        run = sum(counts.values())
        return f"{label:<44} {gen:>7} {run:>5} {cells} {other:>6} {score(counts):>7}"

    for result in results:
        part_counts: Counter[str] = Counter()
        for file in result.files:
            if file.generated:
                lines.append(row(file.file, file.generated, file.counts))
            part_counts += file.counts
        part_generated = sum(f.generated for f in result.files)
        label = f"{result.part} (all, {result.seconds:.0f} s)"
        lines.append(row(label, part_generated, part_counts))
        lines.append("")
        total += part_counts
        generated += part_generated
    lines.append(row("overall", generated, total))
    return "\n".join(lines)


def survivors_text(results: list[PartResult]) -> str:
    out: list[str] = []
    for result in results:
        for s in sorted(result.survivors, key=lambda s: (s.file, s.line, s.name)):
            out.append(f"{s.file}:{s.line}: [{s.status}] {s.function}: {s.change}  ({s.name})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"{', '.join(PARTS)}; default all")
    parser.add_argument("--rate", type=float, help="share of the mutants run (1 = all)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GLOB",
        help="mutate only these files, e.g. core/kwatt_core/cost.py (repeatable)",
    )
    parser.add_argument(
        "--min-per-file",
        type=int,
        default=MIN_PER_FILE,
        metavar="N",
        help=f"run at least N mutants of every file, all if it has fewer (default {MIN_PER_FILE})",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--survivors",
        type=Path,
        default=WORK / "survivors.txt",
        help="where to write the list of surviving mutants",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    parts = [PARTS[p] for p in (args.parts or PARTS)]

    results: list[PartResult] = []
    started = time.monotonic()
    for part in parts:
        only = [g for g in args.only if g.startswith(f"{part.root}/")]
        if args.only and not only:
            continue
        t0 = time.monotonic()
        where = stage(part, only)
        generated = enumerate_mutants(where)
        rate = part.rate if args.rate is None else args.rate
        names = pick(generated, rate, args.min_per_file)
        total = sum(len(n) for n in generated.values())
        print(
            f"{part.root}: {len(names)} of {total} mutants (rate {rate:g}, at least "
            f"{args.min_per_file} a file), "
            f"{args.jobs} jobs; log in {where.relative_to(REPO)}/mutmut.log",
            flush=True,
        )
        for test, why in part.deselect.items():
            print(f"{part.root}: not run under mutation: {test}: {why}")
        for path, why in part.keep.items():
            print(f"{part.root}: not mutated: {path}: {why}")
        if part.cluster_tests:
            print(
                f"{part.root}: run against a sandbox, for the mutants of "
                f"{', '.join(part.cluster_modules)} only: {', '.join(part.cluster_tests)}"
            )
        if names:
            with cluster_for(part, names) as extra:
                run_mutmut(where, part, names, args.jobs, extra)
        result = collect(where, part, generated, set(names))
        result.seconds = time.monotonic() - t0
        results.append(result)
        print(f"{part.root}: done in {result.seconds:.0f} s", flush=True)

    print()
    print(table(results))
    text = survivors_text(results)
    count = len(text.splitlines()) if text else 0
    print(f"\nMutants no test caught ({count}; file:line: [status] function: old -> new):")
    print(text or "(none)")
    args.survivors.parent.mkdir(parents=True, exist_ok=True)
    args.survivors.write_text(text + "\n" if text else "")
    print(f"\nWritten to {args.survivors}; whole run {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
