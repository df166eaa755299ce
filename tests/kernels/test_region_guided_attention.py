"""kernels/region_guided_attention_kernel.py against its PyTorch reference and against SDPA with an explicit mask."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on", "yes"}
if not (INTERPRET or torch.cuda.is_available()):
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 (tests/kernels/test_interpreted_run.py runs them)",
                allow_module_level=True)
pytest.importorskip("triton", reason="the triton extra is not installed")

from protoinspect.kernels.attention_reference import region_guided_attention_reference
from protoinspect.kernels.autotune_tiles import FWD_TILES, gpu_configs, pruner
from protoinspect.kernels.errors import KernelBackwardUnsupportedError, KernelDtypeError, KernelInputError
from protoinspect.kernels.region_guided_attention_kernel import keep_config, region_guided_attention

DEVICE = "cpu" if INTERPRET else "cuda"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# (atol, rtol) against the fp32 reference on the same rounded inputs; see test_prototype_attention.py for why.
FWD_TOL = {F32: (1e-4, 1e-4), F16: (2e-3, 2e-3), BF16: (2e-2, 2e-2)}
DTYPES = [F32, F16, BF16]  # bf16 runs under the interpreter too (its dots go through fp32, see kernels/mma.py)

# (B, H, N, D, bias heads, bias_rows). Interpreter blocks are 32 x 32: N = 37 leaves a ragged key block and
# N = 130 spans 5 blocks each way; D = 48 is padded to 64; slice(2, 5) with N = 1 biases no row at all.
CASES = [
    (1, 1, 1, 16, 1, slice(2, 5)),
    (3, 4, 37, 48, 4, None),
    (1, 4, 130, 64, 1, slice(0, 1)),
]
ROWS = [None, slice(0, 1), slice(2, 5), slice(-3, None)]
GPU_CASES = [
    (b, h, n, d, hb if hb == 1 else h, rows)
    for (b, h), n, d, hb, rows in itertools.product(
        [(1, 1), (3, 4)], [1, 37, 257, 1024], [16, 48, 128, 256], [1, "H"], [None, slice(0, 1), slice(2, 5)])
]
gpu_only = pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(), reason="needs CUDA")


def make_inputs(b: int, h: int, n: int, d: int, bias_heads: int, dtype: torch.dtype = F32):
    q, k, v = (torch.randn(b, h, n, d, device=DEVICE, dtype=dtype) for _ in range(3))
    bias = 2 * torch.randn(b, bias_heads, n, device=DEVICE, dtype=dtype)
    return q, k, v, bias


def reference_fp32(q, k, v, bias, **kw) -> torch.Tensor:
    return region_guided_attention_reference(q.float(), k.float(), v.float(), bias.float(), **kw)


def run_forward(case: tuple, dtype: torch.dtype, check_close) -> None:
    *shape, rows = case
    q, k, v, bias = make_inputs(*shape, dtype)
    out = region_guided_attention(q, k, v, bias, bias_rows=rows)
    assert out.shape == q.shape and out.dtype == dtype
    check_close(out.float(), reference_fp32(q, k, v, bias, bias_rows=rows), FWD_TOL[dtype], f"{case} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(case: tuple, dtype: torch.dtype, check_close) -> None:
    run_forward(case, dtype, check_close)


@pytest.mark.parametrize("dtype", [F32, F16], ids=str)
@pytest.mark.parametrize("bias_heads", [1, 4])
@pytest.mark.parametrize("rows", ROWS, ids=str)
def test_bias_rows_and_heads(rows: slice | None, bias_heads: int, dtype: torch.dtype, check_close) -> None:
    run_forward((2, 4, 37, 48, bias_heads, rows), dtype, check_close)


@pytest.mark.parametrize("bias_heads", [1, 3])
@pytest.mark.parametrize("rows", ROWS, ids=str)
def test_matches_sdpa_with_explicit_mask(rows: slice | None, bias_heads: int, check_close) -> None:
    """A second, independent reference: SDPA with the bias written out as a B x Hb x N x N additive mask."""
    b, h, n, d = 2, 3, 37, 32
    q, k, v, bias = make_inputs(b, h, n, d, bias_heads)
    mask = torch.zeros(b, bias_heads, n, n, device=DEVICE)
    mask[:, :, rows if rows is not None else slice(None), :] = bias[:, :, None, :]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    check_close(region_guided_attention(q, k, v, bias, bias_rows=rows), expected, FWD_TOL[F32], f"SDPA rows={rows}")


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # the interpreter's 0/0
def test_minus_inf_bias_drops_keys(check_close) -> None:
    """Keys masked with -inf, including a first key block that is -inf for every biased row."""
    q, k, v, bias = make_inputs(2, 2, 70, 16, 1)
    bias[:, :, :40] = float("-inf")
    bias[1, :, 50:60] = float("-inf")
    for rows in (None, slice(0, 1), slice(3, 50)):
        out = region_guided_attention(q, k, v, bias, bias_rows=rows)
        check_close(out, reference_fp32(q, k, v, bias, bias_rows=rows), FWD_TOL[F32], f"-inf keys, rows={rows}")
    bias[0] = float("-inf")  # every key of batch 0 dropped: NaN on the biased rows, like the reference
    out = region_guided_attention(q, k, v, bias, bias_rows=slice(0, 2))
    assert torch.isnan(out[0, :, :2]).all() and not torch.isnan(out[0, :, 2:]).any()
    check_close(out, reference_fp32(q, k, v, bias, bias_rows=slice(0, 2)), FWD_TOL[F32], "all keys -inf",
                equal_nan=True)


def test_strided_views(check_close) -> None:
    b, h, n, d = 2, 3, 37, 24
    q, k = (torch.randn(b, n, h, d, device=DEVICE).transpose(1, 2) for _ in range(2))
    v = torch.randn(b, h, n, 2 * d, device=DEVICE)[..., ::2]
    bias = torch.randn(b, n, h, device=DEVICE).transpose(1, 2)  # B x H x N, stride_n = H
    bias1 = torch.randn(n, b, device=DEVICE).t()[:, None, :]  # B x 1 x N
    assert not any(t.is_contiguous() for t in (q, k, v, bias, bias1))
    for bb, rows in ((bias, slice(0, 1)), (bias1, None)):
        out = region_guided_attention(q, k, v, bb, bias_rows=rows, scale=0.3)
        check_close(out, reference_fp32(q, k, v, bb, bias_rows=rows, scale=0.3), FWD_TOL[F32], f"strided {rows}")


@pytest.mark.parametrize("n", [1, 37, 5000])
@pytest.mark.parametrize("head_dim_pad", [16, 64, 256])
def test_gpu_autotune_pruning_keeps_configs(n: int, head_dim_pad: int) -> None:
    """The GPU config list (unused by the interpreter) prunes to something launchable for every shape."""
    kept = pruner(keep_config)(gpu_configs(FWD_TILES), {"N": n}, HEAD_DIM_PAD=head_dim_pad)
    assert kept and any(c.kwargs["BLOCK_N"] == c.kwargs["BLOCK_M"] == 32 and c.num_stages == 1 for c in kept)
    assert all(max(c.kwargs.values()) <= max(32, 1 << (n - 1).bit_length()) for c in kept)


@pytest.mark.parametrize(("b", "n"), [(0, 5), (2, 0)])
def test_empty_batch_or_tokens(b: int, n: int) -> None:
    q, k, v, bias = make_inputs(b, 2, n, 16, 2)
    assert region_guided_attention(q, k, v, bias).shape == (b, 2, n, 16)


def test_forward_only_raises_on_requires_grad() -> None:
    q, k, v, bias = make_inputs(1, 2, 5, 16, 1)
    bias.requires_grad_()
    with pytest.raises(KernelBackwardUnsupportedError, match="forward-only.*region_guided_attention_reference"):
        region_guided_attention(q, k, v, bias)
    with pytest.raises(NotImplementedError):
        region_guided_attention(q.requires_grad_(), k, v, bias.detach())
    with torch.no_grad():
        assert region_guided_attention(q, k, v, bias).shape == q.shape


def _t(*shape: int, dtype: torch.dtype = F32, device: str = DEVICE) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, device=device) if dtype.is_floating_point else \
        torch.ones(shape, dtype=dtype, device=device)


QKV = (_t(2, 4, 5, 16), _t(2, 4, 5, 16), _t(2, 4, 5, 16))


@pytest.mark.parametrize(("args", "kw", "error", "match"), [
    ((*(_t(1, 2, 5, 16, device="meta"),) * 3, _t(1, 1, 5, device="meta")), {}, KernelInputError, r"need CUDA tensors"),
    ((*QKV, _t(2, 1, 5, device="meta")), {}, KernelInputError, r"same device, got .*bias=meta"),
    ((*QKV, _t(2, 1, 5, dtype=F16)), {}, KernelDtypeError, r"same dtype, got .*bias=torch.float16"),
    ((*QKV, _t(2, 1, 5, dtype=torch.int32)), {}, KernelDtypeError, r"bias has dtype torch.int32"),
    ((_t(4, 5, 16), *QKV[1:], _t(2, 1, 5)), {}, KernelInputError, r"q must be B x H x N x D \(rank 4\)"),
    ((QKV[0], _t(2, 4, 6, 16), QKV[2], _t(2, 1, 5)), {}, KernelInputError, r"k must be the shape of q.*\(2, 4, 6, 16\)"),
    ((*QKV, _t(2, 2, 5)), {}, KernelInputError, r"bias must be B x 1 x N = 2 x 1 x 5 or B x H x N = 2 x 4 x 5, got shape \(2, 2, 5\)"),
    ((*QKV, _t(2, 1, 6)), {}, KernelInputError, r"bias must be .*got shape \(2, 1, 6\)"),
    ((*QKV, _t(2, 5)), {}, KernelInputError, r"bias must be .*got shape \(2, 5\)"),
    ((*QKV, _t(2, 1, 5)), {"bias_rows": slice(0, 4, 2)}, KernelInputError, r"contiguous slice \(step 1\)"),
    ((*QKV, _t(2, 1, 5)), {"bias_rows": 0}, KernelInputError, r"bias_rows must be None or a slice"),
], ids=["device", "mixed-device", "mixed-dtype", "int", "rank", "k-shape", "bias-heads", "bias-N", "bias-rank",
        "rows-step", "rows-int"])
def test_validation_errors(args: tuple, kw: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        region_guided_attention(*args, **kw)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_forward_gpu_grid(case: tuple, dtype: torch.dtype, check_close) -> None:
    run_forward(case, dtype, check_close)
