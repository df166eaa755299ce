"""Real frames from the datasets a bundle was trained on (for export parity checks and demos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import ProtoInspectError
from protoinspect.training.datasets import load_dataset
from protoinspect.training.image_io import probe_mode, read_dataset_image


def training_data_frames(bundle: str | Path, per_dataset: int = 2) -> tuple[list[np.ndarray], list[str]]:
    """The first anomalous and normal test images of each dataset the bundle was trained on, where
    those folders still exist on this machine.

    Returns:
        (RGB/gray frames, their paths); empty when no recorded dataset is reachable (a moved or
        changed dataset is skipped: the caller's check still has its random frames).
    """
    frames: list[np.ndarray] = []
    paths: list[str] = []
    for info in load_bundle(bundle).manifest.datasets:
        root = info.get("root") if isinstance(info, dict) else None
        if not root or not Path(root).is_dir():
            continue
        try:
            ds = load_dataset(root, info.get("format", "auto"))
        except ProtoInspectError:
            continue
        picks = [s for s in ds.test if s.label == 1][: per_dataset - per_dataset // 2]
        picks += [s for s in ds.test if s.label == 0][: per_dataset // 2] or ds.train[: per_dataset // 2]
        found = [str(s.image_path) for s in picks]
        frames += [read_dataset_image(p, probe_mode(p)) for p in found]
        paths += found
    return frames, paths
