"""Tests of protoinspect.sdk.stages.sam_masker.SamMasker with a tiny randomly initialised SAM, and the "sam" config.

segment_anything imports torchvision at package import (for the predictor's PIL resize and the
automatic mask generator's NMS). Where torchvision is not importable (this CPU-only torch build has no
matching torchvision wheel on PyPI), the ``sa`` fixture puts a minimal stand-in for exactly those four
functions into ``sys.modules`` for the duration of a test and removes it (and segment_anything) again
afterwards, so the real SAM modeling and SamPredictor code runs. The automatic mask generator is not
used by SamMasker, so its NMS stand-in is never called.
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.inspector_stages import masker_settings
from protoinspect.sdk.stages.masker import build_masker
from sam_fixtures import tiny_sam

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("segment_anything") is None or importlib.util.find_spec("torch") is None,
    reason="segment_anything or torch not installed (pip install 'protoinspect[sam]')")


def _frames() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 50, (100, 150, 3), dtype=np.uint8)
    bgr[30:70, 40:110] = 200
    return bgr, np.ascontiguousarray(bgr[:, :, 1])


@pytest.mark.parametrize("prompt", [
    {"box_xyxy": (40, 30, 110, 70)},
    {"points": [(75, 50), (10, 10)], "point_labels": [1, 0]},
    {"box_xyxy": (40, 30, 110, 70), "points": [(75, 50)]},
])
def test_mask_shape_and_dtype(sa: types.ModuleType, prompt: dict[str, Any]) -> None:
    masker = sa_masker(sa, cache_for_fixture=False, **prompt)
    bgr, gray = _frames()
    for frame in (bgr, gray, bgr[:, ::-1]):  # colour, gray, non-contiguous
        out = masker.mask(frame)
        assert out.shape == (100, 150) and out.dtype == np.bool_


def sa_masker(sa: types.ModuleType, **kwargs: Any) -> Any:
    from protoinspect.sdk.stages.sam_masker import SamMasker

    return SamMasker(None, sam_model=tiny_sam(sa), **kwargs)


def test_color_order_converts_to_rgb(sa: types.ModuleType) -> None:
    bgr, _ = _frames()
    seen: list[np.ndarray] = []
    for order, frame in (("bgr", bgr), ("rgb", np.ascontiguousarray(bgr[:, :, ::-1]))):
        masker = sa_masker(sa, box_xyxy=(40, 30, 110, 70), color_order=order)
        real = masker.predictor.set_image
        masker.predictor.set_image = lambda img, image_format="RGB", real=real: (  # type: ignore[method-assign]
            seen.append(img.copy()), real(img, image_format))[1]
        masker.mask(frame)
    np.testing.assert_array_equal(seen[0], bgr[:, :, ::-1])
    np.testing.assert_array_equal(seen[0], seen[1])


def test_fixture_cache_runs_sam_once_per_size_and_after_reset(sa: types.ModuleType) -> None:
    masker = sa_masker(sa, box_xyxy=(40, 30, 110, 70))
    calls: list[tuple[int, ...]] = []
    real = masker.predictor.predict
    masker.predictor.predict = lambda **kw: (calls.append(masker.predictor.original_size), real(**kw))[1]  # type: ignore[method-assign]
    bgr, gray = _frames()
    first = masker.mask(bgr)
    for frame in (bgr, gray):
        np.testing.assert_array_equal(masker.mask(frame), first)
    assert len(calls) == 1
    masker.mask(np.zeros((80, 120, 3), np.uint8))  # a new size runs SAM again
    assert len(calls) == 2
    masker.mask(bgr)  # the first size is still cached
    assert len(calls) == 2
    masker.reset()
    masker.mask(bgr)
    assert len(calls) == 3
    out = masker.mask(bgr)
    out[:] = ~out  # callers get copies: the cache is not corrupted
    np.testing.assert_array_equal(masker.mask(bgr), first)


def test_prompt_and_checkpoint_errors(sa: types.ModuleType, tmp_path: Path) -> None:
    from protoinspect.sdk.stages.sam_masker import SamMasker

    with pytest.raises(ConfigError, match="prompt"):
        SamMasker(None, sam_model=tiny_sam(sa))
    for bad in ({"box_xyxy": (5, 5, 2, 9)}, {"box_xyxy": (1, 2, 3)}, {"points": []},
                {"points": [(1, 2)], "point_labels": [2]}, {"box_xyxy": (0, 0, 4, 4), "color_order": "BGR"}):
        with pytest.raises(ConfigError):
            SamMasker(None, sam_model=tiny_sam(sa), **bad)
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match="nope.pth"):
        SamMasker(str(missing), box_xyxy=(0, 0, 4, 4))
    with pytest.raises(ConfigError, match="checkpoint"):
        SamMasker(None, box_xyxy=(0, 0, 4, 4))
    missing.write_bytes(b"")
    with pytest.raises(ConfigError, match="vit_zz"):
        SamMasker(str(missing), model_type="vit_zz", box_xyxy=(0, 0, 4, 4))


def test_checkpoint_route_through_registry(sa: types.ModuleType, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The real vit_b/l/h builders are too big for a unit test, so a tiny builder is registered."""
    import torch
    from protoinspect.sdk.stages.sam_masker import SamMasker

    ref = tiny_sam(sa)
    ckpt = tmp_path / "tiny_sam.pth"
    torch.save(ref.state_dict(), ckpt)

    def build_tiny(checkpoint: str | None = None) -> Any:
        torch.manual_seed(123)  # different init: the weights must come from the checkpoint
        sam = tiny_sam(sa)
        for p in sam.parameters():
            torch.nn.init.normal_(p)
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu"))
        return sam

    monkeypatch.setitem(sa.sam_model_registry, "tiny_test", build_tiny)
    bgr, _ = _frames()
    via_ckpt = SamMasker(str(ckpt), model_type="tiny_test", box_xyxy=(40, 30, 110, 70)).mask(bgr)
    direct = SamMasker(None, sam_model=ref, box_xyxy=(40, 30, 110, 70)).mask(bgr)
    np.testing.assert_array_equal(via_ckpt, direct)

    cfg = InspectorConfig(masker="sam", sam_checkpoint=str(ckpt), sam_model_type="tiny_test",
                          sam_points=((75, 50),))
    built = build_masker(masker_settings(cfg))
    assert isinstance(built, SamMasker) and built.mask(bgr).shape == (100, 150)


def test_inspector_config_sam_validation() -> None:
    cfg = InspectorConfig(masker="sam", sam_checkpoint="sam_vit_b.pth", sam_box_xyxy=(1, 2, 30, 40))
    assert cfg.sam_box_xyxy == (1.0, 2.0, 30.0, 40.0) and cfg.sam_model_type == "vit_b"
    assert cfg.to_dict()["sam_box_xyxy"] == [1.0, 2.0, 30.0, 40.0]
    assert InspectorConfig(masker="sam", sam_checkpoint="x.pth", sam_points=[(3, 4)]).sam_points == ((3.0, 4.0),)
    for bad in ({"masker": "sam"}, {"masker": "sam", "sam_box_xyxy": (1, 2, 30, 40)},
                {"masker": "sam", "sam_checkpoint": "x.pth"}, {"sam_checkpoint": ""},
                {"sam_box_xyxy": (5, 5, 2, 9)}, {"sam_points": []}, {"sam_points": [(1, 2, 3)]},
                {"sam_model_type": ""}):
        with pytest.raises(ConfigError):
            InspectorConfig(**bad)  # type: ignore[arg-type]
