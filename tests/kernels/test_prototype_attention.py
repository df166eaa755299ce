"""kernels/prototype_attention_kernel.py against its PyTorch reference: forward, backward, strides, edge cases, errors."""

from __future__ import annotations

import itertools
import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on", "yes"}
if not (INTERPRET or torch.cuda.is_available()):
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 (tests/kernels/test_interpreted_run.py runs them)",
                allow_module_level=True)
pytest.importorskip("triton", reason="the triton extra is not installed")

from protoinspect.kernels.attention_reference import prototype_attention_reference
from protoinspect.kernels.autotune_tiles import BWD_TILES, FWD_TILES, gpu_configs, pruner
from protoinspect.kernels.errors import KernelDtypeError, KernelInputError
from protoinspect.kernels.prototype_attention_backward import keep_bwd_config
from protoinspect.kernels.prototype_attention_kernel import PrototypeAttentionFunction, keep_config, prototype_attention

DEVICE = "cpu" if INTERPRET else "cuda"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# Output tolerances (atol, rtol) against the fp32 reference computed on the same, already rounded inputs.
# fp32: IEEE dots (no TF32), only the summation order differs.
# fp16: P is rounded to fp16 for the P·V product and the output is stored in fp16 (half an ulp is 4.9e-4 at |o| < 2).
# bf16: the same two roundings with an 8-bit mantissa.
FWD_TOL = {F32: (1e-4, 1e-4), F16: (2e-3, 2e-3), BF16: (2e-2, 2e-2)}
# Gradients add up N (dq) or B*N (dk, dv of shared prototypes) such rounded products, and dS = P(dP - delta)
# subtracts nearly equal numbers. Over repeated draws of the interpreter cases the worst error used ~1/3 of
# FWD_TOL and ~1/4 of GRAD_TOL (bf16), ~1/5 and ~1/20 (fp16).
GRAD_TOL = {F32: (1e-4, 1e-4), F16: (1e-2, 1e-2), BF16: (3e-2, 3e-2)}

# (B, H, N, M, D, shared): shared = prototypes H x M x D for the whole batch, else B x H x M x D.
# The interpreter uses 32 x 32 blocks: N = 130 spans 5 query blocks and M = 67 three prototype blocks with a
# ragged tail; D = 48 is padded to 64.
CASES = [
    (1, 1, 1, 1, 16, True),
    (3, 4, 37, 5, 48, False),
    (1, 4, 130, 67, 64, True),
    (3, 1, 37, 67, 16, False),
]
GPU_CASES = [
    (b, h, n, m, d, shared)
    for (b, h), n, m, d, shared in itertools.product(
        [(1, 1), (3, 4)], [1, 37, 1000], [1, 67, 300], [16, 48, 128, 256], [True, False])
]
GPU_BWD_CASES = [(3, 4, n, m, d, s) for n, m, d, s in itertools.product([37, 1000], [5, 300], [48, 128], [True, False])]
DTYPES = [F32, F16, BF16]  # bf16 runs under the interpreter too (its dots go through fp32, see kernels/mma.py)
gpu_only = pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(), reason="needs CUDA")


def make_inputs(b: int, h: int, n: int, m: int, d: int, shared: bool, dtype: torch.dtype,
                requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kv_shape = (h, m, d) if shared else (b, h, m, d)
    return tuple(torch.randn(shape, device=DEVICE, dtype=dtype).requires_grad_(requires_grad)
                 for shape in ((b, h, n, d), kv_shape, kv_shape))


def reference_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
    return prototype_attention_reference(q.float(), k.float(), v.float(), **kw)


def run_forward(case: tuple, dtype: torch.dtype, check_close) -> None:
    q, k, v = make_inputs(*case, dtype)
    out = prototype_attention(q, k, v)
    assert out.shape == q.shape and out.dtype == dtype
    check_close(out.float(), reference_fp32(q, k, v), FWD_TOL[dtype], f"forward {case} {dtype}")


def run_backward(case: tuple, dtype: torch.dtype, check_close) -> None:
    q, k, v = make_inputs(*case, dtype, requires_grad=True)
    grad_out = torch.randn(q.shape, device=DEVICE, dtype=dtype)
    out = prototype_attention(q, k, v)
    assert out.grad_fn is not None and "PrototypeAttentionFunction" in type(out.grad_fn).__name__
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    expected = torch.autograd.grad(prototype_attention_reference(*leaves), leaves, grad_out.float())
    for name, got, want, t in zip("qkv", grads, expected, (q, k, v)):
        assert got.shape == t.shape and got.dtype == dtype
        check_close(got.float(), want, GRAD_TOL[dtype], f"d{name} {case} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(case: tuple, dtype: torch.dtype, check_close) -> None:
    run_forward(case, dtype, check_close)


# Backward: (3, 4, 37, 67, 48, True) sums dk, dv of shared prototypes over a batch of 3, with ragged blocks.
BWD_CASES = [(CASES[0], F32), ((3, 4, 37, 67, 48, True), F32), (CASES[1], F32), (CASES[3], F32),
             ((3, 4, 37, 67, 48, True), F16), ((2, 2, 70, 40, 64, True), BF16)]


@pytest.mark.parametrize(("case", "dtype"), BWD_CASES, ids=str)
def test_backward_matches_reference_grads(case: tuple, dtype: torch.dtype, check_close) -> None:
    run_backward(case, dtype, check_close)


@pytest.mark.parametrize("shared", [True, False])
def test_strided_views(shared: bool, check_close) -> None:
    b, h, n, m, d = 2, 3, 37, 40, 24
    q = torch.randn(b, n, h, d, device=DEVICE).transpose(1, 2)  # B x H x N x D, not contiguous
    if shared:
        k = torch.randn(h, d, m, device=DEVICE).transpose(1, 2)  # H x M x D with stride_d = M
        v = torch.randn(h, m, 2 * d, device=DEVICE)[..., ::2]  # every other column
    else:
        k = torch.randn(m, b, d, h, device=DEVICE).permute(1, 3, 0, 2)
        v = torch.randn(b, h, m, 2 * d, device=DEVICE)[..., d:]
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    check_close(prototype_attention(q, k, v), reference_fp32(q, k, v), FWD_TOL[F32], "strided forward")
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    prototype_attention(*leaves).sum().backward()  # grad_out is an expanded, stride-0 tensor
    refs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    prototype_attention_reference(*refs).sum().backward()
    for name, got, want in zip("qkv", leaves, refs):
        check_close(got.grad, want.grad, GRAD_TOL[F32], f"strided d{name}")


def test_custom_scale(check_close) -> None:
    q, k, v = make_inputs(2, 2, 20, 9, 32, True, F32)
    check_close(prototype_attention(q, k, v, scale=0.7), reference_fp32(q, k, v, scale=0.7), FWD_TOL[F32],
                "scale=0.7")


@pytest.mark.parametrize(("b", "n"), [(0, 5), (2, 0)])
def test_empty_batch_or_tokens(b: int, n: int) -> None:
    q, k, v = make_inputs(b, 2, n, 3, 16, True, F32, requires_grad=True)
    out = prototype_attention(q, k, v)
    assert out.shape == (b, 2, n, 16)
    out.sum().backward()
    assert q.grad.shape == q.shape and torch.count_nonzero(k.grad) == 0 and torch.count_nonzero(v.grad) == 0


def test_no_grad_skips_autograd() -> None:
    q, k, v = make_inputs(1, 1, 4, 3, 16, True, F32, requires_grad=True)
    with torch.no_grad():
        assert prototype_attention(q, k, v).grad_fn is None
    assert PrototypeAttentionFunction.apply(q, k, v, None).grad_fn is not None


def _t(*shape: int, dtype: torch.dtype = F32, device: str = DEVICE) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, device=device) if dtype.is_floating_point else \
        torch.ones(shape, dtype=dtype, device=device)


@pytest.mark.parametrize(("q", "k", "v", "error", "match"), [
    (_t(1, 2, 4, 16, device="meta"), _t(2, 3, 16, device="meta"), _t(2, 3, 16, device="meta"), KernelInputError,
     r"need CUDA tensors.*got tensors on meta"),
    (_t(1, 2, 4, 16), _t(2, 3, 16, device="meta"), _t(2, 3, 16), KernelInputError, r"same device, got q=.*k=meta"),
    (_t(1, 2, 4, 16), _t(2, 3, 16, dtype=F16), _t(2, 3, 16), KernelDtypeError,
     r"same dtype, got q=torch.float32, k=torch.float16"),
    (_t(1, 2, 4, 16, dtype=torch.int64), _t(2, 3, 16), _t(2, 3, 16), KernelDtypeError, r"q has dtype torch.int64"),
    (_t(2, 4, 16), _t(2, 3, 16), _t(2, 3, 16), KernelInputError, r"q must be B x H x N x D \(rank 4\), got shape \(2, 4, 16\)"),
    (_t(1, 2, 4, 16), _t(3, 3, 16), _t(3, 3, 16), KernelInputError, r"k must be H x M x D = 2 x M x 16.*got shape \(3, 3, 16\)"),
    (_t(1, 2, 4, 16), _t(2, 3, 8), _t(2, 3, 8), KernelInputError, r"k must be .*got shape \(2, 3, 8\)"),
    (_t(2, 2, 4, 16), _t(1, 2, 3, 16), _t(1, 2, 3, 16), KernelInputError, r"k must be .*B x H x M x D = 2 x 2 x M x 16"),
    (_t(1, 2, 4, 16), _t(2, 3, 16), _t(2, 5, 16), KernelInputError, r"v must be the shape of k \(2, 3, 16\), got shape \(2, 5"),
    (_t(1, 2, 4, 16), _t(2, 0, 16), _t(2, 0, 16), KernelInputError, r"zero prototypes"),
    (_t(1, 1, 2, 300), _t(1, 3, 300), _t(1, 3, 300), KernelInputError, r"D must be in 1..256, got D=300"),
], ids=["device", "mixed-device", "mixed-dtype", "int", "rank", "heads", "head-dim", "batch", "k-v", "M=0", "D>256"])
def test_validation_errors(q, k, v, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        prototype_attention(q, k, v)


def test_dtype_error_is_a_type_error_and_a_value_error() -> None:
    with pytest.raises(TypeError) as info:
        prototype_attention(_t(1, 1, 2, 16, dtype=torch.int32), _t(1, 2, 16), _t(1, 2, 16))
    assert isinstance(info.value, KernelInputError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("n", [1, 37, 5000])
@pytest.mark.parametrize("head_dim_pad", [16, 64, 256])
def test_gpu_autotune_pruning_keeps_configs(n: int, head_dim_pad: int) -> None:
    """The GPU config lists (unused by the interpreter) prune to something launchable for every shape."""
    for configs, keep in ((gpu_configs(FWD_TILES), keep_config), (gpu_configs(BWD_TILES), keep_bwd_config)):
        kept = pruner(keep)(configs, {"N": n, "M": 67}, HEAD_DIM_PAD=head_dim_pad)
        assert kept and all(c in configs for c in kept)
        assert any(c.kwargs["BLOCK_N"] == c.kwargs["BLOCK_M"] == 32 and c.num_stages == 1 for c in kept)
        if head_dim_pad == 256:
            assert all(min(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_M"]) <= 32 or max(c.kwargs.values()) <= 64
                       for c in kept)


def test_bad_scale() -> None:
    with pytest.raises(KernelInputError, match="scale must be a finite float"):
        prototype_attention(_t(1, 1, 2, 16), _t(1, 2, 16), _t(1, 2, 16), scale=float("nan"))


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_forward_gpu_grid(case: tuple, dtype: torch.dtype, check_close) -> None:
    run_forward(case, dtype, check_close)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_BWD_CASES, ids=str)
def test_backward_gpu_grid(case: tuple, dtype: torch.dtype, check_close) -> None:
    run_backward(case, dtype, check_close)
