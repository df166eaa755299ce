"""The prototype decoder, the detector net, its config and loading it from a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from protoinspect.kernels.errors import (
    KernelBackwardUnsupportedError,
    KernelDtypeError,
    KernelInputError,
    TritonNotInstalledError,
)
from protoinspect.sdk.bundle import write_bundle
from protoinspect.sdk.errors import BundleError, ConfigError, InputError, MissingDependencyError
from protoinspect.sdk.models.attention_impl import kernel_errors
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.sdk.models.prototype_decoder import PrototypeDecoder
from protoinspect.sdk.models.prototype_detector import DetectorConfig, PrototypeDetectorNet
from protoinspect.sdk.preprocess import PreprocessSpec

SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2}



def _randn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))


# ----------------------------------------------------------------------------- decoder


def _features(rng: np.random.Generator, b: int, channels: tuple[int, ...], hw: tuple[int, int]) -> list[torch.Tensor]:
    return [_randn(rng, b, c, hw[0] // s, hw[1] // s) for c, s in zip(channels, (4, 8, 16))]


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
@pytest.mark.parametrize("dynamic", [True, False])
def test_decoder_output_shapes_match_inputs(rng: np.random.Generator, hw: tuple[int, int], dynamic: bool) -> None:
    channels = (8, 16, 24)
    dec = PrototypeDecoder(channels, embed_dim=32, num_prototypes=16, num_heads=2, topk=4, dynamic_prototypes=dynamic)
    feats = _features(rng, 2, channels, hw)
    for mode in (dec.train, dec.eval):
        mode()
        outs, tokens = dec.forward_with_tokens(feats)
        assert [tuple(o.shape) for o in outs] == [tuple(f.shape) for f in feats]
        assert tuple(tokens.shape) == (2, (hw[0] // 8) * (hw[1] // 8), 32)
        assert all(torch.isfinite(o).all() for o in outs)
    assert [tuple(o.shape) for o in dec(feats)] == [tuple(f.shape) for f in feats]
    loss = dec.prototype_constraint(tokens)
    assert loss.ndim == 0 and 0.0 <= float(loss.detach()) <= 2.0


def _static_decoder(channels: tuple[int, ...]) -> PrototypeDecoder:
    return PrototypeDecoder(channels, embed_dim=32, num_prototypes=16, num_heads=2, dynamic_prototypes=False).eval()


def test_decoder_has_no_query_residual_constant_prototypes(rng: np.random.Generator) -> None:
    channels = (8, 16, 24)
    dec = _static_decoder(channels)
    torch.nn.init.constant_(dec.prototypes, float(rng.uniform(-1, 1)))
    with torch.no_grad():
        a = dec(_features(rng, 2, channels, (64, 64)))
        b = dec(_features(rng, 2, channels, (64, 64)))
    for ra, rb in zip(a, b):
        torch.testing.assert_close(ra, rb, rtol=0, atol=1e-5)


def test_decoder_has_no_query_residual_identical_random_prototypes(rng: np.random.Generator) -> None:
    """Stronger form: all prototypes the same random vector (not wiped out by LayerNorm)."""
    channels = (8, 16, 24)
    dec = _static_decoder(channels)
    with torch.no_grad():
        dec.prototypes.copy_(_randn(rng, 1, 32).expand(16, 32))
        fa, fb = _features(rng, 2, channels, (64, 64)), _features(rng, 3, channels, (64, 64))
        a, b = dec(fa), dec(fb)
    for ra, rb in zip(a, b):
        # every location of every image gets the same vector
        torch.testing.assert_close(ra, rb[:2], rtol=0, atol=1e-5)
        torch.testing.assert_close(ra, ra[:1, :, :1, :1].expand_as(ra), rtol=0, atol=1e-5)
    # sanity: with distinct prototypes the reconstruction does depend on the input
    dec2 = _static_decoder(channels)
    with torch.no_grad():
        dec2.prototypes.copy_(_randn(rng, 16, 32))
        assert not torch.allclose(dec2(fa)[0], dec2(fb)[0][:2], atol=1e-3)


# ----------------------------------------------------------------------------- detector


def _net(**kwargs: object) -> PrototypeDetectorNet:
    return PrototypeDetectorNet(DetectorConfig(**{**SMALL, **kwargs})).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("frac", [0.01, 0.1, 1.0])
def test_detector_forward_shapes_and_score(rng: np.random.Generator, frac: float) -> None:
    net = _net(score_top_fraction=frac, score_mode="top_fraction")
    x = _randn(rng, 2, 3, 64, 64)
    with torch.no_grad():
        amap, score = net(x)
    assert tuple(amap.shape) == (2, 1, 64, 64) and amap.dtype == torch.float32
    assert tuple(score.shape) == (2,)
    flat = np.sort(amap.numpy().reshape(2, -1), axis=1)[:, ::-1]
    k = max(1, int(round(64 * 64 * frac)))
    expected = flat[:, :k].mean(axis=1)
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-5, atol=1e-6)
    if frac == 1.0:
        np.testing.assert_allclose(score.numpy(), amap.numpy().reshape(2, -1).mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window", [1, 9, 21])
def test_max_mean_score_is_the_maximum_of_the_window_mean(rng: np.random.Generator, window: int) -> None:
    """score_mode=max_mean: the maximum over the stride-4 map of its mean over a window (edges: mean of the
    cells inside the map), checked against a loop on the raw discriminator map."""
    torch.manual_seed(int(rng.integers(2**31)))
    net = _net(blur_sigma=0.0, score_window=window)
    net.map_norm.copy_(torch.tensor([[0.0, 1.0], [float(rng.uniform(0, 0.5)), float(rng.uniform(0.5, 2))]]))
    x = _randn(rng, 2, 3, 64, 64)
    with torch.no_grad():
        _, score = net(x)
        _, seg = net.raw_maps(x)
    m = ((seg - net.map_norm[1, 0]) / net.map_norm[1, 1])[:, 0].numpy()
    k = max(1, round(window / 4))
    k += 1 - k % 2
    r = k // 2
    expected = [max(m[b, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].mean()
                    for i in range(16) for j in range(16)) for b in range(2)]
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_discriminator_map_depends_on_the_reconstruction(rng: np.random.Generator) -> None:
    """head_inputs=features+recon: changing only the prototype decoder changes the map; a plain
    segmenter (head_inputs=features) ignores the decoder."""
    torch.manual_seed(int(rng.integers(2**31)))
    x = _randn(rng, 1, 3, 64, 64)
    for inputs, should_change in (("features+recon", True), ("features", False)):
        net = _net(head_inputs=inputs, map_mode="discriminator")
        with torch.no_grad():
            before, _ = net(x)
            net.decoder.prototypes.add_(torch.randn_like(net.decoder.prototypes))
            after, _ = net(x)
        assert (not torch.allclose(before, after, atol=1e-6)) == should_change, inputs
    with pytest.raises(ValueError, match="pass recon"):
        _net().seg_head([torch.zeros(1, c, 4, 4) for c in (48, 96, 192)])


def test_legacy_manifest_config_reads_with_its_build_values() -> None:
    cfg = DetectorConfig.from_manifest({"map_mode": "fused", **SMALL})
    assert (cfg.head_inputs, cfg.head_depth, cfg.score_mode, cfg.seg_head_width) == ("features", 1, "top_fraction", 64)
    net = PrototypeDetectorNet(cfg)
    assert not net.seg_head.compare and len(net.seg_head.fuse) == 4  # the pre-v0.2 head's parameter names


def test_detector_non_square_input(rng: np.random.Generator) -> None:
    net = _net()
    with torch.no_grad():
        amap, score = net(_randn(rng, 1, 3, 64, 96))
    assert tuple(amap.shape) == (1, 1, 64, 96) and tuple(score.shape) == (1,)


def test_detector_fused_map_adds_the_segmentation_term(rng: np.random.Generator) -> None:
    torch.manual_seed(int(rng.integers(2**31)))
    proto_net = _net(blur_sigma=0.0, map_mode="prototype")
    fused_net = PrototypeDetectorNet(DetectorConfig(**{**SMALL, "map_mode": "fused", "blur_sigma": 0.0})).eval()
    fused_net.load_state_dict(proto_net.state_dict())
    norm = torch.tensor([[float(rng.uniform(0, 1)), float(rng.uniform(0.5, 2))],
                         [float(rng.uniform(0, 1)), float(rng.uniform(0.5, 2))]])
    proto_net.map_norm.copy_(norm)
    fused_net.map_norm.copy_(norm)
    x = _randn(rng, 2, 3, 64, 64)
    with torch.no_grad():
        pmap, _ = proto_net(x)
        fmap, fscore = fused_net(x)
        raw_proto, raw_seg = fused_net.raw_maps(x)
    assert tuple(fmap.shape) == (2, 1, 64, 64) and tuple(fscore.shape) == (2,)
    # raw maps live on the stride-4 grid; the map is combined there and upsampled once (a linear op)
    assert tuple(raw_proto.shape) == tuple(raw_seg.shape) == (2, 1, 16, 16)

    def up(m: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False)

    torch.testing.assert_close(pmap, up((raw_proto - norm[0, 0]) / norm[0, 1]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fmap - pmap, up((raw_seg - norm[1, 0]) / norm[1, 1]), rtol=1e-5, atol=1e-5)
    # and with blur the fused mode still runs
    with torch.no_grad():
        amap, score = _net(map_mode="fused")(x)
    assert tuple(amap.shape) == (2, 1, 64, 64) and torch.isfinite(score).all()


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"map_mode": "pixel"}, "map_mode"),
        ({"head_inputs": "image"}, "head_inputs"),
        ({"score_mode": "mean"}, "score_mode"),
        ({"score_window": 0}, "score_window"),
        ({"score_top_fraction": 0.0}, "score_top_fraction"),
        ({"score_top_fraction": 1.5}, "score_top_fraction"),
        ({"score_top_fraction": -0.1}, "score_top_fraction"),
        ({"num_prototypes": 0}, "num_prototypes"),
        ({"embed_dim": 30, "num_heads": 4}, "divisible"),
    ],
)
def test_detector_config_rejects_bad_values(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        DetectorConfig(**kwargs)


def test_detector_config_from_dict_rejects_unknown_keys() -> None:
    d = DetectorConfig(**SMALL).to_dict()
    d["num_protoypes"] = 3
    with pytest.raises(ConfigError, match="num_protoypes") as info:
        DetectorConfig.from_dict(d)
    assert "num_prototypes" in str(info.value)  # lists the known keys


def test_detector_config_round_trip(rng: np.random.Generator) -> None:
    cfg = DetectorConfig(encoder="resnet18", topk=int(rng.integers(1, 8)), dynamic_prototypes=False,
                         map_mode="fused", score_top_fraction=float(rng.uniform(0.01, 1)),
                         level_weights=(1, 2, 3), **SMALL)
    d = cfg.to_dict()
    back = DetectorConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert back.to_dict() == d
    assert back.level_weights == (1.0, 2.0, 3.0)
    assert DetectorConfig.from_dict({}) == DetectorConfig()


def test_detector_rejects_wrong_number_of_level_weights() -> None:
    with pytest.raises(ConfigError, match="level_weights"):
        PrototypeDetectorNet(DetectorConfig(level_weights=(1.0, 1.0), **SMALL))


def test_unfrozen_encoder_trains() -> None:
    net = _net()
    net.train()
    assert net.encoder.training and net.seg_head.training


# ----------------------------------------------------------------------------- bundle loading


def _write_detector_bundle(out: Path, net: PrototypeDetectorNet, config: dict) -> None:
    from safetensors.torch import save

    write_bundle(
        out,
        manifest_fields={
            "preprocess": PreprocessSpec(image_size=(64, 64)),
            "model": {"architecture": "PrototypeDetectorNet", "config": config, "weights": "detector.safetensors"},
            "thresholds": {"image": 0.5, "pixel": 0.5, "calibration": {}},
        },
        files={"detector.safetensors": save(net.state_dict())},
    )


def test_load_detector_net_reproduces_outputs(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(int(rng.integers(2**31)))
    cfg = DetectorConfig(topk=5, **SMALL)
    net = PrototypeDetectorNet(cfg).eval()
    with torch.no_grad():
        net.map_norm.copy_(torch.tensor([[0.1, 2.0], [0.3, 0.5]]))
        net.decoder.prototypes.add_(_randn(rng, *net.decoder.prototypes.shape))
    _write_detector_bundle(tmp_path / "bundle", net, cfg.to_dict())
    loaded = load_detector_net(tmp_path / "bundle")
    assert isinstance(loaded, PrototypeDetectorNet) and not loaded.training
    assert loaded.config == cfg
    x = _randn(rng, 2, 3, 64, 64)
    with torch.no_grad():
        ref_map, ref_score = net(x)
        map_, score = loaded(x)
    torch.testing.assert_close(map_, ref_map, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(score, ref_score, rtol=1e-6, atol=1e-6)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_load_detector_net_config_does_not_fit_weights(tmp_path: Path) -> None:
    cfg = DetectorConfig(**SMALL)
    net = PrototypeDetectorNet(cfg)
    wrong = {**cfg.to_dict(), "num_prototypes": 24}
    _write_detector_bundle(tmp_path / "bundle", net, wrong)
    with pytest.raises(BundleError, match="detector.safetensors") as info:
        load_detector_net(tmp_path / "bundle")
    assert "config" in str(info.value)


def test_load_detector_net_wrong_architecture(tmp_path: Path) -> None:
    from safetensors.torch import save

    net = PrototypeDetectorNet(DetectorConfig(**SMALL))
    write_bundle(
        tmp_path / "bundle",
        manifest_fields={
            "preprocess": PreprocessSpec(image_size=(64, 64)),
            "model": {"architecture": "PatchCore", "config": {}},
            "thresholds": {"image": 0.5, "pixel": 0.5, "calibration": {}},
        },
        files={"detector.safetensors": save(net.state_dict())},
    )
    with pytest.raises(BundleError, match="PatchCore.*re-create the bundle"):
        load_detector_net(tmp_path / "bundle")
    write_bundle(tmp_path / "no-config", manifest_fields={
        "preprocess": PreprocessSpec(image_size=(64, 64)), "model": {"architecture": "PrototypeDetectorNet"},
        "thresholds": {"image": 0.5, "pixel": 0.5, "calibration": {}}}, files={"detector.safetensors": save(net.state_dict())})
    with pytest.raises(BundleError, match="no detector 'config'.*re-create the bundle"):
        load_detector_net(tmp_path / "no-config")


def test_inference_overrides_change_only_inference(tmp_path: Path, rng: np.random.Generator) -> None:
    from protoinspect.sdk.errors import ConfigError

    cfg = DetectorConfig(**SMALL)
    net = PrototypeDetectorNet(cfg).eval()
    _write_detector_bundle(tmp_path / "bundle", net, cfg.to_dict())
    x = _randn(rng, 1, 3, 64, 64)
    weights = (0.0, 0.0, 1.0)
    tuned = load_detector_net(tmp_path / "bundle", {"level_weights": weights, "blur_sigma": 0.0, "map_mode": "fused"})
    assert tuned.config.level_weights == weights and tuned.config.map_mode == "fused"
    with torch.no_grad():
        proto, _ = tuned.raw_maps(x)
        feats = tuned.encoder(x)
        only_deepest = 1.0 - torch.nn.functional.cosine_similarity(feats[2], tuned.decoder(feats)[2], dim=1)
    expected = torch.nn.functional.interpolate(only_deepest[:, None], size=(16, 16), mode="bilinear",
                                               align_corners=False)  # raw maps are on the stride-4 grid
    torch.testing.assert_close(proto, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="changes the weights"):
        load_detector_net(tmp_path / "bundle", {"embed_dim": 64})


def test_manifest_without_seg_head_width_reads_the_legacy_width() -> None:
    from protoinspect.sdk.models.prototype_detector import LEGACY_DEFAULTS, DetectorConfig

    old = {k: v for k, v in DetectorConfig().to_dict().items() if k != "seg_head_width"}
    assert DetectorConfig.from_manifest(old).seg_head_width == LEGACY_DEFAULTS["seg_head_width"] == 64
    assert DetectorConfig.from_dict(old).seg_head_width == 32  # new trainings get the new default
    assert DetectorConfig.from_manifest(DetectorConfig(seg_head_width=16).to_dict()).seg_head_width == 16


# ----------------------------------------------------------------------------- kernel errors at the SDK boundary
@pytest.mark.parametrize(("raised", "expected"), [
    (KernelDtypeError("q has dtype torch.int64"), InputError),
    (KernelInputError("D must be in 1..256"), InputError),
    (KernelBackwardUnsupportedError("region_guided_attention is forward-only"), ConfigError),
    (TritonNotInstalledError('pip install "protoinspect[triton]"'), MissingDependencyError),
], ids=["dtype", "input", "backward", "triton"])
def test_kernel_errors_surface_as_protoinspect_errors(raised: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as info, kernel_errors():
        raise raised
    assert str(raised) in str(info.value) and info.value.__cause__ is raised
