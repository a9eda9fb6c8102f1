"""Which GPU backend the environment gets (docs/sidecar.md: KWATT_GPU_BACKEND, simulated
when KWATT_SIM_GPU_DIR is set), what a sidecar without a GPU library does, and which
simulated GPUs a container sees (NVIDIA_VISIBLE_DEVICES, as the NVIDIA runtime reads it)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sidecar_support import NODE, make_node

from kwatt_core import simgpu as simdev
from kwatt_sidecar import config as configlib
from kwatt_sidecar.app import Sidecar
from kwatt_sidecar.gpu import GpuError, GpuNotFoundError, LimitPermissionError, open_backend
from kwatt_sidecar.gpu.simulated import SimulatedBackend

pytestmark = pytest.mark.timeout(30)


def test_a_simulated_gpu_directory_means_the_simulated_backend(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    env = {"KWATT_SIM_GPU_DIR": str(node.gpu_dir), "NVIDIA_VISIBLE_DEVICES": "all"}
    backend = open_backend(env)
    assert backend.name == "simulated" and backend.visible() == node.uuids
    assert open_backend({**env, "KWATT_GPU_BACKEND": " Simulated "}).name == "simulated"
    with pytest.raises(GpuError, match="KWATT_GPU_BACKEND='cuda' is not a GPU backend"):
        open_backend({**env, "KWATT_GPU_BACKEND": "cuda"})


def test_without_nvml_the_run_is_observed_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU library: the sidecar still starts, sees no GPU, changes nothing, and the
    report says why."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` fails
    backend = open_backend({})
    assert backend.name == "none" and "pynvml" in backend.note
    assert backend.visible() == []
    with pytest.raises(GpuNotFoundError, match=r"^No GPU is visible to the sidecar \(The nvidia"):
        backend.device("GPU-a")
    # Nothing to measure: every reading is 0.
    readings = (backend.energy_j("GPU-a"), backend.power_w("GPU-a"), backend.limit_w("GPU-a"))
    assert readings == (0.0, 0.0, 0.0)
    with pytest.raises(LimitPermissionError):
        backend.set_limit_w("GPU-a", 150)
    cfg = configlib.load(
        {"KWATT_TERMINATION_PATH": str(tmp_path / "term"), "KWATT_STATE_DIR": str(tmp_path)}
    )
    sc = Sidecar(cfg, backend)
    answer = sc.hello(["GPU-a"], None)
    assert (answer["mode"], answer["gpus"], answer["limit_w"]) == ("observe", [], None)
    report = sc.finish()
    assert report.min_limit_w is None and backend.note in report.note  # no GPU, no range


@pytest.mark.parametrize(
    ("visible", "seen"),
    [
        ("all", [0, 1]),
        (None, []),
        ("", []),
        ("void", []),
        ("none", []),
        ("{1}", [1]),
        ("{1},{0}", [0, 1]),
    ],
)
def test_a_container_sees_the_gpus_its_runtime_gives_it(
    tmp_path: Path, visible: str | None, seen: list[int]
) -> None:
    node = make_node(tmp_path, count=2)
    if visible is not None:
        for i, uuid in enumerate(node.uuids):
            visible = visible.replace(f"{{{i}}}", uuid)
    backend = SimulatedBackend(node.provider.node_dir(NODE), visible)
    assert backend.visible() == [node.uuids[i] for i in seen]
    hidden = SimulatedBackend(node.gpu_dir, "all", hidden=True)
    assert hidden.visible() == []
    for uuid in set(node.uuids) - set(backend.visible()):
        with pytest.raises(GpuNotFoundError, match=f"^No visible simulated GPU has UUID {uuid}."):
            backend.device(uuid)


@pytest.mark.parametrize("keyword", ["void", "none"])
def test_the_runtimes_keywords_select_no_gpu_whatever_the_gpus_are_called(
    tmp_path: Path, keyword: str
) -> None:
    """`void` and `none` mean no GPU to the NVIDIA runtime before any device list is read,
    so a GPU whose name happens to be that word is not selected by it."""
    node = make_node(tmp_path)
    simdev.create(node.gpu_dir, replace(node.device(), uuid=keyword))
    assert SimulatedBackend(node.gpu_dir, "all").visible() == sorted([keyword, *node.uuids])
    assert SimulatedBackend(node.gpu_dir, keyword).visible() == []
    assert SimulatedBackend(node.gpu_dir, f" {keyword} ").visible() == []
