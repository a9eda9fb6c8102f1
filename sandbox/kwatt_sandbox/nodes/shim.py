"""PID 1 of one sandbox container: its bind mounts, then its command, supervised like tini.

Part of the sandbox test harness (production is a real cluster, with a real container
runtime). The node agent starts every container as `wrap(argv, spec)`:

    unshare --mount --pid --fork --kill-child --mount-proc -- \
        python -I -S .../shim.py --spec SPEC.json -- ARGV...

so the shim runs as PID 1 of a new pid and mount namespace. It makes the mount tree
private, bind-mounts the spec's volumes (mount(2) through ctypes, not the `mount`
binary: exact errno, no extra process), changes to the working directory and spawns
ARGV as its child in a session of its own (as runc does for a container's process). It
forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to that child, reaps every
orphan, and exits with the child's code (128+N if signal N killed it); the kernel then
kills whatever else still runs in the namespace, as a runtime does when a container's
main process ends. Spec, mount and exec errors print one sentence and exit 127.

Run by file path, with -I -S, and importing only cheap standard-library modules, the
shim starts in about 20 ms: `python -m kwatt_sandbox.nodes.shim` would import the whole
sandbox package first.

No container process outlives the sandbox: the node agent starts `unshare` with
`preexec_fn=shim_preexec(os.getpid())` (PR_SET_PDEATHSIG=SIGKILL, so unshare dies with
the agent), `--kill-child` SIGKILLs the shim when unshare dies, and the kernel SIGKILLs
every process of a pid namespace when its PID 1 dies.

Signals, as found with util-linux 2.38: `unshare --fork` blocks SIGINT and SIGTERM and
forwards nothing, and any other signal with its default action kills it (and so the
container, by SIGKILL). `shim_preexec` therefore also blocks the forwarded signals, which
unshare and the shim inherit: with `start_new_session=True`, `os.killpg(unshare_pid, sig)`
(`signal_container`) leaves unshare alone, reaches the shim, which forwards it once to
the container's main process (not in that process group, so never twice). A signal that
reaches the shim while Python is still starting stays pending, as PID 1 would otherwise
drop it. Only one sent before unshare has forked (within about a millisecond of the
start) is lost, as pending signals do not carry over a fork.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (and re), for start-up
if TYPE_CHECKING or __name__ != "__main__":
    from dataclasses import dataclass
else:  # Running as the shim, which never builds a Mount: skip `dataclasses` (~20 ms).

    def dataclass(**_options: object) -> Callable[[type], type]:
        return lambda cls: cls


if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

FORWARDED_SIGNALS = frozenset(
    {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }
)
SHIM_PATH = os.path.abspath(__file__)
FAILED = 127  # the exit code of a container whose spec, mounts or command are unusable
_PR_SET_PDEATHSIG = 1
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_KEPT_ON_REMOUNT = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC  # statvfs ST_* use the same bits
_SPEC_KEYS = frozenset({"mounts", "workingDir"})
_MOUNT_KEYS = frozenset({"source", "target", "readOnly"})
Bind = tuple[str, str, bool]  # a Mount as the shim handles it: (source, target, read-only)


class SpecError(ValueError):
    """The container spec is not one the shim accepts."""


class ShimError(Exception):
    """A mount or the command failed: the container exits 127 with this sentence."""


@dataclass(frozen=True)
class Mount:
    """One bind mount of a container: host `source` shown at `target`."""

    source: str
    target: str
    read_only: bool


# --- the spec file, written by the node agent and read by the shim -----------------


def _path(value: object, where: str, *, dotdot: bool = True) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise SpecError(f"{where} must be an absolute path")
    if "\0" in value:
        raise SpecError(f"{where} must not contain a NUL character")
    if not dotdot and ".." in value.split("/"):
        raise SpecError(f"{where} must not contain a '..' component")
    return value


def parse_spec(data: object) -> tuple[list[Bind], str]:
    """The (source, target, readOnly) binds and the working directory of a decoded spec.

    SpecError if anything is off. Plain tuples: the shim never builds a Mount.
    """
    if not isinstance(data, dict):
        raise SpecError("the spec must be a JSON object")
    if set(data) != _SPEC_KEYS:
        raise SpecError(f"the spec must have exactly the keys {sorted(_SPEC_KEYS)}")
    items = data["mounts"]
    if not isinstance(items, list):
        raise SpecError("mounts must be a list")
    binds = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != _MOUNT_KEYS:
            raise SpecError(f"mounts[{i}] must be an object with exactly {sorted(_MOUNT_KEYS)}")
        source = _path(item["source"], f"mounts[{i}].source")
        target = _path(item["target"], f"mounts[{i}].target", dotdot=False)
        if not target.strip("/."):
            raise SpecError(f"mounts[{i}].target must not be the root directory")
        if not isinstance(item["readOnly"], bool):
            raise SpecError(f"mounts[{i}].readOnly must be true or false")
        binds.append((source, target, item["readOnly"]))
    return binds, _path(data["workingDir"], "workingDir")


def write_spec(path: Path, mounts: list[Mount], working_dir: str) -> None:
    """Write the spec the shim reads (owner-only); ValueError if the shim would refuse it."""
    data: dict[str, Any] = {
        "mounts": [
            {"source": m.source, "target": m.target, "readOnly": m.read_only} for m in mounts
        ],
        "workingDir": working_dir,
    }
    parse_spec(data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)


# --- the node agent's side: the command line, the preexec and signals -------------


def namespaces_problem() -> str | None:
    """None if this process may make the namespaces containers need, else a sentence.

    Checked once when the sandbox starts, so that a user without the right learns it
    then, not from a pod that fails later.
    """
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    if unshare is None:
        return (
            "The sandbox's nodes need util-linux `unshare` on PATH to run each container in "
            "its own mount and PID namespace; install util-linux."
        )
    probe = [unshare, "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "true"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"The sandbox could not run `unshare` to make a container's namespaces: {exc}."
    if result.returncode != 0:
        said = result.stderr.strip().splitlines()[-1:] or ["no message"]
        return (
            "The sandbox's nodes run each container in its own mount and PID namespace, "
            f"which needs root (CAP_SYS_ADMIN) here; unshare said: {said[0]}."
        )
    return None


def wrap(argv: list[str], spec_path: Path, python: str = sys.executable) -> list[str]:
    """The full command that runs `argv` as a container described by `spec_path`."""
    import shutil  # only the node agent calls this; the shim itself stays lean

    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError(
            "util-linux `unshare` is not on PATH; the sandbox's node agents need it to run "
            "each container in its own mount and pid namespace."
        )
    return [
        unshare,
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
        python,
        "-I",
        "-S",
        SHIM_PATH,
        "--spec",
        str(spec_path),
        "--",
        *argv,
    ]


def _libc_function(name: str) -> Any:
    return getattr(ctypes.CDLL(None, use_errno=True), name)


def pdeathsig_preexec(parent_pid: int, sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn that sends the child `sig` (SIGKILL) when `parent_pid` (the caller) dies.

    Pass `os.getpid()` of the process that spawns. The child exits at once if that parent
    died before the death signal was armed. The kernel ties the signal to the parent
    *thread* that forked: spawn from a thread that lives as long as the child should.
    """
    prctl = _libc_function("prctl")  # looked up before the fork, not in the child

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:
            os._exit(FAILED)

    return preexec


def shim_preexec(parent_pid: int) -> Callable[[], None]:
    """The preexec_fn for `wrap`'s command: the death signal, and the forwarded signals
    blocked, so unshare ignores them and the shim receives them even while starting."""
    deathsig = pdeathsig_preexec(parent_pid)

    def preexec() -> None:
        deathsig()
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)

    return preexec


def signal_container(unshare_pid: int, sig: int) -> bool:
    """Send `sig` to a container started with `start_new_session=True` and `shim_preexec`.

    The group holds unshare and the shim only: a forwarded signal reaches the container's
    main process once, through the shim; SIGKILL kills both and so the whole namespace.
    False if the container is gone already.
    """
    try:
        os.killpg(unshare_pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def terminate(unshare_pid: int) -> bool:
    """SIGTERM to the container's main process (see `signal_container`)."""
    return signal_container(unshare_pid, signal.SIGTERM)


# --- the shim, PID 1 of the container's namespaces ---------------------------------


def _mount(source: str | None, target: str, flags: int) -> None:
    mount = _libc_function("mount")
    mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    encoded = os.fsencode(source) if source is not None else None
    if mount(encoded, os.fsencode(target), None, flags, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _prepare_target(source: str, target: str) -> None:
    """Create the mount point on the shared filesystem: a directory, or an empty file."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))


def apply_mounts(binds: list[Bind]) -> None:
    """Make the mount tree private, then bind each mount, shallowest target first."""
    try:
        _mount(None, "/", _MS_REC | _MS_PRIVATE)
    except OSError as exc:
        raise ShimError(
            f"kwatt shim: cannot make the mount namespace private: {exc.strerror}."
        ) from exc
    for source, target, read_only in sorted(binds, key=lambda b: os.path.normpath(b[1]).count("/")):
        try:
            if not os.path.exists(source):
                raise FileNotFoundError(2, "no such file or directory")
            _prepare_target(source, target)
            _mount(source, target, _MS_BIND)
            if read_only:
                kept = os.statvfs(target).f_flag & _KEPT_ON_REMOUNT
                _mount(None, target, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept)
        except OSError as exc:
            raise ShimError(
                f"kwatt shim: cannot bind-mount {source!r} on {target!r} "
                f"({'read-only' if read_only else 'read-write'}): "
                f"{(exc.strerror or str(exc)).lower()}."
            ) from exc


def _exec_error(command: str, exc: OSError) -> str:
    """The runtime's wording (runc) for a command that cannot be executed."""
    if isinstance(exc, FileNotFoundError):
        if "/" not in command:
            return f'exec: "{command}": executable file not found in $PATH'
        return f'exec: "{command}": stat {command}: no such file or directory'
    return f'exec: "{command}": {(exc.strerror or str(exc)).lower()}'


def exec_environ() -> dict[bytes, bytes]:
    """The environment this process was started with, as the kernel keeps it.

    Not os.environ: with no locale set (as the node agent starts the shim), Python's C
    locale coercion (PEP 538) adds LC_CTYPE=C.UTF-8 there at start-up, and a container
    must see only what its kubelet gave it.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            data = f.read()
    except OSError:
        return dict(os.environb)
    return dict(item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)


def spawn(argv: list[str]) -> int:
    """Start `argv` in a session of its own, with default signal handling, in the
    environment the shim was given; its pid."""
    catchable = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
    try:
        return os.posix_spawnp(
            argv[0], argv, exec_environ(), setsid=True, setsigmask=(), setsigdef=catchable
        )
    except OSError as exc:
        raise ShimError(_exec_error(argv[0], exc)) from exc


def _forward(pid: int, signo: int) -> bool:
    try:
        os.kill(pid, signo)
    except ProcessLookupError:  # exited already: its SIGCHLD is pending
        return False
    return True


def supervise(child: int) -> int:
    """Forward signals to `child` and reap every process until `child` ends; its exit code.

    Expects FORWARDED_SIGNALS and SIGCHLD to be blocked: they are taken with sigwaitinfo,
    so none is lost between checks and none interrupts a system call.
    """
    waited = FORWARDED_SIGNALS | {signal.SIGCHLD}
    while True:
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            _forward(child, info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child:
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code


def _parse_argv(args: list[str]) -> tuple[str, list[str]]:
    if len(args) < 4 or args[0] != "--spec" or args[2] != "--":
        raise SpecError("usage: shim.py --spec SPEC.json -- COMMAND [ARG...]")
    return args[1], args[3:]


def main(args: list[str]) -> int:
    """Run the container described by `args`; its exit code."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS | {signal.SIGCHLD})
    try:
        spec_path, argv = _parse_argv(args)
        if os.getpid() != 1:
            raise SpecError("the shim must run as PID 1 of a new pid namespace (see wrap())")
        try:
            with open(spec_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise SpecError(f"cannot read {spec_path}: {exc}") from exc
        binds, working_dir = parse_spec(data)
    except SpecError as exc:
        print(f"kwatt shim: bad container spec: {exc}.", file=sys.stderr)
        return FAILED
    try:
        apply_mounts(binds)
        try:
            os.chdir(working_dir)
        except OSError as exc:
            raise ShimError(
                f"kwatt shim: chdir to cwd ({working_dir!r}) set in the spec failed: "
                f"{(exc.strerror or str(exc)).lower()}."
            ) from exc
        child = spawn(argv)
    except ShimError as exc:
        print(exc, file=sys.stderr)
        return FAILED
    return supervise(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
