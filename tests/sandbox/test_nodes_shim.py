"""The container shim with real processes in real mount and pid namespaces.

Self-contained (no conftest): each test starts `unshare` + the shim as the node agent
will, and looks at the host's /proc to see which processes live.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kwatt_sandbox.nodes.shim import (
    SHIM_PATH,
    Mount,
    SpecError,
    parse_spec,
    pdeathsig_preexec,
    shim_preexec,
    signal_container,
    terminate,
    wrap,
    write_spec,
)


def _namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    if sys.platform != "linux" or unshare is None:
        return False
    probe = [unshare, "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


pytestmark = [
    pytest.mark.skipif(not _namespaces_work(), reason="needs unshare with mount+pid namespaces"),
    pytest.mark.timeout(30),
]


def start(
    tmp_path: Path,
    argv: list[str],
    mounts: list[Mount] | None = None,
    working_dir: str | None = None,
    **popen: Any,
) -> subprocess.Popen[str]:
    """Start a container as the node agent does."""
    spec = tmp_path / f"spec-{uuid.uuid4().hex[:8]}.json"
    write_spec(spec, mounts or [], working_dir or str(tmp_path))
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        wrap(argv, spec),
        stdin=popen.pop("stdin", subprocess.DEVNULL),
        text=True,
        start_new_session=True,
        preexec_fn=shim_preexec(os.getpid()),
        **popen,
    )


def run(tmp_path: Path, argv: list[str], **kwargs: Any) -> tuple[int, str, str]:
    proc = start(tmp_path, argv, **kwargs)
    out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


def pids_with(token: str) -> list[int]:
    """Host pids of the live `sleep TOKEN` processes."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline == f"sleep\0{token}\0".encode():
                found.append(int(entry))
    return found


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def sleep_token() -> str:
    """A `sleep` argument unique to this test, findable in /proc/*/cmdline."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, waiting for its reaper, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def no_leftovers() -> Iterator[list[str]]:
    """Tokens of processes that must all be gone after the test (killed if not)."""
    tokens: list[str] = []
    yield tokens
    for token in tokens:
        for pid in pids_with(token):
            os.kill(pid, signal.SIGKILL)


# --- the spec ----------------------------------------------------------------------


def test_write_spec_round_trips_and_is_owner_only(tmp_path: Path) -> None:
    mounts = [Mount("/src", "/a/b", True), Mount("/f.txt", "/etc/f.txt", False)]
    path = tmp_path / "spec.json"
    write_spec(path, mounts, "/work")
    assert path.stat().st_mode & 0o777 == 0o600
    binds = [("/src", "/a/b", True), ("/f.txt", "/etc/f.txt", False)]
    assert parse_spec(json.loads(path.read_text())) == (binds, "/work")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "JSON object"),
        ({"mounts": []}, "exactly the keys"),
        ({"mounts": [], "workingDir": "/", "extra": 1}, "exactly the keys"),
        ({"mounts": {}, "workingDir": "/"}, "mounts must be a list"),
        ({"mounts": [{"source": "/a", "target": "/b"}], "workingDir": "/"}, "mounts[0]"),
        (
            {"mounts": [{"source": "a", "target": "/b", "readOnly": False}], "workingDir": "/"},
            "mounts[0].source must be an absolute path",
        ),
        (
            {
                "mounts": [{"source": "/a", "target": "/b/../c", "readOnly": False}],
                "workingDir": "/",
            },
            "'..'",
        ),
        (
            {"mounts": [{"source": "/a", "target": "/b\0", "readOnly": False}], "workingDir": "/"},
            "NUL",
        ),
        (
            {"mounts": [{"source": "/a", "target": "//", "readOnly": False}], "workingDir": "/"},
            "root directory",
        ),
        (
            {"mounts": [{"source": "/a", "target": "/b", "readOnly": "yes"}], "workingDir": "/"},
            "readOnly",
        ),
        ({"mounts": [], "workingDir": "rel"}, "workingDir must be an absolute path"),
    ],
)
def test_parse_spec_is_strict(data: object, fragment: str) -> None:
    with pytest.raises(SpecError, match=None) as caught:
        parse_spec(data)
    assert fragment in str(caught.value)


def test_write_spec_refuses_what_the_shim_would(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'\.\.'"):
        write_spec(tmp_path / "s.json", [Mount("/a", "/x/../y", False)], "/")
    assert not (tmp_path / "s.json").exists()


def test_wrap_needs_unshare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    argv = wrap(["echo", "hi"], tmp_path / "s.json", python="/py")
    assert argv[1:7] == ["--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
    spec = str(tmp_path / "s.json")
    assert argv[7:] == ["/py", "-I", "-S", SHIM_PATH, "--spec", spec, "--", "echo", "hi"]
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="unshare"):
        wrap(["true"], tmp_path / "s.json")


def test_pdeathsig_preexec_exits_if_the_parent_is_already_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    wrong_parent = pdeathsig_preexec(os.getpid() + 1)  # as if we had died before the fork
    proc = subprocess.run(["touch", str(marker)], preexec_fn=wrong_parent, check=False)
    assert proc.returncode == 127
    assert not marker.exists()
    ok = subprocess.run(["touch", str(marker)], preexec_fn=pdeathsig_preexec(os.getpid()))
    assert ok.returncode == 0 and marker.exists()


# --- exit codes and errors ---------------------------------------------------------


def test_exit_code_and_output_pass_through(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, ["sh", "-c", "echo out; echo err >&2; echo $$; exit 7"])
    assert (code, out, err) == (7, "out\n2\n", "err\n")  # the command is pid 2, the shim 1


def test_child_killed_by_sigkill_gives_137(tmp_path: Path) -> None:
    assert run(tmp_path, ["sh", "-c", "kill -KILL $$"])[0] == 137


def test_missing_command_gives_127_with_the_runtime_message(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, ["no-such-command-kwatt"])
    assert (code, out) == (127, "")
    assert err == 'exec: "no-such-command-kwatt": executable file not found in $PATH\n'
    code, _, err = run(tmp_path, [str(tmp_path / "missing")])
    assert code == 127
    assert (
        err == f'exec: "{tmp_path}/missing": stat {tmp_path}/missing: no such file or directory\n'
    )
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    code, _, err = run(tmp_path, [str(script)])
    assert (code, err) == (127, f'exec: "{script}": permission denied\n')


def test_bad_spec_gives_127_with_one_sentence(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"mounts": [], "workingDir": "relative"}))
    proc = subprocess.run(
        wrap(["true"], spec), capture_output=True, text=True, timeout=10, check=False
    )
    assert proc.returncode == 127
    assert proc.stderr == ("kwatt shim: bad container spec: workingDir must be an absolute path.\n")
    spec.write_text("{not json")
    proc = subprocess.run(
        wrap(["true"], spec), capture_output=True, text=True, timeout=10, check=False
    )
    assert proc.returncode == 127
    assert proc.stderr.startswith(f"kwatt shim: bad container spec: cannot read {spec}: ")
    assert proc.stderr.count("\n") == 1


def test_mount_error_and_bad_working_dir_give_127(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-source")
    code, _, err = run(tmp_path, ["true"], mounts=[Mount(missing, str(tmp_path / "t"), False)])
    assert code == 127
    assert err == (
        f"kwatt shim: cannot bind-mount {missing!r} on {str(tmp_path / 't')!r} (read-write): "
        "no such file or directory.\n"
    )
    code, _, err = run(tmp_path, ["true"], working_dir=str(tmp_path / "nowhere"))
    assert code == 127
    assert "chdir to cwd" in err and "no such file or directory" in err


def test_shim_refuses_to_run_outside_a_pid_namespace(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    write_spec(spec, [], "/")
    proc = subprocess.run(
        [sys.executable, SHIM_PATH, "--spec", str(spec), "--", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 127
    assert "must run as PID 1" in proc.stderr


# --- mounts ------------------------------------------------------------------------


def test_bind_mounts_are_seen_inside_only(tmp_path: Path) -> None:
    data, config, ro = tmp_path / "data", tmp_path / "config.txt", tmp_path / "ro"
    data.mkdir()
    (data / "hello").write_text("from the host\n")
    config.write_text("key=value\n")
    ro.mkdir()
    (ro / "fixed").write_text("read me\n")
    root = tmp_path / "rootfs"
    script = (
        "cat data/hello etc/config.txt ro/fixed; echo written > data/new; "
        "if echo x > ro/y; then echo ro-writable; else echo ro-refused; fi; pwd"
    )
    code, out, err = run(
        tmp_path,
        ["sh", "-c", script],
        mounts=[
            Mount(str(ro), str(root / "ro"), True),
            Mount(str(data), str(root / "data"), False),
            Mount(str(config), str(root / "etc" / "config.txt"), True),
        ],
        working_dir=str(root),
    )
    assert code == 0, err
    assert out == f"from the host\nkey=value\nread me\nro-refused\n{root}\n"
    assert "Read-only file system" in err
    assert (data / "new").read_text() == "written\n"  # the rw mount writes through
    assert not (ro / "y").exists()
    # The mount points were made on the shared filesystem, and stay empty on the host.
    assert sorted(p.name for p in root.iterdir()) == ["data", "etc", "ro"]
    assert list((root / "data").iterdir()) == [] and list((root / "ro").iterdir()) == []
    assert (root / "etc" / "config.txt").read_text() == ""


# --- signals and process lifetime --------------------------------------------------


def test_signals_reach_the_main_process_once_through_the_process_group(tmp_path: Path) -> None:
    script = (
        "trap 'echo TERM' TERM; trap 'echo HUP' HUP; trap 'echo USR1; exit 4' USR1; "
        "echo ready; while :; do sleep 0.02; done"
    )
    proc = start(tmp_path, ["sh", "-c", script])
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        # The main process has a session of its own: a group signal cannot reach it twice.
        (shim,) = children_of(proc.pid)
        (main,) = children_of(shim)
        assert os.getsid(main) == main and os.getpgid(main) != proc.pid
        # Finding: util-linux unshare blocks SIGTERM and forwards nothing...
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.1)
        # ...so the signal goes to the group (unshare + shim), and the shim forwards it.
        assert terminate(proc.pid)
        assert proc.stdout.readline() == "TERM\n"
        assert signal_container(proc.pid, signal.SIGHUP)  # unshare ignores it too
        assert proc.stdout.readline() == "HUP\n"
        assert proc.poll() is None
        signal_container(proc.pid, signal.SIGUSR1)
        assert proc.wait(timeout=5) == 4
    finally:
        signal_container(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert not signal_container(proc.pid, signal.SIGTERM)


def test_a_signal_sent_while_the_shim_starts_is_not_lost(tmp_path: Path) -> None:
    proc = start(tmp_path, ["sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.02; done"])
    try:
        wait_for(lambda: children_of(proc.pid), timeout=5)  # the shim, still starting Python
        terminate(proc.pid)
        assert proc.wait(timeout=5) in (9, 128 + signal.SIGTERM)  # before or after its trap
    finally:
        signal_container(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_sigkill_gives_137_and_kills_the_namespace(tmp_path: Path, no_leftovers: list[str]) -> None:
    token = sleep_token()
    no_leftovers.append(token)
    proc = start(tmp_path, ["sh", "-c", f"sleep {token} & echo ready; wait"])
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    wait_for(lambda: len(pids_with(token)) == 1)
    signal_container(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=5)
    assert proc.returncode == -signal.SIGKILL
    assert pids_with(token) == []


def test_background_processes_die_with_the_main_process(
    tmp_path: Path, no_leftovers: list[str]
) -> None:
    token = sleep_token()
    no_leftovers.append(token)
    # The grandchild leaves its session and ignores SIGHUP: only the namespace's end kills it.
    script = f"setsid nohup sleep {token} >/dev/null 2>&1 & echo ready; read line; exit 3"
    proc = start(tmp_path, ["sh", "-c", script], stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "ready\n"
    wait_for(lambda: len(pids_with(token)) == 1)
    proc.stdin.write("go\n")
    proc.stdin.close()
    assert proc.wait(timeout=5) == 3
    assert pids_with(token) == []
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()


PARENT = """
import importlib.util, json, os, subprocess, sys
spec = importlib.util.spec_from_file_location("kwatt_shim", sys.argv[1])
shim = sys.modules["kwatt_shim"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shim)
argv = json.loads(sys.argv[2])
proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=shim.shim_preexec(os.getpid()))
proc.wait()
"""


def test_nothing_outlives_a_sigkilled_parent(tmp_path: Path, no_leftovers: list[str]) -> None:
    token = sleep_token()
    no_leftovers.append(token)
    spec = tmp_path / "spec.json"
    write_spec(spec, [], str(tmp_path))
    script = f"sleep {token} & sleep {token} & echo ready; wait"
    command = json.dumps(wrap(["sh", "-c", script], spec))
    parent = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", PARENT, SHIM_PATH, command],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    try:
        assert parent.stdout.readline() == "ready\n"
        wait_for(lambda: len(pids_with(token)) == 2)
        (unshare,) = children_of(parent.pid)
        parent.kill()
        parent.wait(timeout=5)
        wait_for(lambda: not pids_with(token) and not alive(unshare))
    finally:
        parent.kill()
        parent.communicate()
