"""Tests of training building blocks: config loading, synthetic anomalies, losses and checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.prototype_detector import DetectorConfig
from protoinspect.training.pseudo_anomalies import KINDS, synthesize_anomaly
from protoinspect.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from protoinspect.training.config import DetectorTrainConfig, apply_overrides, load_train_config
from protoinspect.training.losses import dice_loss, focal_loss, reconstruction_loss

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"



# ----------------------------------------------------------------------------- config


def test_defaults_are_valid_and_round_trip() -> None:
    cfg = DetectorTrainConfig()
    assert cfg.detector == DetectorConfig()
    assert load_train_config() == cfg
    d = cfg.to_dict()
    assert isinstance(d["detector"], dict) and isinstance(d["image_size"], list)
    assert DetectorTrainConfig.from_dict(d) == cfg
    assert DetectorTrainConfig.from_dict({}) == cfg


def test_shipped_yaml_configs_load() -> None:
    # default.yaml says it is identical to the dataclass defaults
    assert load_train_config(CONFIGS / "default.yaml") == DetectorTrainConfig()
    for path in sorted(CONFIGS.glob("*.yaml")):
        assert isinstance(load_train_config(path), DetectorTrainConfig), path


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "steps: 7\n"
        "image_size: 128\n"
        "crop: 64\n"
        "detector:\n"
        "  num_prototypes: 16\n"
        "  embed_dim: 32\n"
        "  num_heads: 2\n"
    )
    cfg = load_train_config(path, ["detector.topk=3", "seed=5", "detector.map_mode=fused", "lr=5e-4",
                                   "pretrained=w.pth", "detector.level_weights=[1, 2, 0.5]"])
    assert cfg.steps == 7
    assert cfg.image_size == (128, 128)
    assert cfg.crop == 64
    assert cfg.seed == 5 and cfg.lr == 5e-4 and cfg.pretrained == "w.pth"
    assert cfg.detector.num_prototypes == 16 and cfg.detector.embed_dim == 32 and cfg.detector.num_heads == 2
    assert cfg.detector.topk == 3 and cfg.detector.map_mode == "fused"
    assert cfg.detector.level_weights == (1.0, 2.0, 0.5)
    # detector keys the file does not set keep their defaults
    assert cfg.detector.num_layers == DetectorConfig().num_layers
    assert cfg.batch == DetectorTrainConfig().batch
    # overrides win over the file; "none" means None
    cfg2 = load_train_config(path, ["steps=9", "detector.topk=none"])
    assert cfg2.steps == 9 and cfg2.detector.topk is None


def test_json_config_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text('{"steps": 3, "detector": {"embed_dim": 64}}')
    cfg = load_train_config(path)
    assert cfg.steps == 3 and cfg.detector.embed_dim == 64


def test_apply_overrides_does_not_mutate_base() -> None:
    base = DetectorTrainConfig()
    out = apply_overrides(base, ["detector.embed_dim=64"])
    assert out.detector.embed_dim == 64 and isinstance(out, DetectorTrainConfig)
    assert base.detector.embed_dim == DetectorConfig().embed_dim


@pytest.mark.parametrize(
    "override,words",
    [
        ("stepz=3", ["stepz", "unknown key", "steps"]),
        ("detector.num_protoypes=3", ["num_protoypes", "unknown key", "num_prototypes"]),
        ("abc", ["abc", "key=value"]),
        ("optim.lr=1", ["optim", "unknown key"]),
        ("seed.x=1", ["seed", "not a section"]),
        ("steps=0", ["steps >= 1"]),
        ("crop=100", ["crop", "multiple of 16"]),
        ("crop=512", ["crop", "image_size"]),
        ("batch=1", ["batch >= 2"]),
        ("device=tpu", ["device"]),
        ("anomaly_placement=floor", ["anomaly_placement"]),
        ("detector.head_inputs=image", ["head_inputs"]),
        ("detector.score_mode=mean", ["score_mode"]),
        ("anomaly_fraction=1.5", ["anomaly_fraction"]),
        ("detector.map_mode=pixel", ["map_mode"]),
        ("detector.score_top_fraction=0", ["score_top_fraction"]),
    ],
)
def test_bad_overrides_raise_config_error(override: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(None, [override])
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_frozen_encoder() -> None:
    cfg = load_train_config(None, ["train_encoder=false", "pretrained=torchvision:DEFAULT"])
    assert cfg.train_encoder is False and cfg.pretrained == "torchvision:DEFAULT"
    # without pretrained weights it is an allowed ablation (train_detector warns that the encoder stays random)
    assert load_train_config(None, ["train_encoder=false"]).pretrained is None


def test_presets_load_and_unknown_preset_is_named() -> None:
    fast = load_train_config(preset="fast")
    assert fast.steps < DetectorTrainConfig().steps
    assert load_train_config(preset="default") == DetectorTrainConfig()
    assert load_train_config(preset="long").steps > DetectorTrainConfig().steps
    assert load_train_config(None, ["steps=5"], preset="long").steps == 5  # overrides win over the preset
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*fast"):
        load_train_config(preset="huge")


def test_legacy_manifest_training_section_reads() -> None:
    old = {"encoder_steps": 1500, "decoder_steps": 1000, "encoder_crop": 128, "seed": 3,
           "detector": {"map_mode": "fused", "seg_head_width": 64}}
    cfg = DetectorTrainConfig.from_dict(old, legacy=True)
    assert cfg.seed == 3 and cfg.detector.head_inputs == "features" and cfg.detector.score_mode == "top_fraction"
    with pytest.raises(ConfigError, match="encoder_steps"):
        DetectorTrainConfig.from_dict(old)


@pytest.mark.parametrize(
    "text,words",
    [
        ("stepz: 3\n", ["unknown key 'stepz'", "steps", "cfg.yaml"]),
        ("detector:\n  num_protoypes: 3\n", ["unknown key 'detector.num_protoypes'", "num_prototypes"]),
        ("- 1\n- 2\n", ["top level must be a mapping"]),
        ("steps: 0\n", ["steps"]),
    ],
)
def test_bad_yaml_files_raise_config_error(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "absent.yaml")


def test_from_dict_image_size_int_and_unknown_keys() -> None:
    assert DetectorTrainConfig.from_dict({"image_size": 320}).image_size == (320, 320)
    with pytest.raises(ConfigError, match="bogus"):
        DetectorTrainConfig.from_dict({"bogus": 1})
    assert {f.name for f in dataclasses.fields(DetectorTrainConfig)} == set(DetectorTrainConfig().to_dict())


# ----------------------------------------------------------------------------- synthetic anomalies


def _textured_rgb(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (3, 3), 0)


def _near(mask: np.ndarray, px: int = 3) -> np.ndarray:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate((mask > 0).astype(np.uint8), kernel) > 0


def _check_anomaly(image: np.ndarray, out: np.ndarray, mask: np.ndarray, what: str) -> None:
    assert out.dtype == np.uint8 and out.shape == image.shape, what
    assert mask.dtype == np.float32 and mask.shape == image.shape[:2], what
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}, what
    assert mask.any(), what
    changed = (out != image).any(axis=2)
    assert changed.any(), what
    far = changed & ~_near(mask)
    assert not far.any(), f"{what}: {int(far.sum())} pixels changed farther than 3 px from the mask"


@pytest.mark.parametrize("kind", KINDS)
def test_synthesized_anomaly_stays_inside_its_mask(rng: np.random.Generator, kind: str) -> None:
    for _ in range(25):
        seed = int(rng.integers(2**32))
        r = np.random.default_rng(seed)
        image, source = _textured_rgb(r), _textured_rgb(r)
        before = image.copy()
        out, mask = synthesize_anomaly(image, source, np.random.default_rng(seed), kind)
        np.testing.assert_array_equal(image, before)  # input untouched
        _check_anomaly(image, out, mask, f"kind={kind} seed={seed}")


def test_random_kind_anomaly(rng: np.random.Generator) -> None:
    for _ in range(10):
        seed = int(rng.integers(2**32))
        image = _textured_rgb(np.random.default_rng(seed))
        out, mask = synthesize_anomaly(image, image[::-1].copy(), np.random.default_rng(seed))
        _check_anomaly(image, out, mask, f"kind=None seed={seed}")


@pytest.mark.parametrize("kind", KINDS)
def test_gray_input_stays_gray(rng: np.random.Generator, kind: str) -> None:
    for _ in range(5):
        seed = int(rng.integers(2**32))
        gray = _textured_rgb(np.random.default_rng(seed))[..., :1].repeat(3, axis=2)
        source = _textured_rgb(np.random.default_rng(seed + 1))  # colourful foreign texture
        out, mask = synthesize_anomaly(gray, source, np.random.default_rng(seed), kind)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2]), seed
        _check_anomaly(gray, out, mask, f"gray kind={kind} seed={seed}")


@pytest.mark.parametrize("kind", [*KINDS, None])
def test_synthesis_is_deterministic_per_seed(rng: np.random.Generator, kind: str | None) -> None:
    seed = int(rng.integers(2**32))
    image, source = _textured_rgb(rng), _textured_rgb(rng)
    a = synthesize_anomaly(image, source, np.random.default_rng(seed), kind)
    b = synthesize_anomaly(image, source, np.random.default_rng(seed), kind)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = synthesize_anomaly(image, source, np.random.default_rng(seed + 1), kind)
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))


def test_unknown_kind_raises(rng: np.random.Generator) -> None:
    image = _textured_rgb(rng)
    with pytest.raises(ValueError, match="unknown anomaly kind") as info:
        synthesize_anomaly(image, image, rng, "lightning")
    for kind in KINDS:
        assert kind in str(info.value)


# ----------------------------------------------------------------------------- losses


def _target(rng: np.random.Generator) -> torch.Tensor:
    t = (rng.random((2, 1, 16, 16)) < 0.3).astype(np.float32)
    t[0, 0, 0, 0], t[1, 0, 0, 0] = 1.0, 0.0
    return torch.from_numpy(t)


def test_focal_and_dice_losses(rng: np.random.Generator) -> None:
    target = _target(rng)
    confident = (target * 2 - 1) * 20.0  # +20 on defects, -20 elsewhere
    assert float(focal_loss(confident, target)) < 1e-6
    assert float(dice_loss(confident, target)) < 1e-3
    wrong = -confident
    assert float(focal_loss(wrong, target)) > 2.0
    assert float(dice_loss(wrong, target)) > 0.9
    unsure = torch.zeros_like(target)
    f_unsure = float(focal_loss(unsure, target))
    assert 1e-6 < f_unsure < float(focal_loss(wrong, target))
    assert 0.1 < float(dice_loss(unsure, target)) < 0.9


def test_losses_have_gradients_pointing_the_right_way(rng: np.random.Generator) -> None:
    target = _target(rng)
    logits = torch.zeros_like(target, requires_grad=True)
    (focal_loss(logits, target) + dice_loss(logits, target)).backward()
    g = logits.grad
    assert g is not None
    assert (g[target > 0] < 0).all() and (g[target == 0] > 0).all()  # descent raises defect logits


def test_reconstruction_loss(rng: np.random.Generator) -> None:
    shapes = ((2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4))
    feats = [torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    weights = torch.tensor([0.2, 0.3, 0.5])
    for hard in (0.0, 0.5, 1.0, 2.0):
        # 1 - cos rounds to tiny negative values here: hard mining must neither amplify them nor give NaN
        assert abs(float(reconstruction_loss(feats, [f.clone() for f in feats], weights, hard))) < 1e-6
        assert abs(float(reconstruction_loss(feats, [f * 3.0 for f in feats], weights, hard))) < 1e-5
        other = [torch.from_numpy(rng.standard_normal(tuple(f.shape)).astype(np.float32)) for f in feats]
        assert float(reconstruction_loss(feats, other, weights, hard)) > 0.3
        opposite = reconstruction_loss(feats, [-f for f in feats], weights, hard)
        assert abs(float(opposite) - 2.0 * float(weights.sum())) < 1e-5
    # only the selected level contributes
    one = torch.tensor([0.0, 1.0, 0.0])
    broken = [feats[0].neg(), feats[1].clone(), feats[2].neg()]
    assert abs(float(reconstruction_loss(feats, broken, one))) < 1e-6


# ----------------------------------------------------------------------------- checkpoints


def _state(rng: np.random.Generator) -> dict:
    gen = np.random.default_rng(int(rng.integers(2**32)))
    gen.random(3)
    return {
        "step": int(rng.integers(1, 10_000)),
        "loss": float(rng.random()),
        "phase": "decoder",
        "model": {"w": torch.from_numpy(rng.standard_normal((4, 5)).astype(np.float32)),
                  "nested": {"b": torch.arange(7), "flag": True}},
        "history": [1.5, 2.5, 3.0],
        "rng": gen.bit_generator.state,
    }


def _assert_same(a: object, b: object, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    else:
        assert a == b and type(a) is type(b), where


def test_checkpoint_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    work = tmp_path / "work" / "run"
    config = {"decoder_steps": 10, "detector": {"embed_dim": 32}, "data": ["a", "b"]}
    assert load_checkpoint(work, config) is None
    state = _state(rng)
    path = save_checkpoint(work, state, config)
    assert path == work / CHECKPOINT_NAME and path.is_file()
    assert not list(work.glob("*.tmp"))
    loaded = load_checkpoint(work, {"data": ["a", "b"], "detector": {"embed_dim": 32}, "decoder_steps": 10})
    assert loaded is not None
    _assert_same(state, loaded)
    # a restored numpy generator continues the same sequence
    g1, g2 = np.random.default_rng(), np.random.default_rng()
    g1.bit_generator.state = state["rng"]
    g2.bit_generator.state = loaded["rng"]
    np.testing.assert_array_equal(g1.random(5), g2.random(5))
    # saving again replaces the checkpoint
    state2 = {**state, "step": state["step"] + 1}
    save_checkpoint(work, state2, config)
    assert load_checkpoint(work, config)["step"] == state["step"] + 1


def test_checkpoint_of_another_config(tmp_path: Path, rng: np.random.Generator) -> None:
    save_checkpoint(tmp_path, _state(rng), {"decoder_steps": 10})
    with pytest.raises(ConfigError, match="different configuration"):
        load_checkpoint(tmp_path, {"decoder_steps": 11})


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_checkpoint(tmp_path: Path, rng: np.random.Generator, damage: str) -> None:
    path = save_checkpoint(tmp_path, _state(rng), {"a": 1})
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(ConfigError, match="unreadable") as info:
        load_checkpoint(tmp_path, {"a": 1})
    assert str(path) in str(info.value)


def test_edge_cases_of_config_checkpoint_and_weights(tmp_path) -> None:
    import torch

    from protoinspect.sdk.errors import ConfigError
    from protoinspect.sdk.models.encoder import build_encoder, load_pretrained_weights
    from protoinspect.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from protoinspect.training.config import load_train_config

    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("steps: 3\ndetector:\n")
    assert load_train_config(yaml_file).steps == 3
    torch.save([1, 2], tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ConfigError, match="not a ProtoInspect training checkpoint"):
        load_checkpoint(tmp_path, {})
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ConfigError, match="unreadable"):
        load_pretrained_weights(build_encoder("small_cnn"), "small_cnn", str(bad))
