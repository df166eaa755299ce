"""A static HTML report of an inspection run: summary header and a sortable table with thumbnails."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.result import InspectionResult, Verdict

STAGES = ("mask", "detect", "regions", "classify", "frame_map", "total")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .4em}
.summary{display:flex;flex-wrap:wrap;gap:.6em 2em;margin-bottom:1em}
.summary div{background:#f3f3f3;padding:.4em .8em;border-radius:4px}
table.sortable{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}
th{cursor:pointer;background:#fafafa;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
tr.anomalous{background:#ffe3e3}tr.rejected{background:#fff1d6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-height:128px;display:block}
"""

_JS = """
// sortable: click a column header to sort by it, click again to reverse
document.querySelectorAll('table.sortable th[data-key]').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], key = th.dataset.key;
    var asc = !th.classList.contains('asc'), numeric = th.dataset.type === 'num';
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key];
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def safe_name(frame_id: str) -> str:
    """A file-name-safe form of a frame id (characters outside ``A-Za-z0-9._-`` become ``_``)."""
    name = _UNSAFE.sub("_", frame_id).strip("._") or "frame"
    return name[:150]


def stage_percentiles(timings: Iterable[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """p50 and p95 in milliseconds of every stage present in ``timings`` (numpy percentiles).

    Args:
        timings: one ``timings_ms`` mapping per frame.

    Returns:
        Stage name -> (p50, p95), stages in :data:`STAGES` order first; empty without frames.
    """
    per_stage: dict[str, list[float]] = {}
    for t in timings:
        for stage, ms in t.items():
            per_stage.setdefault(str(stage), []).append(float(ms))
    order = [s for s in STAGES if s in per_stage] + sorted(s for s in per_stage if s not in STAGES)
    return {s: (float(np.percentile(per_stage[s], 50)), float(np.percentile(per_stage[s], 95))) for s in order}


@dataclass(frozen=True)
class _Row:
    frame_id: str
    thumb: str
    score: float
    verdict: str
    total_ms: float
    defect_class: str = ""


class HtmlReport:
    """Collects frames of a run and writes ``out_dir/report.html`` with thumbnails in ``out_dir/thumbs``.

    Thumbnails are written as frames are added, so memory stays flat on long runs.

    Example::

        report = HtmlReport("out", bundle_id=insp.bundle.manifest.bundle_id, backend=insp.backend.name)
        report.add(frame_id, overlay(frame, result), result)
        path = report.write()
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, bundle_id: str | None = None,
                 backend: str | None = None, title: str = "ProtoInspect inspection", thumb_side: int = 256) -> None:
        """Create the report (and ``out_dir/thumbs``).

        Args:
            out_dir: folder of ``report.html`` and ``thumbs/``.
            bundle_id: shown in the header; None: taken from the first result added.
            backend: backend name shown in the header.
            title: page title.
            thumb_side: maximum side of a thumbnail in pixels.
        """
        self.out_dir = Path(out_dir)
        self.thumb_dir = self.out_dir / "thumbs"
        self.thumb_dir.mkdir(parents=True, exist_ok=True)
        self.bundle_id = bundle_id
        self.backend = backend
        self.title = title
        self.thumb_side = int(thumb_side)
        self.interrupted = False
        self._rows: list[_Row] = []
        self._timings: list[Mapping[str, float]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, frame_id: str, image_bgr: np.ndarray, result: InspectionResult) -> Path:
        """Add one frame: writes its thumbnail (JPEG, longer side at most ``thumb_side``).

        Args:
            frame_id: the frame's id (escaped in the page).
            image_bgr: the picture to show, usually :func:`protoinspect.sdk.viz.overlay` of the frame.
            result: the frame's result.

        Returns:
            Path of the thumbnail written.
        """
        from protoinspect.sdk._imports import require
        from protoinspect.sdk.viz import thumbnail

        cv2 = require("cv2")
        index = len(self._rows)
        name = f"{index:06d}_{safe_name(frame_id)}.jpg"
        path = self.thumb_dir / name
        ok, data = cv2.imencode(".jpg", thumbnail(image_bgr, self.thumb_side), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            path.write_bytes(data.tobytes())
        if self.bundle_id is None:
            self.bundle_id = result.bundle_id
        self._rows.append(_Row(frame_id, f"thumbs/{name}", float(result.anomaly_score), result.verdict.value,
                               float(result.timings_ms.get("total", float("nan"))), result.image_class_name or ""))
        self._timings.append(dict(result.timings_ms))
        return path

    def _summary_html(self) -> str:
        n = len(self._rows)
        anomalous = sum(r.verdict == Verdict.ANOMALOUS.value for r in self._rows)
        rejected = sum(r.verdict == Verdict.REJECTED.value for r in self._rows)
        items = [("frames", str(n)), ("anomalous", str(anomalous)), ("rejected", str(rejected)),
                 ("bundle", self.bundle_id or "-"), ("backend", self.backend or "-")]
        items += [(f"{stage} p50 / p95", f"{p50:.2f} / {p95:.2f} ms")
                  for stage, (p50, p95) in stage_percentiles(self._timings).items()]
        if self.interrupted:
            items.append(("status", "interrupted: partial run"))
        return "".join(f"<div><b>{html.escape(k)}</b>: {html.escape(v)}</div>" for k, v in items)

    def _rows_html(self) -> str:
        out = []
        for r in self._rows:
            cls = r.verdict.lower()
            fid = html.escape(r.frame_id)
            out.append(
                f'<tr class="{cls}" data-score="{r.score!r}" data-verdict="{html.escape(r.verdict)}" '
                f'data-id="{fid}" data-time="{r.total_ms!r}" data-class="{html.escape(r.defect_class)}">'
                f'<td><img src="{html.escape(r.thumb)}" alt="{fid}" loading="lazy"></td>'
                f'<td class="num">{r.score:.4f}</td><td>{html.escape(r.verdict)}</td>'
                f'<td>{html.escape(r.defect_class)}</td>'
                f'<td>{fid}</td><td class="num">{r.total_ms:.2f}</td></tr>')
        return "\n".join(out)

    def write(self) -> Path:
        """Write ``out_dir/report.html`` (inline CSS and JS; thumbnails referenced relatively).

        Returns:
            Path of the page.
        """
        title = html.escape(self.title)
        page = (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{title}</h1>\n<div class=\"summary\">{self._summary_html()}</div>\n"
            "<table class=\"sortable\"><thead><tr><th>overlay</th>"
            "<th data-key=\"score\" data-type=\"num\">score</th><th data-key=\"verdict\">verdict</th>"
            "<th data-key=\"class\">defect class</th>"
            "<th data-key=\"id\">id</th><th data-key=\"time\" data-type=\"num\">time (ms)</th></tr></thead>\n"
            f"<tbody>\n{self._rows_html()}\n</tbody></table>\n<script>{_JS}</script>\n</body></html>\n"
        )
        path = self.out_dir / "report.html"
        path.write_text(page, encoding="utf-8")
        return path

    def summary(self) -> dict[str, Any]:
        """Frames, anomalous and rejected counts and per-stage (p50, p95) of the frames added so far."""
        return {
            "frames": len(self._rows),
            "anomalous": sum(r.verdict == Verdict.ANOMALOUS.value for r in self._rows),
            "rejected": sum(r.verdict == Verdict.REJECTED.value for r in self._rows),
            "timings_ms": stage_percentiles(self._timings),
        }
