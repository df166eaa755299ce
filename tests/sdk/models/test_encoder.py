"""Encoders and loading pretrained encoder weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from protoinspect.sdk.errors import ConfigError, MissingDependencyError
from protoinspect.sdk.models.encoder import ENCODERS, build_encoder, load_pretrained_weights

SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2}



def _randn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))


# ----------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
def test_encoders_give_three_levels_at_strides_4_8_16(rng: np.random.Generator, name: str, hw: tuple[int, int]) -> None:
    enc = build_encoder(name).eval()
    assert isinstance(enc, ENCODERS[name])
    assert len(enc.channels) == 3
    x = _randn(rng, 2, 3, *hw)
    with torch.no_grad():
        feats = enc(x)
    assert len(feats) == 3
    for f, c, stride in zip(feats, enc.channels, (4, 8, 16)):
        assert tuple(f.shape) == (2, c, hw[0] // stride, hw[1] // stride)
        assert f.dtype == torch.float32 and torch.isfinite(f).all()


def test_build_encoder_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError) as info:
        build_encoder("resnet1000")
    msg = str(info.value)
    assert "resnet1000" in msg
    for name in ENCODERS:
        assert name in msg


# ----------------------------------------------------------------------------- pretrained weights


def _perturbed_resnet_state(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    enc = build_encoder("resnet18")
    state = {}
    for k, v in enc.state_dict().items():
        if v.is_floating_point():
            state[k] = v + torch.from_numpy(rng.standard_normal(tuple(v.shape)).astype(np.float32))
        else:  # num_batches_tracked
            state[k] = torch.full_like(v, int(rng.integers(1, 10_000)))
    return state


def _assert_loaded(enc: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = enc.state_dict()
    for k, v in own.items():
        assert k in state, k
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_load_pretrained_pth_with_unused_fc(tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    state = _perturbed_resnet_state(rng)
    ckpt = {**state, "fc.weight": _randn(rng, 10, 512)}  # as in torchvision's full ResNet checkpoint
    path = tmp_path / f"resnet18{suffix}"
    torch.save(ckpt, path)
    fresh = build_encoder("resnet18")
    assert not torch.equal(fresh.state_dict()["conv1.weight"], state["conv1.weight"])
    unused = load_pretrained_weights(fresh, "resnet18", str(path))
    assert unused == ["fc.weight"]
    _assert_loaded(fresh, state)


def test_load_pretrained_safetensors(tmp_path: Path, rng: np.random.Generator) -> None:
    from safetensors.torch import save_file

    state = _perturbed_resnet_state(rng)
    path = tmp_path / "resnet18.safetensors"
    save_file({**state, "fc.weight": _randn(rng, 10, 512)}, str(path))
    fresh = build_encoder("resnet18")
    assert load_pretrained_weights(fresh, "resnet18", str(path)) == ["fc.weight"]
    _assert_loaded(fresh, state)


def test_load_pretrained_nested_state_dict(tmp_path: Path, rng: np.random.Generator) -> None:
    state = _perturbed_resnet_state(rng)
    path = tmp_path / "lightning.ckpt.pth"
    torch.save({"state_dict": {**state, "fc.weight": _randn(rng, 10, 512)}}, path)
    fresh = build_encoder("resnet18")
    assert load_pretrained_weights(fresh, "resnet18", str(path)) == ["fc.weight"]
    _assert_loaded(fresh, state)


def test_load_pretrained_without_num_batches_tracked(tmp_path: Path, rng: np.random.Generator) -> None:
    state = {k: v for k, v in _perturbed_resnet_state(rng).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    fresh = build_encoder("resnet18")
    assert load_pretrained_weights(fresh, "resnet18", str(path)) == []
    own = fresh.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k], v), k


def test_load_pretrained_small_cnn_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    enc = build_encoder("small_cnn")
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(_randn(rng, *p.shape))
    path = tmp_path / "small.pth"
    torch.save(enc.state_dict(), path)
    fresh = build_encoder("small_cnn")
    assert load_pretrained_weights(fresh, "small_cnn", str(path)) == []
    _assert_loaded(fresh, enc.state_dict())


def test_load_pretrained_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match="not found") as info:
        load_pretrained_weights(build_encoder("resnet18"), "resnet18", str(path))
    assert "nope.pth" in str(info.value)


def test_load_pretrained_wrong_shapes(tmp_path: Path, rng: np.random.Generator) -> None:
    state = _perturbed_resnet_state(rng)
    state["conv1.weight"] = _randn(rng, 64, 3, 3, 3)
    path = tmp_path / "bad_shapes.pth"
    torch.save(state, path)
    enc = build_encoder("resnet18")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(ConfigError, match="shape") as info:
        load_pretrained_weights(enc, "resnet18", str(path))
    assert "conv1.weight" in str(info.value)
    for k, v in enc.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k


def test_load_pretrained_other_architecture(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    torch.save(build_encoder("small_cnn").state_dict(), path)
    with pytest.raises(ConfigError, match="wrong architecture") as info:
        load_pretrained_weights(build_encoder("resnet18"), "resnet18", str(path))
    assert "resnet18" in str(info.value)


def test_load_pretrained_missing_tensors(tmp_path: Path, rng: np.random.Generator) -> None:
    state = _perturbed_resnet_state(rng)
    del state["layer3.1.conv2.weight"]
    del state["bn1.running_var"]
    path = tmp_path / "partial.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    with pytest.raises(ConfigError, match="lacks 2") as info:
        load_pretrained_weights(build_encoder("resnet18"), "resnet18", str(path))
    assert "layer3.1.conv2.weight" in str(info.value) or "bn1.running_var" in str(info.value)


def test_load_pretrained_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ConfigError, match="state_dict"):
        load_pretrained_weights(build_encoder("resnet18"), "resnet18", str(path))


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_weights_without_torchvision() -> None:
    with pytest.raises(MissingDependencyError) as info:
        load_pretrained_weights(build_encoder("resnet18"), "resnet18", "torchvision:DEFAULT")
    assert isinstance(info.value, ImportError)
    msg = str(info.value)
    assert "pip install" in msg and "torchvision" in msg


def test_torchvision_weights_for_unsupported_encoder() -> None:
    with pytest.raises(ConfigError, match="local file"):
        load_pretrained_weights(build_encoder("small_cnn"), "small_cnn", "torchvision:DEFAULT")


