"""Data-parallel training: torchrun with 2 gloo processes on the CPU writes the same bundle format."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.training.distributed import resolve_device, setup_distributed

TINY = ["image_size=64", "crop=32", "steps=4", "batch=4", "checkpoint_every=2", "min_holdout=2",
        "detector.num_prototypes=16", "detector.embed_dim=32", "detector.num_heads=2", "detector.blur_sigma=1.0",
        "num_threads=1", "device=cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_one_bundle(tiny_products: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "protoinspect.training.train_detector",
           *[a for d in tiny_products for a in ("--data", str(d))], "--out", str(out), "--quiet",
           *[a for s in TINY for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    manifest = load_bundle(out).manifest
    assert manifest.extra["world_size"] == 2 and manifest.extra["device"] == "cpu"
    assert [d["name"] for d in manifest.datasets] == ["tile", "washer"]
    assert np.isfinite(manifest.thresholds["image"])
    net = load_detector_net(out)
    with torch.no_grad():
        amap, score = net(torch.randn(2, 3, 64, 64))
    assert amap.shape == (2, 1, 64, 64) and score.shape == (2,) and torch.isfinite(score).all()
    assert not (tmp_path / "bundle.work" / "checkpoint.pt").exists()


def test_single_process_context_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup_distributed("cpu")
    assert ctx.world_size == 1 and ctx.is_main and ctx.device.type == "cpu"
    module = torch.nn.Linear(2, 2)
    assert ctx.wrap(module) is module and ctx.unwrap(module) is module


def test_cuda_asked_for_but_absent_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device=cuda was asked for but torch sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("tpu")
