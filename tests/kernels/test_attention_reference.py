"""kernels/attention_reference.py: the PyTorch specification of both attention ops, checked against float64 loops.

Torch only: these tests run in the normal process, without triton or CUDA. Inputs are fresh random draws
(unseeded ``rng``); tolerances are stated per test (float32 against a float64 loop).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from import_probe import run_python

from protoinspect.kernels.attention_reference import prototype_attention_reference, region_guided_attention_reference
from protoinspect.kernels.errors import KernelInputError

TOL = {"rtol": 0, "atol": 1e-5}  # float32 softmax attention of O(1) logits against a float64 loop


def _randn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))


# ----------------------------------------------------------------------------- prototype attention
def _naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int | None) -> torch.Tensor:
    """Per-query loop: softmax over the (top-k) prototype logits, weighted sum of values."""
    b_, h_, n_, d_ = q.shape
    q64, k64, v64 = q.double(), k.double(), v.double()
    out = torch.zeros(b_, h_, n_, v.shape[-1], dtype=torch.float64)
    for b in range(b_):
        for h in range(h_):
            kk = k64[h] if k64.ndim == 3 else k64[b, h]
            vv = v64[h] if v64.ndim == 3 else v64[b, h]
            for n in range(n_):
                logits = [float(q64[b, h, n] @ kk[m]) / math.sqrt(d_) for m in range(kk.shape[0])]
                keep = sorted(range(len(logits)), key=lambda m: -logits[m])[: topk or len(logits)]
                mx = max(logits[m] for m in keep)
                w = {m: math.exp(logits[m] - mx) for m in keep}
                z = sum(w.values())
                for m, wm in w.items():
                    out[b, h, n] += (wm / z) * vv[m]
    return out


@pytest.mark.parametrize("batched_prototypes", [False, True])
@pytest.mark.parametrize("topk", [None, 3, 7, 10])
def test_prototype_attention_matches_naive_loop(
    rng: np.random.Generator, batched_prototypes: bool, topk: int | None
) -> None:
    b, h, n, m, d = 2, 2, 5, 7, 4
    q = _randn(rng, b, h, n, d) * 2
    kshape = (b, h, m, d) if batched_prototypes else (h, m, d)
    k = _randn(rng, *kshape) * 2
    v = _randn(rng, *kshape)
    out = prototype_attention_reference(q, k, v, topk=topk)
    assert tuple(out.shape) == (b, h, n, d)
    torch.testing.assert_close(out.double(), _naive_attention(q, k, v, topk), rtol=0, atol=1e-5)


@pytest.mark.parametrize("batched_prototypes", [False, True])
def test_prototype_attention_topk_keeps_exactly_k_weights(rng: np.random.Generator, batched_prototypes: bool) -> None:
    b, h, n, m, d = 2, 2, 5, 7, 4
    q = _randn(rng, b, h, n, d) * 2
    k = _randn(rng, *((b, h, m, d) if batched_prototypes else (h, m, d))) * 2
    eye = torch.eye(m).expand(*((b, h, m, m) if batched_prototypes else (h, m, m)))
    weights = prototype_attention_reference(q, k, eye, topk=3)  # values = identity -> the attention weights
    assert tuple(weights.shape) == (b, h, n, m)
    assert ((weights > 0).sum(-1) == 3).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, h, n), rtol=0, atol=1e-6)
    logits = q @ k.transpose(-1, -2)
    top3 = torch.topk(logits, 3, dim=-1).indices
    kept = weights.gather(-1, top3)
    torch.testing.assert_close(kept.sum(-1), torch.ones(b, h, n), rtol=0, atol=1e-6)
    full = prototype_attention_reference(q, k, eye)
    assert ((full > 0).sum(-1) == m).all()


def test_prototype_attention_custom_scale(rng: np.random.Generator) -> None:
    q, k, v = _randn(rng, 1, 2, 3, 4), _randn(rng, 2, 5, 4), _randn(rng, 2, 5, 4)
    torch.testing.assert_close(
        prototype_attention_reference(q, k, v, scale=1.0),
        prototype_attention_reference(q * 2, k, v),  # default 1/sqrt(4) = 1/2
        rtol=0, atol=1e-5,
    )


# ----------------------------------------------------------------------------- region-guided attention
def _naive_region_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                            rows: range, scale: float) -> torch.Tensor:
    """Per-query loop in float64: logits q.k * scale, plus bias[key] on the rows in ``rows``, softmax, values."""
    b_, h_, n_, _ = q.shape
    out = torch.zeros(q.shape, dtype=torch.float64)
    for b in range(b_):
        for h in range(h_):
            hb = h if bias.shape[1] > 1 else 0
            for i in range(n_):
                logits = [float(q[b, h, i].double() @ k[b, h, j].double()) * scale
                          + (float(bias[b, hb, j]) if i in rows else 0.0) for j in range(n_)]
                mx = max(logits)
                w = [math.exp(x - mx) for x in logits]
                out[b, h, i] = sum((wj / sum(w)) * v[b, h, j].double() for j, wj in enumerate(w))
    return out


@pytest.mark.parametrize("bias_heads", [1, 3])
@pytest.mark.parametrize("bias_rows", [None, slice(0, 1), slice(2, 5), slice(-3, None), slice(4, 2)],
                         ids=["all", "first", "middle", "last", "empty"])
def test_region_guided_attention_matches_naive_loop(rng: np.random.Generator, bias_heads: int,
                                                    bias_rows: slice | None) -> None:
    b, h, n, d = 2, 3, 7, 8
    q, k, v = (_randn(rng, b, h, n, d) for _ in range(3))
    bias = 2 * _randn(rng, b, bias_heads, n)
    rows = range(n) if bias_rows is None else range(*bias_rows.indices(n))
    for scale in (None, 0.3):
        out = region_guided_attention_reference(q, k, v, bias, bias_rows=bias_rows, scale=scale)
        assert out.shape == q.shape and out.dtype == q.dtype
        expected = _naive_region_attention(q, k, v, bias, rows, d ** -0.5 if scale is None else scale)
        torch.testing.assert_close(out.double(), expected, **TOL)


def test_region_guided_attention_minus_inf_drops_keys(rng: np.random.Generator) -> None:
    q, k, v = (_randn(rng, 1, 2, 6, 4) for _ in range(3))
    bias = torch.zeros(1, 1, 6)
    bias[..., 3:] = float("-inf")  # keys 3..5 dropped for the biased row 0
    out = region_guided_attention_reference(q, k, v, bias, bias_rows=slice(0, 1))
    kept = region_guided_attention_reference(q[:, :, :1], k[:, :, :3], v[:, :, :3], torch.zeros(1, 1, 3))
    torch.testing.assert_close(out[:, :, :1], kept, **TOL)


@pytest.mark.parametrize(("bias_rows", "match"), [(slice(0, 4, 2), r"contiguous slice \(step 1\)"),
                                                  (0, "bias_rows must be None or a slice")])
def test_region_guided_attention_rejects_bad_rows(bias_rows: object, match: str) -> None:
    q = torch.zeros(1, 1, 5, 4)
    with pytest.raises(KernelInputError, match=match) as info:
        region_guided_attention_reference(q, q, q, torch.zeros(1, 1, 5), bias_rows=bias_rows)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- one reference, no triton
def test_models_use_these_references() -> None:
    from protoinspect.sdk.models import defect_classifier, prototype_decoder

    assert prototype_decoder.prototype_attention_reference is prototype_attention_reference
    assert defect_classifier.region_guided_attention_reference is region_guided_attention_reference


def test_references_and_models_import_without_triton() -> None:
    code = ("import sys\nsys.modules['triton'] = None  # as if not installed\n"
            "from protoinspect.kernels import prototype_attention_reference, region_guided_attention_reference\n"
            "import protoinspect.sdk.models.prototype_detector, protoinspect.sdk.models.defect_classifier\n"
            "print(sorted(m for m in sys.modules if m.startswith('protoinspect.kernels')))\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.strip().splitlines()[-1]
    assert "attention_reference" in loaded and "_kernel" not in loaded and "triton_loader" not in loaded
