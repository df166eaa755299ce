"""PyTorch backend: runs the bundle's ``PrototypeDetectorNet`` weights eagerly on CPU or CUDA.

It runs :class:`~protoinspect.sdk.models.detector_graph.DetectorGraph`, the very module exported to
``detector.onnx``: same uint8 input, same normalisation constants, same outputs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.backends.cuda_graph import CudaGraphRunner
from protoinspect.sdk.backends.base import (
    DETECTOR_FEATURES,
    DETECTOR_INPUT,
    DETECTOR_OUTPUTS,
    BackendBase,
    GraphOutputs,
    as_bundle,
    parse_device,
)
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BackendError, ConfigError, MissingDependencyError

logger = logging.getLogger(__name__)

CUDA_INSTALL_HINT = (
    "install a CUDA build of torch (e.g. pip install torch --index-url https://download.pytorch.org/whl/cu126) "
    "on a machine with an NVIDIA GPU and driver, or use device='cpu'"
)


class TorchBackend(BackendBase):
    """Executes the detector with PyTorch (no export needed; the reference for the other backends).

    Example::

        with TorchBackend("bundles/tile", device="cpu", threads=4) as backend:
            out = backend.run({"image": batch})  # N x H x W x 3 uint8 RGB
    """

    name = "torch"

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        *,
        device: str = "cpu",
        threads: int | None = None,
        cuda_graph: bool = False,
        half: bool = False,
        attention_impl: str | None = None,
    ) -> None:
        """Load the bundle's weights onto ``device``.

        Args:
            bundle: a loaded :class:`~protoinspect.sdk.bundle.Bundle` or a bundle directory (then loaded and verified).
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            threads: if given, ``torch.set_num_threads(threads)``; note this setting is process-wide.
            cuda_graph: CUDA only: normalise on the GPU and replay a captured CUDA graph per batch
                shape (lowest per-frame overhead; the first frame of each shape captures).
            half: CUDA only: run the network in float16 autocast (outputs stay float32).
            attention_impl: override the bundle's decoder attention (``"triton"``: the fused kernel,
                CUDA only; ``"reference"``).

        Raises:
            MissingDependencyError: torch or safetensors is not installed, or CUDA was requested but
                torch has no usable CUDA (CPU-only build, no GPU or driver).
            ConfigError: an unknown device, a GPU index that does not exist, or a bad thread count.
            BundleError: the bundle is invalid or its weights do not fit its architecture.
        """
        torch = require("torch")
        require("safetensors")
        from protoinspect.sdk.models.detector_graph import DetectorGraph
        from protoinspect.sdk.models.loading import load_detector_net

        bundle = as_bundle(bundle)
        kind, index = parse_device(device, ("cpu", "cuda"))
        if isinstance(threads, bool) or not (threads is None or (isinstance(threads, int) and threads >= 1)):
            msg = f"threads must be a positive integer or None, got {threads!r}"
            raise ConfigError(msg)
        if kind == "cuda":
            if not torch.cuda.is_available():
                build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
                msg = f"device {device!r} requested but torch {torch.__version__} ({build}) sees no CUDA GPU: {CUDA_INSTALL_HINT}"
                raise MissingDependencyError(msg)
            count = torch.cuda.device_count()
            if index is not None and index >= count:
                msg = f"device {device!r} does not exist: torch sees {count} CUDA GPU(s) (cuda:0 .. cuda:{count - 1})"
                raise ConfigError(msg)
        if (cuda_graph or half) and kind != "cuda":
            raise ConfigError(f"cuda_graph / half need a CUDA device, got device={device!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        self._torch_device = torch.device(kind if index is None else f"{kind}:{index}")
        self._spec = bundle.manifest.preprocess_spec
        self._weights_name = str(bundle.manifest.model.get("weights", "detector.safetensors"))
        overrides = None if attention_impl is None else {"attention_impl": attention_impl}
        self._graph = DetectorGraph(load_detector_net(bundle, overrides), self._spec).to(self._torch_device).eval()
        self._half = bool(half)
        self._graphs = CudaGraphRunner(self._gpu_forward) if cuda_graph else None
        self._init_base(bundle, device, (DETECTOR_INPUT,), (*DETECTOR_OUTPUTS, DETECTOR_FEATURES))
        logger.debug("torch detector for %s on %s", bundle.path, device)

    def _gpu_forward(self, image_u8: Any) -> tuple[Any, Any, Any]:
        """N x H x W x 3 uint8 on the device -> (map, score, features); normalisation on the GPU."""
        torch = self._torch
        with torch.autocast("cuda", dtype=torch.float16, enabled=self._half):
            amap, score, feats = self._graph(image_u8)
        return amap.float(), score.float(), feats.float()

    def _forward(self, inputs: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
        """(map, score, features) tensors on the device (CUDA-graph outputs are reused by the next run)."""
        torch = self._torch
        try:
            with torch.inference_mode():
                image = torch.from_numpy(np.ascontiguousarray(inputs[DETECTOR_INPUT])).to(self._torch_device)
                if self._graphs is not None:
                    return self._graphs(image)
                if self._torch_device.type == "cuda":
                    return self._gpu_forward(image)
                return self._graph(image)
        except RuntimeError as exc:  # CUDA OOM, device errors
            msg = f"torch failed to run the detector on {self.device}: {exc}"
            raise BackendError(msg) from exc

    def _to_host(self, tensor: Any) -> np.ndarray:
        try:
            return tensor.to("cpu", self._torch.float32).numpy()
        except RuntimeError as exc:
            msg = f"torch failed to copy a detector output from {self.device}: {exc}"
            raise BackendError(msg) from exc

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._run_lazy(inputs)
        return {name: outputs[name] for name in self.output_names}

    def _run_lazy(self, inputs: dict[str, np.ndarray]) -> GraphOutputs:
        """One forward pass; each output tensor is copied to the host (N x 1 x H x W map, N scores,
        N x C x H/8 x W/8 features) only when read."""
        tensors = dict(zip(self.output_names, self._forward(inputs)))
        return GraphOutputs(self.output_names, lambda name: self._to_host(tensors[name]))

    def _release(self) -> None:
        self._graph = None
        if self._torch_device.type == "cuda":
            self._torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        """What runs where, JSON-safe.

        Returns:
            ``backend``, ``device``, ``provider`` (``"torch-cpu"`` / ``"torch-cuda"``), ``torch``
            (version), ``cuda`` (torch's CUDA version or None), ``gpu_name`` (or None), ``threads``,
            ``model_file`` (the weights), ``model_sha256``, ``bundle_id``, ``bundle_path``,
            ``input_names``, ``output_names``, ``image_size`` and ``closed``.
        """
        torch = self._torch
        on_cuda = self._torch_device.type == "cuda"
        return {
            "backend": self.name,
            "device": self.device,
            "provider": f"torch-{self._torch_device.type}",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "gpu_name": torch.cuda.get_device_name(self._torch_device) if on_cuda else None,
            "threads": torch.get_num_threads(),
            "model_file": self._weights_name,
            "model_sha256": str(self.bundle.manifest.files[self._weights_name]["sha256"]),
            "bundle_id": self.bundle.manifest.bundle_id,
            "bundle_path": str(self.bundle.path),
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "image_size": list(self.image_size),
            "closed": self.closed,
            "cuda_graph": self._graphs is not None,
            "half": self._half,
            "attention_impl": self._graph.net.config.attention_impl if self._graph is not None else None,
        }
