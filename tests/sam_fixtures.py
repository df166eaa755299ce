"""A tiny randomly initialised SAM and a ``sa`` fixture that makes ``segment_anything`` importable for one
test (with a torchvision stand-in when torchvision is absent); shared by the SAM masker tests."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    import cv2

    def to_pil_image(image: np.ndarray) -> np.ndarray:
        return np.asarray(image)

    def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return cv2.resize(np.asarray(image), (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)

    def _unused(*_: Any, **__: Any) -> Any:
        raise AssertionError("torchvision.ops stand-in called")

    tv, tr, fn, ops, boxes = (types.ModuleType(n) for n in (
        "torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
        "torchvision.ops.boxes"))
    fn.resize, fn.to_pil_image = resize, to_pil_image  # type: ignore[attr-defined]
    boxes.batched_nms, boxes.box_area = _unused, _unused  # type: ignore[attr-defined]
    tv.transforms, tr.functional, tv.ops, ops.boxes = tr, fn, ops, boxes  # type: ignore[attr-defined]
    return {m.__name__: m for m in (tv, tr, fn, ops, boxes)}


@pytest.fixture()
def sa() -> Iterator[types.ModuleType]:
    """segment_anything, importable for the duration of one test (see the module docstring)."""
    before = set(sys.modules)
    stand_in = {} if importlib.util.find_spec("torchvision") is not None else _torchvision_stand_in()
    sys.modules.update(stand_in)
    try:
        yield importlib.import_module("segment_anything")
    finally:
        if stand_in:  # drop the stand-in and everything imported on top of it
            for name in set(sys.modules) - before:
                if name.split(".")[0] in ("torchvision", "segment_anything"):
                    del sys.modules[name]


def tiny_sam(sa: types.ModuleType) -> Any:
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    img_size, patch, dim = 64, 16, 32
    grid = img_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2,
                                      out_chans=dim, use_rel_pos=True, window_size=0, global_attn_indexes=(0,)),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=dim,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 iou_head_depth=1, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()
