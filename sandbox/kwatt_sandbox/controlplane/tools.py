"""Build the Helm chart's Go tools once per machine, into the same cache as the control plane.

The chart's tests (tests/chart) need `helm` (3 and 4), `kubecheck` (kwatt's own strict,
offline check of Kubernetes objects against the API types of the oldest Kubernetes the chart
supports) and `prometheus` (the server the Grafana dashboard's queries are run against). As
with the control plane (build.py), there is one way to get them: compile them with the
machine's Go from small tools modules committed under `sandbox/controlplane/` (`helm3`,
`helm4`, `prometheus`: a go.mod and go.sum each, with a `tool` line; `kubecheck`: its main.go
too), so nothing but Go modules is ever downloaded. Prometheus is built with the build tag
`remove_all_sd` (its own switch that leaves out every service-discovery plugin but the file
and HTTP ones: the test scrapes static targets), which roughly halves its build. Each lands in
`${KWATT_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/kwatt}/tools/<key>/bin/`, the key naming the
tool, its version, the Go version and platform and a hash of its module's files and build
recipe; a build goes to a temporary folder renamed into place when done, under a lock.

`python -m kwatt_sandbox.controlplane.tools [--force] [--print-path NAME] [NAME...]` builds
them (all four by default); `make helm` runs it for the Helm tools, `make prometheus` for
Prometheus.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from kwatt_sandbox.controlplane import build
from kwatt_sandbox.controlplane.build import BuildError, GoMissingError

RECORD = build.RECORD  # beside bin/: how long the build took


@dataclass(frozen=True)
class Tool:
    """One Go program built from a tools module in sandbox/controlplane/<module>."""

    name: str  # what callers ask for: helm3, helm4, kubecheck, prometheus
    module: str  # the folder under sandbox/controlplane
    binary: str  # the executable's name in bin/
    target: str  # the package to build
    version_of: str  # the module whose required version names the tool's version
    tags: tuple[str, ...] = ()  # Go build tags

    def ldflags(self, go_mod: str) -> str:
        """`-s -w` plus the version stamps the tool's own release build sets."""
        flags = ["-s", "-w"]
        version = _required_version(go_mod, self.version_of, self.module)
        if self.name == "helm3":
            # Helm 3 takes its default Kubernetes version (for `helm template` and lint's
            # deprecation checks) from link-time variables, set by its Makefile from
            # client-go's version: v0.37.0 is Kubernetes 1.37.
            client_go = _required_version(go_mod, "k8s.io/client-go", self.module)
            minor = client_go.split(".")[1]
            flags.append(f"-X helm.sh/helm/v3/internal/version.version={version}")
            for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
                flags += [
                    f"-X {package}.k8sVersionMajor=1",
                    f"-X {package}.k8sVersionMinor={minor}",
                ]
        elif self.name == "helm4":
            # Helm 4 reads its default Kubernetes version from its build information.
            flags.append(f"-X helm.sh/helm/v4/internal/version.version={version}")
        elif self.name == "prometheus":
            # What `prometheus --version` and /api/v1/status/buildinfo report, as its release
            # build (.promu.yml) stamps it: the module's v0.316.0 is Prometheus 3.16.0.
            flags.append(f"-X github.com/prometheus/common/version.Version={_release(version)}")
        return " ".join(flags)

    def tag_flags(self) -> tuple[str, ...]:
        """`-tags a,b` when the tool has build tags (`go list` needs them too), else nothing."""
        return ("-tags", ",".join(self.tags)) if self.tags else ()

    def build_flags(self) -> tuple[str, ...]:
        """`go build`'s flags besides -ldflags and -o."""
        return (*_BUILD_FLAGS, *self.tag_flags())


def _release(module_version: str) -> str:
    """Prometheus's release for its Go module's version: v0.316.0 -> 3.16.0, v0.54.1 -> 2.54.1."""
    match = re.fullmatch(r"v0\.(\d+)\.(\d+)", module_version)
    if match is None:
        return module_version.removeprefix("v")
    minor, patch = int(match.group(1)), int(match.group(2))
    if minor >= 300:
        return f"{minor // 100}.{minor % 100}.{patch}"
    return f"2.{minor}.{patch}"


TOOLS = {
    tool.name: tool
    for tool in (
        Tool("helm3", "helm3", "helm", "helm.sh/helm/v3/cmd/helm", "helm.sh/helm/v3"),
        Tool("helm4", "helm4", "helm", "helm.sh/helm/v4/cmd/helm", "helm.sh/helm/v4"),
        Tool("kubecheck", "kubecheck", "kubecheck", ".", "k8s.io/api"),
        Tool(
            "prometheus",
            "prometheus",
            "prometheus",
            "github.com/prometheus/prometheus/cmd/prometheus",
            "github.com/prometheus/prometheus",
            tags=("remove_all_sd",),
        ),
    )
}
_BUILD_FLAGS = ("-trimpath", "-v")
_SOURCE_SUFFIXES = (".mod", ".sum", ".go")


def _required_version(go_mod: str, module: str, folder: str) -> str:
    return build._required_version(go_mod, module, f"{folder}/go.mod")


def _tool(name: str) -> Tool:
    try:
        return TOOLS[name]
    except KeyError:
        raise BuildError(f"No tool {name!r}; the tools are {', '.join(TOOLS)}.") from None


@dataclass(frozen=True)
class _Spec:
    tool: Tool
    version: str
    go_mod: str
    min_go: tuple[int, ...]
    digest: str


def _spec(tool: Tool) -> _Spec:
    folder = build.modules_dir() / tool.module
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _SOURCE_SUFFIXES)
        contents = {p.name: p.read_bytes() for p in files}
    except OSError as e:
        raise BuildError(
            f"Cannot read {folder} ({e.strerror}); is this a complete checkout?"
        ) from e
    if "go.mod" not in contents:
        raise BuildError(f"{folder} has no go.mod; is this a complete checkout?")
    go_mod = contents["go.mod"].decode("utf-8", "replace")
    digest = hashlib.sha256()
    for name, data in contents.items():
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    recipe = "\0".join((*tool.build_flags(), tool.ldflags(go_mod), tool.target, tool.binary))
    digest.update(recipe.encode())
    return _Spec(
        tool=tool,
        version=_required_version(go_mod, tool.version_of, tool.module),
        go_mod=go_mod,
        min_go=build._go_line(go_mod),
        digest=digest.hexdigest()[:12],
    )


def _key(spec: _Spec, toolchain: build._Toolchain) -> str:
    key = f"{spec.tool.name}-{spec.version}-{toolchain.version}-{toolchain.platform}-{spec.digest}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", key)


def _parent() -> Path:
    return build._cache_root() / "tools"


def _complete(directory: Path, tool: Tool) -> Path | None:
    path = directory / "bin" / tool.binary
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_tool(name: str) -> Path | None:
    """The cached executable if built, else None; never builds (None without Go too)."""
    tool = _tool(name)
    spec = _spec(tool)
    try:
        toolchain = build._toolchain(build._Spec("", "", spec.min_go, ""))
    except GoMissingError:
        return None
    return _complete(_parent() / _key(spec, toolchain), tool)


def ensure_tool(name: str, out: TextIO = sys.stderr, *, force: bool = False) -> Path:
    """The cached executable, built first (with progress on `out`) when missing."""
    tool = _tool(name)
    spec = _spec(tool)
    toolchain = build._toolchain(build._Spec("", "", spec.min_go, ""))
    parent = _parent()
    final = parent / _key(spec, toolchain)
    if not force and (found := _complete(final, tool)) is not None:
        return found
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"Cannot create the cache folder {parent} ({e.strerror}).") from e
    with build._locked(parent / f"{final.name}.lock", out):
        if not force and (found := _complete(final, tool)) is not None:
            return found
        for stale in parent.glob(f".{final.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
        try:
            _build(spec, toolchain, work, final, out)
            if final.exists():
                old = parent / f".{final.name}.old-{os.getpid()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            work.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    built = _complete(final, tool)
    if built is None:  # pragma: no cover - _build checked the binary
        raise BuildError(f"{tool.name} built, but {final} is not complete.")
    return built


def _build(spec: _Spec, toolchain: build._Toolchain, work: Path, final: Path, out: TextIO) -> None:
    tool = spec.tool
    cwd = build.modules_dir() / tool.module
    label = f"{tool.name} {spec.version}"
    print(
        f"Building {label} once with {toolchain.version} from its Go module, cached in {final}; "
        "this takes a few minutes (the first time Go also downloads the modules it needs).",
        file=out,
        flush=True,
    )
    progress = build._Progress(out, final, label=label)
    try:
        progress.stage = "downloading Go modules and listing packages"
        status, listed, tail = build._run_go(
            [toolchain.go, "list", "-deps", *tool.tag_flags(), tool.target],
            cwd,
            on_line=lambda _line: None,
            tick=progress.tick,
            want_stdout=True,
        )
        if status != 0:
            raise build._failure(f"Listing the packages of {tool.target}", status, tail)
        progress.total = sum(1 for line in listed.splitlines() if line.strip())
        binary = work / "bin" / tool.binary
        binary.parent.mkdir(parents=True, exist_ok=True)
        command = [
            toolchain.go,
            "build",
            *tool.build_flags(),
            "-ldflags",
            tool.ldflags(spec.go_mod),
            "-o",
            str(binary),
            tool.target,
        ]
        status, _, tail = build._run_go(command, cwd, on_line=progress.count, tick=progress.tick)
        if status != 0:
            raise build._failure(f"Building {label}", status, tail)
        if not binary.is_file():
            raise BuildError(f"Go finished but did not produce {binary}.")
    except BaseException:
        progress.end_line()
        raise
    seconds = time.monotonic() - progress.start
    record = {
        "seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "go": toolchain.version,
        "cpus": os.cpu_count(),
        "version": spec.version,
    }
    (work / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    progress.finish(f"Built {label} in {build._duration(seconds)}; cached in {final}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kwatt_sandbox.controlplane.tools",
        description="Build the Helm chart's Go tools (helm 3, helm 4, kubecheck, prometheus) once "
        "per machine into a per-user cache; do nothing for those already there.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(TOOLS)}")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument(
        "--print-path", action="store_true", help="print each executable's path on stdout"
    )
    args = parser.parse_args(argv)
    try:
        for name in args.names or list(TOOLS):
            path = ensure_tool(name, sys.stderr, force=args.force)
            if args.print_path:
                print(path)
    except BuildError as e:
        print(e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted; nothing more was cached.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
