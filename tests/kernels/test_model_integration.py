"""The models with ``attention_impl="triton"`` match their reference path (decoder and classifier)."""

from __future__ import annotations

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if not (INTERPRET or torch.cuda.is_available()):
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 (tests/kernels/test_interpreted_run.py runs them)",
                allow_module_level=True)
pytest.importorskip("triton", reason="the triton extra is not installed")

from protoinspect.kernels.errors import KernelBackwardUnsupportedError  # noqa: E402
from protoinspect.sdk.errors import ConfigError  # noqa: E402
from protoinspect.sdk.models.defect_classifier import ClassifierConfig, DefectClassifierNet  # noqa: E402
from protoinspect.sdk.models.prototype_detector import DetectorConfig, PrototypeDetectorNet  # noqa: E402

DEVICE = "cpu" if INTERPRET else "cuda"
TOL = (1e-4, 1e-4)  # fp32 end to end: online vs. one-shot softmax, different summation order


def _spy(monkeypatch: pytest.MonkeyPatch, module_name: str, fn_name: str) -> list[int]:
    """Count calls of a kernel launcher, to prove the triton path really ran."""
    import importlib
    import sys

    importlib.import_module(module_name)
    module = sys.modules[module_name]
    real = getattr(module, fn_name)
    calls: list[int] = []

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, fn_name, counted)
    return calls


def test_decoder_triton_matches_reference(check_close, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "protoinspect.kernels.prototype_attention_kernel", "prototype_attention")
    cfg = DetectorConfig(embed_dim=32, num_heads=2, num_prototypes=24, num_layers=1, blur_sigma=1.0)
    ref = PrototypeDetectorNet(cfg).eval().to(DEVICE)
    tri = PrototypeDetectorNet(DetectorConfig(**{**cfg.to_dict(), "attention_impl": "triton",
                                                 "level_weights": cfg.level_weights})).eval().to(DEVICE)
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 48, device=DEVICE)
    with torch.no_grad():
        (m_ref, s_ref), (m_tri, s_tri) = ref(x), tri(x)
    check_close(m_tri, m_ref, TOL, "decoder map, triton vs reference")
    check_close(s_tri, s_ref, TOL, "decoder score, triton vs reference")
    assert len(calls) == 2  # one layer: aggregation into the prototypes + reconstruction through them


def test_classifier_triton_matches_reference(check_close, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "protoinspect.kernels.region_guided_attention_kernel", "region_guided_attention")
    cfg = ClassifierConfig(in_channels=20, grid=5, embed_dim=32, num_heads=2, num_classes=4)
    ref = DefectClassifierNet(cfg).eval().to(DEVICE)
    tri = DefectClassifierNet(ClassifierConfig(**{**cfg.to_dict(), "attention_impl": "triton"})).eval().to(DEVICE)
    tri.load_state_dict(ref.state_dict())
    tokens, regions = torch.randn(3, 20, 5, 5, device=DEVICE), torch.rand(3, 2, 5, 5, device=DEVICE)
    with torch.no_grad():
        (z_ref, l_ref), (z_tri, l_tri) = ref(tokens, regions), tri(tokens, regions)
    check_close(z_tri, z_ref, TOL, "classifier embedding, triton vs reference")
    check_close(l_tri, l_ref, (TOL[0] * cfg.kappa, TOL[1]), "classifier logits, triton vs reference")
    assert len(calls) == cfg.num_layers


def test_classifier_triton_training_surfaces_a_config_error() -> None:
    """The region-guided kernel is forward-only: at the SDK boundary that is a ConfigError naming the fix."""
    cfg = ClassifierConfig(in_channels=20, grid=5, embed_dim=32, num_heads=2, num_classes=4, attention_impl="triton")
    net = DefectClassifierNet(cfg).train().to(DEVICE)  # parameters require grad: q, k, v would need a backward
    tokens, regions = torch.randn(2, 20, 5, 5, device=DEVICE), torch.rand(2, 2, 5, 5, device=DEVICE)
    with pytest.raises(ConfigError, match="forward-only.*attention_impl='reference'") as info:
        net(tokens, regions)
    assert isinstance(info.value.__cause__, KernelBackwardUnsupportedError)
