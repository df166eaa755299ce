"""Segment Anything (SAM) object masker for fixed fixtures, prompted with a box and/or points.

Fixture policy (``cache_for_fixture=True``, the default): on a fixture the object does not move, so
the SAM mask is computed on the first frame of each frame size (H, W) and then reused for every later
frame of that size; :meth:`SamMasker.reset` forgets the cached masks (call it after moving the
fixture or the camera). With ``cache_for_fixture=False`` SAM runs on every frame (slow on CPU:
seconds per frame for ``vit_b``).

Colour order: frames are taken in ``color_order`` (``"bgr"`` by default, OpenCV's camera order) and
converted to the RGB uint8 HxWx3 image that ``SamPredictor`` expects; gray HxW frames are repeated
into three channels.

Needs ``segment_anything`` (``pip install 'protoinspect[sam]'``), which imports torch and torchvision.
Weights come from a local checkpoint file only: nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.preprocess import to_rgb


def _check_box(box: Sequence[float]) -> np.ndarray:
    try:
        arr = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"box_xyxy must be 4 numbers (x1, y1, x2, y2), got {box!r}") from exc
    if arr.shape != (4,) or not np.isfinite(arr).all():
        raise ConfigError(f"box_xyxy must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = arr
    if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
        raise ConfigError(f"box_xyxy must satisfy 0 <= x1 < x2 and 0 <= y1 < y2, got {box!r}")
    return arr


def _check_points(points: Sequence[Sequence[float]], labels: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"points must be a sequence of (x, y) pairs, got {points!r}") from exc
    if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise ConfigError(f"points must be a non-empty sequence of finite (x, y) pairs, got {points!r}")
    if labels is None:
        lab = np.ones(len(pts), dtype=np.int64)
    else:
        lab = np.asarray(labels)
        if lab.shape != (len(pts),) or not np.isin(lab, (0, 1)).all():
            raise ConfigError(f"point_labels must be one 0 (background) or 1 (foreground) per point, got {labels!r}")
        lab = lab.astype(np.int64)
    return pts, lab


class SamMasker:
    """Object mask from Segment Anything, prompted with a box and/or points in frame pixels.

    See the module docstring for the fixture cache policy and the colour-order assumption.
    """

    def __init__(self, checkpoint: str | None, *, model_type: str = "vit_b",
                 box_xyxy: Sequence[float] | None = None, points: Sequence[Sequence[float]] | None = None,
                 point_labels: Sequence[int] | None = None, cache_for_fixture: bool = True,
                 color_order: Literal["rgb", "bgr"] = "bgr", device: str = "cpu", sam_model: Any = None) -> None:
        """Build (or take) the SAM model and check the prompts.

        Args:
            checkpoint: path of a local SAM checkpoint file, loaded with
                ``segment_anything.sam_model_registry[model_type](checkpoint=...)``. Ignored when
                ``sam_model`` is given.
            model_type: registry key (``"vit_b"``, ``"vit_l"``, ``"vit_h"``).
            box_xyxy: box prompt (x1, y1, x2, y2) in frame pixels.
            points: point prompts ((x, y), ...) in frame pixels.
            point_labels: one label per point, 1 foreground / 0 background; None: all foreground.
            cache_for_fixture: compute the mask once per frame size and reuse it (fixed fixture).
            color_order: channel order of 3-channel frames handed to :meth:`mask`.
            device: torch device of the model (``"cpu"``, ``"cuda:0"``, ...).
            sam_model: a ready ``segment_anything.modeling.Sam`` (custom builds, tests).

        Raises:
            ConfigError: no prompt, a bad prompt or colour order, no checkpoint, a checkpoint path
                that is not a file, or an unknown model type.
            MissingDependencyError: segment_anything (or torch) is not installed.
        """
        if color_order not in ("rgb", "bgr"):
            raise ConfigError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
        if box_xyxy is None and points is None:
            raise ConfigError("SamMasker needs a prompt: box_xyxy=(x1, y1, x2, y2) and/or points=((x, y), ...)")
        if points is None and point_labels is not None:
            raise ConfigError("point_labels were given without points")
        self.box_xyxy = _check_box(box_xyxy) if box_xyxy is not None else None
        self.points, self.point_labels = (_check_points(points, point_labels) if points is not None else (None, None))
        self.cache_for_fixture = bool(cache_for_fixture)
        self.color_order = color_order
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        sa = require("segment_anything")
        if sam_model is None:
            sam_model = self._build(sa, checkpoint, model_type)
        sam_model.to(device)
        sam_model.eval()
        self.predictor = sa.SamPredictor(sam_model)

    @staticmethod
    def _build(sa: Any, checkpoint: str | None, model_type: str) -> Any:
        if checkpoint is None:
            raise ConfigError("SamMasker needs checkpoint= the path of a local SAM checkpoint file (or sam_model=)")
        if not os.path.isfile(checkpoint):
            raise ConfigError(f"SAM checkpoint file not found: {checkpoint!r} (weights are never downloaded)")
        registry = sa.sam_model_registry
        if model_type not in registry:
            raise ConfigError(f"unknown SAM model_type {model_type!r}; known: {', '.join(sorted(registry))}")
        return registry[model_type](checkpoint=checkpoint)

    def reset(self) -> None:
        """Forget the cached fixture masks (the next frame of each size runs SAM again)."""
        self._cache.clear()

    def _predict(self, frame: np.ndarray) -> np.ndarray:
        self.predictor.set_image(to_rgb(frame, self.color_order), image_format="RGB")
        masks, _, _ = self.predictor.predict(point_coords=self.points, point_labels=self.point_labels,
                                             box=self.box_xyxy, multimask_output=False)
        return np.asarray(masks[0], dtype=bool)

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """Segment the prompted object.

        Args:
            frame: validated HxW gray or HxWx3 uint8 frame in ``color_order`` (any strides).

        Returns:
            HxW bool object mask at frame resolution (a copy; with the fixture cache, the mask
            computed on the first frame of this size).
        """
        size = (int(frame.shape[0]), int(frame.shape[1]))
        if self.cache_for_fixture and size in self._cache:
            return self._cache[size].copy()
        out = self._predict(frame)
        if self.cache_for_fixture:
            self._cache[size] = out
            return out.copy()
        return out
