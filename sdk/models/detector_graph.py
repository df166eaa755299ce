"""The detector graph: its I/O names and the one torch module that both the torch backend runs and the
ONNX exporter traces.

:class:`DetectorGraph` wraps a ``PrototypeDetectorNet`` with the bundle's normalisation, so the
graph takes ``image`` (``N x H x W x 3`` uint8 RGB at model size) and gives ``anomaly_map``
(``N x 1 x H x W`` float32), ``score`` (``N`` float32) and ``features`` (``N x C x H/8 x W/8``
float32, the fused encoder map the defect classifier reads). Used by the torch backend
(:mod:`protoinspect.sdk.backends.torch_backend`), the exporter (:mod:`protoinspect.export.onnx_export`)
and the torch/onnxruntime parity check (:mod:`protoinspect.export.onnx_parity`), so what runs in torch
is what is exported.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from protoinspect.sdk.backends.base import DETECTOR_FEATURES, DETECTOR_INPUT, DETECTOR_OUTPUTS
from protoinspect.sdk.preprocess import PreprocessSpec

# the runtime's I/O contract is the single source of truth for the graph's names
INPUT_NAME = DETECTOR_INPUT
OUTPUT_NAMES = (*DETECTOR_OUTPUTS, DETECTOR_FEATURES)


class DetectorGraph(nn.Module):
    """A :class:`~protoinspect.sdk.models.prototype_detector.PrototypeDetectorNet` with the bundle's normalisation baked in.

    Input ``image``: N x H x W x 3 uint8 RGB at model size (``protoinspect.sdk.preprocess.resize_to_rgb`` output).
    Outputs: ``anomaly_map`` N x 1 x H x W float32, ``score`` N float32 and ``features``, as the net
    gives them (:meth:`PrototypeDetectorNet.forward_with_features`).
    """

    def __init__(self, net: nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.net = net
        self.image_size = tuple(spec.image_size)
        # The very float32 constants protoinspect.sdk.preprocess.normalize uses (x * scale + offset), as 1x3x1x1.
        scale = np.asarray(spec._scale, dtype=np.float32).reshape(1, 3, 1, 1)
        offset = np.asarray(spec._offset, dtype=np.float32).reshape(1, 3, 1, 1)
        self.register_buffer("scale", torch.from_numpy(scale.copy()))
        self.register_buffer("offset", torch.from_numpy(offset.copy()))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """N x H x W x 3 uint8 -> N x 3 x H x W float32, ``x * scale + offset`` per channel.

        Cast first, then transpose: TensorRT takes UINT8 only as a network input/output type, so
        the first op on the input must be the Cast.
        """
        x = image.to(torch.float32).permute(0, 3, 1, 2)
        # contiguous: the convolutions then see the memory order training batches have (bit-equal results)
        return (x * self.scale + self.offset).contiguous()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 NHWC RGB batch -> (anomaly map N x 1 x H x W, score N, features N x C x H/8 x W/8)."""
        return self.net.forward_with_features(self.normalize(image))
