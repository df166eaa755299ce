"""Weight-free synthetic anomalies pasted onto defect-free images (DRAEM / NSA / CutPaste / TransFusion style).

Every anomaly is ``out = (1 - M) * I + M * ((1 - beta) * A + beta * I)``: a region ``M`` (Perlin-noise
blobs, a thin scar or a crack), an anomaly appearance ``A`` and an opacity ``beta`` of the original
image drawn from ``[0, 0.8)``. Sources of ``A`` need no data and no weights:

- ``perlin_texture``: Perlin noise used as its own texture, with random colour / contrast / posterise /
  invert operations;
- ``flat_colour``: one random colour;
- ``self_shuffle``: the image itself cut into a grid whose blocks are shuffled (TransFusion);
- ``poisson_patch``: a patch of *another normal image*, resized, Poisson-blended (cv2.seamlessClone, NSA);
- ``scar``: a thin rotated strip of colour or of displaced image content (CutPaste scar);
- ``crack``: a thin dark or bright random polyline;
- ``intensity``: the region brightened or darkened (discolouration, uneven surface).

It never uses the synthetic generator's defect painters, so the synthetic line is not the training
distribution. When an object mask is given, the anomaly region is kept on the object.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("perlin_texture", "flat_colour", "self_shuffle", "poisson_patch", "scar", "crack", "intensity")
MAX_BETA = 0.8  # the original image keeps at most this opacity inside the anomaly


def perlin_noise(rng: np.random.Generator, size: tuple[int, int], res: tuple[int, int]) -> np.ndarray:
    """2-D gradient (Perlin) noise of ``size`` with ``res`` lattice cells per axis, roughly in [-1, 1]."""
    h, w = size
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    ys = np.linspace(0, ry, h, endpoint=False)
    xs = np.linspace(0, rx, w, endpoint=False)
    y0 = ys.astype(int)[:, None]
    x0 = xs.astype(int)[None, :]
    fy = (ys - ys.astype(int))[:, None]
    fx = (xs - xs.astype(int))[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grad[y0 + dy, x0 + dx]
        return g[..., 0] * (fx - dx) + g[..., 1] * (fy - dy)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(fx), fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return ((top * (1 - v) + bottom * v) * np.sqrt(2)).astype(np.float32)


def perlin_mask(rng: np.random.Generator, size: tuple[int, int], max_area: float = 0.25) -> np.ndarray:
    """A bool mask of Perlin-noise blobs (random lattice 2^0..2^5 per axis) covering 0.05 %-``max_area``."""
    h, w = size
    mask = np.zeros(size, bool)
    for _ in range(12):
        res = (2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6)))
        noise = perlin_noise(rng, size, res)
        mask = noise > rng.uniform(0.3, 0.6)
        if rng.random() < 0.7:  # most real defects are local: keep the blobs of a random window
            ch, cw = int(h * rng.uniform(0.1, 0.6)), int(w * rng.uniform(0.1, 0.6))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            window = np.zeros(size, bool)
            window[y0 : y0 + ch, x0 : x0 + cw] = True
            mask &= window
        if 0.0005 < mask.mean() <= max_area:
            return mask
    # no draw fitted: a small ellipse at a random place
    cy, cx = int(rng.integers(h // 8, h - h // 8)), int(rng.integers(w // 8, w - w // 8))
    return _ellipse(size, (cy, cx), (max(2, h // 16), max(2, w // 16)), rng)


def _ellipse(size: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    cv2.ellipse(m, (int(centre[1]), int(centre[0])), (max(2, int(axes[1])), max(2, int(axes[0]))),
                float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m > 0


def crack_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A thin random polyline (scratch or crack), 1-3 px wide, as a bool mask."""
    h, w = size
    mask = np.zeros(size, np.uint8)
    n = int(rng.integers(3, 10))
    step = rng.uniform(0.02, 0.08) * max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    pts = [np.array([rng.uniform(0, w), rng.uniform(0, h)])]
    for _ in range(n):
        angle += rng.normal(0, 0.5)
        pts.append(pts[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
    poly = np.clip(np.array(pts), 0, [w - 1, h - 1]).astype(np.int32)
    cv2.polylines(mask, [poly], False, 1, thickness=int(rng.integers(1, 4)))
    return mask > 0


def scar_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A thin rotated rectangle (CutPaste scar): 2-6 % of the side wide, 10-35 % long."""
    h, w = size
    side = min(h, w)
    length = rng.uniform(0.1, 0.35) * side
    width = max(2.0, rng.uniform(0.01, 0.04) * side)
    centre = (float(rng.uniform(0.1, 0.9) * w), float(rng.uniform(0.1, 0.9) * h))
    box = cv2.boxPoints((centre, (length, width), float(rng.uniform(0, 180)))).astype(np.int32)
    mask = np.zeros(size, np.uint8)
    cv2.fillPoly(mask, [box], 1)
    return mask > 0


def _colour_ops(tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three random operations of (contrast, brightness, posterise, invert, channel gain) on a uint8 texture."""
    out = tex.astype(np.float32)
    for op in rng.choice(5, size=3, replace=False):
        if op == 0:
            out = (out - out.mean()) * rng.uniform(0.5, 2.0) + out.mean()
        elif op == 1:
            out = out + rng.uniform(-60, 60)
        elif op == 2:
            levels = float(2 ** int(rng.integers(1, 4)))
            out = np.floor(np.clip(out, 0, 255) / 256 * levels) * (255 / max(levels - 1, 1))
        elif op == 3:
            out = 255 - out
        else:
            out = out * rng.uniform(0.6, 1.4, size=3)
    return np.clip(out, 0, 255)


def _perlin_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    res = (2 ** int(rng.integers(1, 6)), 2 ** int(rng.integers(1, 6)))
    base = (perlin_noise(rng, size, res) + 1) * 0.5
    lo, hi = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    tex = lo + base[..., None] * (hi - lo)
    return _colour_ops(tex, rng)


def _self_shuffle(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    g = int(rng.choice([4, 8]))
    bh, bw = h // g, w // g
    blocks = [image[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw] for i in range(g) for j in range(g)]
    order = rng.permutation(len(blocks))
    out = image.copy()
    for k, idx in enumerate(order):
        i, j = divmod(k, g)
        out[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw] = blocks[idx]
    return out.astype(np.float32)


def _poisson_patch(image: np.ndarray, source: np.ndarray, rng: np.random.Generator,
                   allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """NSA: a resized patch of another normal image Poisson-blended into ``image``; mask = visible change."""
    h, w = image.shape[:2]
    ph = int(rng.uniform(0.06, 0.3) * h)
    pw = int(rng.uniform(0.06, 0.3) * w)
    ph, pw = max(ph, 6), max(pw, 6)
    sy, sx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    patch = source[sy : sy + ph, sx : sx + pw]
    scale = rng.uniform(0.7, 1.4)
    th, tw = int(np.clip(ph * scale, 6, h - 4)), int(np.clip(pw * scale, 6, w - 4))
    patch = cv2.resize(np.ascontiguousarray(patch), (tw, th), interpolation=cv2.INTER_LINEAR)
    if allowed is not None and allowed.any():
        ys, xs = np.nonzero(allowed)
        k = int(rng.integers(len(ys)))
        cy, cx = int(np.clip(ys[k], th // 2 + 2, h - th // 2 - 2)), int(np.clip(xs[k], tw // 2 + 2, w - tw // 2 - 2))
    else:
        cy = int(rng.integers(th // 2 + 2, h - th // 2 - 1))
        cx = int(rng.integers(tw // 2 + 2, w - tw // 2 - 1))
    src_mask = np.full((th, tw), 255, np.uint8)
    try:
        out = cv2.seamlessClone(patch, image, src_mask, (cx, cy), cv2.NORMAL_CLONE)
    except cv2.error:  # degenerate placement: plain paste
        out = image.copy()
        out[cy - th // 2 : cy - th // 2 + th, cx - tw // 2 : cx - tw // 2 + tw] = patch
    region = np.zeros((h, w), bool)
    region[max(0, cy - th // 2) : cy - th // 2 + th, max(0, cx - tw // 2) : cx - tw // 2 + tw] = True
    out = out.astype(np.float32)
    if rng.random() < 0.7:  # NSA's intensity variation (after blending, which would cancel a plain shift)
        out[region] = np.clip(out[region] * rng.uniform(0.5, 1.5) + rng.uniform(-40, 40), 0, 255)
    diff = np.abs(out - image).max(axis=2)
    return out, region & (diff >= 6)


def synthesize_anomaly(
    image: np.ndarray, source: np.ndarray, rng: np.random.Generator, kind: str | None = None,
    object_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste one synthetic anomaly onto ``image``; retries until the change is visible.

    Args:
        image: HxWx3 uint8 RGB defect-free image at model size (gray content stays gray).
        source: another HxWx3 uint8 defect-free image (for ``poisson_patch``).
        rng: random generator.
        kind: one of :data:`KINDS`, or None for a random choice per attempt.
        object_mask: optional HxW bool mask of the object: the anomaly is kept on it.

    Returns:
        (HxWx3 uint8 image with the anomaly, HxW float32 mask in {0, 1} of the anomalous region).

    Raises:
        ValueError: an unknown ``kind``, or images of different shapes.
    """
    if kind is not None and kind not in KINDS:
        msg = f"unknown anomaly kind {kind!r}; choose one of {KINDS}"
        raise ValueError(msg)
    if image.shape != source.shape or image.ndim != 3:
        msg = f"image and source must be HxWx3 of one shape, got {image.shape} and {source.shape}"
        raise ValueError(msg)
    allowed = None
    if object_mask is not None and object_mask.mean() > 0.01:
        allowed = cv2.dilate(object_mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    out, mask = image, np.zeros(image.shape[:2], np.float32)
    for _ in range(6):
        out, mask = _paste_once(image, source, rng, kind, allowed)
        if mask.any() and _visible_change(image, out, mask) >= 6:
            return out, mask
    return out, mask


def _paste_once(image: np.ndarray, source: np.ndarray, rng: np.random.Generator, kind: str | None,
                allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    kind = kind if kind is not None else str(rng.choice(KINDS))
    img = image.astype(np.float32)
    if kind == "poisson_patch":
        out, mask = _poisson_patch(image, source, rng, allowed)
        if allowed is not None:
            mask &= allowed
        out = np.where(mask[..., None], out, img)
        return _finish(image, out, mask)
    if kind == "crack":
        mask = crack_mask(rng, (h, w))
        level = rng.uniform(0, 60) if rng.random() < 0.7 else rng.uniform(190, 255)
        anomaly = np.full_like(img, level)
    elif kind == "scar":
        mask = scar_mask(rng, (h, w))
        if rng.random() < 0.5:
            anomaly = np.broadcast_to(rng.uniform(0, 255, 3), img.shape).astype(np.float32)
        else:
            m = np.float32([[1, 0, rng.uniform(-w / 3, w / 3)], [0, 1, rng.uniform(-h / 3, h / 3)]])
            anomaly = _colour_ops(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT), rng)
    else:
        mask = perlin_mask(rng, (h, w))
        if kind == "perlin_texture":
            anomaly = _perlin_texture(rng, (h, w))
        elif kind == "flat_colour":
            anomaly = np.broadcast_to(rng.uniform(0, 255, 3), img.shape).astype(np.float32)
        elif kind == "self_shuffle":
            anomaly = _self_shuffle(image, rng)
        else:  # intensity
            gain = rng.uniform(0.3, 0.75) if rng.random() < 0.5 else rng.uniform(1.3, 2.0)
            anomaly = img * gain
    if allowed is not None:
        mask &= allowed
    beta = rng.uniform(0.0, MAX_BETA)
    alpha = mask.astype(np.float32)[..., None] * (1.0 - beta)
    out = img * (1 - alpha) + np.clip(anomaly, 0, 255) * alpha
    return _finish(image, out, mask)


def _visible_change(image: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    """Mean over the mask of the largest channel change after a 3x3 box blur (pixel noise shuffled
    into other pixel noise does not count as a visible anomaly)."""
    a = cv2.blur(image.astype(np.float32), (3, 3))
    b = cv2.blur(out.astype(np.float32), (3, 3))
    return float(np.abs(b - a).max(axis=2)[mask > 0].mean())


def _finish(image: np.ndarray, out: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if _is_gray(image):
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask.astype(np.float32)


def _is_gray(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))
