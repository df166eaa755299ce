"""Generic synthetic anomalies pasted onto defect-free images to train the encoder (DRAEM/CutPaste style).

Deliberately product-agnostic: smooth random blobs filled with foreign texture, intensity changes,
displaced patches of the same image, and thin curves. It never uses the synthetic generator's defect
painters, so evaluating on that generator does not test on the training distribution.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("texture", "intensity", "cutpaste", "curve", "smooth")


def smooth_noise(rng: np.random.Generator, size: tuple[int, int], scale: int) -> np.ndarray:
    """Value noise in [0, 1]: a random ``scale`` x ``scale`` grid upsampled bicubically to ``size``."""
    h, w = size
    grid = rng.random((scale, scale)).astype(np.float32)
    noise = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(noise.min()), float(noise.max())
    return (noise - lo) / max(hi - lo, 1e-6)


def blob_mask(
    rng: np.random.Generator, size: tuple[int, int], max_area: float = 0.08, max_window: float = 0.5
) -> np.ndarray:
    """A bool mask of smooth blobs inside a random window (sides <= ``max_window``), area <= ``max_area``."""
    h, w = size
    for _ in range(20):
        scale = int(rng.choice([2, 4, 6, 8, 12, 16]))
        noise = smooth_noise(rng, size, scale)
        thr = rng.uniform(0.7, 0.95)
        mask = noise > thr
        # keep a random local window so defects are localised, not scattered over the image
        ch, cw = int(h * rng.uniform(0.1, max_window)), int(w * rng.uniform(0.1, max_window))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        window = np.zeros(size, bool)
        window[y0 : y0 + ch, x0 : x0 + cw] = True
        mask &= window
        area = mask.mean()
        if 0.0005 < area <= max_area:
            return mask
    # fall back to a small ellipse (always valid)
    mask = np.zeros(size, np.uint8)
    cy, cx = int(rng.integers(h // 8, h - h // 8)), int(rng.integers(w // 8, w - w // 8))
    axes = (int(rng.integers(2, max(3, w // 10))), int(rng.integers(2, max(3, h // 10))))
    cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def curve_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A thin random polyline (scratch- or crack-like) as a bool mask."""
    h, w = size
    mask = np.zeros(size, np.uint8)
    n = int(rng.integers(3, 9))
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    step = rng.uniform(0.02, 0.08) * max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    pts = [start]
    for _ in range(n):
        angle += rng.normal(0, 0.6)
        pts.append(pts[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
    poly = np.clip(np.array(pts), 0, [w - 1, h - 1]).astype(np.int32)
    cv2.polylines(mask, [poly], False, 1, thickness=int(rng.integers(1, 4)))
    return mask.astype(bool)


def _feather(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    alpha = mask.astype(np.float32)
    k = int(rng.choice([1, 3, 5]))
    return cv2.GaussianBlur(alpha, (k, k), 0) if k > 1 else alpha


def _foreign_texture(image: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        tex = source.astype(np.float32)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), float(rng.uniform(0.5, 2.0)))
        tex = cv2.warpAffine(tex, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        tex = tex * rng.uniform(0.5, 1.5) + rng.uniform(-60, 60, size=3)
    else:
        base = smooth_noise(rng, (h, w), int(rng.choice([8, 16, 32, 64])))[..., None]
        color = rng.uniform(0, 255, size=3)
        tex = base * color + (1 - base) * rng.uniform(0, 255, size=3)
    return np.clip(tex, 0, 255)


def synthesize_anomaly(
    image: np.ndarray, source: np.ndarray, rng: np.random.Generator, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Paste one generic synthetic anomaly onto ``image``; retries until the change is visible.

    Args:
        image: HxWx3 uint8 RGB defect-free image at model size (gray content stays gray).
        source: another HxWx3 uint8 image used as foreign texture.
        rng: random generator.
        kind: one of :data:`KINDS`, or None for a random choice per attempt.

    Returns:
        (HxWx3 uint8 image with the anomaly, HxW float32 mask in {0, 1} of the anomalous region).
    """
    for _ in range(4):
        out, mask = _paste_once(image, source, rng, kind)
        if mask.any() and np.abs(out.astype(np.int16) - image).max(axis=2)[mask > 0].mean() >= 8:
            return out, mask
    return out, mask


def _paste_once(
    image: np.ndarray, source: np.ndarray, rng: np.random.Generator, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    kind = kind if kind is not None else str(rng.choice(KINDS))
    img = image.astype(np.float32)
    if kind == "curve":
        mask = curve_mask(rng, (h, w))
        alpha = _feather(mask, rng) * rng.uniform(0.4, 1.0)
        target = np.full_like(img, rng.uniform(0, 255)) if rng.random() < 0.7 else _foreign_texture(image, source, rng)
    elif kind == "cutpaste":
        mask = blob_mask(rng, (h, w))
        dy, dx = int(rng.integers(-h // 3, h // 3 + 1)), int(rng.integers(-w // 3, w // 3 + 1))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-45, 45)), 1.0)
        m[:, 2] += (dx, dy)
        target = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        alpha = _feather(mask, rng)
    elif kind == "intensity":
        mask = blob_mask(rng, (h, w))
        gain = rng.uniform(0.3, 0.8) if rng.random() < 0.5 else rng.uniform(1.3, 2.0)
        target = img * gain + rng.uniform(-30, 30, size=3)
        alpha = _feather(mask, rng)
    elif kind == "smooth":
        # large, low-contrast shading or coating change (discolouration, uneven surface)
        mask = blob_mask(rng, (h, w), max_area=0.3, max_window=0.8)
        gain = rng.uniform(0.6, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.5)
        target = img * gain
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0)
    elif kind == "texture":
        mask = blob_mask(rng, (h, w))
        target = _foreign_texture(image, source, rng)
        alpha = _feather(mask, rng) * rng.uniform(0.3, 1.0)
    else:
        msg = f"unknown anomaly kind {kind!r}; choose one of {KINDS}"
        raise ValueError(msg)
    target = np.clip(target, 0, 255)
    if _is_gray(image):
        target = np.repeat(target.mean(axis=2, keepdims=True), 3, axis=2)
    out = img * (1 - alpha[..., None]) + target * alpha[..., None]
    out8 = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    # the painted region itself counts even where a faint alpha (< 0.1) paints it: else isolated faint
    # spots of a "texture" anomaly would be changed but labelled normal
    return out8, ((alpha > 0.1) | mask).astype(np.float32)


def _is_gray(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))
