"""Objects on a conveyor belt (``washer``, ``bracket``, ``hex_nut``) of the synthetic line-camera data set,
and :func:`render_scene`, the renderer of every product (textures from
:mod:`protoinspect.training.synthetic_products`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from protoinspect.sdk._imports import require
from protoinspect.training.synthetic_products import (
    LIGHT,
    Scene,
    colour,
    grid,
    render_brushed_metal,
    render_fabric,
    render_tile,
    sensor,
    smooth_noise,
    smoothstep,
    streaks,
)

_F32 = np.float32
cv2 = require("cv2")


def _belt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Dark PVC conveyor belt: fine grain, faint streaks along the running direction (y), wear."""
    s = min(h, w) / 256
    tex = (
        1
        + 0.07 * smooth_noise(rng, (h, w), 1.0)
        + 0.04 * smooth_noise(rng, (h, w), (40 * s, 1.5))
        + 0.05 * smooth_noise(rng, (h, w), 30 * s)
    )
    return (colour(rng, (0.2, 0.22, 0.21), 0.08) * tex[..., None]).astype(_F32)


def _place(rng: np.random.Generator, h: int, w: int, half_x: float, half_y: float) -> tuple[float, float]:
    """A random centre that keeps a (half_x, half_y) bounding box inside the frame with a margin."""
    margin = 0.04 * min(h, w)
    lo_x, hi_x = half_x + margin, w - half_x - margin
    lo_y, hi_y = half_y + margin, h - half_y - margin
    cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else w / 2
    cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else h / 2
    return float(cx), float(cy)


def _bevel(sdf: np.ndarray, width: float, strength: float) -> np.ndarray:
    """Shading of a chamfer along the edge of an SDF shape (lit on the side facing the light)."""
    gy, gx = np.gradient(sdf)
    norm = np.sqrt(gx * gx + gy * gy) + 1e-6
    lit = (gx * LIGHT[0] + gy * LIGHT[1]) / norm
    band = smoothstep(-width, -0.3 * width, sdf)
    return (strength * lit * band).astype(_F32)


def _compose(rng: np.random.Generator, h: int, w: int, sdf: np.ndarray, surface: np.ndarray, belt: np.ndarray) -> Scene:
    """Lay an object (signed distance field + surface colour) with its drop shadow on the belt."""
    s = min(h, w) / 256
    alpha = np.clip(0.5 - sdf, 0.0, 1.0).astype(_F32)
    shift = np.float32([[1, 0, 2.5 * s + 0.5], [0, 1, 3.5 * s + 0.5]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(alpha, shift, (w, h)), (0, 0), 2.5 * s + 0.5)
    ground = belt * (1 - 0.5 * shadow)[..., None]
    albedo = ground * (1 - alpha[..., None]) + np.clip(surface, 0, 1) * alpha[..., None]
    revealed = belt * (1 - 0.2 * shadow)[..., None]  # where the part is missing, less of it shades the belt
    return Scene(albedo.astype(_F32), revealed.astype(_F32), sensor(rng, h, w), object_alpha=alpha)


def _render_washer(rng: np.random.Generator, h: int, w: int) -> Scene:
    """Flat steel washer: turned rings, anisotropic sheen, chamfered inner and outer edges."""
    yy, xx = grid(h, w)
    s = min(h, w) / 256
    belt = _belt(rng, h, w)
    outer = 0.34 * min(h, w) * rng.uniform(0.9, 1.1)
    inner = 0.47 * outer
    cx, cy = _place(rng, h, w, outer, outer)
    dx, dy = xx - cx, yy - cy
    d = np.sqrt(dx * dx + dy * dy)
    th = np.arctan2(dy, dx)
    sdf = np.abs(d - (outer + inner) / 2) - (outer - inner) / 2
    lobe = math.atan2(LIGHT[1], LIGHT[0]) + rng.normal(0, 0.15)
    rings = 0.02 * np.sin(2 * np.pi * d / max(2.5, 3.2 * s) + 1.2 * smooth_noise(rng, (h, w), 8 * s))
    shade = 1 + 0.12 * np.cos(2 * (th - lobe)) + rings + 0.025 * smooth_noise(rng, (h, w), 10 * s)
    shade = shade + 0.012 * smooth_noise(rng, (h, w), 1.0)
    surface = colour(rng, (0.66, 0.66, 0.68)) * shade[..., None] + _bevel(sdf, max(1.5, 3.5 * s), 0.22)[..., None]
    return _compose(rng, h, w, sdf, surface, belt)


def _render_bracket(rng: np.random.Generator, h: int, w: int) -> Scene:
    """Zinc-plated steel bracket: rounded plate, two holes and a slot, brushed along its length."""
    yy, xx = grid(h, w)
    s = min(h, w) / 256
    m = min(h, w) * rng.uniform(0.9, 1.1)
    a, b, corner = 0.36 * m, 0.2 * m, 0.06 * m
    phi = rng.uniform(-math.pi, math.pi)
    c, sn = abs(math.cos(phi)), abs(math.sin(phi))
    belt = _belt(rng, h, w)
    cx, cy = _place(rng, h, w, c * a + sn * b, sn * a + c * b)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(phi) + dy * math.sin(phi)
    v = -dx * math.sin(phi) + dy * math.cos(phi)
    qx, qy = np.abs(u) - (a - corner), np.abs(v) - (b - corner)
    box = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0) - corner
    holes = np.minimum(np.sqrt((u - 0.23 * m) ** 2 + v * v), np.sqrt((u + 0.23 * m) ** 2 + v * v)) - 0.06 * m
    slot = np.sqrt(np.maximum(np.abs(u) - 0.05 * m, 0) ** 2 + v * v) - 0.035 * m
    sdf = np.maximum(box, -np.minimum(holes, slot))
    brushed = 0.6 * streaks(rng, u, v, 50 * s, 0.6) + 0.4 * streaks(rng, u, v, 12 * s, 1.2)
    shade = 1 + 0.045 * brushed + 0.03 * smooth_noise(rng, (h, w), 14 * s) + 0.05 * np.cos(2 * phi)
    surface = colour(rng, (0.7, 0.73, 0.77)) * shade[..., None] + _bevel(sdf, max(1.5, 3.0 * s), 0.2)[..., None]
    return _compose(rng, h, w, sdf, surface, belt)


def _render_hex_nut(rng: np.random.Generator, h: int, w: int) -> Scene:
    """Brass hex nut: chamfered corners, turned top face, thread visible around the bore."""
    yy, xx = grid(h, w)
    s = min(h, w) / 256
    apo = 0.3 * min(h, w) * rng.uniform(0.9, 1.1)  # centre to flat
    phi = rng.uniform(0, math.pi / 3)
    belt = _belt(rng, h, w)
    cx, cy = _place(rng, h, w, apo / math.cos(math.pi / 6), apo / math.cos(math.pi / 6))
    dx, dy = xx - cx, yy - cy
    u = np.abs(dx * math.cos(phi) + dy * math.sin(phi))
    v = np.abs(-dx * math.sin(phi) + dy * math.cos(phi))
    k = (-0.8660254, 0.5, 0.57735027)
    dot = np.minimum(k[0] * u + k[1] * v, 0)
    u, v = u - 2 * dot * k[0], v - 2 * dot * k[1]
    px = u - np.clip(u, -k[2] * apo, k[2] * apo)
    hexagon = np.sqrt(px * px + (v - apo) ** 2) * np.sign(v - apo)
    d = np.sqrt(dx * dx + dy * dy)
    th = np.arctan2(dy, dx)
    bore = 0.45 * apo
    sdf = np.maximum(hexagon, bore - d)
    radial_lit = np.cos(th) * LIGHT[0] + np.sin(th) * LIGHT[1]
    lobe = math.atan2(LIGHT[1], LIGHT[0]) + rng.normal(0, 0.15)
    top = 1 + 0.1 * np.cos(2 * (th - lobe)) + 0.015 * np.sin(2 * np.pi * d / max(2.5, 3.0 * s))
    top = top + 0.03 * smooth_noise(rng, (h, w), 10 * s) + 0.012 * smooth_noise(rng, (h, w), 1.0)
    chamfer = smoothstep(1.05 * apo, 1.08 * apo, d)
    shade = top * (1 - chamfer) + chamfer * (0.85 + 0.25 * radial_lit)
    sink = smoothstep(0.6 * apo, 0.57 * apo, d)
    shade = shade * (1 - sink) + sink * (0.75 - 0.3 * radial_lit)
    thread = smoothstep(0.555 * apo, 0.54 * apo, d)
    shade = shade * (1 - thread) + thread * 0.42 * (1 + 0.2 * np.sin(2 * np.pi * d / max(2.0, 2.5 * s)))
    surface = colour(rng, (0.78, 0.62, 0.32)) * shade[..., None] + _bevel(hexagon, max(1.2, 2.0 * s), 0.15)[..., None]
    return _compose(rng, h, w, sdf, surface, belt)


RENDERERS: dict[str, Callable[[np.random.Generator, int, int], Scene]] = {
    "tile": render_tile,
    "brushed_metal": render_brushed_metal,
    "fabric": render_fabric,
    "washer": _render_washer,
    "bracket": _render_bracket,
    "hex_nut": _render_hex_nut,
}


def render_scene(product: str, rng: np.random.Generator, shape: tuple[int, int]) -> Scene:
    """Render the defect-free scene of ``product`` at ``shape`` (h, w); validated by the caller."""
    h, w = shape
    scene = RENDERERS[product](rng, h, w)
    np.clip(scene.albedo, 0.0, 1.0, out=scene.albedo)
    np.clip(scene.substrate, 0.0, 1.0, out=scene.substrate)
    return scene
