"""Builds small detector bundles for tests (the one place tests write a bundle by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from protoinspect.sdk.bundle import write_bundle
from protoinspect.sdk.models.prototype_detector import DetectorConfig, PrototypeDetectorNet
from protoinspect.sdk.preprocess import PreprocessSpec

SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}


def make_detector_bundle(out: Path, rng: np.random.Generator, spec: PreprocessSpec | None = None,
                         **config: object) -> Path:
    """A small detector bundle with non-trivial prototypes and map normalisation; 64x64 unless ``spec``."""
    from safetensors.torch import save

    torch.manual_seed(int(rng.integers(2**31)))
    cfg = DetectorConfig(**{**SMALL, **config})  # type: ignore[arg-type]
    net = PrototypeDetectorNet(cfg).eval()
    with torch.no_grad():
        net.map_norm.copy_(torch.tensor([[0.1, 0.5], [0.3, 0.5]]))
        noise = rng.standard_normal(tuple(net.decoder.prototypes.shape)).astype(np.float32)
        net.decoder.prototypes.add_(torch.from_numpy(noise))
    write_bundle(
        out,
        manifest_fields={
            "preprocess": spec or PreprocessSpec(image_size=(64, 64)),
            "model": {"architecture": "PrototypeDetectorNet", "config": cfg.to_dict(),
                      "weights": "detector.safetensors"},
            "thresholds": {"image": 0.5, "pixel": 0.5, "calibration": {}},
        },
        files={"detector.safetensors": save(net.state_dict())},
    )
    return out


def make_exported_bundle(out: Path, rng: np.random.Generator, spec: PreprocessSpec | None = None,
                         **config: object) -> Path:
    """:func:`make_detector_bundle` plus ``detector.onnx`` (export without the parity run; one torch thread)."""
    from protoinspect.export.onnx_export import export_detector_onnx

    make_detector_bundle(out, rng, spec, **config)
    torch.set_num_threads(1)
    export_detector_onnx(out, verify=False)
    return out
