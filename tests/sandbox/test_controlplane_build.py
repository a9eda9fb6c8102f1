"""The control plane's one-time build: cache key, cache root, no Go, lock and atomic rename.

None of these runs the real multi-minute build: a fake `go` (a shell script first on
PATH) answers `go env`, `go list -deps` and `go build -o ...` the way the real one does,
and the Go tools modules are copied to tmp_path so that they can be edited.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kwatt_sandbox.controlplane import build

REAL_MODULES = Path(build.__file__).resolve().parents[2] / "controlplane"

FAKE_GO = r"""#!/bin/sh
# A stand-in for Go: logs each call, answers `env` and `list -deps`, and "builds" by
# writing tiny executables where `-o` says.
echo "$(pwd)|GOTOOLCHAIN=$GOTOOLCHAIN|GOWORK=$GOWORK|GOFLAGS=$GOFLAGS|CGO=${CGO_ENABLED-unset}|$*" \
    >> "$FAKE_GO_LOG"
case "$1" in
env)
    echo "${FAKE_GOVERSION:-go1.26.8}"; echo linux; echo amd64 ;;
list)
    shift; shift
    if [ "$FAKE_GO_FAIL" = "list" ]; then echo "go: cannot reach proxy.golang.org" >&2; exit 1; fi
    for t in "$@"; do echo "$t"; echo "$t/dep1"; echo "$t/dep2"; done ;;
build)
    echo "build $(basename "$(pwd)")" >> "$FAKE_GO_LOG.builds"
    out=""; prev=""
    for a in "$@"; do
        if [ "$prev" = "-o" ]; then out="$a"; fi
        prev="$a"
        case "$a" in k8s.io/*|go.etcd.io/*) echo "$a/dep1" >&2; echo "$a" >&2 ;; esac
    done
    sleep "${FAKE_GO_SLEEP:-0}"
    if [ "$FAKE_GO_FAIL" = "$(basename "$(pwd)")" ]; then
        echo "# k8s.io/kubernetes/pkg/broken" >&2
        echo "pkg/broken/broken.go:7:2: undefined: frobnicate" >&2
        exit 1
    fi
    case "$out" in
    */)
        mkdir -p "$out"
        for a in "$@"; do
            case "$a" in k8s.io/kubernetes/cmd/*)
                printf '#!/bin/sh\necho fake\n' > "$out${a##*/}"; chmod +x "$out${a##*/}" ;;
            esac
        done ;;
    *)
        mkdir -p "$(dirname "$out")"; printf '#!/bin/sh\necho fake\n' > "$out"; chmod +x "$out" ;;
    esac ;;
*)
    echo "fake go: unexpected $*" >&2; exit 3 ;;
esac
"""

PROGRESS = re.compile(
    r"^Building the sandbox control plane \(one time, cached in .+\): \d+/\d+ packages, \d+s$"
)
DONE = re.compile(
    r"^Built kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd in "
    r"\d+s; cached in (.+)\.$"
)


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repository's Go tools modules, used in place of the real ones."""
    copy = tmp_path / "modules"
    for name in ("kubernetes", "etcd"):
        (copy / name).mkdir(parents=True)
        for file in ("go.mod", "go.sum"):
            shutil.copy(REAL_MODULES / name / file, copy / name / file)
    monkeypatch.setattr(build, "modules_dir", lambda: copy)
    return copy


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("KWATT_CACHE_DIR", str(root))
    return root


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the fake go first on PATH; returns its call log."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    log = tmp_path / "go.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    for name in ("FAKE_GOVERSION", "FAKE_GO_FAIL", "FAKE_GO_SLEEP", "CGO_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(build, "_PROGRESS_INTERVAL", 0.05)
    return log


@pytest.fixture
def no_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only a folder without go."""
    empty = tmp_path / "nogo"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def builds(log: Path) -> list[str]:
    path = Path(f"{log}.builds")
    return path.read_text().splitlines() if path.exists() else []


def build_calls(log: Path) -> list[list[str]]:
    return [line.split("|") for line in log.read_text().splitlines() if "|build " in line]


def assert_one_sentence(text: str) -> None:
    text = text.strip()
    assert "\n" not in text, text
    assert text.endswith("."), text
    assert ". " not in text, text  # no second sentence


# --- the cache key ----------------------------------------------------------------------


def test_key_names_the_versions_and_is_stable(modules: Path, cache: Path, fake_go: Path) -> None:
    first = build.cache_dir()
    assert first == build.cache_dir()
    assert first.parent == cache / "controlplane"
    assert re.fullmatch(
        r"k8s-v1\.37\.2-etcd-v3\.6\.16-go1\.26\.8-linux-amd64-[0-9a-f]{12}", first.name
    ), first.name


def test_key_changes_with_one_go_sum_byte(modules: Path, cache: Path, fake_go: Path) -> None:
    before = build.cache_dir()
    go_sum = modules / "kubernetes" / "go.sum"
    original = go_sum.read_bytes()
    go_sum.write_bytes(original[:-2] + bytes([original[-2] ^ 1]) + original[-1:])
    changed = build.cache_dir()
    assert changed != before
    assert changed.name.rsplit("-", 1)[0] == before.name.rsplit("-", 1)[0]  # only the hash
    go_sum.write_bytes(original)
    assert build.cache_dir() == before


def test_key_follows_go_mod_versions_and_go(
    modules: Path, cache: Path, fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_mod = modules / "etcd" / "go.mod"
    go_mod.write_text(
        go_mod.read_text().replace("etcd/server/v3 v3.6.16", "etcd/server/v3 v3.6.17")
    )
    assert "-etcd-v3.6.17-" in build.cache_dir().name
    monkeypatch.setenv("FAKE_GOVERSION", "go1.27.1")
    assert "-go1.27.1-" in build.cache_dir().name


# --- the cache root ---------------------------------------------------------------------


def test_relative_cache_dir_is_a_clear_error(
    modules: Path,
    fake_go: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KWATT_CACHE_DIR", "relative/cache")
    with pytest.raises(build.BuildError, match="KWATT_CACHE_DIR must be an absolute path"):
        build.cache_dir()
    assert build.main([]) == 2
    err = capsys.readouterr().err
    assert "KWATT_CACHE_DIR must be an absolute path" in err and "relative/cache" in err


def test_cache_root_defaults_to_xdg_then_home(
    modules: Path, fake_go: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KWATT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_dir().parent == tmp_path / "xdg" / "kwatt" / "controlplane"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert build.cache_dir().parent == tmp_path / "home" / ".cache" / "kwatt" / "controlplane"


# --- no Go, or too old a Go -------------------------------------------------------------


def test_no_go_is_one_sentence_and_exit_2(
    modules: Path, cache: Path, no_go: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build.find_binaries() is None
    with pytest.raises(build.GoMissingError):
        build.ensure_binaries(io.StringIO())
    assert build.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_sentence(captured.err)
    assert captured.err.startswith("Go 1.26 or newer is needed")
    assert "https://go.dev/doc/install" in captured.err
    assert not cache.exists()


def test_no_go_from_the_command_line(tmp_path: Path, no_go: Path) -> None:
    env = {**os.environ, "PATH": str(no_go), "KWATT_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "kwatt_sandbox.controlplane.build"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert_one_sentence(result.stderr)
    assert "Go 1.26 or newer" in result.stderr


def test_too_old_go_is_one_sentence(
    modules: Path, cache: Path, fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GOVERSION", "go1.25.7")
    with pytest.raises(build.GoMissingError) as raised:
        build.ensure_binaries(io.StringIO())
    message = str(raised.value)
    assert_one_sentence(message)
    assert "Go 1.26 or newer" in message and "go1.25.7" in message
    assert builds(fake_go) == []


# --- finding a cached set ---------------------------------------------------------------


def fill(directory: Path, names: tuple[str, ...] = build.BINARIES) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)


def test_find_binaries_needs_a_complete_set(modules: Path, cache: Path, fake_go: Path) -> None:
    assert build.find_binaries() is None  # nothing there
    bin_dir = build.cache_dir() / "bin"
    fill(bin_dir, build.BINARIES[:-1])
    assert build.find_binaries() is None  # kubectl missing
    fill(bin_dir)
    (bin_dir / "kube-scheduler").chmod(0o644)
    assert build.find_binaries() is None  # not executable
    (bin_dir / "kube-scheduler").chmod(0o755)
    found = build.find_binaries()
    assert found == build.Binaries(bin_dir)
    assert found.path("kubectl") == bin_dir / "kubectl"
    with pytest.raises(ValueError):
        found.path("kubelet")
    assert builds(fake_go) == []  # finding never builds


# --- building ---------------------------------------------------------------------------


def test_build_leaves_exactly_the_five_binaries(
    modules: Path, cache: Path, fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_SLEEP", "0.4")
    out = io.StringIO()
    binaries = build.ensure_binaries(out)

    final = build.cache_dir()
    assert binaries == build.Binaries(final / "bin")
    assert sorted(p.name for p in binaries.directory.iterdir()) == sorted(build.BINARIES)
    for name in build.BINARIES:
        assert os.access(binaries.path(name), os.X_OK)
    # No temporary folder left, only the finished set and its lock file.
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name, f"{final.name}.lock"]
    assert sorted(p.name for p in final.iterdir()) == ["bin", build.RECORD]
    # The build says how long it took, for `make bench-sandbox`.
    record = build.build_record(binaries)
    assert record is not None and record["go"] == "go1.26.8" and record["seconds"] >= 0.4

    lines = out.getvalue().splitlines()
    assert any(PROGRESS.match(line) for line in lines), lines
    assert any("/15 packages" in line for line in lines), lines  # 5 targets x 3 from go list
    done = DONE.match(lines[-1])
    assert done is not None, lines
    assert done.group(1) == str(final)

    assert builds(fake_go) == ["build etcd", "build kubernetes"]
    etcd_call, kube_call = build_calls(fake_go)
    for call in (etcd_call, kube_call):
        assert call[1:5] == [
            "GOTOOLCHAIN=local",
            "GOWORK=off",
            "GOFLAGS=-mod=readonly",
            "CGO=unset",
        ]
    assert etcd_call[0] == str(modules / "etcd")
    assert kube_call[0] == str(modules / "kubernetes")
    assert etcd_call[5].startswith("build -trimpath -v -ldflags -s -w -o ")
    assert etcd_call[5].endswith("/bin/etcd go.etcd.io/etcd/server/v3")
    kube_args = kube_call[5]
    assert kube_args.startswith("build -trimpath -v -ldflags -s -w -X ")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for stamp in ("gitVersion=v1.37.2", "gitMajor=1", "gitMinor=37", "gitTreeState=clean"):
            assert f"-X {package}.{stamp}" in kube_args
    assert kube_args.endswith(
        "/bin/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager"
        " k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
    )

    # A second call, like a fresh clone's, finds them silently.
    again = io.StringIO()
    assert build.ensure_binaries(again) == binaries
    assert again.getvalue() == ""
    assert builds(fake_go) == ["build etcd", "build kubernetes"]


def test_failed_build_leaves_no_cache_and_shows_go_tail(
    modules: Path, cache: Path, fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "kubernetes")  # etcd builds, then Kubernetes fails
    with pytest.raises(build.BuildError) as raised:
        build.ensure_binaries(io.StringIO())
    message = str(raised.value)
    assert message.startswith("Building kube-apiserver, kube-controller-manager")
    assert "undefined: frobnicate" in message and "# k8s.io/kubernetes/pkg/broken" in message
    assert builds(fake_go) == ["build etcd", "build kubernetes"]
    final = build.cache_dir()
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir()] == [f"{final.name}.lock"]  # no half cache
    assert build.find_binaries() is None


def test_failed_listing_is_a_build_error(
    modules: Path, cache: Path, fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "list")
    with pytest.raises(build.BuildError, match=r"cannot reach proxy\.golang\.org"):
        build.ensure_binaries(io.StringIO())
    assert builds(fake_go) == []
    assert not build.cache_dir().exists()


def test_interrupted_build_leftovers_are_replaced(
    modules: Path, cache: Path, fake_go: Path
) -> None:
    final = build.cache_dir()
    stale = final.parent / f".{final.name}.tmp-dead"
    fill(stale / "bin", ("etcd",))
    fill(final / "bin", ("etcd", "kubectl"))  # incomplete: someone deleted some
    binaries = build.ensure_binaries(io.StringIO())
    assert sorted(p.name for p in binaries.directory.iterdir()) == sorted(build.BINARIES)
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name, f"{final.name}.lock"]


def test_concurrent_callers_build_once(
    modules: Path, cache: Path, fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_SLEEP", "0.5")
    outs = [io.StringIO(), io.StringIO()]
    results: list[build.Binaries | BaseException] = []

    def call(out: io.StringIO) -> None:
        try:
            results.append(build.ensure_binaries(out))
        except BaseException as e:  # reported by the assertions below
            results.append(e)

    first = threading.Thread(target=call, args=(outs[0],))
    first.start()
    deadline = time.monotonic() + 30
    while not builds(fake_go) and time.monotonic() < deadline:  # the first is building
        time.sleep(0.02)
    second = threading.Thread(target=call, args=(outs[1],))
    second.start()
    first.join(60)
    second.join(60)

    assert len(results) == 2 and results[0] == results[1], results
    assert isinstance(results[0], build.Binaries)
    assert builds(fake_go) == ["build etcd", "build kubernetes"]  # once, not twice
    assert "Waiting for another build" in outs[1].getvalue()
    assert "Built kube-apiserver" not in outs[1].getvalue()


def test_main_force_rebuilds_and_prints_dir(
    modules: Path, cache: Path, fake_go: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build.main(["--print-dir"]) == 0
    first = capsys.readouterr()
    directory = build.cache_dir() / "bin"
    assert first.out == f"{directory}\n"
    assert DONE.match(first.err.splitlines()[-1])

    assert build.main(["--print-dir"]) == 0
    assert capsys.readouterr() == (f"{directory}\n", "")  # cached: no build, no noise
    assert len(builds(fake_go)) == 2

    assert build.main(["--force"]) == 0
    forced = capsys.readouterr()
    assert forced.out == ""
    assert len(builds(fake_go)) == 4
    assert sorted(p.name for p in directory.iterdir()) == sorted(build.BINARIES)
    assert sorted(p.name for p in directory.parent.parent.iterdir()) == sorted(
        [directory.parent.name, f"{directory.parent.name}.lock"]
    )


def test_fake_binaries_are_executable_files(modules: Path, cache: Path, fake_go: Path) -> None:
    binaries = build.ensure_binaries(io.StringIO())
    kubectl = binaries.path("kubectl")
    assert stat.S_ISREG(kubectl.stat().st_mode)
    assert subprocess.run([kubectl], capture_output=True, text=True, check=True).stdout == "fake\n"
