"""``summary.html`` of ``protoinspect demo``: what a line engineer needs first, in one self-contained page.

In order: the image threshold and how far it can be trusted; per product the image AUROC, AUPRO, defects
caught and false-alarm rate at that threshold; a score histogram per product with the threshold drawn in
(inline SVG); then the images the line gets wrong: missed defects (anomalous images scoring below the
threshold, ground-truth outline drawn in) and false alarms (good images at or above it), as inline PNG
thumbnails with their scores. No external assets: the file can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import InputError
from protoinspect.sdk.viz import thumbnail
from protoinspect.training.image_io import decode_file, read_mask

GOOD_COLOR = "#3a9a4a"
BAD_COLOR = "#d33a2c"
CONTOUR_BGR = (0, 255, 255)  # yellow: the ground-truth outline

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em}h3{font-size:1em;margin:.8em 0 .3em}
.lead{background:#f3f3f3;padding:.6em .9em;border-radius:4px}
table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.warn{color:#b00020;font-weight:600}
.hists{display:flex;flex-wrap:wrap;gap:1em}
figure{display:inline-block;margin:4px;font-size:11px;vertical-align:top}
figure img{width:128px;image-rendering:pixelated;display:block}
.muted{color:#666;font-size:.9em}
h4{font-size:.95em;margin:.7em 0 .2em}
"""


def _pct(share: float | None, count: int | None = None, total: int | None = None) -> str:
    if share is None:
        return "-"
    text = f"{100 * share:.1f} %"
    return f"{text} ({count}/{total})" if count is not None and total is not None else text


def png_data_uri(image_bgr: np.ndarray) -> str:
    """``image_bgr`` as an inline ``data:image/png;base64,...`` URI."""
    cv2 = require("cv2")
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        msg = "could not encode a thumbnail as PNG"
        raise InputError(msg)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _as_bgr8(arr: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit) as an 8-bit BGR image for display."""
    cv2 = require("cv2")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        arr = ((a - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    if arr.ndim == 2 or arr.shape[2] == 1:
        return cv2.cvtColor(arr.reshape(arr.shape[:2]), cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(arr[:, :, :3])


def thumbnail_with_outline(image_path: str | Path, mask_path: str | Path | None, max_side: int = 128) -> np.ndarray:
    """The image (BGR, at most ``max_side`` px) with the outline of its ground-truth mask (> 127) drawn in.

    Raises:
        DatasetError: an unreadable image or mask, or a mask of another size than the image.
    """
    cv2 = require("cv2")
    image = _as_bgr8(decode_file(image_path))
    small = thumbnail(image, max_side)
    if mask_path is not None:
        mask = read_mask(mask_path, image.shape[:2], image_path) > 127
        if small.shape[:2] != image.shape[:2]:
            size = (small.shape[1], small.shape[0])
            mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        small = small.copy()
        cv2.drawContours(small, contours, -1, CONTOUR_BGR, 1)
    return small


def score_histogram_svg(good: Sequence[float], anomalous: Sequence[float], threshold: float, *,
                        bins: int = 24, width: int = 380, height: int = 150) -> str:
    """Inline SVG: histograms of good (green) and anomalous (red) scores with the threshold as a dashed line.

    Raises:
        InputError: no scores, a non-finite score or threshold, or fewer than 2 bins.
    """
    g = np.asarray(good, np.float64).ravel()
    a = np.asarray(anomalous, np.float64).ravel()
    both = np.concatenate([g, a])
    if both.size == 0 or bins < 2 or not np.isfinite(both).all() or not math.isfinite(threshold):
        msg = "a score histogram needs finite scores, a finite threshold and at least 2 bins"
        raise InputError(msg)
    lo, hi = min(float(both.min()), threshold), max(float(both.max()), threshold)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo), 1.0) * 0.05
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    counts = [np.histogram(v, edges)[0] for v in (g, a)]
    top = max(1, int(max(c.max() for c in counts)))
    left, right, up, down = 8, 8, 18, 22
    pw, ph = width - left - right, height - up - down

    def x_of(v: float) -> float:
        return left + (v - edges[0]) / (edges[-1] - edges[0]) * pw

    size = f"width='{width}' height='{height}' viewBox='0 0 {width} {height}'"
    parts = [f"<svg {size} role='img' aria-label='score histogram'>"]
    bar_w = pw / bins
    for color, c in ((GOOD_COLOR, counts[0]), (BAD_COLOR, counts[1])):
        for i, n in enumerate(c):
            if n:
                h = n / top * ph
                parts.append(f"<rect class='bar' x='{left + i * bar_w:.1f}' y='{up + ph - h:.1f}' "
                             f"width='{max(bar_w - 1, 1):.1f}' height='{h:.1f}' fill='{color}' fill-opacity='0.6'/>")
    parts.append(f"<line x1='{left}' y1='{up + ph}' x2='{left + pw}' y2='{up + ph}' stroke='#444'/>")
    tx = x_of(threshold)
    parts.append(f"<line class='threshold' x1='{tx:.1f}' y1='{up - 4}' x2='{tx:.1f}' y2='{up + ph}' "
                 "stroke='#000' stroke-width='1.5' stroke-dasharray='4 3'/>")
    anchor = "end" if tx > left + pw / 2 else "start"
    parts.append(f"<text x='{tx + (-3 if anchor == 'end' else 3):.1f}' y='{up - 6}' font-size='10' "
                 f"text-anchor='{anchor}'>threshold {threshold:.4g}</text>")
    for v, anchor in ((edges[0], "start"), (edges[-1], "end")):
        parts.append(f"<text x='{x_of(v):.1f}' y='{height - 6}' font-size='10' text-anchor='{anchor}'>{v:.3g}</text>")
    parts.append(f"<text x='{left + pw / 2:.1f}' y='{height - 6}' font-size='10' text-anchor='middle'>"
                 f"score (max bar {top} images)</text>")
    parts.append("</svg>")
    return "".join(parts)


def _figures(records: Sequence[Mapping[str, Any]], limit: int, thumb: int) -> list[str]:
    out = []
    for r in records[:limit]:
        uri = png_data_uri(thumbnail_with_outline(r["path"], r.get("mask"), thumb))
        what = html.escape(str(r.get("defect_type") or ("good" if r["label"] == 0 else "anomalous")))
        out.append(f"<figure><img src='{uri}' alt='{html.escape(Path(r['path']).name)}'>"
                   f"<figcaption>{html.escape(Path(r['path']).name)} ({what})<br>score {r['score']:.4g}"
                   "</figcaption></figure>")
    if len(records) > limit:
        out.append(f"<p class='muted'>... and {len(records) - limit} more</p>")
    return out


def _check_report(report: Mapping[str, Any]) -> tuple[float, list[Mapping[str, Any]]]:
    if "images" not in report:
        msg = "the evaluation report has no per-image records: run evaluate_detector(..., per_image=True)"
        raise InputError(msg)
    try:
        threshold = float(report["image_threshold"])
        datasets = report["datasets"]
    except (KeyError, TypeError, ValueError):
        msg = "the evaluation report needs 'image_threshold' and 'datasets' (from evaluate_detector)"
        raise InputError(msg) from None
    records = list(report["images"])
    for r in records:
        if r.get("dataset") not in datasets or r.get("label") not in (0, 1) or "path" not in r or "score" not in r:
            msg = f"per-image record {r!r} needs path, a dataset of the report, label 0/1 and score"
            raise InputError(msg)
    return threshold, records


def write_demo_summary(out_dir: str | Path, report: Mapping[str, Any], *, title: str = "ProtoInspect demo",
                       links: Mapping[str, str] | None = None, per_group: int = 24, thumb: int = 128,
                       sections: Sequence[str] = ()) -> Path:
    """Write ``out_dir/summary.html`` from an :func:`~protoinspect.training.evaluate_detector.evaluate_detector`
    report made with ``per_image=True``; returns its path.

    Args:
        out_dir: folder to write into (created).
        report: the evaluation report, with ``images``.
        title: page title.
        links: label -> relative path of other outputs to link to (e.g. the inspection report).
        per_group: at most this many thumbnails of missed defects and of false alarms per product.
        thumb: longest side of a thumbnail in pixels.
        sections: more HTML sections, placed after the missed defects and false alarms (e.g. the demo's
            discovered defect types, :mod:`protoinspect.training.demo_discovery_report`).

    Raises:
        InputError: a report without per-image records or with malformed ones.
        DatasetError: an image or mask of a missed defect or false alarm cannot be read.
    """
    threshold, records = _check_report(report)
    datasets: Mapping[str, Mapping[str, Any]] = report["datasets"]
    trusts = sorted({str(r["trust"]) for r in datasets.values() if r.get("trust")})
    parts = [f"<!doctype html><html lang='en'><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='lead'>Image threshold <b>{threshold:.4g}</b>: a part scoring at or above it is flagged."
             + "".join(f"<br>Threshold: {html.escape(t)}." for t in trusts) + "</p>"]
    if report.get("bundle_id"):
        parts.append(f"<p class='muted'>bundle {html.escape(str(report['bundle_id']))}</p>")

    parts.append("<h2>Per product, at the threshold</h2><table><tr><th>product</th><th>test images</th>"
                 "<th>defects caught</th><th>false alarms</th><th>image AUROC</th><th>AUPRO</th></tr>")
    for name, r in datasets.items():
        caught, far = r.get("defects_caught"), r.get("false_alarm_rate")
        parts.append(
            f"<tr><td>{html.escape(name)}</td><td class='num'>{r.get('num_test', '-')}</td>"
            f"<td class='num{' warn' if caught is not None and caught < 1 else ''}'>"
            f"{_pct(caught, r.get('num_defects_caught'), r.get('num_anomalous'))}</td>"
            f"<td class='num{' warn' if far else ''}'>{_pct(far, r.get('num_false_alarms'), r.get('num_normal'))}</td>"
            f"<td class='num'>{r.get('image_auroc', float('nan')):.3f}</td>"
            f"<td class='num'>{r.get('aupro', float('nan')):.3f}</td></tr>")
    parts.append("</table>")

    by_set = {name: [r for r in records if r["dataset"] == name] for name in datasets}
    parts.append(f"<h2>Scores per product</h2><p class='muted'><span style='color:{GOOD_COLOR}'>good</span> and "
                 f"<span style='color:{BAD_COLOR}'>anomalous</span> test images; dashed: the threshold.</p>"
                 "<div class='hists'>")
    for name, recs in by_set.items():
        if recs:
            svg = score_histogram_svg([r["score"] for r in recs if r["label"] == 0],
                                      [r["score"] for r in recs if r["label"] == 1], threshold)
            parts.append(f"<div><h3>{html.escape(name)}</h3>{svg}</div>")
    parts.append("</div>")

    parts.append("<h2>What the line gets wrong</h2>")
    for name, recs in by_set.items():
        missed = sorted((r for r in recs if r["label"] == 1 and r["score"] < threshold), key=lambda r: r["score"])
        alarms = sorted((r for r in recs if r["label"] == 0 and r["score"] >= threshold), key=lambda r: -r["score"])
        parts.append(f"<h3>{html.escape(name)}: {len(missed)} missed defect{'s' if len(missed) != 1 else ''}, "
                     f"{len(alarms)} false alarm{'s' if len(alarms) != 1 else ''}</h3>")
        if missed:
            parts.append("<p class='muted'>Missed defects (lowest score first; yellow: the true defect)</p>")
            parts += _figures(missed, per_group, thumb)
        if alarms:
            parts.append("<p class='muted'>False alarms (highest score first)</p>")
            parts += _figures(alarms, per_group, thumb)
    parts += list(sections)
    if links:
        parts.append("<h2>More</h2><ul>" + "".join(
            f"<li><a href='{html.escape(href)}'>{html.escape(label)}</a></li>" for label, href in links.items())
            + "</ul>")
    parts.append("</html>")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
