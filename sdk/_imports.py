"""Lazy imports of optional dependencies with an install hint when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from protoinspect.sdk.errors import MissingDependencyError

# module name -> the pip command that provides it
_INSTALL_HINTS: dict[str, str] = {
    "torch": "pip install torch==2.13.0  (or: pip install 'protoinspect[train]')",
    "torchvision": "pip install torch==2.14.1 torchvision==0.29.1",
    "cv2": "pip install opencv-python-headless",
    "onnxruntime": "pip install 'protoinspect[onnx]'",
    "tensorrt": "pip install 'protoinspect[tensorrt]' (TensorRT from NVIDIA)",
    "pycuda": "pip install 'protoinspect[tensorrt]'",
    "triton": "pip install 'protoinspect[triton]'",
    "segment_anything": "pip install 'protoinspect[sam]' (segment_anything also imports torchvision)",
    "transformers": "pip install 'protoinspect[grounding]'  (or: pip install transformers)",
    "safetensors": "pip install safetensors",
    "tqdm": "pip install tqdm",
    "cryptography": "pip install 'protoinspect[signing]'",
    "tritonclient": "pip install 'protoinspect[serving]'",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _INSTALL_HINTS.get(module.split(".")[0], f"pip install {module}")
        msg = f"optional dependency '{module}' is not installed: {hint}"
        raise MissingDependencyError(msg) from exc
