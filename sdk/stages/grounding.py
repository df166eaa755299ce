"""Text prompt -> box for a fixture, with Grounding DINO (transformers), run once at set-up.

Use it to turn a words prompt ("a metal bracket") into the box prompt of
:class:`protoinspect.sdk.stages.sam_masker.SamMasker` once, when a fixture is set up, not per frame (Grounding DINO
takes seconds per image on CPU). The model and processor are read from a LOCAL directory
(``local_files_only=True``): nothing is downloaded.

Scoring: for each of the model's queries the score is the largest sigmoid of its logits over the
prompt's tokens (as in transformers' ``post_process_grounded_object_detection``); its predicted box
(normalised cx, cy, w, h) is scaled to frame pixels and clipped to the frame. The highest-scoring
query is returned if its score is at least ``box_threshold``.

Needs ``transformers`` and torch (``pip install 'protoinspect[grounding]'``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.preprocess import to_rgb


def _rgb(frame: np.ndarray, color_order: Literal["rgb", "bgr"]) -> np.ndarray:
    img = np.asarray(frame)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or img.size == 0:
        raise ConfigError(f"frame must be a non-empty HxW or HxWx3 uint8 array, got {img.dtype} {img.shape}")
    return to_rgb(img, color_order)


def load_grounding_model(model_dir: str, device: str = "cpu") -> tuple[Any, Any]:
    """Load a Grounding DINO processor and model from a local directory.

    Args:
        model_dir: folder written by ``save_pretrained`` (processor and model files).
        device: torch device.

    Returns:
        (processor, model) with the model in eval mode on ``device``.

    Raises:
        ConfigError: ``model_dir`` is not a directory.
        MissingDependencyError: transformers or torch is not installed.
    """
    if not os.path.isdir(model_dir):
        raise ConfigError(f"Grounding DINO model directory not found: {model_dir!r} (models are never downloaded)")
    transformers = require("transformers")
    require("torch")
    processor = transformers.AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(model_dir, local_files_only=True)
    return processor, model.to(device).eval()


def prompt_to_box(frame: np.ndarray, prompt: str, *, model_dir: str | None = None, box_threshold: float = 0.3,
                  device: str = "cpu", color_order: Literal["rgb", "bgr"] = "bgr",
                  model: tuple[Any, Any] | None = None) -> tuple[int, int, int, int]:
    """The box of the object named by ``prompt`` in ``frame``, in frame pixels.

    Args:
        frame: HxW gray or HxWx3 uint8 frame in ``color_order``.
        prompt: what to find, e.g. ``"a metal bracket"`` (lower-cased and ended with ``"."``, the
            Grounding DINO convention).
        model_dir: local folder with the Grounding DINO processor and model; loaded on each call.
        box_threshold: smallest accepted score in [0, 1].
        device: torch device.
        color_order: channel order of 3-channel frames.
        model: an already loaded ``(processor, model)`` pair (see :func:`load_grounding_model`),
            used instead of ``model_dir``.

    Returns:
        (x1, y1, x2, y2) integer pixels, x2/y2 exclusive, clipped to the frame, x1 < x2, y1 < y2.

    Raises:
        ConfigError: an empty prompt, a threshold outside [0, 1], a bad frame or colour order, a
            missing model directory, or no box scoring at least ``box_threshold`` (names the prompt).
        MissingDependencyError: transformers or torch is not installed.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt must be a non-empty string, got {prompt!r}")
    if not 0.0 <= float(box_threshold) <= 1.0:
        raise ConfigError(f"box_threshold must be in [0, 1], got {box_threshold!r}")
    if color_order not in ("rgb", "bgr"):
        raise ConfigError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    image = _rgb(frame, color_order)
    if model is None:
        if model_dir is None:
            raise ConfigError("prompt_to_box needs model_dir= a local Grounding DINO folder (or model=)")
        model = load_grounding_model(model_dir, device)
    processor, net = model
    torch = require("torch")
    text = prompt.strip().lower()
    text = text if text.endswith(".") else text + "."
    inputs = processor(images=image, text=text, return_tensors="pt").to(device)
    with torch.no_grad():
        outputs = net(**inputs)
    scores = outputs.logits[0].sigmoid().max(dim=-1).values  # (queries,)
    best = int(scores.argmax())
    score = float(scores[best])
    if score < float(box_threshold):
        raise ConfigError(f"no box for prompt {prompt!r}: best score {score:.3f} < box_threshold {box_threshold}")
    h, w = image.shape[:2]
    cx, cy, bw, bh = (float(v) for v in outputs.pred_boxes[0, best])
    x1 = int(np.clip(np.floor((cx - bw / 2) * w), 0, w - 1))
    y1 = int(np.clip(np.floor((cy - bh / 2) * h), 0, h - 1))
    x2 = int(np.clip(np.ceil((cx + bw / 2) * w), x1 + 1, w))
    y2 = int(np.clip(np.ceil((cy + bh / 2) * h), y1 + 1, h))
    return x1, y1, x2, y2
