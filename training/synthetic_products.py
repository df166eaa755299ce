"""Product and background renderers of the synthetic line-camera data set.

A renderer draws *all* of its randomness (texture phase, pose, colour, lighting and sensor noise)
from the generator it is handed and returns a :class:`Scene`: the clean reflectance ("albedo") of
what lies under the camera, what a defect painter needs (object coverage, the material that a hole
or missing piece reveals, where a texture may chip), and the :class:`Sensor` that turns albedo into
the final 8-bit frame with :func:`expose`. Because nothing is drawn after the scene, a defect
painted with the same generator state changes the frame only where the defect is.

Textures (``tile``, ``brushed_metal``, ``fabric``) fill the frame; objects (``washer``,
``bracket``, ``hex_nut``) lie on a conveyor belt with random position, rotation and scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from protoinspect.sdk._imports import require

cv2 = require("cv2")

TEXTURE_PRODUCTS: tuple[str, ...] = ("tile", "brushed_metal", "fabric")
OBJECT_PRODUCTS: tuple[str, ...] = ("washer", "bracket", "hex_nut")
PRODUCTS: tuple[str, ...] = TEXTURE_PRODUCTS + OBJECT_PRODUCTS

#: Unit vector from a surface point towards the line light, in image (x, y) coordinates (y down).
LIGHT = np.array([-0.6, -0.8], np.float32)

_F32 = np.float32


@dataclass
class Sensor:
    """Illumination and line-scan sensor model, drawn before any defect.

    Attributes:
        gain: HxW illumination x exposure x per-column response (line light fall-off, flicker).
        channel_gain: 3 white-balance gains (slight colour shift between frames).
        noise: HxWx3 unit normal noise, scaled per pixel by the read + photon noise level.
        read_sigma: signal-independent (read) noise level.
        shot_sigma: photon-noise level: its variance grows linearly with the signal.
        blur_sigma: optical blur (Gaussian sigma in pixels) applied to the albedo.
    """

    gain: np.ndarray
    channel_gain: np.ndarray
    noise: np.ndarray
    read_sigma: float
    shot_sigma: float
    blur_sigma: float


@dataclass
class Scene:
    """A rendered, defect-free scene in albedo space (float32 RGB in [0, 1]).

    Attributes:
        albedo: HxWx3 reflectance of the scene.
        substrate: HxWx3 what a hole or a missing piece reveals (belt, ceramic body, backing).
        sensor: the sensor model that :func:`expose` applies.
        object_alpha: HxW anti-aliased coverage of the intact object, None for textures.
        chip_sites: (k, 2) x, y points where a texture may chip (tile corners, frame edges).
        segments: HxW int32 tile-face id (-1 on grout), or None; a chip stays on one face.
    """

    albedo: np.ndarray
    substrate: np.ndarray
    sensor: Sensor
    object_alpha: np.ndarray | None = None
    chip_sites: np.ndarray | None = None
    segments: np.ndarray | None = None

    @property
    def object_mask(self) -> np.ndarray | None:
        """HxW bool mask of the intact object (None for textures)."""
        return None if self.object_alpha is None else self.object_alpha >= 0.5


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float | tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-std noise whose features are about ``scale`` pixels (per axis if a pair).

    Args:
        rng: random generator.
        shape: (h, w) of the field.
        scale: feature size in pixels, or (along y, along x) for anisotropic (streaky) noise.

    Returns:
        HxW float32 field.
    """
    h, w = shape
    sy, sx = (scale, scale) if np.isscalar(scale) else scale  # type: ignore[misc]
    cy, cx = max(1.0, float(sy)), max(1.0, float(sx))
    gh, gw = int(h / cy) + 5, int(w / cx) + 5
    grid = rng.standard_normal((gh, gw), dtype=_F32)
    if cy > 1.0 or cx > 1.0:
        grid = cv2.resize(grid, (max(w + 1, round(gw * cx)), max(h + 1, round(gh * cy))), interpolation=cv2.INTER_CUBIC)
        oy, ox = int(2 * cy), int(2 * cx)
        grid = grid[oy : oy + h, ox : ox + w]
    field = np.ascontiguousarray(grid[:h, :w])
    field -= field.mean()
    return field / (field.std() + 1e-6)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 (x <= e0) to 1 (x >= e1)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(np.arange(w, dtype=_F32), np.arange(h, dtype=_F32))
    return yy, xx


def colour(
    rng: np.random.Generator, rgb: tuple[float, float, float], brightness: float = 0.04, tint: float = 0.015
) -> np.ndarray:
    """Base colour with a small random brightness and hue shift."""
    c = np.asarray(rgb, _F32) * rng.uniform(1 - brightness, 1 + brightness)
    return (c * (1 + rng.normal(0, tint, 3))).astype(_F32)


def streaks(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, along: float, across: float) -> np.ndarray:
    """Anisotropic noise elongated along the u axis, sampled at (possibly rotated) coordinates."""
    u0, v0 = float(u.min()), float(v.min())
    shape = (int(v.max() - v0) + 3, int(u.max() - u0) + 3)
    field = smooth_noise(rng, shape, (across, along))
    return cv2.remap(field, u - u0, v - v0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sensor(rng: np.random.Generator, h: int, w: int) -> Sensor:
    """Line light fall-off, gradient, line flicker, column PRNU, white balance and noise."""
    yy, xx = grid(h, w)
    xn, yn = xx / max(w - 1, 1) - 0.5, yy / max(h - 1, 1) - 0.5
    centre = rng.uniform(-0.2, 0.2)
    falloff = 1.0 - rng.uniform(0.04, 0.18) * ((xn - centre) * 2.0) ** 2
    phi = rng.uniform(0, 2 * math.pi)
    gradient = 1.0 + rng.uniform(0.0, 0.12) * (xn * math.cos(phi) + yn * math.sin(phi))
    flicker = 1.0 + rng.uniform(0.002, 0.01) * smooth_noise(rng, (h, 1), (6.0, 1.0))
    prnu = 1.0 + 0.004 * rng.standard_normal((1, w), dtype=_F32)
    gain = (falloff * gradient * flicker * prnu * rng.uniform(0.9, 1.08)).astype(_F32)
    return Sensor(
        gain=gain,
        channel_gain=(1 + rng.normal(0, 0.01, 3)).astype(_F32),
        noise=rng.standard_normal((h, w, 3), dtype=_F32),
        read_sigma=float(rng.uniform(0.004, 0.01)),
        shot_sigma=float(rng.uniform(0.01, 0.025)),
        blur_sigma=float(rng.uniform(0.45, 0.7)),
    )


def expose(albedo: np.ndarray, sensor: Sensor) -> np.ndarray:
    """Turn an HxWx3 float albedo into the HxWx3 uint8 RGB frame the camera would deliver."""
    a = cv2.GaussianBlur(albedo, (0, 0), sensor.blur_sigma)
    v = a * sensor.gain[..., None] * sensor.channel_gain
    sigma = np.sqrt(sensor.read_sigma**2 + sensor.shot_sigma**2 * np.clip(v, 0.0, None))
    v = v + sensor.noise * sigma
    return np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _edge_sites(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """The four frame corners and four random points on the frame edges (x, y)."""
    corners = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
    edges = [(rng.uniform(0, w), 0), (rng.uniform(0, w), h - 1), (0, rng.uniform(0, h)), (w - 1, rng.uniform(0, h))]
    return np.asarray(corners + edges, _F32)


# ----------------------------------------------------------------------------------------- textures
def render_tile(rng: np.random.Generator, h: int, w: int) -> Scene:
    """Glazed ceramic tiles: mottled glaze, dark speckles, rounded edges, sandy grout lines."""
    yy, xx = grid(h, w)
    s = min(h, w) / 256
    period = 0.62 * min(h, w) * rng.uniform(0.98, 1.02)
    grout = max(2.0, 7.0 * s)
    ox, oy = rng.uniform(0, period, 2)
    u, v = (xx - ox) / period, (yy - oy) / period
    ix, iy = np.floor(u).astype(np.int32) + 1, np.floor(v).astype(np.int32) + 1
    dist = np.minimum(np.abs(u - np.round(u)), np.abs(v - np.round(v))) * period  # px to grout centre
    face = smoothstep(grout / 2 - 0.6, grout / 2 + 0.6, dist)
    rounded = 0.9 + 0.1 * smoothstep(grout / 2, grout / 2 + 3 * s + 1, dist)
    nx = int(w / period) + 3
    tone = rng.normal(0, 0.012, (int(h / period) + 3, nx)).astype(_F32)[iy, ix]
    glaze = colour(rng, (0.87, 0.83, 0.75), tint=0.008)
    shade = 1 + tone + 0.022 * smooth_noise(rng, (h, w), 18 * s) + 0.01 * smooth_noise(rng, (h, w), 4 * s)
    shade = (shade + 0.008 * smooth_noise(rng, (h, w), 1.0)) * rounded
    glaze_img = glaze * shade[..., None]
    speckle = np.zeros((h, w), _F32)
    n = int(h * w * 0.0025 * rng.uniform(0.8, 1.2))
    np.add.at(speckle, (rng.integers(0, h, n), rng.integers(0, w, n)), rng.uniform(0.15, 0.5, n).astype(_F32))
    sigma = max(0.45, 0.6 * s)
    speckle = np.clip(cv2.GaussianBlur(speckle, (0, 0), sigma) * (2 * math.pi * sigma**2), 0, 0.7)
    glaze_img = glaze_img * (1 - speckle[..., None]) + speckle[..., None] * np.asarray([0.42, 0.33, 0.27], _F32)
    recess = 0.8 + 0.2 * np.clip(1 - dist / (grout / 2 + 1e-3), 0, 1)
    grout_shade = recess * (1 + 0.06 * smooth_noise(rng, (h, w), 0.8) + 0.03 * smooth_noise(rng, (h, w), 4 * s))
    grout_img = colour(rng, (0.56, 0.54, 0.5)) * grout_shade[..., None]
    albedo = face[..., None] * glaze_img + (1 - face[..., None]) * grout_img
    body = colour(rng, (0.7, 0.47, 0.34), 0.05) * (
        1 + 0.08 * smooth_noise(rng, (h, w), 1.0) + 0.06 * smooth_noise(rng, (h, w), 3 * s)
    )[..., None]
    xs = ox + period * np.arange(-1, nx)
    ys = oy + period * np.arange(-1, int(h / period) + 3)
    xs, ys = xs[(xs > 2) & (xs < w - 3)], ys[(ys > 2) & (ys < h - 3)]
    if xs.size and ys.size:
        sites = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(_F32)
    else:
        sites = _edge_sites(rng, h, w)
    segments = np.where(face > 0.5, iy * nx + ix, -1).astype(np.int32)
    return Scene(albedo.astype(_F32), body.astype(_F32), sensor(rng, h, w), chip_sites=sites, segments=segments)


def render_brushed_metal(rng: np.random.Generator, h: int, w: int) -> Scene:
    """Brushed steel sheet: fine long streaks along the brushing direction, broad sheen bands."""
    yy, xx = grid(h, w)
    s = min(h, w) / 256
    a = rng.normal(0, 0.02)
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    streak = (
        0.6 * streaks(rng, u, v, 70 * s, 0.55)
        + 0.45 * streaks(rng, u, v, 18 * s, 1.0)
        + 0.3 * streaks(rng, u, v, 160 * s, 3 * s)
    )
    sheen = 0.05 * smooth_noise(rng, (h, w), (45 * s, 300 * s)) + 0.015 * smooth_noise(rng, (h, w), 12 * s)
    shade = 1 + 0.06 * streak + sheen
    albedo = colour(rng, (0.6, 0.615, 0.64)) * shade[..., None]
    dark = np.asarray([0.07, 0.07, 0.08], _F32) * (1 + 0.2 * smooth_noise(rng, (h, w), 2 * s))[..., None]
    return Scene(albedo.astype(_F32), dark.astype(_F32), sensor(rng, h, w), chip_sites=_edge_sites(rng, h, w))


def render_fabric(rng: np.random.Generator, h: int, w: int) -> Scene:
    """2/1 twill (chambray / denim): indigo warp, ecru weft, per-thread tone, slubs, hairiness."""
    yy, xx = grid(h, w)
    s = min(h, w) / 256
    p = max(4.0, 6.5 * s) * rng.uniform(0.98, 1.02)
    a = rng.normal(0, 0.012)
    u = (xx * math.cos(a) + yy * math.sin(a)) / p + rng.uniform(0, 3)
    v = (-xx * math.sin(a) + yy * math.cos(a)) / p + rng.uniform(0, 3)
    i, j = np.floor(u).astype(np.int32), np.floor(v).astype(np.int32)
    fu, fv = u - i, v - j
    i -= i.min()
    j -= j.min()
    warp_top = (i - j) % 3 != 0
    # a float spans two cells: the thread bulges over the float, dips where it goes under
    start = warp_top & ((i - j - 1) % 3 == 0)
    along_warp = np.where(warp_top, np.where(start, fv / 2, 0.5 + fv / 2), fv)
    warp_tone = (1 + rng.normal(0, 0.07, i.max() + 1)).astype(_F32)[i]
    weft_tone = (1 + rng.normal(0, 0.05, j.max() + 1)).astype(_F32)[j]
    warp_tone = warp_tone * (1 + 0.06 * smooth_noise(rng, (h, w), (5 * p, 0.6 * p)))
    weft_tone = weft_tone * (1 + 0.06 * smooth_noise(rng, (h, w), (0.6 * p, 5 * p)))
    warp = (0.3 + 0.7 * np.sin(np.pi * fu) ** 0.6 * (0.72 + 0.28 * np.sin(np.pi * along_warp))) * warp_tone
    weft = (0.3 + 0.7 * np.sin(np.pi * fv) ** 0.6 * (0.75 + 0.25 * np.sin(np.pi * fu))) * weft_tone
    warp_c, weft_c = colour(rng, (0.2, 0.3, 0.52)), colour(rng, (0.8, 0.78, 0.72))
    albedo = np.where(warp_top[..., None], warp[..., None] * warp_c, weft[..., None] * weft_c)
    fuzz = 1 + 0.06 * smooth_noise(rng, (h, w), 0.7) + 0.03 * smooth_noise(rng, (h, w), 20 * s)
    albedo = albedo * fuzz[..., None]
    backing = np.asarray([0.05, 0.05, 0.06], _F32) * (1 + 0.2 * smooth_noise(rng, (h, w), 2 * s))[..., None]
    return Scene(albedo.astype(_F32), backing.astype(_F32), sensor(rng, h, w), chip_sites=_edge_sites(rng, h, w))


# ------------------------------------------------------------------------------ objects on a belt
