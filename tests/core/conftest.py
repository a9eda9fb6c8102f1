"""Shared fixtures for the core tests: a tiny trace written by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRACE_DIR = REPO / "traces" / "zeus" / "trace"

TRAIN = """dataset,network,batch_size,optimizer,learning_rate,run,target_metric,target_epoch
cifar100,shufflenetv2,64,adadelta,1e-1,1,0.6,10
cifar100,shufflenetv2,64,adadelta,1e-1,2,0.6,20
cifar100,shufflenetv2,64,adadelta,1e-1,3,0.6,
cifar100,shufflenetv2,64,adadelta,1e-1,1,0.5,5
cifar100,shufflenetv2,128,adadelta,1e-1,1,0.6,30
cifar100,shufflenetv2,128,adadelta,1e-1,2,0.6,30
"""
POWER = """dataset,network,batch_size,optimizer,power_limit,time_per_epoch,average_power
cifar100,shufflenetv2,64,adadelta,200,2.0,100.0
cifar100,shufflenetv2,64,adadelta,250,1.5,160.0
cifar100,shufflenetv2,128,adadelta,200,1.0,150.0
cifar100,shufflenetv2,128,adadelta,250,0.9,200.0
"""


@pytest.fixture
def tiny_trace(tmp_path: Path) -> Path:
    (tmp_path / "summary_train.csv").write_text(TRAIN)
    (tmp_path / "summary_power_t4.csv").write_text(POWER)
    return tmp_path
