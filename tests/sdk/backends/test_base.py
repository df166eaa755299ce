"""sdk/backends/base.py and classifier_base.py: outputs copied to the host only when read; the classifier contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from detector_bundles import make_exported_bundle

from protoinspect.sdk.backends.base import GraphOutputs
from protoinspect.sdk.backends.classifier_base import check_classifier_inputs
from protoinspect.sdk.backends.registry import create_backend
from protoinspect.sdk.errors import InputError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_bundle(tmp_path_factory.mktemp("base") / "b", np.random.default_rng(3),
                                num_prototypes=16, embed_dim=32, num_heads=2, blur_sigma=1.0)


@pytest.mark.parametrize(("name", "options"), [("onnxruntime", {"intra_op_threads": 1}), ("torch", {"threads": 1})])
def test_lazy_outputs_equal_eager_ones(bundle: Path, rng: np.random.Generator, name: str, options: dict) -> None:
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with create_backend(name, bundle, **options) as backend:
        eager = backend.run({"image": images})
        lazy = backend.run_lazy({"image": images})
        assert lazy.fetched == [] and list(lazy) == list(backend.output_names)
        np.testing.assert_array_equal(lazy["score"], eager["score"])
        assert lazy.fetched == ["score"]  # only what was read came to the host
        for key in backend.output_names:
            np.testing.assert_array_equal(lazy[key], eager[key])
        assert lazy["features"] is lazy["features"] and lazy.fetched.count("features") == 1
        with pytest.raises(KeyError, match="no output"):
            lazy["nope"]


def test_ready_outputs() -> None:
    out = GraphOutputs.ready({"a": np.zeros(2)})
    assert len(out) == 1 and out["a"].shape == (2,) and out.fetched == ["a"]


def test_classifier_input_contract() -> None:
    tokens, regions = np.zeros((3, 8, 4, 4), np.float32), np.zeros((3, 2, 4, 4), np.float32)
    out = check_classifier_inputs({"tokens": tokens[:, :, ::-1], "regions": regions})
    assert out["tokens"].flags.c_contiguous
    for bad, match in (({"tokens": tokens}, "exactly"), ({"tokens": tokens.astype(np.float64), "regions": regions}, "float32"),
                       ({"tokens": tokens, "regions": regions[:2]}, "disagree"),
                       ({"tokens": tokens, "regions": np.zeros((3, 3, 4, 4), np.float32)}, "disagree")):
        with pytest.raises(InputError, match=match):
            check_classifier_inputs(bad)


def test_classifier_input_contract_with_descriptors() -> None:
    names = ("tokens", "regions", "descriptors")
    tokens, regions = np.zeros((3, 8, 4, 4), np.float32), np.zeros((3, 2, 4, 4), np.float32)
    desc = np.zeros((3, 12), np.float32)
    out = check_classifier_inputs({"tokens": tokens, "regions": regions, "descriptors": desc[:, ::-1]}, names)
    assert out["descriptors"].flags.c_contiguous and sorted(out) == sorted(names)
    nan = desc.copy()
    nan[0, 0] = np.nan
    for bad, match in (({"tokens": tokens, "regions": regions}, "exactly"),
                       ({"tokens": tokens, "regions": regions, "descriptors": desc[:2]}, "2 rows"),
                       ({"tokens": tokens, "regions": regions, "descriptors": nan}, "finite"),
                       ({"tokens": tokens, "regions": regions, "descriptors": desc.astype(np.float64)}, "float32")):
        with pytest.raises(InputError, match=match):
            check_classifier_inputs(bad, names)
