"""The demo's "Discovered defect types" section and console table: per product the discovery metrics
(NMI, ARI, F1, estimated vs true number of classes) and a gallery per discovered class, each test image
captioned with its true defect type, so a person can see whether a class is coherent.

The section is HTML for :func:`protoinspect.training.demo_report.write_demo_summary` (``sections=``);
thumbnails are inline PNGs like the rest of ``summary.html``.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protoinspect.sdk.errors import InputError
from protoinspect.training.demo_report import png_data_uri, thumbnail_with_outline

#: the per-product keys the section and the table read (from evaluate_discovery)
METRIC_KEYS = ("nmi", "ari", "f1")


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def k_pair(result: Mapping[str, Any]) -> str:
    """``"estimated/true"`` number of defect classes of one product's discovery result."""
    k_est = result.get("k_novel_estimated")
    if k_est is None:
        k_est = result.get("k_estimated")
    return f"{k_est if k_est is not None else '-'}/{result.get('k_true', '-')}"


def mean_metrics(products: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """Mean NMI, ARI and F1 over the products (None for a metric no product has)."""
    out: dict[str, float | None] = {}
    for key in METRIC_KEYS:
        vals = [float(r[key]) for r in products.values() if isinstance(r.get(key), (int, float))]
        out[key] = sum(vals) / len(vals) if vals else None
    return out


def format_discovery_table(discovery: Mapping[str, Any]) -> str:
    """The console table of the demo's discovery: product, K est/true, NMI, ARI, F1, seconds, and the mean."""
    products: Mapping[str, Mapping[str, Any]] = discovery.get("products", {})
    lines = ["defect-type discovery (no labels; K est/true = estimated/true number of defect types)",
             f"{'product':<16}{'K est/true':>11}{'NMI':>8}{'ARI':>8}{'F1':>8}{'seconds':>9}"]
    for name, r in products.items():
        lines.append(f"{name:<16}{k_pair(r):>11}{_num(r.get('nmi')):>8}{_num(r.get('ari')):>8}{_num(r.get('f1')):>8}"
                     f"{r.get('seconds', '-'):>9}")
    if products:
        m = discovery.get("mean") or mean_metrics(products)
        lines.append(f"{'mean':<16}{'':>11}{_num(m.get('nmi')):>8}{_num(m.get('ari')):>8}{_num(m.get('f1')):>8}")
    return "\n".join(lines)


def _class_gallery(records: Sequence[Mapping[str, Any]], per_class: int, thumb: int) -> list[str]:
    parts: list[str] = []
    by_class: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for r in records:
        by_class.setdefault((int(r["class_id"]), str(r["class_name"])), []).append(r)
    for (_, name), members in sorted(by_class.items()):
        counts = Counter(str(r["defect_type"]) for r in members)
        mix = ", ".join(f"{t} {n}" for t, n in counts.most_common())
        parts.append(f"<h4>{html.escape(name)}: {len(members)} image{'s' if len(members) != 1 else ''} "
                     f"<span class='muted'>(true types: {html.escape(mix)})</span></h4><div class='gallery'>")
        for r in sorted(members, key=lambda r: (str(r["defect_type"]), -float(r["score"])))[:per_class]:
            uri = png_data_uri(thumbnail_with_outline(r["path"], r.get("mask"), thumb))
            parts.append(f"<figure><img src='{uri}' alt='{html.escape(Path(r['path']).name)}'>"
                         f"<figcaption>{html.escape(str(r['defect_type']))}<br>score {float(r['score']):.2f}"
                         "</figcaption></figure>")
        if len(members) > per_class:
            parts.append(f"<p class='muted'>... and {len(members) - per_class} more</p>")
        parts.append("</div>")
    return parts


def discovery_section_html(discovery: Mapping[str, Any], images: Mapping[str, Sequence[Mapping[str, Any]]], *,
                           per_class: int = 24, thumb: int = 96) -> str:
    """HTML of the "Discovered defect types" section.

    Args:
        discovery: the demo's ``discovery`` result: ``products`` (name -> evaluate_discovery metrics) and ``mean``.
        images: product -> per-image records of :func:`~protoinspect.training.evaluate_discovery.evaluate_discovery`
            with ``per_image=True`` (path, mask, defect_type, class_id, class_name, score).
        per_class: at most this many thumbnails per discovered class.
        thumb: longest side of a thumbnail in pixels.

    Raises:
        InputError: a per-image record without path, defect_type, class_id, class_name or score.
        DatasetError: an image or mask cannot be read.
    """
    products: Mapping[str, Mapping[str, Any]] = discovery.get("products", {})
    parts = ["<h2>Discovered defect types</h2>",
             ("<p class='muted'>Per product, a defect classifier learned on the anomalous test images without any "
              "labels; it chose the number of classes itself. NMI, ARI and F1 (Hungarian-matched accuracy) compare "
              "its classes with the true defect types. Below each class: its images, captioned with their true type "
              "(yellow: the true defect's outline). A coherent class shows one type.</p>")]
    if products:
        m = discovery.get("mean") or mean_metrics(products)
        parts.append(f"<p>Mean over {len(products)} product{'s' if len(products) != 1 else ''}: NMI {_num(m.get('nmi'))}, "
                     f"ARI {_num(m.get('ari'))}, F1 {_num(m.get('f1'))}</p>")
    for name, r in products.items():
        recs = list(images.get(name, ()))
        for rec in recs:
            if not all(k in rec for k in ("path", "defect_type", "class_id", "class_name", "score")):
                msg = f"discovery record {rec!r} needs path, defect_type, class_id, class_name and score"
                raise InputError(msg)
        parts.append(f"<h3>{html.escape(name)}: K {k_pair(r)} (estimated/true), NMI {_num(r.get('nmi'))}, "
                     f"ARI {_num(r.get('ari'))}, F1 {_num(r.get('f1'))} "
                     f"<span class='muted'>({r.get('num_images', len(recs))} images, {r.get('seconds', '-')} s)</span></h3>")
        parts += _class_gallery(recs, per_class, thumb)
    return "\n".join(parts)
