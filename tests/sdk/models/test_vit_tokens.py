"""The ViT token source of the defect classifier: loading user weights, shapes, and discovery with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.vit_tokens import ViTTokens, load_vit_weights, vit_from_state_dict


def _save_tiny_vit(path: Path, patch: int = 8, dim: int = 32, grid: int = 4) -> ViTTokens:
    vit = ViTTokens(patch=patch, dim=dim, depth=2, heads=None, hidden=64, num_pos=1 + grid * grid)
    state = {f"module.{k}": v for k, v in vit.state_dict().items()}  # DDP-style prefix, unwrapped on load
    state["head.weight"] = torch.zeros(10, dim)  # a classification head is ignored
    torch.save({"model": state}, path)
    return vit.eval()


def test_vit_round_trip_and_token_grid(tmp_path: Path) -> None:
    vit = _save_tiny_vit(tmp_path / "vit.pth")
    loaded = vit_from_state_dict(load_vit_weights(tmp_path / "vit.pth"))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = loaded(x)
        assert out.shape == (3, 32, 4, 4)
        torch.testing.assert_close(out, vit(x))
        assert loaded(torch.randn(1, 3, 48, 48)).shape == (1, 32, 6, 6)  # position grid interpolated


def test_bad_vit_weights_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_vit_weights(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        load_vit_weights(tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="DINO/timm layout"):
        vit_from_state_dict({"conv.weight": torch.zeros(1)})


def test_vit_crop_tokens_resample_each_crop(tmp_path: Path) -> None:
    from protoinspect.sdk.stages.crops import CropBox
    from protoinspect.sdk.stages.discovery_crops import vit_crop_tokens

    vit = _save_tiny_vit(tmp_path / "vit.pth")
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tokens = vit_crop_tokens(vit, image, [CropBox(0, 0, 32, 32), CropBox(10, 20, 60, 64)], grid=4, input_size=32)
    assert tokens.shape == (2, 32, 4, 4) and tokens.dtype == np.float32
    crop = (image[:32, :32].astype(np.float32) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
        direct = vit(torch.from_numpy(crop.transpose(2, 0, 1)[None].astype(np.float32)))[0].numpy()
    np.testing.assert_allclose(tokens[0], direct, atol=1e-4)
