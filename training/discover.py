"""``protoinspect discover``: review the defect classes of a bundle on new images, propose new classes
from the outliers, and write a new bundle version with the classes named, merged, dropped or added.

    protoinspect discover SOURCE --bundle B [--report DIR]                       # look
    protoinspect discover SOURCE --bundle B --out B2 --accept P1 --name P1=scratch --merge 2,3 --drop 4

SOURCE is a folder of images (or one image), or the ``results.jsonl`` of a ``protoinspect inspect`` run
together with ``--images DIR`` (its non-OK frames are used). Flagged images (detector score >= the
bundle's threshold) are classified; those below the bundle's outlier threshold are clustered into
proposals P1, P2, ... (spherical k-means, K by cosine silhouette). The HTML report shows a gallery per
class and per proposal. Edits write ``--out`` (a new bundle; the old one is never changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from protoinspect.sdk import config_codec
from protoinspect.sdk.bundle import load_bundle, write_bundle
from protoinspect.sdk.errors import ConfigError, InputError, ProtoInspectError, report_error
from protoinspect.sdk.models.loading import load_classifier_net, load_detector_net
from protoinspect.sdk.preprocess import resize_to_rgb
from protoinspect.sdk.stages.masker import MaskerSettings, build_masker
from protoinspect.sdk.stages.region_classifier import bundle_vit
from protoinspect.training.dataset_layout import Sample
from protoinspect.training.discover_report import write_gallery
from protoinspect.training.discovery_config import DiscoveryTrainConfig
from protoinspect.training.discovery_data import DetectedImages, build_discovery_images, forward_detector
from protoinspect.training.image_io import is_image_name, probe_mode, read_dataset_image
from protoinspect.training.kmeans import estimate_num_classes, spherical_kmeans
from protoinspect.training.train_detector import serialize_weights
from protoinspect.training.train_discovery import CLASSIFIER_FILE, predict_images


def list_sources(source: str | Path, images_dir: str | Path | None = None) -> list[Path]:
    """Image paths of a folder / one image, or of the non-OK frames of an inspect run's JSONL."""
    path = Path(source)
    if path.suffix == ".jsonl":
        if images_dir is None:
            raise ConfigError("a JSONL source needs --images DIR, the folder that was inspected")
        out = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("verdict") != "OK":
                out.append(Path(images_dir) / str(rec["id"]))
        return out
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
    if path.is_file():
        return [path]
    raise InputError(f"{path}: not an image, a folder or a results.jsonl")


def apply_edits(prototypes: np.ndarray, classes: list[dict[str, Any]], proposals: dict[str, np.ndarray], *,
                accept: Sequence[str] = (), names: dict[str, str] | None = None, merges: Sequence[Sequence[str]] = (),
                drops: Sequence[str] = ()) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """New (prototypes K' x D, classes) after accepting proposals and renaming, merging and dropping.

    Class references are ids (``"3"``) or accepted proposal names (``"P1"``); merged classes keep
    the first one's name and get the normalised mean prototype; ids are renumbered 0..K'-1.
    """
    names = dict(names or {})
    rows = [{"key": str(c["id"]), "proto": prototypes[i], "name": c["name"], "known": c["known"],
             "discovered": c["discovered"]} for i, c in enumerate(classes)]
    for p in accept:
        if p not in proposals:
            raise ConfigError(f"no proposal {p!r}; proposals: {sorted(proposals)}")
        rows.append({"key": p, "proto": proposals[p], "name": f"novel-{len(rows) + 1}", "known": False,
                     "discovered": True})
    index = {r["key"]: r for r in rows}
    for key in [*names, *[k for group in merges for k in group], *drops]:
        if key not in index:
            raise ConfigError(f"unknown class {key!r}: use a class id {sorted(k for k in index if not k.startswith('P'))} "
                              "or an accepted proposal")
    for key, name in names.items():
        index[key]["name"] = name
    for group in merges:
        head, *rest = (index[k] for k in group)
        head["proto"] = np.sum([r["proto"] for r in (head, *rest)], axis=0)
        head["known"] = any(r["known"] for r in (head, *rest))
        for r in rest:
            r["dropped"] = True
    for key in drops:
        index[key]["dropped"] = True
    kept = [r for r in rows if not r.get("dropped")]
    if not kept:
        raise ConfigError("the edits leave no class")
    protos = np.stack([r["proto"] / max(np.linalg.norm(r["proto"]), 1e-12) for r in kept]).astype(np.float32)
    return protos, [{"id": i, "name": r["name"], "known": bool(r["known"]), "discovered": bool(r["discovered"])}
                    for i, r in enumerate(kept)]


def discover(source: str | Path, bundle: str | Path, *, images_dir: str | Path | None = None,
             report_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Classify the flagged images of ``source`` and cluster the outliers into proposals (see module doc)."""
    b = load_bundle(bundle)
    net, clf = load_detector_net(b).eval(), load_classifier_net(b)  # BundleError when it has no classifier
    section = b.manifest.discovery
    settings = section.settings
    cfg = DiscoveryTrainConfig.from_manifest(b.manifest)
    spec = b.manifest.preprocess_spec
    paths = list_sources(source, images_dir)
    if not paths:
        raise InputError(f"{source}: no images")
    images = np.stack([resize_to_rgb(read_dataset_image(p, probe_mode(p)), spec, "rgb") for p in paths])
    maps, scores, _ = forward_detector(net, images, spec)
    flagged = [i for i in range(len(paths)) if scores[i] >= float(b.manifest.thresholds["image"])]
    samples = tuple(Sample(p, 1, "unknown", None) for p in paths)
    detected = DetectedImages(samples, images, maps.astype(np.float32), scores.astype(np.float32))
    masker = build_masker(MaskerSettings(kind=cfg.masker, color_order="rgb"))
    obj = [None if cfg.masker == "none" else np.asarray(masker.mask(im), bool) for im in images]
    with torch.no_grad():
        crops = build_discovery_images(detected, flagged, net, spec, settings, cfg, obj, progress,
                                       variants=("identity",), jitters=1, vit=bundle_vit(b, settings),
                                        pixel_threshold=float(b.manifest.thresholds["pixel"]))
    preds, emb = predict_images(clf, crops, settings)
    outliers = [j for j, p in enumerate(preds) if p.score < settings.reject_threshold]
    proposals: dict[str, np.ndarray] = {}
    members: dict[str, list[int]] = {}
    if outliers:
        rng = np.random.default_rng(0)
        k = estimate_num_classes(emb[outliers], cfg.k_max, rng)[0] if len(outliers) >= 4 else 1
        labels, centres = spherical_kmeans(emb[outliers], k, rng)
        for c in range(k):
            proposals[f"P{c + 1}"] = centres[c]
            members[f"P{c + 1}"] = [flagged[outliers[j]] for j in np.flatnonzero(labels == c)]
    groups: dict[str, list[int]] = {str(c["name"]): [] for c in b.manifest.classes}
    for j, p in enumerate(preds):
        if j not in outliers:
            groups[b.manifest.classes[p.class_id]["name"]].append(flagged[j])
    result = {"images": len(paths), "flagged": len(flagged), "outliers": len(outliers),
              "classes": {k: len(v) for k, v in groups.items()}, "proposals": {k: len(v) for k, v in members.items()},
              "_proposal_vectors": proposals, "_bundle": b}
    if report_dir is not None:
        gallery = {**{f"class {c['id']}: {c['name']}": groups[c["name"]] for c in b.manifest.classes},
                   **{f"proposal {k}": v for k, v in members.items()}}
        result["report"] = str(write_gallery(report_dir, paths, images, maps, gallery, title=f"Discovery on {source}"))
    return result


def write_edited_bundle(found: dict[str, Any], out: str | Path,
                        export_classifier: Callable[[Path], Any] | None = None, **edits: Any) -> Path:
    """Write the bundle of ``found`` with edited classes to ``out`` (a new bundle; the old one is kept).

    ``export_classifier`` (e.g. :func:`protoinspect.export.classifier_export.export_classifier_onnx`,
    wired by ``protoinspect discover``) then adds ``classifier.onnx`` to the new bundle.
    """
    b = found["_bundle"]
    clf = load_classifier_net(b)
    protos, classes = apply_edits(clf.prototypes.detach().numpy(), list(b.manifest.classes), found["_proposal_vectors"],
                                  **edits)
    clf.set_prototypes(torch.from_numpy(protos))
    m = b.manifest
    section = m.discovery
    section = dataclasses.replace(section, classifier=dataclasses.replace(section.classifier, config=clf.config),
                                  edits=[*section.edits, config_codec.encode(dict(edits))])
    files = {name: b.path / name for name in m.files if name != "classifier.onnx"}
    files[CLASSIFIER_FILE] = serialize_weights(clf)
    extra = {k: v for k, v in m.extra.items() if k != "classifier_onnx"}
    write_bundle(out, manifest_fields={
        "producer": {"command": "protoinspect discover"}, "preprocess": m.preprocess, "model": m.model,
        "thresholds": m.thresholds, "classes": classes, "datasets": m.datasets,
        "extra": {**extra, "discovery": config_codec.to_dict(section), "derived_from": m.bundle_id}}, files=files)
    if export_classifier is not None:
        export_classifier(Path(out))
    return Path(out)


def main(argv: Sequence[str] | None = None, *, export_classifier: Callable[[Path], Any] | None = None) -> int:
    """CLI entry point (see the module docstring); ``export_classifier`` as in :func:`write_edited_bundle`."""
    p = argparse.ArgumentParser(prog="protoinspect discover", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="image folder, image, or results.jsonl of an inspect run")
    p.add_argument("--bundle", required=True, help="bundle with a defect classifier")
    p.add_argument("--images", help="folder the JSONL's frames came from")
    p.add_argument("--report", help="write the gallery report here (default: SOURCE's folder / discover-report)")
    p.add_argument("--out", help="write the edited classes into this new bundle")
    p.add_argument("--accept", nargs="*", default=[], metavar="P", help="proposals to add as classes (P1 ...)")
    p.add_argument("--name", action="append", default=[], metavar="ID=NAME", help="rename a class or accepted proposal")
    p.add_argument("--merge", action="append", default=[], metavar="ID,ID", help="merge classes (first keeps its name)")
    p.add_argument("--drop", nargs="*", default=[], metavar="ID", help="classes to drop")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        names = dict(item.split("=", 1) for item in args.name if "=" in item)
        if len(names) != len(args.name):
            raise ConfigError(f"--name needs ID=NAME, got {args.name}")
        merges = [tuple(m.split(",")) for m in args.merge]
        edits = {"accept": args.accept, "names": names, "merges": merges, "drops": args.drop}
        if any(edits.values()) and not args.out:
            raise ConfigError("edits (--accept/--name/--merge/--drop) need --out NEW_BUNDLE; the old bundle is kept")
        report_dir = args.report or str(Path(args.source).parent / "discover-report")
        found = discover(args.source, args.bundle, images_dir=args.images, report_dir=report_dir,
                         progress=not args.quiet)
        print(f"{found['images']} images, {found['flagged']} flagged, {found['outliers']} outliers")
        print("classes:   " + ", ".join(f"{k} ({v})" for k, v in found["classes"].items()))
        print("proposals: " + (", ".join(f"{k} ({v})" for k, v in found["proposals"].items()) or "none"))
        print(f"report: {found['report']}")
        if args.out:
            out = write_edited_bundle(found, args.out, export_classifier, **edits)
            classes = load_bundle(out).manifest.classes
            print(f"wrote {out}: " + ", ".join(f"{c['id']}={c['name']}" for c in classes))
    except ProtoInspectError as exc:
        return report_error(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
