"""In-memory training images and the batches drawn from them (resized once with protoinspect.sdk.preprocess)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from protoinspect.sdk.preprocess import PreprocessSpec, normalize, resize_to_rgb
from protoinspect.training.pseudo_anomalies import synthesize_anomaly
from protoinspect.training.datasets import Sample, read_dataset_image


def load_resized(samples: Sequence[Sample], channels: str, spec: PreprocessSpec, progress: bool = False) -> np.ndarray:
    """Read and resize images -> N x H x W x 3 uint8 RGB at model size (the runtime's own resize)."""
    h, w = spec.image_size
    out = np.empty((len(samples), h, w, 3), np.uint8)
    it = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="loading images", unit="img", leave=False)
    for i, s in enumerate(it):
        out[i] = resize_to_rgb(read_dataset_image(s.image_path, channels), spec, color_order="rgb")
    return out


def images_to_tensor(images: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """N x H x W x 3 uint8 RGB at model size -> N x 3 x H x W float32 normalised (protoinspect.sdk.preprocess.normalize)."""
    return torch.from_numpy(np.stack([normalize(im, spec) for im in images]))


class BatchSampler:
    """Draws training batches uniformly over product types (one image pool per dataset).

    Args:
        pools: per dataset, N_i x H x W x 3 uint8 RGB normal images.
        spec: pre-processing of the bundle.
        seed: random seed.
        object_masks: per dataset, N_i x H x W bool masks where anomalies may go, or None (anywhere).
    """

    def __init__(self, pools: Sequence[np.ndarray], spec: PreprocessSpec, seed: int,
                 object_masks: Sequence[np.ndarray | None] | None = None) -> None:
        if not pools or any(len(p) == 0 for p in pools):
            msg = "every dataset needs at least one training image"
            raise ValueError(msg)
        self.pools = list(pools)
        self.masks = list(object_masks) if object_masks is not None else [None] * len(self.pools)
        self.spec = spec
        self.rng = np.random.default_rng(seed)

    def training_batch(self, batch: int, crop: int, anomaly_fraction: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random crops; a share gets a synthetic anomaly.

        Returns:
            (clean B x 3 x crop x crop, with anomalies B x 3 x crop x crop, B x 1 x crop x crop mask),
            normalised with the bundle's pre-processing.
        """
        clean, augmented, masks = [], [], []
        for _ in range(batch):
            p = int(self.rng.integers(len(self.pools)))
            pool = self.pools[p]
            i = int(self.rng.integers(len(pool)))
            img = pool[i]
            obj = self.masks[p][i] if self.masks[p] is not None else None
            if self.rng.random() < 0.5:
                img = img[:, ::-1]
                obj = obj[:, ::-1] if obj is not None else None
            y = int(self.rng.integers(0, img.shape[0] - crop + 1))
            x = int(self.rng.integers(0, img.shape[1] - crop + 1))
            img = np.ascontiguousarray(img[y : y + crop, x : x + crop])
            obj = np.ascontiguousarray(obj[y : y + crop, x : x + crop]) if obj is not None else None
            if self.rng.random() < anomaly_fraction:
                j = int(self.rng.integers(len(pool)))
                sy = int(self.rng.integers(0, pool.shape[1] - crop + 1))
                sx = int(self.rng.integers(0, pool.shape[2] - crop + 1))
                source = np.ascontiguousarray(pool[j, sy : sy + crop, sx : sx + crop])
                aug, mask = synthesize_anomaly(img, source, self.rng, object_mask=obj)
            else:
                aug, mask = img, np.zeros(img.shape[:2], np.float32)
            clean.append(img)
            augmented.append(aug)
            masks.append(mask)
        return (images_to_tensor(np.stack(clean), self.spec), images_to_tensor(np.stack(augmented), self.spec),
                torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)))

    def state(self) -> dict:
        """Random state for checkpoints."""
        return self.rng.bit_generator.state

    def restore(self, state: dict) -> None:
        """Restore :meth:`state`."""
        self.rng.bit_generator.state = state


