"""Train the defect classifier (novel-class discovery) on top of a detector bundle.

    python -m protoinspect.training.train_discovery --data DIR --bundle BUNDLE_DIR [--out NEW_BUNDLE] [--known TYPE ...]
        [--exclude-type TYPE] [--num-novel K] [--set key=value ...]

Known types (0..K) are labelled by their folder; the unlabelled anomalies are the test images our
detector flags (score >= the bundle's image threshold) or, when it flags fewer than
``min_unlabelled`` (16, or a quarter of the unlabelled test images), the highest-scoring ones up to
that count (:mod:`protoinspect.training.discovery_selection`); they are described by our detector's
maps (MEBin) unless ``--set anomaly_prior=gt``. Training: two-view contrastive learning, then the number of novel
classes is estimated (cosine silhouette of spherical k-means on the image embeddings, unless
``--num-novel``), vMF prototypes are initialised from the class means / cluster centres and learned
with the labels and balanced self-labelling (Sinkhorn-Knopp). The outlier threshold is a low quantile
of the training images' vMF scores. The result is a new bundle: the detector's files plus
``classifier.safetensors`` (and ``classifier.onnx``); the detector bundle is left untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from protoinspect.sdk import config_codec
from protoinspect.sdk.bundle import load_bundle, write_bundle
from protoinspect.sdk.errors import DatasetError, ProtoInspectError, report_error
from protoinspect.sdk.manifest_sections import ClassifierRecord, DiscoverySection, DiscoveryTraining
from protoinspect.sdk.models.defect_classifier import DefectClassifierNet
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings
from protoinspect.sdk.stages.discovery_merge import MergedPrediction, area_weights, merge_crops
from protoinspect.sdk.stages.masker import MaskerSettings, build_masker
from protoinspect.sdk.stages.region_descriptors import standardise, standardise_rows
from protoinspect.training.datasets import load_dataset
from protoinspect.training.discovery_config import DiscoveryTrainConfig, discovery_config
from protoinspect.training.discovery_data import (
    DetectedImages,
    DiscoveryImage,
    build_discovery_images,
    calibrate_settings,
    detect,
    with_reject_threshold,
)
from protoinspect.training.discovery_losses import info_nce, sinkhorn, supcon
from protoinspect.training.discovery_pretrain import synthetic_taxonomy_images
from protoinspect.training.discovery_selection import check_class_count, check_discovery_inputs, select_unlabelled
from protoinspect.training.k_estimation import estimate_k
from protoinspect.training.kmeans import estimate_num_classes, spherical_kmeans
from protoinspect.training.train_detector import serialize_weights

CLASSIFIER_FILE = "classifier.safetensors"
VIT_FILE = "vit.safetensors"


def holdout_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit, held-out) indices: ``fraction`` of each label group (known types, and the unlabelled -1),
    rounded down, held out of training to calibrate the outlier threshold; groups of fewer than 4 images
    stay whole in training."""
    rng = np.random.default_rng(seed + 7)
    held: list[int] = []
    for y in sorted(set(labels)):
        members = [i for i, v in enumerate(labels) if v == y]
        n = int(len(members) * fraction) if len(members) >= 4 else 0
        held += [int(i) for i in rng.choice(members, size=n, replace=False)] if n else []
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def _subset(detected: DetectedImages, idx: Sequence[int]) -> DetectedImages:
    sel = np.asarray(idx, int)
    return DetectedImages(tuple(detected.samples[i] for i in sel), detected.images[sel], detected.maps[sel],
                          detected.scores[sel])


class _Views:
    """Draws batches of crops and two augmented versions of each."""

    def __init__(self, images: list[DiscoveryImage], labels: list[int], cfg: DiscoveryTrainConfig,
                 settings: DiscoverySettings) -> None:
        self.images = images
        self.cfg = cfg
        self.descriptors = [image_descriptors(im, settings) for im in images]
        self.rng = np.random.default_rng(cfg.seed + 1)
        pool = [(i, k) for i, im in enumerate(images) for k in range(im.tokens.shape[1])]
        self.labelled = [(i, k) for i, k in pool if labels[i] >= 0]
        self.unlabelled = [(i, k) for i, k in pool if labels[i] < 0]
        self.labels = labels

    def _augment(self, tokens: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(tokens.astype(np.float32))
        if self.cfg.feature_noise > 0:
            x = x + torch.randn_like(x) * x.std(dim=(2, 3), keepdim=True) * self.cfg.feature_noise
        if self.cfg.token_drop > 0:
            keep = torch.rand(x.shape[0], 1, x.shape[2], x.shape[3]) >= self.cfg.token_drop
            x = x * keep
        return x

    def batch(self) -> tuple[torch.Tensor, ...]:
        """(view1 tokens, view1 regions, view2 tokens, view2 regions, labels (-1 = unlabelled), descriptors
        of the picked crops or None)."""
        b = self.cfg.batch
        picks: list[tuple[int, int]] = []
        if self.labelled and self.unlabelled:
            picks += [self.labelled[j] for j in self.rng.integers(len(self.labelled), size=b // 2)]
            picks += [self.unlabelled[j] for j in self.rng.integers(len(self.unlabelled), size=b - b // 2)]
        else:
            pool = self.labelled or self.unlabelled
            picks += [pool[j] for j in self.rng.integers(len(pool), size=b)]
        out = []
        for _ in range(2):
            toks, regs = [], []
            for i, k in picks:
                v = int(self.rng.integers(self.images[i].tokens.shape[0]))
                toks.append(self.images[i].tokens[v, k])
                regs.append(self.images[i].regions[v, k])
            out += [self._augment(np.stack(toks)), torch.from_numpy(np.stack(regs).astype(np.float32))]
        labels = torch.tensor([self.labels[i] for i, _ in picks])
        desc = None if self.descriptors[0] is None else torch.stack([self.descriptors[i][k] for i, k in picks])
        return out[0], out[1], out[2], out[3], labels, desc


def image_descriptors(im: DiscoveryImage, settings: DiscoverySettings) -> torch.Tensor | None:
    """The standardised descriptors (n x D) of ``im``'s crops, None for a classifier without them."""
    if not settings.uses_descriptors:
        return None
    return torch.from_numpy(standardise_rows(im.descriptors, settings.descriptor_mean, settings.descriptor_scale))


def with_descriptor_stats(settings: DiscoverySettings, images: Sequence[DiscoveryImage]) -> DiscoverySettings:
    """``settings`` with the descriptor standardisation of the training crops (NaN rows left out).

    Raises:
        DatasetError: no crop of any image holds an anomalous pixel.
    """
    raw = np.concatenate([im.descriptors for im in images])
    raw = raw[~np.isnan(raw).any(axis=1)]
    if len(raw) == 0:
        raise DatasetError("no crop of the discovery images holds an anomalous pixel: no region descriptors")
    _, stats = standardise(raw)
    return dataclasses.replace(settings, descriptor_mean=tuple(float(v) for v in stats.mean),
                               descriptor_scale=tuple(float(v) for v in stats.scale))


@torch.no_grad()
def predict_images(model: DefectClassifierNet, images: Sequence[DiscoveryImage], settings: DiscoverySettings
                   ) -> tuple[list[MergedPrediction], np.ndarray]:
    """Merged predictions (exact crops, version 0) and unit image embeddings (n x D) of ``images``."""
    model.eval()
    temperature = settings.crops.merge_temperature
    preds, embeds = [], []
    for im in images:
        z, logits = model(torch.from_numpy(im.tokens[0].astype(np.float32)),
                          torch.from_numpy(im.regions[0].astype(np.float32)), image_descriptors(im, settings))
        merged = merge_crops(logits.numpy(), im.crops.areas, model.config.kappa, temperature)
        alpha = area_weights(im.crops.areas, temperature)
        e = (alpha[:, None] * z.numpy()).sum(0)
        preds.append(merged)
        embeds.append(e / max(np.linalg.norm(e), 1e-12))
    return preds, np.stack(embeds) if embeds else np.zeros((0, model.config.output_dim))


def _optimizer(model: DefectClassifierNet, cfg: DiscoveryTrainConfig, steps: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=cfg.lr * 0.01)


def _run_steps(model: DefectClassifierNet, views: _Views, cfg: DiscoveryTrainConfig, steps: int, stage: str,
               num_known: int, progress: bool) -> list[float]:
    """Train ``steps`` steps of ``stage`` ("pretrain" and "contrastive": InfoNCE + SupCon on the labels;
    "prototype": + classification and self-labelling); returns the loss per step."""
    if steps == 0:
        return []
    opt, sched = _optimizer(model, cfg, steps)
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"discovery {stage}", unit="step", leave=False)
    losses = []
    for _ in it:
        model.train()
        t1, r1, t2, r2, labels, desc = views.batch()
        f1, f2 = model.features(t1, r1), model.features(t2, r2)
        p1, p2 = model.project(f1), model.project(f2)
        lab = labels >= 0
        loss = info_nce(p1, p2, cfg.temperature)
        if lab.any():
            loss = loss + supcon(torch.cat([p1[lab], p2[lab]]), torch.cat([labels[lab], labels[lab]]),
                                 cfg.supcon_temperature)
        if stage == "prototype":
            loss = loss * cfg.contrastive_weight
            (_, l1), (_, l2) = model.classify(f1, desc), model.classify(f2, desc)
            if lab.any():
                loss = loss + 0.5 * (F.cross_entropy(l1[lab], labels[lab]) + F.cross_entropy(l2[lab], labels[lab]))
            unl = ~lab
            if unl.sum() > 1 and l1.shape[1] > num_known:
                n1, n2 = l1[unl][:, num_known:], l2[unl][:, num_known:]
                # balanced targets from the cosines (logits / kappa), as SwAV's scores
                q1 = sinkhorn(n1.detach() / model.config.kappa, cfg.sinkhorn_epsilon, cfg.sinkhorn_iters)
                q2 = sinkhorn(n2.detach() / model.config.kappa, cfg.sinkhorn_epsilon, cfg.sinkhorn_iters)
                loss = loss + 0.5 * (-(q1 * F.log_softmax(n2, 1)).sum(1).mean() - (q2 * F.log_softmax(n1, 1)).sum(1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def train_discovery(data: str | Path, bundle: str | Path, out: str | Path, cfg: DiscoveryTrainConfig | None = None,
                    *, known: Sequence[str] = (), exclude: Sequence[str] = (), num_novel: int | None = None,
                    flag_threshold: float | None = None, overwrite: bool = False, progress: bool = True,
                    command: str = "") -> Path:
    """Train a classifier for ``bundle``'s detector on ``data`` and write the bundle ``out`` (see module doc).

    ``flag_threshold``: detector score from which an unlabelled test image counts as an anomaly
    (None: the bundle's calibrated image threshold); below ``cfg.min_unlabelled`` flagged images the
    highest-scoring ones are taken (:func:`~protoinspect.training.discovery_selection.select_unlabelled`).

    Raises:
        ConfigError: unknown or overlapping ``known`` / ``exclude`` types, every defect type known or
            excluded, ``num_novel`` < 1, above the unlabelled images, or a one-class classifier.
        DatasetError: no defective test images, or too few unlabelled test images to learn from.
        BundleError: ``bundle`` invalid (e.g. detector weights missing, not a PrototypeDetectorNet),
            or ``out`` exists without ``overwrite``.
    """
    cfg = cfg or DiscoveryTrainConfig()
    t0 = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    det = load_bundle(bundle)
    net = load_detector_net(det).eval()
    spec = det.manifest.preprocess_spec
    ds = load_dataset(data)
    check_discovery_inputs(ds.root, ds.test, known, exclude, num_novel)
    test = [s for s in ds.test if s.defect_type not in exclude]
    detected = detect(test, ds.channels, net, spec, progress)
    threshold = float(det.manifest.thresholds["image"]) if flag_threshold is None else float(flag_threshold)
    known = list(known)
    lab_idx = [i for i, s in enumerate(test) if s.defect_type in known]
    chosen = select_unlabelled(detected.scores, [i for i, s in enumerate(test) if s.defect_type not in known],
                               threshold, cfg)
    unl_idx = list(chosen.indices)
    check_class_count(len(known), num_novel, len(unl_idx), cfg)
    if progress:
        print(chosen.describe(), file=sys.stderr)
    idx = lab_idx + unl_idx
    sub = _subset(detected, idx)
    settings = calibrate_settings(sub, cfg)
    masker = build_masker(MaskerSettings(kind=cfg.masker, color_order="rgb"))
    obj = [None if cfg.masker == "none" else np.asarray(masker.mask(im), bool) for im in sub.images]
    vit = None
    if cfg.vit_weights:
        from protoinspect.sdk.models.vit_tokens import load_vit_weights, vit_from_state_dict

        vit = vit_from_state_dict(load_vit_weights(cfg.vit_weights))
    pixel_threshold = float(det.manifest.thresholds["pixel"])
    images = build_discovery_images(sub, range(len(idx)), net, spec, settings, cfg, obj, progress, vit=vit,
                                    pixel_threshold=pixel_threshold)
    labels = [known.index(s.defect_type) if s.defect_type in known else -1 for s in sub.samples]
    fit, held = holdout_split(labels, cfg.reject_holdout_fraction, cfg.seed)
    if cfg.descriptors:
        settings = with_descriptor_stats(settings, [images[i] for i in fit])
    fit_images, fit_labels = [images[i] for i in fit], [labels[i] for i in fit]

    ccfg = dataclasses.replace(cfg.classifier, in_channels=int(images[0].tokens.shape[2]),
                               num_classes=max(1, len(known)),
                               descriptor_dim=len(settings.descriptor_mean))
    model = DefectClassifierNet(ccfg)
    hist_pre: list[float] = []
    if cfg.pretrain_steps:
        syn_images, syn_labels = synthetic_taxonomy_images(ds.train, ds.channels, net, spec, settings, cfg,
                                                           pixel_threshold, progress, vit=vit)
        hist_pre = _run_steps(model, _Views(syn_images, syn_labels, cfg, settings), cfg, cfg.pretrain_steps,
                              "pretrain", len(known), progress)
    views = _Views(fit_images, fit_labels, cfg, settings)
    hist_a = _run_steps(model, views, cfg, cfg.contrastive_steps, "contrastive", len(known), progress)

    _, emb = predict_images(model, fit_images, settings)
    unl = np.asarray([i for i, y in enumerate(fit_labels) if y < 0])
    rng = np.random.default_rng(cfg.seed)
    silhouettes: dict[int, float] = {}
    picks: dict[str, int] = {}
    if num_novel is None:
        k_novel, silhouettes = estimate_num_classes(emb[unl], cfg.k_max, rng)
        upper = min(cfg.k_max, len(unl) - 1)
        if upper >= 2:
            est = estimate_k(emb[unl], 2, upper, method="consensus", seed=cfg.seed)
            picks = {**{m: int(k) for m, k in est.picks.items()}, "consensus": int(est.k), "silhouette_cosine": int(k_novel)}
            if cfg.k_method != "silhouette_cosine":
                k_novel = picks[cfg.k_method]
    else:
        k_novel = min(num_novel, len(unl))
    _, centres = spherical_kmeans(emb[unl], k_novel, rng)
    protos = [emb[[i for i, y in enumerate(fit_labels) if y == c]].mean(0) for c in range(len(known))] + list(centres)
    model.set_prototypes(torch.from_numpy(np.stack(protos).astype(np.float32)))
    hist_b = _run_steps(model, views, cfg, cfg.prototype_steps, "prototype", len(known), progress)

    calib = [images[i] for i in held] if held else fit_images
    preds, _ = predict_images(model, calib, settings)
    scores = np.asarray([p.score for p in preds])
    settings = with_reject_threshold(settings, float(np.quantile(scores, cfg.reject_quantile)))
    classes = [{"id": i, "name": n, "known": True, "discovered": False} for i, n in enumerate(known)]
    classes += [{"id": len(known) + j, "name": f"novel-{j + 1}", "known": False, "discovered": True}
                for j in range(k_novel)]
    section = DiscoverySection(
        settings=settings,
        classifier=ClassifierRecord(config=model.config, weights=CLASSIFIER_FILE),
        training=DiscoveryTraining(
            config=cfg.to_dict(), data=str(Path(data).resolve()), known_types=known, excluded_types=list(exclude),
            num_labelled=len(lab_idx), num_unlabelled=len(unl_idx), detector_bundle_id=det.manifest.bundle_id,
            num_held_out=len(held),
            flag_threshold=threshold, num_flagged=chosen.num_flagged, num_added_by_rule=chosen.num_added,
            score_cut=chosen.score_cut, k_novel_estimated=int(k_novel) if num_novel is None else None,
            num_novel_given=num_novel, silhouettes={str(k): float(v) for k, v in silhouettes.items()},
            k_method=cfg.k_method if num_novel is None else None, k_picks=picks,
            loss_contrastive_last=float(np.mean(hist_a[-20:])) if hist_a else None,
            loss_pretrain_last=float(np.mean(hist_pre[-20:])) if hist_pre else None,
            loss_prototype_last=float(np.mean(hist_b[-20:])) if hist_b else None,
            seconds=round(time.perf_counter() - t0, 1)),
    )
    m = det.manifest
    files = {name: det.path / name for name in m.files}
    files.pop("classifier.onnx", None)
    files[CLASSIFIER_FILE] = serialize_weights(model)
    files.pop(VIT_FILE, None)
    if vit is not None:
        files[VIT_FILE] = serialize_weights(vit)
    extra = {k: v for k, v in m.extra.items() if k not in ("discovery", "classifier_onnx")}
    write_bundle(out, manifest_fields={
        "producer": {"command": command or "train_discovery()"}, "preprocess": m.preprocess, "model": m.model,
        "thresholds": m.thresholds, "classes": classes, "datasets": m.datasets,
        "extra": {**extra, "discovery": config_codec.to_dict(section), "derived_from": m.bundle_id},
    }, files=files, overwrite=overwrite)
    return Path(out)


def main(argv: Sequence[str] | None = None, *, export_classifier: Callable[[Path], Any] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.train_discovery", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (MVTec layout or MTD)")
    p.add_argument("--bundle", required=True, help="detector bundle (left unchanged)")
    p.add_argument("--out", help="new bundle with the classifier (default: BUNDLE-discovery)")
    p.add_argument("--known", nargs="*", default=[], metavar="TYPE", help="labelled known defect types")
    p.add_argument("--exclude-type", action="append", default=[], metavar="TYPE",
                   help="leave this defect type out entirely (to measure outlier rejection on it)")
    p.add_argument("--num-novel", type=int, help="number of novel classes (default: estimated)")
    p.add_argument("--flag-threshold", type=float,
                   help="detector score from which a test image is an unlabelled anomaly (default: the bundle's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--no-export", action="store_true", help="do not export classifier.onnx")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out bundle")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = args.out or f"{str(args.bundle).rstrip('/')}-discovery"
    try:
        cfg = discovery_config(args.set)
        path = train_discovery(args.data, args.bundle, out, cfg, known=args.known, exclude=args.exclude_type,
                               num_novel=args.num_novel, flag_threshold=args.flag_threshold, overwrite=args.overwrite, progress=not args.quiet,
                               command=" ".join(["python -m protoinspect.training.train_discovery", *(argv or sys.argv[1:])]))
        if export_classifier is not None and not args.no_export:
            export_classifier(Path(path))
        elif not args.no_export:
            print(f"classifier.onnx not exported (training alone): run `protoinspect export {path}` "
                  "or train with `protoinspect train-discovery`")
    except ProtoInspectError as exc:
        return report_error(exc)
    manifest = load_bundle(path).manifest
    names = ", ".join(c["name"] for c in manifest.classes)
    tr = manifest.discovery.training
    print(f"wrote {path}: {len(manifest.classes)} classes ({names}); novel estimated: {tr.k_novel_estimated}; "
          f"unlabelled anomalies: {tr.num_unlabelled} ({tr.num_flagged} flagged at score >= {tr.flag_threshold:.4g}, "
          f"{tr.num_added_by_rule} added by min_unlabelled; effective score cut {tr.score_cut:.4g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
