"""Build the sandbox's Kubernetes control plane once per machine, into a per-user cache.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
The sandbox runs a real etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, and tests drive it with a real kubectl. There is one way to get those
five programs: this module compiles them with the machine's Go from the two tools
modules committed under `sandbox/controlplane/` (their go.mod and go.sum pin every
version), so nothing but Go modules is ever downloaded (GOTOOLCHAIN=local, no release
archives, no container images). The build takes many minutes, so it happens once per
machine: the binaries land in `$KWATT_CACHE_DIR` (else `${XDG_CACHE_HOME:-~/.cache}/kwatt`)
under `controlplane/<key>/bin/`, where the key names the Kubernetes, etcd and Go versions
and a hash of the module files, so a fresh clone reuses them and a version bump builds anew.

A build goes to a temporary folder next to its final place and is renamed into place only
when every binary exists, so an interrupted build never leaves a half cache; a lock file
makes concurrent callers (a test run and a demo) build once, the second waiting for the
first. Run it by hand with `python -m kwatt_sandbox.controlplane.build [--force] [--print-dir]`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kwatt_core import cache

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
RECORD = "build.json"  # beside bin/: how long the build took, for `make bench-sandbox`

_KUBERNETES_MODULE = "k8s.io/kubernetes"
_ETCD_MODULE = "go.etcd.io/etcd/server/v3"
_KUBERNETES_TARGETS = tuple(
    f"k8s.io/kubernetes/cmd/{name}"
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
)
_ETCD_TARGET = _ETCD_MODULE  # etcd's main package is its server module's root
# Where Kubernetes' own release build stamps the version that `kubectl version` and the
# servers' /version report; without it they say v0.0.0-master.
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
_BUILD_FLAGS = ("-trimpath", "-v")
_MODULE_FILES = ("kubernetes/go.mod", "kubernetes/go.sum", "etcd/go.mod", "etcd/go.sum")
_INSTALL_URL = "https://go.dev/doc/install"

_PROGRESS_INTERVAL = 5.0  # seconds between progress lines
_TAIL_LINES = 40  # lines of Go's output shown when a build fails


class BuildError(RuntimeError):
    """The control plane could not be built; the message is a sentence for a person."""


class GoMissingError(BuildError):
    """No (recent enough) Go on PATH to build the control plane with."""


@dataclass(frozen=True)
class Binaries:
    """A complete, cached set of the control plane's programs."""

    directory: Path

    def path(self, name: str) -> Path:
        """The executable `name` (one of BINARIES)."""
        if name not in BINARIES:
            raise ValueError(f"{name!r} is not one of the control plane's binaries {BINARIES}")
        return self.directory / name


def modules_dir() -> Path:
    """The repository's `sandbox/controlplane`, holding the two Go tools modules."""
    return Path(__file__).resolve().parents[2] / "controlplane"


def _cache_root() -> Path:
    try:
        return cache.cache_root()
    except cache.CacheError as e:
        raise BuildError(str(e)) from None


# --- what to build: versions from the go.mod files -------------------------------------


def _read_module_file(relative: str) -> bytes:
    path = modules_dir() / relative
    try:
        return path.read_bytes()
    except OSError as e:
        raise BuildError(f"Cannot read {path} ({e.strerror}); is this a complete checkout?") from e


def _required_version(go_mod: str, module: str, relative: str) -> str:
    """The version `module` is required at in go.mod text (block or single-line form)."""
    pattern = rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)"
    match = re.search(pattern, go_mod, re.MULTILINE)
    if match is None:
        raise BuildError(f"{modules_dir() / relative} does not require {module}.")
    return match.group(1)


def _go_line(go_mod: str) -> tuple[int, ...]:
    match = re.search(r"^go\s+(\d+(?:\.\d+)*)\s*$", go_mod, re.MULTILINE)
    return tuple(int(part) for part in match.group(1).split(".")) if match else (1, 0)


@dataclass(frozen=True)
class _Spec:
    kubernetes: str  # e.g. v1.37.2
    etcd: str  # e.g. v3.6.16
    min_go: tuple[int, ...]  # the newest `go` line of the two go.mod files
    digest: str  # sha256 over the module files and the build recipe


def _spec() -> _Spec:
    contents = {relative: _read_module_file(relative) for relative in _MODULE_FILES}
    kube_mod = contents["kubernetes/go.mod"].decode("utf-8", "replace")
    etcd_mod = contents["etcd/go.mod"].decode("utf-8", "replace")
    kubernetes = _required_version(kube_mod, _KUBERNETES_MODULE, "kubernetes/go.mod")
    digest = hashlib.sha256()
    for relative, data in contents.items():
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    # The recipe is part of the key: changing how the binaries are built rebuilds them.
    recipe = "\0".join((*_BUILD_FLAGS, _ldflags(kubernetes), *_KUBERNETES_TARGETS, _ETCD_TARGET))
    digest.update(recipe.encode())
    return _Spec(
        kubernetes=kubernetes,
        etcd=_required_version(etcd_mod, _ETCD_MODULE, "etcd/go.mod"),
        min_go=max(_go_line(kube_mod), _go_line(etcd_mod)),
        digest=digest.hexdigest()[:12],
    )


def _ldflags(kubernetes_version: str) -> str:
    """`-s -w` plus the version stamps Kubernetes' release build sets."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", kubernetes_version)
    if match is None:
        raise BuildError(f"Cannot read the Kubernetes version {kubernetes_version!r} in go.mod.")
    major, minor = match.groups()
    flags = ["-s", "-w"]
    for package in _VERSION_PACKAGES:
        flags += [
            f"-X {package}.gitVersion={kubernetes_version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


# --- the machine's Go -------------------------------------------------------------------


def _go_env() -> dict[str, str]:
    """os.environ with only the machine's Go and nothing but module downloads."""
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOWORK="off", GOFLAGS="-mod=readonly")
    return env


def _version_text(version: tuple[int, ...]) -> str:
    trimmed = version[:2] if len(version) > 2 and not any(version[2:]) else version
    return ".".join(str(part) for part in trimmed)


def _go(min_go: tuple[int, ...]) -> str:
    go = shutil.which("go")
    if go is None:
        raise GoMissingError(
            f"Go {_version_text(min_go)} or newer is needed to build the sandbox's Kubernetes "
            f"control plane once; install it ({_INSTALL_URL}) and run this again."
        )
    return go


@dataclass(frozen=True)
class _Toolchain:
    go: str  # the executable's path
    version: str  # GOVERSION, e.g. go1.26.8
    platform: str  # GOOS-GOARCH, e.g. linux-amd64


def _parse_go_version(version: str) -> tuple[int, ...] | None:
    """go1.26.8 -> (1, 26, 8); go1.26rc1 -> (1, 26, -1); a devel build -> None."""
    match = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?(\S*)", version)
    if match is None:
        return None
    major, minor, patch, suffix = match.groups()
    if patch is not None:
        return (int(major), int(minor), int(patch))
    return (int(major), int(minor), -1 if suffix else 0)


def _toolchain(spec: _Spec) -> _Toolchain:
    go = _go(spec.min_go)
    try:
        result = subprocess.run(
            [go, "env", "GOVERSION", "GOOS", "GOARCH"],
            cwd=modules_dir(),
            env=_go_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
            check=False,
        )
    except OSError as e:
        raise GoMissingError(
            f"The Go found at {go} does not run ({e.strerror}); install Go "
            f"{_version_text(spec.min_go)} or newer ({_INSTALL_URL}) and run this again."
        ) from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"`{go} env` did not answer within {e.timeout:.0f}s.") from e
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) < 3:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"`{go} env GOVERSION GOOS GOARCH` failed: {detail}")
    version, goos, goarch = (line.strip() for line in lines[:3])
    parsed = _parse_go_version(version)
    if parsed is not None and parsed < spec.min_go:
        raise GoMissingError(
            f"Go {_version_text(spec.min_go)} or newer is needed to build the sandbox's "
            f"Kubernetes control plane once, and {go} is {version}; install a newer one "
            f"({_INSTALL_URL}) and run this again."
        )
    return _Toolchain(go=go, version=version, platform=f"{goos}-{goarch}")


def _key(spec: _Spec, toolchain: _Toolchain) -> str:
    key = (
        f"k8s-{spec.kubernetes}-etcd-{spec.etcd}-{toolchain.version}-{toolchain.platform}-"
        f"{spec.digest}"
    )
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", key)


# --- the cache --------------------------------------------------------------------------


def cache_dir() -> Path:
    """`<cache root>/controlplane/<key>`: where this checkout's binaries live (needs Go)."""
    spec = _spec()
    return _cache_root() / "controlplane" / _key(spec, _toolchain(spec))


def _complete(directory: Path) -> Binaries | None:
    binaries = Binaries(directory / "bin")
    for name in BINARIES:
        path = binaries.path(name)
        if not (path.is_file() and os.access(path, os.X_OK)):
            return None
    return binaries


def find_binaries() -> Binaries | None:
    """The cached set if complete, else None; never builds.

    Without Go (or with one too old) there is no way to name the cache, so this says
    None too; ensure_binaries() then explains what to install.
    """
    try:
        directory = cache_dir()
    except GoMissingError:
        return None
    return _complete(directory)


def _locked(lock_path: Path, out: TextIO) -> contextlib.AbstractContextManager[None]:
    return cache.locked(lock_path, out, "the sandbox control plane")


def build_record(binaries: Binaries) -> dict[str, Any] | None:
    """How the cached binaries were built (seconds, when, Go, CPUs), if it was recorded."""
    try:
        record = json.loads((binaries.directory.parent / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def ensure_binaries(out: TextIO = sys.stderr) -> Binaries:
    """The cached binaries, built first (with progress on `out`) when missing."""
    return _ensure(out, force=False)


def _ensure(out: TextIO, *, force: bool) -> Binaries:
    spec = _spec()
    toolchain = _toolchain(spec)
    parent = _cache_root() / "controlplane"
    final = parent / _key(spec, toolchain)
    if not force and (found := _complete(final)) is not None:
        return found
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"Cannot create the cache folder {parent} ({e.strerror}).") from e
    with _locked(parent / f"{final.name}.lock", out):
        # Whoever held the lock before may have built them meanwhile.
        if not force and (found := _complete(final)) is not None:
            return found
        # Holding the lock, any temporary folder for this key is a dead build's.
        for stale in parent.glob(f".{final.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
        try:
            _build(spec, toolchain, work / "bin", final, out)
            if final.exists():  # an incomplete set, or --force: move the old one aside
                old = parent / f".{final.name}.old-{os.getpid()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            work.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    built = _complete(final)
    if built is None:  # pragma: no cover - _build checked every binary
        raise BuildError(f"The control plane built, but {final} is not complete.")
    return built


# --- running Go with progress -----------------------------------------------------------


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _display(path: Path) -> str:
    """The path with the home folder as ~, to keep progress lines short."""
    with contextlib.suppress(ValueError, RuntimeError):
        return f"~/{path.relative_to(Path.home())}"
    return str(path)


def _is_package_line(line: str) -> bool:
    """`go build -v` names each package it compiles alone on a line."""
    return bool(line) and not line.startswith(("#", "go:")) and not re.search(r"[\s:]", line)


class _Progress:
    def __init__(self, out: TextIO, where: Path, label: str = "the sandbox control plane") -> None:
        self.out = out
        self.where = where
        self.label = label  # what is built, for the progress lines
        self.start = time.monotonic()
        self.last = self.start
        self.total = 0
        self.done = 0
        self.stage = ""
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.dangling = False

    def count(self, line: str) -> None:
        if _is_package_line(line):
            self.done += 1

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last < _PROGRESS_INTERVAL:
            return
        self.last = now
        elapsed = _duration(now - self.start)
        if self.total:
            status = f"{min(self.done, self.total)}/{self.total} packages, {elapsed}"
        else:
            status = f"{self.stage}, {elapsed}"
        where = _display(self.where.parent)
        text = f"Building {self.label} (one time, cached in {where}): {status}"
        self.out.write(f"\r\x1b[K{text}" if self.tty else f"{text}\n")
        self.out.flush()
        self.dangling = self.tty  # a terminal's progress line is rewritten in place

    def finish(self, text: str) -> None:
        self.out.write(f"\r\x1b[K{text}\n" if self.tty else f"{text}\n")
        self.out.flush()
        self.dangling = False

    def end_line(self) -> None:
        """Let what is printed next (an error) start on a line of its own."""
        if self.dangling:
            self.out.write("\n")
            self.out.flush()
            self.dangling = False


def _run_go(
    command: Sequence[str],
    cwd: Path,
    *,
    on_line: Callable[[str], None],
    tick: Callable[[], None],
    want_stdout: bool = False,
) -> tuple[int, str, list[str]]:
    """Run Go, feeding each stderr line to on_line and calling tick now and then.

    Returns the exit status, stdout (when wanted) and the last stderr lines.
    """
    tail: collections.deque[str] = collections.deque(maxlen=2000)
    stdout: list[str] = []
    try:
        proc = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=_go_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if want_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as e:
        raise BuildError(f"Cannot run {command[0]} ({e.strerror}).") from e

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)

    def read_stdout() -> None:
        assert proc.stdout is not None
        stdout.append(proc.stdout.read())

    readers = [threading.Thread(target=read_stderr, daemon=True)]
    if want_stdout:
        readers.append(threading.Thread(target=read_stdout, daemon=True))
    for reader in readers:
        reader.start()
    try:
        while True:
            try:
                proc.wait(timeout=min(_PROGRESS_INTERVAL, 1.0))
                break
            except subprocess.TimeoutExpired:
                tick()
    finally:
        if proc.poll() is None:  # interrupted: stop Go (it stops its compilers)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(timeout=10)
    return proc.returncode, "".join(stdout), list(tail)


def _failure(what: str, status: int, tail: list[str]) -> BuildError:
    # Go's error messages follow the package names -v prints; show those messages.
    messages = [line for line in tail if line and not _is_package_line(line)]
    shown = (messages or tail)[-_TAIL_LINES:]
    text = "\n".join(f"    {line}" for line in shown) or "    (Go printed nothing)"
    return BuildError(f"{what} failed (go exited with status {status}); Go's last lines:\n{text}")


def _build(spec: _Spec, toolchain: _Toolchain, bin_dir: Path, final: Path, out: TextIO) -> None:
    """Compile the five binaries into bin_dir, or raise BuildError."""
    print(
        f"Building the sandbox control plane once with {toolchain.version}: Kubernetes "
        f"{spec.kubernetes} and etcd {spec.etcd}, cached in {final}. This takes several "
        "minutes; the first time Go also downloads the modules they need.",
        file=out,
        flush=True,
    )
    progress = _Progress(out, final)
    try:
        _compile(spec, toolchain.go, bin_dir, progress)
    except BaseException:
        progress.end_line()
        raise
    seconds = time.monotonic() - progress.start
    elapsed = _duration(seconds)
    record = {
        "seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "go": toolchain.version,
        "cpus": os.cpu_count(),
    }
    (bin_dir.parent / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    progress.finish(
        "Built kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd in "
        f"{elapsed}; cached in {final}."
    )


def _compile(spec: _Spec, go: str, bin_dir: Path, progress: _Progress) -> None:
    kube_dir = modules_dir() / "kubernetes"
    etcd_dir = modules_dir() / "etcd"
    bin_dir.mkdir(parents=True, exist_ok=True)

    # Count the packages first, so that progress can say how far along the build is.
    progress.stage = "downloading Go modules and listing packages"
    total = 0
    for cwd, targets in ((etcd_dir, (_ETCD_TARGET,)), (kube_dir, _KUBERNETES_TARGETS)):
        status, listed, tail = _run_go(
            [go, "list", "-deps", *targets],
            cwd,
            on_line=lambda _line: None,
            tick=progress.tick,
            want_stdout=True,
        )
        if status != 0:
            raise _failure(f"Listing the packages of {', '.join(targets)}", status, tail)
        total += sum(1 for line in listed.splitlines() if line.strip())
    progress.total = total

    steps = (
        (
            "Building etcd",
            etcd_dir,
            [
                go,
                "build",
                *_BUILD_FLAGS,
                "-ldflags",
                "-s -w",
                "-o",
                f"{bin_dir}/etcd",
                _ETCD_TARGET,
            ],
        ),
        (
            "Building kube-apiserver, kube-controller-manager, kube-scheduler and kubectl",
            kube_dir,
            [
                go,
                "build",
                *_BUILD_FLAGS,
                "-ldflags",
                _ldflags(spec.kubernetes),
                "-o",
                f"{bin_dir}/",
                *_KUBERNETES_TARGETS,
            ],
        ),
    )
    for what, cwd, command in steps:
        status, _, tail = _run_go(command, cwd, on_line=progress.count, tick=progress.tick)
        if status != 0:
            raise _failure(what, status, tail)
    missing = [name for name in BINARIES if not (bin_dir / name).is_file()]
    if missing:
        raise BuildError(f"Go finished but did not produce {', '.join(missing)} in {bin_dir}.")


# --- command line -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kwatt_sandbox.controlplane.build",
        description="Build the sandbox's Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler, kubectl) once per machine into a per-user "
        "cache; do nothing when it is already there.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument(
        "--print-dir", action="store_true", help="print the binaries' folder on stdout"
    )
    args = parser.parse_args(argv)
    try:
        binaries = _ensure(sys.stderr, force=args.force)
    except BuildError as e:
        print(e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted; nothing was cached.", file=sys.stderr)
        return 130
    if args.print_dir:
        print(binaries.directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
