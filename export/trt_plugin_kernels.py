"""The two Triton kernels as TensorRT ahead-of-time plugin kernels: entry points and their PTX compilation.

A TensorRT AOT plugin (``tensorrt.plugin.aot_impl``, TensorRT >= 10.9) launches a precompiled kernel
with the arguments in a fixed order: the input pointers, then extra int32 scalars, then the output
pointers. The entry kernels here have exactly that signature and call the very ``@triton.jit`` bodies of
:mod:`protoinspect.kernels.prototype_attention_kernel` and
:mod:`protoinspect.kernels.region_guided_attention_kernel` (no second copy of the math). TensorRT hands plugins
densely packed (LINEAR) tensors, so every stride follows from the shapes;
the head dim, block sizes, dtype, the logit scale and the bias-row range are compile-time constants
baked into the PTX (plugin attributes are not serialised on the AOT path).

Shapes:
    prototype attention    q B x H x N x D, k / v B x H x M x D (or H x M x D)
                           -> out B x H x N x D, lse B x H x N float32 (log2 units; kept for a backward)
    region-guided attn.    q / k / v B x H x N x D, bias B x Hb x N (Hb = 1 or H)
                           -> out B x H x N x D
Grid: (ceil(N / BLOCK_N), B * H); block: num_warps * 32 threads.

:func:`compile_prototype_attention` / :func:`compile_region_guided_attention` compile for a given GPU
architecture with ``triton.compile`` (no GPU needed) and return a :class:`CompiledKernel` with the PTX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protoinspect.kernels.launch_checks import LOG2E, MAX_HEAD_DIM, padded_head_dim
from protoinspect.kernels.prototype_attention_kernel import _prototype_attention_fwd_kernel
from protoinspect.kernels.region_guided_attention_kernel import _region_guided_attention_fwd_kernel
from protoinspect.kernels.triton_loader import import_triton
from protoinspect.sdk.errors import ConfigError

triton, tl = import_triton()

# the @triton.jit bodies under the autotuners (a jit function may call another jit function, not an Autotuner)
_prototype_attention_body = _prototype_attention_fwd_kernel.fn
_region_guided_attention_body = _region_guided_attention_fwd_kernel.fn

#: Plugin tactics TensorRT times at build (AOT multi-tactic): tactic id -> (BLOCK_N, BLOCK_M, num_warps, num_stages).
TACTICS: dict[int, tuple[int, int, int, int]] = {1: (64, 64, 4, 2), 2: (128, 64, 8, 3)}
DTYPES = {"fp32": "*fp32", "fp16": "*fp16"}


@triton.jit
def prototype_attention_trt(Q, K, V, H, N, M, Out, Lse,
                            HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, K_BATCHED: tl.constexpr,
                            QK_SCALE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """TensorRT AOT entry: dense q/k/v/out, strides from the shapes, then the fused forward kernel's body."""
    stride_n = HEAD_DIM
    stride_qh = N * HEAD_DIM
    stride_kh = M * HEAD_DIM
    _prototype_attention_body(
        Q, K, V, Out, Lse,
        H * stride_qh, stride_qh, stride_n, 1,
        H * stride_kh * K_BATCHED, stride_kh, stride_n, 1,
        H * stride_kh * K_BATCHED, stride_kh, stride_n, 1,
        H * stride_qh, stride_qh, stride_n, 1,
        H, N, M, HEAD_DIM, QK_SCALE,
        HEAD_DIM_PAD=HEAD_DIM_PAD, DOT_PRECISION=DOT_PRECISION, DOT_UPCAST=False, BLOCK_N=BLOCK_N, BLOCK_M=BLOCK_M,
    )


@triton.jit
def region_guided_attention_trt(Q, K, V, Bias, H, N, ROW_START, ROW_STOP, Out,
                                HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BIAS_PER_HEAD: tl.constexpr,
                                QK_SCALE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                                BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """TensorRT AOT entry: dense q/k/v/bias/out, strides from the shapes, then the fused forward kernel's body."""
    stride_n = HEAD_DIM
    stride_h = N * HEAD_DIM
    _region_guided_attention_body(
        Q, K, V, Bias, Out,
        H * stride_h, stride_h, stride_n, 1,
        H * stride_h, stride_h, stride_n, 1,
        H * stride_h, stride_h, stride_n, 1,
        (1 + (H - 1) * BIAS_PER_HEAD) * N, N * BIAS_PER_HEAD, 1,
        H * stride_h, stride_h, stride_n, 1,
        H, N, HEAD_DIM, ROW_START, ROW_STOP, QK_SCALE,
        HEAD_DIM_PAD=HEAD_DIM_PAD, DOT_PRECISION=DOT_PRECISION, DOT_UPCAST=False, BLOCK_N=BLOCK_N, BLOCK_M=BLOCK_M,
    )


@dataclass(frozen=True)
class CompiledKernel:
    """A kernel compiled for one architecture: what ``aot_impl`` returns to TensorRT, plus launch facts.

    Attributes:
        name: the PTX entry name.
        ptx: the PTX text.
        num_warps / shared: block size (num_warps * 32 threads) and shared memory in bytes.
        block_n: query rows per program (grid x = ceil(N / block_n)).
        arch: compute capability as an int (87 = sm_87).
    """

    name: str
    ptx: str
    num_warps: int
    shared: int
    block_n: int
    arch: int

    @property
    def threads(self) -> int:
        """Threads per block."""
        return self.num_warps * 32


def _check_common(dtype: str, head_dim: int, scale: float | None, tactic: int, arch: int) -> tuple[int, float]:
    if dtype not in DTYPES:
        raise ConfigError(f"TensorRT plugin kernels take {sorted(DTYPES)} tensors, got {dtype!r}")
    if tactic not in TACTICS:
        raise ConfigError(f"unknown tactic {tactic}: choose one of {sorted(TACTICS)}")
    if arch < 75:
        raise ConfigError(f"the plugin kernels need compute capability >= 7.5 (sm_75), got sm_{arch}")
    if not 1 <= int(head_dim) <= MAX_HEAD_DIM:
        raise ConfigError(f"the plugin kernels take a head dim D in 1..{MAX_HEAD_DIM}, got D={head_dim}")
    pad = padded_head_dim("trt plugin", int(head_dim))
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ConfigError(f"scale must be finite, got {scale}")
    return pad, scale


def _compile(fn: object, signature: dict[str, str], constexprs: dict[str, object], tactic: int, arch: int) -> CompiledKernel:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    block_n, block_m, num_warps, num_stages = TACTICS[tactic]
    constexprs = {**constexprs, "BLOCK_N": block_n, "BLOCK_M": block_m}
    signature = {**signature, **{k: "constexpr" for k in constexprs}}
    # TensorRT allocates plugin I/O with >= 256-byte alignment: tell Triton the pointers are 16-byte aligned
    names = list(signature)
    attrs = {(names.index(k),): [["tt.divisibility", 16]] for k, v in signature.items() if v.startswith("*")}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    meta = compiled.metadata
    # TensorRT passes exactly the declared arguments: Triton's hidden scratch pointers must stay unused.
    if getattr(meta, "global_scratch_size", 0) or getattr(meta, "profile_scratch_size", 0):
        raise ConfigError(f"{meta.name} needs Triton global/profile scratch memory, which a TensorRT AOT plugin "
                          "cannot provide; use another tactic")
    return CompiledKernel(meta.name, compiled.asm["ptx"], int(meta.num_warps), int(meta.shared), block_n, arch)


def compile_prototype_attention(dtype: str, head_dim: int, *, k_batched: bool, scale: float | None = None,
                                tactic: int = 1, arch: int = 87) -> CompiledKernel:
    """PTX of :func:`prototype_attention_trt` for ``dtype`` (fp32 / fp16), head dim D and prototypes shared
    (``k_batched=False``: k / v are H x M x D) or per image (B x H x M x D).

    Raises:
        ConfigError: unsupported dtype, D outside 1..256, unknown tactic, arch below sm_75.
    """
    pad, scale = _check_common(dtype, head_dim, scale, tactic, arch)
    ptr = DTYPES[dtype]
    signature = {"Q": ptr, "K": ptr, "V": ptr, "H": "i32", "N": "i32", "M": "i32", "Out": ptr, "Lse": "*fp32"}
    constexprs = {"HEAD_DIM": int(head_dim), "HEAD_DIM_PAD": pad, "K_BATCHED": int(bool(k_batched)),
                  "QK_SCALE": scale * LOG2E, "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32"}
    return _compile(prototype_attention_trt, signature, constexprs, tactic, arch)


def compile_region_guided_attention(dtype: str, head_dim: int, *, bias_per_head: bool, scale: float | None = None,
                                    tactic: int = 1, arch: int = 87) -> CompiledKernel:
    """PTX of :func:`region_guided_attention_trt` for ``dtype``, head dim D and a bias per head (B x H x N)
    or shared by the heads (B x 1 x N).

    Raises:
        ConfigError: unsupported dtype, D outside 1..256, unknown tactic, arch below sm_75.
    """
    pad, scale = _check_common(dtype, head_dim, scale, tactic, arch)
    ptr = DTYPES[dtype]
    signature = {"Q": ptr, "K": ptr, "V": ptr, "Bias": ptr, "H": "i32", "N": "i32", "ROW_START": "i32",
                 "ROW_STOP": "i32", "Out": ptr}
    constexprs = {"HEAD_DIM": int(head_dim), "HEAD_DIM_PAD": pad, "BIAS_PER_HEAD": int(bool(bias_per_head)),
                  "QK_SCALE": scale * LOG2E, "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32"}
    return _compile(region_guided_attention_trt, signature, constexprs, tactic, arch)
