"""Tests of protoinspect.sdk.config_codec: the one serialiser of config dataclasses and the one ``--set`` path."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.config_codec import from_dict, merge, rest_field, to_dict
from protoinspect.sdk.config_overrides import apply_overrides, overrides_dict, parse_value
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.manifest import ClassInfo, FileEntry, Producer, Thresholds
from protoinspect.sdk.manifest_sections import (
    ClassifierRecord,
    DiscoverySection,
    DiscoveryTraining,
    EngineRecord,
    GraphRecord,
    ManifestSections,
    TensorRTSection,
)
from protoinspect.sdk.models.classifier_config import ClassifierConfig
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.sdk.stages.crops import CropSettings
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings
from protoinspect.sdk.stages.mebin import MEBinSettings


@dataclass(frozen=True)
class Inner:
    kappa: float = 10.0
    layers: int = 2


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    steps: int = 3
    size: tuple[int, int] = (4, 4)
    points: tuple[tuple[float, float], ...] | None = None
    mode: Literal["none", "otsu"] = "none"
    path: Path | None = None
    name: str | None = None
    flag: bool = False
    table: dict[str, Inner] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    file: str
    rest: dict[str, Any] = rest_field()


def _json_round_trip(obj: Any) -> Any:
    d = to_dict(obj)
    text = json.dumps(d, allow_nan=False)  # strictly JSON: no NaN / inf literals, no tuples or paths
    back = from_dict(type(obj), json.loads(text))
    assert to_dict(back) == d
    return back


# ----------------------------------------------------------------------------- encoding and decoding


def test_nested_round_trip_and_json_safety() -> None:
    cfg = Outer(inner=Inner(kappa=-math.inf, layers=5), maybe=Inner(1.5, 1), size=(8, 16), points=((1, 2), (3.5, 4)),
                mode="otsu", path=Path("/tmp/x.pth"), name="a", flag=True, table={"t": Inner(2.0, 3)})
    d = to_dict(cfg)
    assert d["inner"] == {"kappa": "-inf", "layers": 5} and d["size"] == [8, 16] and d["path"] == "/tmp/x.pth"
    assert d["points"] == [[1.0, 2.0], [3.5, 4.0]] and d["table"] == {"t": {"kappa": 2.0, "layers": 3}}
    assert _json_round_trip(cfg) == cfg
    assert from_dict(Outer, {}) == Outer()  # missing keys take their defaults


def test_unknown_key_names_the_valid_keys_and_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, {"inner": {"kapa": 1}})
    msg = str(info.value)
    assert "unknown key 'inner.kapa'" in msg and "valid keys: kappa, layers" in msg
    assert "did you mean 'inner.kappa'" in msg
    with pytest.raises(ConfigError, match=r"unknown keys 'bogus', 'other' in Outer; valid keys: .*steps"):
        from_dict(Outer, {"bogus": 1, "other": 2})


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"inner": {"kappa": "high"}}, ["'inner.kappa'", "must be a number", "'high'"]),
        ({"inner": 3}, ["'inner'", "must be a mapping of Inner"]),
        ({"steps": 2.5}, ["'steps'", "must be an integer"]),
        ({"steps": True}, ["'steps'", "must be an integer"]),
        ({"flag": "yes"}, ["'flag'", "true or false"]),
        ({"size": [1, 2, 3]}, ["'size'", "2 items"]),
        ({"points": [[1, "x"]]}, ["'points[0][1]'", "number"]),
        ({"mode": "sam"}, ["'mode'", "one of 'none', 'otsu'"]),
        ({"table": {"t": {"layers": "2"}}}, ["'table.t.layers'", "integer"]),
        ({"steps": None}, ["'steps'", "must be an integer, got null"]),
    ],
)
def test_type_errors_name_the_key_path(data: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_post_init_errors_of_nested_sections_are_prefixed_with_their_path() -> None:
    with pytest.raises(ConfigError, match=r"key 'crops': CropSettings\.padding must be"):
        from_dict(DiscoverySettings, {"crops": {"padding": -1.0}})
    with pytest.raises(ConfigError, match=r"MEBinSettings\.sample_rate"):  # top level: the class's own message
        from_dict(MEBinSettings, {"sample_rate": 0})


def test_rest_field_keeps_undeclared_keys_in_place() -> None:
    rec = from_dict(Record, {"file": "x.onnx", "exporter": "torch", "parity": {"passed": True}})
    assert rec.rest == {"exporter": "torch", "parity": {"passed": True}}
    assert to_dict(rec) == {"file": "x.onnx", "exporter": "torch", "parity": {"passed": True}}
    with pytest.raises(ConfigError, match=r"key 'file' is missing \(required in Record\)"):
        from_dict(Record, {"exporter": "torch"})


# ----------------------------------------------------------------------------- every config class


def _configs() -> list[Any]:
    from protoinspect.export.trt_config import BuildOptions
    from protoinspect.sdk.models.prototype_detector import DetectorConfig
    from protoinspect.training.config import DetectorTrainConfig
    from protoinspect.training.discovery_config import DiscoveryTrainConfig

    settings = DiscoverySettings(grid=6, s_min=0.25, s_max=2.0, mebin=MEBinSettings(sample_rate=2),
                                 crops=CropSettings(padding=0.2, extra_crops=0), reject_threshold=0.4)
    clf = ClassifierConfig(in_channels=12, grid=4, embed_dim=16, num_heads=2, num_classes=3, kappa=16.0)
    return [
        InspectorConfig(masker="roi", roi_xyxy=(0, 0, 10, 10), image_threshold=math.inf, pixel_threshold=-math.inf,
                        sam_points=((1, 2),), latency_budget_ms=20, threads=2),
        MEBinSettings(sample_rate=2, min_interval_len=5, erode_kernel=0, erode_iterations=3),
        CropSettings(padding=0.2, min_size=0.05, merge_distance=0.02, extra_crops=0, merge_temperature=100.0),
        settings,
        DiscoverySettings(),  # reject_threshold -inf
        PreprocessSpec(image_size=(224, 320), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), color_order="bgr"),
        clf,
        ClassifierConfig(),
        DetectorConfig(topk=4, map_mode="fused", level_weights=(1, 2, 3)),
        DetectorTrainConfig(image_size=(128, 128), crop=64, pretrained="w.pth", detector=DetectorConfig(embed_dim=32)),
        DiscoveryTrainConfig(classifier=ClassifierConfig(kappa=16.0), vit_weights="vit.pth"),
        BuildOptions(precision="int8", dla_core=1, timing_cache=Path("cache.bin"), max_batch=4),
        Producer("0.2.0", "train", rest={"host": "x"}),
        Thresholds(image=0.5, pixel=0.25, calibration={"n": 3}, rest={"extra": 1}),
        ClassInfo(0, "scratch", True, False),
        FileEntry("a" * 64, 10),
        DiscoverySection(settings=settings, classifier=ClassifierRecord(config=clf),
                         training=DiscoveryTraining(config={"k_max": 4}, flag_threshold=-math.inf,
                                                    silhouettes={"2": 0.5}, rest={"new_stat": 1}),
                         edits=[{"names": {"0": "scratch"}}]),
        GraphRecord(file="detector.onnx", opset=17, parity=None, rest={"exporter": "torch"}),
        TensorRTSection(engines={"d.fp16.sm87.engine": EngineRecord("detector.onnx", "fp16", "8.7", dla_core=0)}),
        ManifestSections(onnx=GraphRecord(opset=18), rest={"train_seconds": 1.5}),
    ]


@pytest.mark.parametrize("index", range(20))
def test_every_config_class_round_trips_through_strict_json(index: int) -> None:
    cfg = _configs()[index]
    assert _json_round_trip(cfg) == cfg
    if hasattr(type(cfg), "to_dict"):  # the classes' own methods are the codec's
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict(), allow_nan=False))) == cfg


def test_class_from_dict_delegates_reject_unknown_keys() -> None:
    for cls in (InspectorConfig, MEBinSettings, CropSettings, DiscoverySettings, PreprocessSpec, ClassifierConfig):
        with pytest.raises(ConfigError, match="unknown key 'bogus'"):
            cls.from_dict({"bogus": 1})


# ----------------------------------------------------------------------------- overrides


def test_apply_overrides_typing_and_nesting() -> None:
    cfg = apply_overrides(Outer(), ["inner.kappa=16", "steps=300", "mode=otsu", "path=/data/w.pth", "name=123",
                                    "points=[[1,2]]", "size=[8,8]", "flag=true", "maybe.layers=7"])
    assert cfg.inner == Inner(16.0, 2) and cfg.steps == 300 and cfg.mode == "otsu" and cfg.path == Path("/data/w.pth")
    assert cfg.name == "123" and cfg.points == ((1.0, 2.0),) and cfg.size == (8, 8) and cfg.flag is True
    assert cfg.maybe == Inner(layers=7)  # an unset optional section starts from its defaults
    assert apply_overrides(Outer(name="x"), ["name=none"]).name is None
    assert apply_overrides(Outer(mode="otsu"), ["mode=none"]).mode == "none"  # text field: "none" stays text
    assert apply_overrides(Outer(), []) == Outer()


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("steps=abc", ["override 'steps=abc'", "key 'steps' must be an integer", "'abc'"]),
        ("flag=maybe", ["'flag'", "true or false"]),
        ("inner.kappa=high", ["'inner.kappa'", "must be a number"]),
        ("mode=sam", ["'mode'", "one of 'none', 'otsu'"]),
        ("size=[1,2,3]", ["'size'", "2 items"]),
        ("inner.kapa=1", ["unknown key 'inner.kapa'", "valid keys: kappa, layers", "did you mean 'inner.kappa'"]),
        ("kappa=1", ["unknown key 'kappa'", "did you mean 'inner.kappa'"]),
        ("steps.x=1", ["'steps' is not a section"]),
        ("steps", ["key=value"]),
        ("=3", ["key=value"]),
    ],
)
def test_bad_overrides_name_the_key(item: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Outer(), [item])
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_overrides_on_real_configs() -> None:
    insp = apply_overrides(InspectorConfig(), ["masker=otsu", "image_threshold=-inf", "threads=2", "classify=false"])
    assert insp.masker == "otsu" and insp.image_threshold == -math.inf and insp.threads == 2 and not insp.classify
    with pytest.raises(ConfigError, match="backend"):
        apply_overrides(InspectorConfig(), ["backend=cuda"])
    assert overrides_dict(InspectorConfig, ["roi_xyxy=[0,0,4,4]", "masker=roi"]) == {"roi_xyxy": [0, 0, 4, 4],
                                                                                     "masker": "roi"}
    with pytest.raises(ConfigError, match="single string"):
        apply_overrides(InspectorConfig(), "masker=otsu")  # type: ignore[arg-type]


def test_merge_applies_partial_mappings_in_order_and_validates_once() -> None:
    cfg = merge(Outer(), {"inner": {"layers": 4}}, {"inner": {"kappa": 2.0}, "steps": 5}, {"inner": None})
    assert cfg.inner == Inner(2.0, 4) and cfg.steps == 5  # an empty YAML section (None) changes nothing


@pytest.mark.parametrize(
    ("text", "value"),
    [("300", 300), ("-2", -2), ("1e-3", 1e-3), (".5", 0.5), ("true", True), ("False", False), ("none", None),
     ("null", None), ("~", None), ("[512, 512]", [512, 512]), ('{"a": 1}', {"a": 1}), ('"07"', "07"),
     ("inf", math.inf), ("-inf", -math.inf), ("resnet18", "resnet18"), ("torchvision:DEFAULT", "torchvision:DEFAULT"),
     ("", "")],
)
def test_parse_value(text: str, value: Any) -> None:
    assert parse_value(text) == value and type(parse_value(text)) is type(value)
