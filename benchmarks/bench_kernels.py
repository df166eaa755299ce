"""Triton kernels vs their PyTorch references vs SDPA at our models' scales (pytest-benchmark; CUDA only).

    python -m pytest benchmarks/bench_kernels.py --benchmark-only --benchmark-columns=median,iqr
    python benchmarks/bench_kernels.py --markdown            # the same cases as a markdown table, no pytest
    TRITON_INTERPRET=1 python benchmarks/bench_kernels.py --markdown --smoke   # CPU self-check, tiny shapes

Forward passes only. Baselines: prototype attention = SDPA with k, v expanded to B x H x M x D; region-guided
attention = SDPA with ``attn_mask`` = the bias broadcast over the query rows (bias_rows=None, a stride-0 view).
Each timed call ends with a synchronize; the numbers in ``extra_info`` come from CUDA events. Recorded: achieved
TFLOP/s (4*B*H*N*M*D flops, M = N for region-guided), TB/s (every input read once, the output written once),
the session's measured peaks (fp16 matmul TFLOP/s, device-to-device copy TB/s) and % of the roofline
min(peak TFLOP/s, flops/bytes * peak TB/s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

if __name__ != "__main__" and not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from protoinspect.kernels import (
    prototype_attention,
    prototype_attention_reference,
    region_guided_attention,
    region_guided_attention_reference,
)

# (B, H, N tokens, M prototypes, D head dim, prototypes shared by the batch)
PROTOTYPE_CASES = [(8, 8, 1024, 64, 32, True), (8, 8, 4096, 256, 64, True), (1, 8, 16384, 2048, 64, True),
                   (64, 4, 1024, 256, 128, True), (8, 4, 4096, 2048, 128, True), (8, 8, 4096, 256, 64, False)]
REGION_CASES = [(8, 8, 1024, 32), (8, 8, 4096, 64), (1, 8, 16384, 64), (64, 4, 1024, 128)]  # (B, H, N, D)
SMOKE_PROTOTYPE_CASES = [(1, 2, 40, 9, 16, True), (2, 1, 33, 5, 32, False)]
SMOKE_REGION_CASES = [(1, 2, 40, 16)]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
IMPLS = ("triton", "reference", "sdpa")
CHECK_TOL = {torch.float16: 2e-2, torch.bfloat16: 6e-2, torch.float32: 1e-3}  # triton vs SDPA, checked once


@dataclass(frozen=True)
class Peaks:
    matmul_tflops: float  # fp16 GEMM
    copy_tbps: float  # device-to-device copy, bytes read + written


@dataclass
class Workload:
    fn: Callable[[], torch.Tensor]
    check: Callable[[], None]  # asserts triton == SDPA once (also runs the autotuner / JIT)
    flops: float
    bytes: float


def measure_ms(fn: Callable[[], object], *, reps: int = 20, warmup: int = 3) -> list[float]:
    """Per-call times in ms: CUDA events on a GPU (after warm-up), wall clock under the CPU interpreter."""
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():
        import time

        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    torch.cuda.synchronize()
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def measure_peaks(device: torch.device, *, small: bool = False) -> Peaks:
    n = 256 if small else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.float16) for _ in range(2))
    ms = statistics.median(measure_ms(lambda: a @ b, reps=10))
    x = torch.empty(2**20 if small else 2**28, device=device)  # 1 GiB of fp32
    y = torch.empty_like(x)
    copy_ms = statistics.median(measure_ms(lambda: y.copy_(x), reps=10))
    return Peaks(2 * n**3 / (ms * 1e-3) / 1e12, 2 * x.nbytes / (copy_ms * 1e-3) / 1e12)


def prototype_workload(case: tuple, dtype: torch.dtype, impl: str, device: torch.device) -> Workload:
    b, h, n, m, d, shared = case
    q = torch.randn(b, h, n, d, device=device, dtype=dtype)
    k, v = (torch.randn((h, m, d) if shared else (b, h, m, d), device=device, dtype=dtype) for _ in range(2))
    ke, ve = k.expand(b, h, m, d), v.expand(b, h, m, d)
    fns = {"triton": lambda: prototype_attention(q, k, v), "reference": lambda: prototype_attention_reference(q, k, v),
           "sdpa": lambda: F.scaled_dot_product_attention(q, ke, ve)}

    def check() -> None:
        tol = CHECK_TOL[dtype]
        torch.testing.assert_close(fns["triton"]().float(), fns["sdpa"]().float(), atol=tol, rtol=tol)

    es = q.element_size()
    return Workload(fns[impl], check, 4.0 * b * h * n * m * d, es * (2 * q.numel() + k.numel() + v.numel()))


def region_workload(case: tuple, dtype: torch.dtype, impl: str, device: torch.device) -> Workload:
    b, h, n, d = case
    q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype) for _ in range(3))
    bias = torch.randn(b, 1, n, device=device, dtype=dtype)
    mask = bias[:, :, None, :].expand(b, 1, n, n)  # every row biased: B x 1 x N x N, stride 0 over rows
    fns = {"triton": lambda: region_guided_attention(q, k, v, bias),
           "reference": lambda: region_guided_attention_reference(q, k, v, bias),
           "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)}

    def check() -> None:
        tol = CHECK_TOL[dtype]
        torch.testing.assert_close(fns["triton"]().float(), fns["sdpa"]().float(), atol=tol, rtol=tol)

    return Workload(fns[impl], check, 4.0 * b * h * n * n * d, q.element_size() * (4 * q.numel() + bias.numel()))


def metrics(work: Workload, ms: float, peaks: Peaks) -> dict[str, float]:
    tflops = work.flops / (ms * 1e-3) / 1e12
    roofline = min(peaks.matmul_tflops, work.flops / work.bytes * peaks.copy_tbps)
    return {"median_ms": ms, "tflops": tflops, "tbps": work.bytes / (ms * 1e-3) / 1e12,
            "peak_matmul_tflops": peaks.matmul_tflops, "peak_copy_tbps": peaks.copy_tbps,
            "roofline_tflops": roofline, "pct_of_roofline": 100.0 * tflops / roofline}


def environment() -> dict[str, str]:
    import triton

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (interpreter)"
    return {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "cuda": str(torch.version.cuda)}


# -- pytest-benchmark ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def peaks() -> Peaks:
    return measure_peaks(torch.device("cuda"))


def _run(benchmark, peaks: Peaks, op: str, work: Workload, case: tuple, dtype_name: str) -> None:
    work.check()
    benchmark.group = f"{op}-{case}-{dtype_name}"

    def synced() -> None:
        work.fn()
        torch.cuda.synchronize()

    benchmark.pedantic(synced, warmup_rounds=3, rounds=20, iterations=1)
    ms = statistics.median(measure_ms(work.fn))
    benchmark.extra_info.update({"shape": list(case), "dtype": dtype_name, **environment(), **metrics(work, ms, peaks)})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("case", PROTOTYPE_CASES, ids=str)
def test_prototype_attention_fwd(benchmark, peaks: Peaks, case: tuple, dtype_name: str, impl: str) -> None:
    work = prototype_workload(case, DTYPES[dtype_name], impl, torch.device("cuda"))
    _run(benchmark, peaks, "prototype_attention", work, case, dtype_name)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("case", REGION_CASES, ids=str)
def test_region_guided_attention_fwd(benchmark, peaks: Peaks, case: tuple, dtype_name: str, impl: str) -> None:
    work = region_workload(case, DTYPES[dtype_name], impl, torch.device("cuda"))
    _run(benchmark, peaks, "region_guided_attention", work, case, dtype_name)


# -- markdown table without pytest -----------------------------------------------------------------------------
def markdown_table(*, smoke: bool) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"fp32": torch.float32} if smoke else DTYPES  # the interpreter has no fast fp16 path to time
    reps = 2 if smoke else 20
    pk = measure_peaks(device, small=smoke)
    env = environment()
    header = ("| op | shape | dtype | triton ms | reference ms | SDPA ms | vs reference | vs SDPA | triton TFLOP/s "
              "| triton TB/s | % of roofline |")
    title = (f"GPU: {env['gpu']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}. Measured peaks: "
             f"fp16 matmul {pk.matmul_tflops:.1f} TFLOP/s, D2D copy {pk.copy_tbps:.2f} TB/s.")
    lines = [title, "", header, "|" + " --- |" * 11]
    suites = [("prototype_attention", SMOKE_PROTOTYPE_CASES if smoke else PROTOTYPE_CASES, prototype_workload),
              ("region_guided_attention", SMOKE_REGION_CASES if smoke else REGION_CASES, region_workload)]
    for op, cases, build in suites:
        for case in cases:
            for dtype_name, dtype in dtypes.items():
                ms, triton_metrics = {}, {}
                for impl in IMPLS:
                    work = build(case, dtype, impl, device)
                    if impl == "triton":
                        work.check()
                    ms[impl] = statistics.median(measure_ms(work.fn, reps=reps, warmup=1 if smoke else 3))
                    if impl == "triton":
                        triton_metrics = metrics(work, ms[impl], pk)
                    del work
                lines.append(f"| {op} | {case} | {dtype_name} | {ms['triton']:.3f} | {ms['reference']:.3f} "
                             f"| {ms['sdpa']:.3f} | {ms['reference'] / ms['triton']:.2f}x | {ms['sdpa'] / ms['triton']:.2f}x "
                             f"| {triton_metrics['tflops']:.1f} | {triton_metrics['tbps']:.2f} "
                             f"| {triton_metrics['pct_of_roofline']:.0f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table of median times")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, fp32; runs on CPU under TRITON_INTERPRET=1")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("nothing to do: pass --markdown (or run with pytest --benchmark-only)")
    if not (torch.cuda.is_available() or args.smoke):
        print("bench_kernels: needs a CUDA GPU (or --smoke with TRITON_INTERPRET=1)", file=sys.stderr)
        return 1
    print(markdown_table(smoke=args.smoke))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
