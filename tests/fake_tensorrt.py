"""In-memory stand-in for ``tensorrt`` (10.x or 11.x API surface) for CPU tests; ``pycuda.driver`` is in fake_pycuda.

They implement only the calls ProtoInspect makes, and they enforce the version split: the 11.x fake has
no ``BuilderFlag.FP16/INT8``, no ``IInt8EntropyCalibrator2``, no ``int8_calibrator`` and no
``platform_has_fast_*``, so code that takes the wrong branch fails. A "built engine" is the parsed ONNX
bytes plus the build settings; the fake runtime executes it with ONNX Runtime (CPU), so parity checks
and backend outputs are real numbers. Device memory is a dict of numpy byte buffers keyed by address.
"""

from __future__ import annotations

import enum
import json
import types
from typing import Any

import numpy as np
from fake_pycuda import MEMORY, STREAMS, make_cuda

__all__ = ["MEMORY", "STREAMS", "install", "make_cuda", "make_trt", "real_tensorrt_gpu"]

# ------------------------------------------------------------------------------------------- tensorrt
def make_trt(version: str = "10.3.0", *, fast_fp16: bool = True, fast_int8: bool = True, dla_cores: int = 0,
             noise: float = 0.0) -> types.ModuleType:
    """A fake ``tensorrt`` module of ``version``; ``trt.calls`` records builder calls, ``trt.contexts`` the
    execution contexts (their ``addresses``: tensor name -> device address); ``noise`` is added to every
    engine output (to make parity fail)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # type: ignore[attr-defined]
    trt.contexts = []  # type: ignore[attr-defined]  # every execution context created, in order
    trt.float32, trt.float16, trt.uint8 = np.float32, np.float16, np.uint8  # type: ignore[attr-defined]

    flags = ["GPU_FALLBACK", "TF32"] + (["FP16", "INT8"] if major == 10 else [])
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"])  # type: ignore[attr-defined]
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"])  # type: ignore[attr-defined]
    trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"])  # type: ignore[attr-defined]
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["INPUT", "OUTPUT"])  # type: ignore[attr-defined]
    trt.nptype = lambda t: t  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    trt.Logger = Logger  # type: ignore[attr-defined]

    if major == 10:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                trt.calls.append("calibrator_init")

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2  # type: ignore[attr-defined]

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx: bytes | None = None
            self.inputs: list = []
            self.outputs: list = []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

        def get_output(self, i: int) -> Any:
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        def parse(self, data: bytes) -> bool:
            import onnx

            model = onnx.load_from_string(bytes(data))
            if any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
                self.errors.append("No importer registered for op: custom")
                return False
            self.network.onnx = bytes(data)
            tensor = lambda vi: types.SimpleNamespace(name=vi.name, shape=[d.dim_value or -1 for d in vi.type.tensor_type.shape.dim],
                                                     dtype=vi.type.tensor_type.elem_type)
            self.network.inputs = [tensor(vi) for vi in model.graph.input]
            self.network.outputs = [tensor(vi) for vi in model.graph.output]
            return True

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list] = {}

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data) + b"+"

        def serialize(self) -> bytes:
            return self.data

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.profiles: list[Profile] = []
            self.calibration_profile: Profile | None = None
            self.calibrator: Any = None
            self.builder_optimization_level = 3
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.pool: dict = {}
            self.cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pool[pool] = size

        def set_flag(self, flag: Any) -> None:
            self.flags.append(flag.name)

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.cache  # type: ignore[return-value]

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        if major == 10:
            def set_calibration_profile(self, profile: Profile) -> None:
                self.calibration_profile = profile

            @property
            def int8_calibrator(self) -> Any:
                return self.calibrator

            @int8_calibrator.setter
            def int8_calibrator(self, calibrator: Any) -> None:
                self.calibrator = calibrator

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.num_DLA_cores = dla_cores
            if major == 10:
                self.platform_has_fast_fp16, self.platform_has_fast_int8 = fast_fp16, fast_int8

        def create_network(self, flags: int = 0) -> Network:
            trt.calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            served = []
            if config.calibrator is not None:
                cal = config.calibrator
                assert cal.get_batch_size() == config.calibration_profile.shapes["image"][0][0]
                while (ptrs := cal.get_batch(["image"])) is not None:
                    shape = config.calibration_profile.shapes["image"][0]
                    served.append(MEMORY[ptrs[0]][: int(np.prod(shape))].reshape(shape).copy())
                cal.write_calibration_cache(b"calibration-table")
            trt.calls.append(("build", {"flags": list(config.flags), "strongly_typed": network.flags,
                                        "profiles": [p.shapes for p in config.profiles],
                                        "device": config.default_device_type.name, "dla_core": config.DLA_core,
                                        "opt_level": config.builder_optimization_level, "pool": list(config.pool.values()),
                                        "calibration_batches": served}))
            header = json.dumps({"profile": config.profiles[0].shapes}).encode()
            return b"FAKE" + len(header).to_bytes(4, "little") + header + network.onnx

    trt.Builder, trt.OnnxParser = Builder, OnnxParser  # type: ignore[attr-defined]

    class Engine:
        def __init__(self, profile: dict, onnx_bytes: bytes) -> None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
            self.profile = profile
            np_types = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}
            self.io = [(i.name, True, np_types[i.type], [d if isinstance(d, int) else -1 for d in i.shape])
                       for i in self.session.get_inputs()]
            self.io += [(o.name, False, np_types[o.type], [d if isinstance(d, int) else -1 for d in o.shape])
                        for o in self.session.get_outputs()]

        num_io_tensors = property(lambda self: len(self.io))

        def _get(self, name: str) -> tuple:
            return next(t for t in self.io if t[0] == name)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if self._get(name)[1] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return self._get(name)[2]

        def get_tensor_shape(self, name: str) -> list[int]:
            return list(self._get(name)[3])

        def get_tensor_profile_shape(self, name: str, index: int) -> list:
            return self.profile[name]

        def create_execution_context(self) -> ExecutionContext:
            trt.contexts.append(ExecutionContext(self))
            return trt.contexts[-1]

    class ExecutionContext:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.shapes, self.addresses = engine, {}, {}
            self.executions = 0

        def set_input_shape(self, name: str, shape: Any) -> bool:
            lo, _, hi = self.engine.profile[name]
            ok = all(a <= d <= b for a, d, b in zip(lo, shape, hi))
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def _outputs(self) -> dict[str, np.ndarray]:
            feed = {}
            for name, is_input, dtype, _ in self.engine.io:
                if is_input:
                    shape = self.shapes[name]
                    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    feed[name] = MEMORY[self.addresses[name]][:n].view(dtype).reshape(shape)
            names = [o.name for o in self.engine.session.get_outputs()]
            return dict(zip(names, self.engine.session.run(names, feed)))

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            t = self.engine._get(name)
            if t[1]:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0]
            return (batch, *t[3][1:])

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            def op() -> None:
                self.executions += 1
                for name, out in self._outputs().items():
                    out = (out + noise).astype(out.dtype) if noise else out
                    raw = np.ascontiguousarray(out).view(np.uint8).reshape(-1)
                    MEMORY[self.addresses[name]][: raw.size] = raw

            stream = STREAMS.get(stream_handle)
            if stream is not None and stream.capture is not None:
                stream.capture.append(op)
            else:
                op()
            return True

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            data = bytes(data)
            if not data.startswith(b"FAKE"):
                return None
            size = int.from_bytes(data[4:8], "little")
            header = json.loads(data[8:8 + size])
            return Engine(header["profile"], data[8 + size:])

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt




def install(monkeypatch: Any, trt: types.ModuleType, cuda: types.ModuleType) -> None:
    """Put the fakes in ``sys.modules`` (as ``tensorrt``, ``pycuda`` and ``pycuda.driver``) for one test."""
    import sys

    original_stream = cuda.Stream

    class TrackedStream(original_stream):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            STREAMS[self.handle] = self

    cuda.Stream = TrackedStream  # type: ignore[attr-defined]
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)


def real_tensorrt_gpu() -> bool:
    """True when the real tensorrt and pycuda import and a CUDA device exists (the GPU tests' condition)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        return False
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False
