"""HTML gallery of ``protoinspect discover``: one section per class and per proposed class."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.viz import normalize_map, thumbnail


def _overlay(image_rgb: np.ndarray, amap: np.ndarray) -> np.ndarray:
    cv2 = require("cv2")
    heat = cv2.applyColorMap(normalize_map(amap), cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), 0.6, heat, 0.4, 0)


def write_gallery(out_dir: str | Path, paths: Sequence[Path], images: np.ndarray, maps: np.ndarray,
                  groups: Mapping[str, Sequence[int]], title: str, per_group: int = 48) -> Path:
    """Write ``out_dir/report.html`` (+ ``thumbs/``): for each group its images (at most ``per_group``)
    with the anomaly heat map, file name below. Returns the report path."""
    cv2 = require("cv2")
    out = Path(out_dir)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif} figure{display:inline-block;margin:4px;font-size:11px}"
             " img{width:160px;display:block}</style>", f"<h1>{html.escape(title)}</h1>",
             "<p>Name, merge or drop classes and accept proposals with <code>protoinspect discover ... --out NEW"
             " --name ID=NAME --merge A,B --drop ID --accept P1</code>; the reviewed bundle stays as it is.</p>"]
    written: set[int] = set()
    for group, members in groups.items():
        parts.append(f"<h2>{html.escape(group)} ({len(members)} images)</h2>")
        for i in list(members)[:per_group]:
            name = f"{i:05d}.jpg"
            if i not in written:
                cv2.imwrite(str(out / "thumbs" / name), thumbnail(_overlay(images[i], maps[i]), 160))
                written.add(i)
            parts.append(f"<figure><img src='thumbs/{name}' loading='lazy'>"
                         f"<figcaption>{html.escape(Path(paths[i]).name)}</figcaption></figure>")
    report = out / "report.html"
    report.write_text("\n".join(parts))
    return report
