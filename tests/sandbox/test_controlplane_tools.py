"""The chart's Go tools (helm 3, helm 4, kubecheck, prometheus): built once per machine into
the cache.

As for the control plane (test_controlplane_build.py, whose fake `go` these tests use), no
real build runs here: the tools modules are copied to tmp_path so that they can be edited.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from test_controlplane_build import FAKE_GO, build_calls, builds

from kwatt_sandbox.controlplane import build, tools

REAL_MODULES = Path(build.__file__).resolve().parents[2] / "controlplane"


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "modules"
    for name in ("helm3", "helm4", "kubecheck", "prometheus"):
        shutil.copytree(REAL_MODULES / name, copy / name)
    monkeypatch.setattr(build, "modules_dir", lambda: copy)
    return copy


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("KWATT_CACHE_DIR", str(root))
    return root


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    log = tmp_path / "go.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    for name in ("FAKE_GOVERSION", "FAKE_GO_FAIL", "FAKE_GO_SLEEP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(build, "_PROGRESS_INTERVAL", 0.05)
    return log


def test_the_real_modules_name_their_tools() -> None:
    """The committed modules: a `tool` line each for helm, kubecheck's own main package."""
    for name, tool_line in (
        ("helm3", "tool helm.sh/helm/v3/cmd/helm"),
        ("helm4", "tool helm.sh/helm/v4/cmd/helm"),
        ("prometheus", "tool github.com/prometheus/prometheus/cmd/prometheus"),
    ):
        go_mod = (REAL_MODULES / name / "go.mod").read_text()
        assert tool_line in go_mod.splitlines()
        assert (REAL_MODULES / name / "go.sum").is_file()
        assert sorted(p.name for p in (REAL_MODULES / name).iterdir()) == ["go.mod", "go.sum"]
    assert "helm.sh/helm/v3 v3.22.0" in (REAL_MODULES / "helm3" / "go.mod").read_text()
    assert "helm.sh/helm/v4 v4.3.1" in (REAL_MODULES / "helm4" / "go.mod").read_text()
    prometheus = (REAL_MODULES / "prometheus" / "go.mod").read_text()
    assert "github.com/prometheus/prometheus v0.316.0" in prometheus
    kubecheck = (REAL_MODULES / "kubecheck" / "go.mod").read_text()
    assert "k8s.io/api v0.29.15" in kubecheck
    assert "k8s.io/client-go v0.29.15" in kubecheck


def test_each_tool_is_built_once_with_its_version_stamps(
    modules: Path, cache: Path, fake_go: Path
) -> None:
    out = io.StringIO()
    paths = {name: tools.ensure_tool(name, out) for name in tools.TOOLS}
    assert paths["helm3"].name == "helm" and paths["kubecheck"].name == "kubecheck"
    for name, path in paths.items():
        folder = path.parent.parent
        assert folder.parent == cache / "tools"
        assert folder.name.startswith(f"{name}-")
        assert "-go1.26.8-linux-amd64-" in folder.name
        assert json.loads((folder / tools.RECORD).read_text())["go"] == "go1.26.8"
        assert tools.find_tool(name) == path
    assert "helm3-v3.22.0-" in paths["helm3"].parent.parent.name
    assert "helm4-v4.3.1-" in paths["helm4"].parent.parent.name
    assert "kubecheck-v0.29.15-" in paths["kubecheck"].parent.parent.name
    assert "prometheus-v0.316.0-" in paths["prometheus"].parent.parent.name
    assert paths["prometheus"].name == "prometheus"
    assert sorted(builds(fake_go)) == [
        "build helm3",
        "build helm4",
        "build kubecheck",
        "build prometheus",
    ]
    calls = {call[0].rsplit("/", 1)[-1]: call for call in build_calls(fake_go)}
    helm3 = calls["helm3"][-1]
    assert "-X helm.sh/helm/v3/internal/version.version=v3.22.0" in helm3
    # Helm 3's default Kubernetes version is client-go's (v0.37.0: 1.37), as its Makefile sets.
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in helm3
    assert "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37" in helm3
    assert "-X helm.sh/helm/v4/internal/version.version=v4.3.1" in calls["helm4"][-1]
    assert calls["kubecheck"][-1].endswith(" .")
    # Prometheus without its service-discovery plugins, stamped with its release (3.16.0).
    prometheus = calls["prometheus"][-1]
    assert " -tags remove_all_sd " in prometheus
    assert "-X github.com/prometheus/common/version.Version=3.16.0" in prometheus
    assert "-tags" not in calls["helm3"][-1]
    for call in calls.values():
        assert call[1:4] == ["GOTOOLCHAIN=local", "GOWORK=off", "GOFLAGS=-mod=readonly"]
    assert "Built helm4 v4.3.1 in" in out.getvalue()
    # Again: nothing is built.
    again = {name: tools.ensure_tool(name, io.StringIO()) for name in tools.TOOLS}
    assert again == paths
    assert len(builds(fake_go)) == 4
    assert not list((cache / "tools").glob(".*"))  # no temporary folder left


def test_a_changed_module_builds_anew(modules: Path, cache: Path, fake_go: Path) -> None:
    first = tools.ensure_tool("kubecheck", io.StringIO())
    main_go = modules / "kubecheck" / "main.go"
    main_go.write_text(main_go.read_text() + "\n// changed\n")
    assert tools.find_tool("kubecheck") is None
    second = tools.ensure_tool("kubecheck", io.StringIO())
    assert second != first and second.is_file()
    assert builds(fake_go) == ["build kubecheck", "build kubecheck"]


def test_a_failed_build_says_why_and_caches_nothing(
    modules: Path, cache: Path, fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "helm4")
    with pytest.raises(build.BuildError, match=r"Building helm4 v4\.3\.1 failed") as caught:
        tools.ensure_tool("helm4", io.StringIO())
    assert "undefined: frobnicate" in str(caught.value)
    assert tools.find_tool("helm4") is None
    assert not [p for p in (cache / "tools").iterdir() if not p.name.endswith(".lock")]


def test_without_go_it_says_what_to_install(
    modules: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "nogo"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert tools.find_tool("helm3") is None
    with pytest.raises(build.GoMissingError, match=r"install it \(https://go\.dev/doc/install\)"):
        tools.ensure_tool("helm3", io.StringIO())


def test_the_command_builds_and_prints_paths(
    modules: Path, cache: Path, fake_go: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tools.main(["--print-path", "helm3", "kubecheck"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [Path(p).name for p in printed] == ["helm", "kubecheck"]
    assert tools.main(["helm5"]) == 2
    assert (
        "No tool 'helm5'; the tools are helm3, helm4, kubecheck, prometheus."
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("module", "release"),
    [("v0.316.0", "3.16.0"), ("v0.300.1", "3.0.1"), ("v0.54.1", "2.54.1"), ("v3.1.0", "3.1.0")],
)
def test_prometheus_release_from_its_module_version(module: str, release: str) -> None:
    assert tools._release(module) == release
