"""Defect painters of the synthetic line-camera data set.

Each painter takes a defect-free :class:`~protoinspect.training.synthetic_products.Scene`, draws its own
randomness *after* the scene was rendered and returns a new albedo; :func:`paint_defect` derives
the ground-truth mask from the pixels that actually changed (closed and dilated by one pixel), so
the mask marks exactly the defect region. On objects every change is confined to the object.
Sizes, orientations and contrasts vary and about a quarter of the defects are subtle.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.training.synthetic_products import LIGHT, Scene, smooth_noise, smoothstep

cv2 = require("cv2")

DEFECT_TYPES: tuple[str, ...] = ("scratch", "crack", "hole", "stain", "break", "contamination")

_F32 = np.float32
_CHANGED = 0.02  # albedo change that counts as part of the defect (about 5 grey levels)
_MAX_TRIES = 25

Painter = Callable[[Scene, np.ndarray, np.random.Generator], np.ndarray]


# ---------------------------------------------------------------------------------------- helpers
def _supersample(shape: tuple[int, int]) -> int:
    return 4 if max(shape) <= 1024 else 2


def _polyline(shape: tuple[int, int], pts: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased coverage (HxW float32 in [0, 1]) of an open polyline of sub-pixel ``width``."""
    h, w = shape
    ss = _supersample(shape)
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    p = np.round((pts + 0.5) * ss - 0.5).astype(np.int32)
    cv2.polylines(canvas, [p], False, 255, thickness=max(1, round(width * ss)), lineType=cv2.LINE_8)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(_F32) / 255


def _polygon(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (HxW float32 in [0, 1]) of a filled polygon."""
    h, w = shape
    ss = _supersample(shape)
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    cv2.fillPoly(canvas, [np.round((pts + 0.5) * ss - 0.5).astype(np.int32)], 255, lineType=cv2.LINE_8)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(_F32) / 255


def _blob(
    rng: np.random.Generator, centre: np.ndarray, radius: float, jag: float, n: tuple[int, int] = (7, 12)
) -> np.ndarray:
    """Vertices (k, 2) of an irregular closed polygon around ``centre``."""
    k = int(rng.integers(*n))
    ang = np.sort(rng.uniform(0, 2 * math.pi, k))
    r = radius * rng.uniform(1 - jag, 1 + 0.4 * jag, k)
    return centre + np.stack([r * np.cos(ang), r * np.sin(ang)], 1)


def _pick_point(rng: np.random.Generator, allowed: np.ndarray, min_dist: float) -> tuple[np.ndarray, float]:
    """A random pixel (x, y) at least ``min_dist`` inside ``allowed`` (fewer if none is); its depth."""
    padded = np.pad(allowed.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    ok = np.flatnonzero(dist >= min(min_dist, float(dist.max())))
    idx = int(ok[rng.integers(ok.size)])
    y, x = divmod(idx, allowed.shape[1])
    return np.array([x, y], _F32) + rng.uniform(-0.5, 0.5, 2).astype(_F32), float(dist[y, x])


def _extent(scene: Scene) -> float:
    """Size (pixels) of what may carry a defect: sqrt of the object area, or the frame's short side."""
    if scene.object_alpha is not None:
        return float(math.sqrt(scene.object_alpha.sum()))
    return float(min(scene.albedo.shape[:2]))


def _scale(scene: Scene) -> float:
    return min(scene.albedo.shape[:2]) / 256


def _contrast(rng: np.random.Generator, subtle: tuple[float, float], normal: tuple[float, float]) -> float:
    """A defect contrast: subtle in about a quarter of the draws."""
    return float(rng.uniform(*subtle) if rng.random() < 0.25 else rng.uniform(*normal))


def _apply(scene: Scene, allowed: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Blend ``new`` into the scene where ``allowed`` (soft object coverage, or 1)."""
    out = scene.albedo + (new - scene.albedo) * allowed[..., None]
    return np.clip(out, 0.0, 1.0).astype(_F32)


# --------------------------------------------------------------------------------------- painters
def _scratch(scene: Scene, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin, slightly curved bright (or dark) groove with a faint opposite-toned halo."""
    shape, s, ext = scene.albedo.shape[:2], _scale(scene), _extent(scene)
    centre, _ = _pick_point(rng, allowed >= 0.5, 2)
    length = rng.uniform(0.2, 0.55) * ext
    ang = rng.uniform(0, math.pi)
    d, nrm = np.array([math.cos(ang), math.sin(ang)]), np.array([-math.sin(ang), math.cos(ang)])
    ctrl = centre + nrm * rng.normal(0, 0.12) * length
    t = np.linspace(0, 1, 24)[:, None]
    p0, p2 = centre - d * length / 2, centre + d * length / 2
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p2
    width = max(0.7, rng.uniform(0.6, 1.8) * s)
    core = _polyline(shape, pts, width)
    halo = np.clip(_polyline(shape, pts, 2.5 * width + 1) - core, 0, 1)
    fade = 0.65 + 0.35 * np.tanh(smooth_noise(rng, shape, 10 * s + 1))
    sign = 1.0 if rng.random() < 0.6 else -1.0
    c = _contrast(rng, (0.07, 0.12), (0.15, 0.45))
    delta = sign * c * (core * fade - 0.3 * halo)
    return _apply(scene, allowed, scene.albedo + delta[..., None])


def _crack(scene: Scene, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A jagged dark fissure (random walk) with zero to two branches."""
    shape, s, ext = scene.albedo.shape[:2], _scale(scene), _extent(scene)
    start, _ = _pick_point(rng, allowed >= 0.5, 2)
    step = max(1.5, 3.0 * s)

    def walk(p: np.ndarray, ang: float, length: float) -> np.ndarray:
        n = max(3, int(length / step))
        a = ang + 0.5 * np.cumsum(rng.normal(0, 0.3, n)) + rng.normal(0, 0.45, n)
        return p + np.cumsum(step * np.stack([np.cos(a), np.sin(a)], 1), 0)

    main = np.vstack([start[None], walk(start, rng.uniform(0, 2 * math.pi), rng.uniform(0.25, 0.6) * ext)])
    width = max(0.8, rng.uniform(0.7, 1.6) * s)
    cov = _polyline(shape, main, width)
    for _ in range(int(rng.integers(0, 3))):
        k = int(rng.integers(1, len(main) - 1))
        seg = main[k] - main[k - 1]
        ang = math.atan2(seg[1], seg[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
        branch = np.vstack([main[k][None], walk(main[k], ang, rng.uniform(0.2, 0.45) * len(main) * step)])
        cov = np.maximum(cov, _polyline(shape, branch, 0.7 * width))
    dark = _contrast(rng, (0.15, 0.3), (0.35, 0.7))
    return _apply(scene, allowed, scene.albedo * (1 - dark * cov)[..., None])


def _hole(scene: Scene, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A punched hole / pit: irregular round opening, shaded wall, burr rim catching the light."""
    h, w = scene.albedo.shape[:2]
    s, ext = _scale(scene), _extent(scene)
    radius = max(1.5, rng.uniform(0.025, 0.07) * ext)
    centre, depth = _pick_point(rng, allowed >= 0.5, radius + 2)
    radius = max(1.5, min(radius, depth - 1.5)) if scene.object_alpha is not None else radius
    xx, yy = np.meshgrid(np.arange(w, dtype=_F32) - centre[0], np.arange(h, dtype=_F32) - centre[1])
    d = np.sqrt(xx * xx + yy * yy) + 1e-6
    th = np.arctan2(yy, xx)
    jag = 0.12 if scene.object_alpha is None else 0.05
    r_th = radius * (1 + sum(rng.normal(0, jag / k) * np.cos(k * th + rng.uniform(0, 6.3)) for k in (2, 3, 5)))
    inside = np.clip(r_th - d + 0.5, 0, 1)
    rel = np.clip(d / r_th, 0, 1)
    towards_light = (xx * LIGHT[0] + yy * LIGHT[1]) / d
    if scene.object_alpha is not None:  # through-hole: belt seen through it, near wall casts a shadow
        floor = scene.substrate * (1 - 0.5 * np.clip(towards_light, 0, 1) * rel)[..., None]
    else:  # blind pit: dark floor, far wall lit
        floor = scene.substrate * (0.15 + 0.3 * rel - 0.25 * towards_light * rel**3)[..., None]
    rim_w = max(1.0, 1.5 * s)
    rim = np.clip(1 - (d - r_th) / rim_w, 0, 1) * (d > r_th)
    new = scene.albedo * (1 - inside[..., None]) + floor * inside[..., None]
    new = new + (rim * 0.18 * towards_light)[..., None]
    return _apply(scene, allowed, new)


_STAIN_FILTERS = (
    (1.0, 0.62, 0.38),  # rust
    (0.45, 0.42, 0.38),  # oil
    (0.78, 0.58, 0.4),  # coffee / resin
    (0.5, 0.62, 1.0),  # ink
    (0.62, 0.85, 0.55),  # coolant
)


def _stain(scene: Scene, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft irregular colour spot (rust, oil, resin, ink, coolant), sometimes with a dried ring."""
    h, w = shape = scene.albedo.shape[:2]
    ext = _extent(scene)
    r = rng.uniform(0.05, 0.14) * ext
    centre, _ = _pick_point(rng, allowed >= 0.5, 0.5 * r)
    ang = rng.uniform(0, math.pi)
    xx, yy = np.meshgrid(np.arange(w, dtype=_F32) - centre[0], np.arange(h, dtype=_F32) - centre[1])
    u = xx * math.cos(ang) + yy * math.sin(ang)
    v = -xx * math.sin(ang) + yy * math.cos(ang)
    ecc = rng.uniform(0.55, 1.0)
    field = 1 - (u / r) ** 2 - (v / (r * ecc)) ** 2 + 0.35 * smooth_noise(rng, shape, max(1.0, r / 2.5))
    alpha = smoothstep(0.0, 0.4, field) * (1 + 0.15 * smooth_noise(rng, shape, max(1.0, r / 6)))
    alpha = alpha + rng.uniform(0, 0.6) * np.exp(-(((field - 0.04) / 0.07) ** 2))
    alpha = np.clip(alpha * _contrast(rng, (0.25, 0.4), (0.45, 0.85)), 0, 1)
    tint = np.asarray(_STAIN_FILTERS[int(rng.integers(len(_STAIN_FILTERS)))], _F32)
    stained = scene.albedo * tint * rng.uniform(0.7, 1.0)
    return _apply(scene, allowed, scene.albedo + (stained - scene.albedo) * alpha[..., None])


def _break(scene: Scene, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A missing piece with a fracture rim.

    On objects a bite out of the outline, through which the belt shows; on textures a chipped
    tile corner or a chipped edge of the sheet, revealing the ceramic body or the dark backing.
    """
    shape, s, ext = scene.albedo.shape[:2], _scale(scene), _extent(scene)
    region = allowed
    if scene.object_alpha is not None:
        contours, _ = cv2.findContours((allowed >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        edge = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(_F32)
        centre = edge[rng.integers(len(edge))]
        radius = rng.uniform(0.15, 0.3) * ext
    else:
        sites = scene.chip_sites
        centre = sites[rng.integers(len(sites))] if sites is not None and len(sites) else np.zeros(2, _F32)
        radius = rng.uniform(0.07, 0.16) * ext
        if scene.segments is not None:  # chip the corner of one tile face only
            radius *= 1.3
            quad = np.array([rng.choice([-1, 1]), rng.choice([-1, 1])], _F32)
            probe = np.clip(np.round(centre + quad * (0.4 * radius + 6 * s)), 0, np.array(shape[::-1]) - 1).astype(int)
            seg = scene.segments[probe[1], probe[0]]
            region = (scene.segments == seg).astype(_F32) if seg >= 0 else (scene.segments >= 0).astype(_F32)
    cov = _polygon(shape, _blob(rng, centre, radius, 0.45)) * region
    grown = cv2.dilate(cov, np.ones((3, 3), np.uint8), iterations=max(1, round(s)))
    rim = np.clip(grown - cov, 0, 1) * region
    face = scene.substrate
    if scene.object_alpha is None:  # rough fracture surface; on objects the belt simply shows
        face = face * (1 + 0.15 * smooth_noise(rng, shape, 1.5 * s + 0.5))[..., None]
    new = scene.albedo * (1 - cov[..., None]) + face * cov[..., None]
    new = new * (1 - 0.25 * rim[..., None]) if scene.object_alpha is not None else new + 0.12 * rim[..., None]
    return np.clip(new, 0, 1).astype(_F32)


_FIBRE_COLOURS = ((0.08, 0.06, 0.05), (0.15, 0.1, 0.07), (0.8, 0.18, 0.14), (0.15, 0.28, 0.75), (0.93, 0.93, 0.9))
_PARTICLE_COLOURS = ((0.07, 0.07, 0.07), (0.42, 0.22, 0.1), (0.3, 0.3, 0.32), (0.85, 0.84, 0.8))


def _contamination(scene: Scene, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Foreign matter: a hair / fibre, a particle or chip with its shadow, or a cluster of dust."""
    shape, s, ext = scene.albedo.shape[:2], _scale(scene), _extent(scene)
    centre, _ = _pick_point(rng, allowed >= 0.5, 2)
    kind = rng.choice(["fibre", "particle", "cluster"], p=[0.4, 0.35, 0.25])
    if kind == "fibre":
        length = rng.uniform(0.25, 0.6) * ext
        ctrl = centre + rng.normal(0, 0.35 * length, (4, 2))
        ctrl[0], ctrl[3] = centre - 0.5 * (ctrl[3] - ctrl[0]), centre + 0.5 * (ctrl[3] - ctrl[0])
        t = np.linspace(0, 1, 40)[:, None]
        pts = (1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1] + 3 * (1 - t) * t**2 * ctrl[2] + t**3 * ctrl[3]
        cov = _polyline(shape, pts, max(0.6, rng.uniform(0.5, 1.3) * s)) * rng.uniform(0.6, 1.0)
        colour = np.asarray(_FIBRE_COLOURS[int(rng.integers(len(_FIBRE_COLOURS)))], _F32)
        return _apply(scene, allowed, scene.albedo * (1 - cov[..., None]) + colour * cov[..., None])
    if kind == "particle":
        blobs = [
            _blob(rng, centre + rng.normal(0, 3 * s, 2), max(1.3, rng.uniform(2, 7) * s), 0.5)
            for _ in range(rng.integers(1, 4))
        ]
    else:
        spread = 0.06 * ext
        blobs = [
            _blob(rng, centre + rng.normal(0, spread, 2), max(0.9, rng.uniform(0.8, 2.2) * s), 0.5, (5, 8))
            for _ in range(rng.integers(5, 14))
        ]
    cov = np.zeros(shape, _F32)
    for b in blobs:
        cov = np.maximum(cov, _polygon(shape, b))
    offset = np.float32([[1, 0, -LIGHT[0] * (1.5 * s + 0.5)], [0, 1, -LIGHT[1] * (1.5 * s + 0.5)]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(cov, offset, shape[::-1]), (0, 0), 0.8 * s + 0.4)
    colour = np.asarray(_PARTICLE_COLOURS[int(rng.integers(len(_PARTICLE_COLOURS)))], _F32)
    lit = colour * (1 + 0.25 * smooth_noise(rng, shape, 1.0))[..., None]
    new = scene.albedo * (1 - 0.4 * shadow[..., None])
    new = new * (1 - cov[..., None]) + lit * cov[..., None]
    return _apply(scene, allowed, new)


PAINTERS: dict[str, Painter] = {
    "scratch": _scratch,
    "crack": _crack,
    "hole": _hole,
    "stain": _stain,
    "break": _break,
    "contamination": _contamination,
}


def changed_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """HxW bool mask of pixels whose albedo changed visibly, closed and dilated by one pixel."""
    changed = (np.abs(after - before).max(axis=2) > _CHANGED).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, kernel)
    return cv2.dilate(changed, kernel).astype(bool)


def paint_defect(defect: str, scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one ``defect`` on ``scene``; validated by the caller.

    Args:
        defect: one of :data:`DEFECT_TYPES`.
        scene: the defect-free scene (not modified).
        rng: generator, already advanced past everything the scene drew.

    Returns:
        (HxWx3 float32 albedo with the defect, HxW bool defect mask). The mask is never empty and,
        on objects, lies within the object mask dilated by two pixels.
    """
    h, w = scene.albedo.shape[:2]
    if scene.object_alpha is not None:
        allowed = scene.object_alpha
        obj = (scene.object_alpha >= 0.5).astype(np.uint8)
        limit = cv2.dilate(obj, np.ones((5, 5), np.uint8)).astype(bool)
    else:
        allowed, limit = np.ones((h, w), _F32), None
    min_pixels = max(6, int(1e-4 * h * w))
    for _ in range(_MAX_TRIES):
        albedo = PAINTERS[defect](scene, allowed, rng)
        mask = changed_mask(scene.albedo, albedo)
        if limit is not None:
            mask &= limit
        if int(mask.sum()) >= min_pixels:
            return albedo, mask
    msg = f"could not paint a visible '{defect}' defect in {_MAX_TRIES} tries"
    raise RuntimeError(msg)
