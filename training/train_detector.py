"""Train the multi-class prototype detector on defect-free images and write a model bundle.

    python -m protoinspect.training.train_detector --data DIR [--data DIR ...] --out BUNDLE_DIR [--config F] [--set k=v]

One joint phase (see :class:`protoinspect.training.config.DetectorTrainConfig`): synthetic anomalies
are pasted onto normal crops; the prototype decoder learns to restore the clean features, the anomaly
head learns to segment the anomaly from the features and their reconstruction, and the encoder learns
through the head. Then the map normalisation and thresholds are calibrated on held-out normal images.
Presets: ``--preset fast`` (the README demo), ``default`` (about 30 minutes for one data set on 2 CPU
cores), ``long`` (a GPU). Under ``torchrun`` it trains data-parallel (DDP; gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protoinspect.sdk.bundle import write_bundle
from protoinspect.sdk.errors import report_error
from protoinspect.sdk.errors import BundleError, ConfigError, DatasetError, ProtoInspectError
from protoinspect.sdk.models.encoder import load_pretrained_weights
from protoinspect.sdk.models.loading import INFERENCE_SETTINGS
from protoinspect.sdk.models.prototype_detector import PrototypeDetectorNet
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.training.batches import BatchSampler, images_to_tensor, load_resized
from protoinspect.training.calibration import calibrate_detector
from protoinspect.training.checkpoint import load_checkpoint, save_checkpoint
from protoinspect.training.config import DetectorTrainConfig, load_train_config
from protoinspect.training.datasets import Dataset, load_dataset, validate_dataset
from protoinspect.training.distributed import DistributedContext, setup_distributed
from protoinspect.training.losses import dice_loss, focal_loss, reconstruction_loss
from protoinspect.training.object_masks import object_masks

log = logging.getLogger("protoinspect.train")


def _lr_at(step: int, total: int, base: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def split_holdout(ds: Dataset, cfg: DetectorTrainConfig) -> tuple[list, list]:
    """Deterministically hold out normal training images of one dataset for calibration."""
    n = len(ds.train)
    n_hold = max(cfg.min_holdout, int(round(cfg.holdout_fraction * n)))
    if n - n_hold < 1:
        msg = f"{ds.root}: {n} training images are too few to hold out {n_hold} for calibration (need more images or a smaller min_holdout)"
        raise DatasetError(msg)
    order = np.random.default_rng(cfg.seed).permutation(n)
    hold = sorted(order[:n_hold].tolist())
    held = set(hold)
    return [ds.train[i] for i in range(n) if i not in held], [ds.train[i] for i in hold]


def _progress(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)


def _detector_loss(model: PrototypeDetectorNet, sampler: BatchSampler, cfg: DetectorTrainConfig,
                   device: torch.device, amp: bool) -> torch.Tensor:
    """One training step's loss: clean-feature restoration + coherence + anomaly segmentation."""
    clean, augmented, mask = (t.to(device, non_blocking=True) for t in sampler.training_batch(cfg.batch, cfg.crop, cfg.anomaly_fraction))
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        features = model.encoder(augmented)
        if cfg.restore_clean:
            with torch.no_grad():
                target = model.encoder(clean)
        else:
            target = features
        target = [t.detach().float() for t in target]
        inputs = [f.detach() for f in features]  # the reconstruction does not train the encoder
        recon, tokens = model.decoder.forward_with_tokens(inputs)
        logits = model.head_logits(features, [r.detach() for r in recon])
    recon = [r.float() for r in recon]
    loss = cfg.recon_weight * reconstruction_loss(target, recon, torch.ones(len(recon), device=device) / len(recon))
    loss = loss + cfg.constraint_weight * model.decoder.prototype_constraint(tokens.float())
    logits = logits.float()
    seg_target = F.adaptive_avg_pool2d(mask, logits.shape[-2:])
    return loss + focal_loss(logits, seg_target) * 10 + dice_loss(logits, seg_target)


def _run_phase(phase: str, desc: str, params: list, steps: int, base_lr: float, loss_fn: Any,
               sampler: BatchSampler, model: torch.nn.Module, cfg: DetectorTrainConfig,
               state: dict | None, work_dir: Path, fingerprint: dict, progress: bool, dist: DistributedContext) -> None:
    """One training phase: AdamW with warm-up + cosine, progress bar, periodic resumable checkpoints
    (written by rank 0 only)."""
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=cfg.weight_decay)
    start = 0
    if state and state["phase"] == phase:
        opt.load_state_dict(state["optim"])
        start = state["step"]
    bar = _progress(steps, desc, progress and dist.is_main, start)
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, base_lr)
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if step % 10 == 0 or step + 1 == steps:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps and dist.is_main:
            _save(work_dir, dist.unwrap(model), opt, phase, step + 1, sampler, fingerprint)
    bar.close()


def _save(work_dir, model, opt, phase, step, sampler, fingerprint) -> None:
    state = {
        "phase": phase,
        "step": step,
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        # numpy's PCG64 state holds 128-bit ints: JSON keeps them exact and weights_only-safe
        "sampler": json.dumps(sampler.state()),
        "torch_rng": torch.get_rng_state(),
    }
    save_checkpoint(work_dir, state, fingerprint)


def _restore_rng(sampler: BatchSampler, saved: str) -> None:
    sampler.restore(json.loads(saved))


def batches_of(images: np.ndarray, spec: PreprocessSpec, size: int = 16) -> list[torch.Tensor]:
    """N x H x W x 3 uint8 images -> list of normalised B x 3 x H x W tensors."""
    return [images_to_tensor(images[i : i + size], spec) for i in range(0, len(images), size)]


def serialize_weights(model: torch.nn.Module) -> bytes:
    """The model's state dict as safetensors bytes (the bundle's weights file)."""
    from safetensors.torch import save as save_safetensors

    return save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()})


def train_detector(
    data: Sequence[str | Path],
    out: str | Path,
    config: DetectorTrainConfig | None = None,
    *,
    data_format: str = "auto",
    work_dir: str | Path | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Train one detector on the normal images of every dataset in ``data`` and write a bundle.

    Args:
        data: dataset folders (MVTec layout or MTD); one model serves all of them.
        out: bundle directory to create.
        config: training configuration (defaults if None).
        data_format: ``auto``, ``mvtec`` or ``mtd`` for every folder.
        work_dir: where resumable checkpoints go (default ``<out>.work``).
        resume: continue from a checkpoint in ``work_dir`` if one exists.
        overwrite: replace an existing bundle at ``out`` (the old one is kept until the new is complete).
        progress: show progress bars.
        command: the command line recorded in the manifest.

    Returns:
        The bundle directory.
    """
    cfg = config or DetectorTrainConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        msg = f"bundle {out} already exists; pass --overwrite or choose another --out"
        raise BundleError(msg)
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    dist = setup_distributed(cfg.device)
    try:
        return _train(data, out, cfg, dist, data_format=data_format, work=work, resume=resume, overwrite=overwrite,
                      progress=progress, command=command)
    finally:
        dist.close()


class _TrainStep(torch.nn.Module):
    """The model plus its training loss as one module, so DDP sees every parameter in one forward."""

    def __init__(self, model: PrototypeDetectorNet, sampler: BatchSampler, cfg: DetectorTrainConfig,
                 device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.sampler = sampler
        self.cfg = cfg
        self.device = device

    def forward(self) -> torch.Tensor:
        return _detector_loss(self.model, self.sampler, self.cfg, self.device, amp=self.device.type == "cuda")


def _train(data: Sequence[str | Path], out: Path, cfg: DetectorTrainConfig, dist: DistributedContext, *,
           data_format: str, work: Path, resume: bool, overwrite: bool, progress: bool, command: str | None) -> Path:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    datasets = [load_dataset(d, data_format) for d in data]
    if not datasets:
        msg = "give at least one --data folder"
        raise ConfigError(msg)
    for ds in datasets:
        validate_dataset(ds)
    spec = PreprocessSpec(image_size=cfg.image_size)
    train_pools, hold_pools, ds_info, placements = [], [], [], []
    for ds in datasets:
        train, hold = split_holdout(ds, cfg)
        pool = load_resized(train, ds.channels, spec, progress and dist.is_main)
        train_pools.append(pool)
        hold_pools.append(load_resized(hold, ds.channels, spec, progress and dist.is_main))
        masks, placement = object_masks(pool, cfg.anomaly_placement)
        placements.append(masks)
        ds_info.append({"name": ds.name, "root": str(ds.root), "format": ds.format, "channels": ds.channels,
                        "num_train": len(train), "num_holdout": len(hold), **placement})
        if dist.is_main:
            log.info("%s: %d training, %d held-out normal images; synthetic anomalies %s", ds.name, len(train),
                     len(hold), "on the object" if masks is not None else "anywhere")
    # inference-only settings do not change training, so a checkpoint stays valid across them
    train_relevant = cfg.to_dict()
    train_relevant["detector"] = {k: v for k, v in train_relevant["detector"].items() if k not in INFERENCE_SETTINGS}
    train_relevant.pop("device", None)
    fingerprint = {"config": train_relevant, "datasets": ds_info, "world_size": dist.world_size}
    state = load_checkpoint(work, fingerprint) if resume else None

    model = PrototypeDetectorNet(cfg.detector)
    if not cfg.train_encoder and not cfg.pretrained:
        log.warning("train_encoder=false without pretrained weights: the encoder stays RANDOM (an ablation)")
    if cfg.pretrained:
        load_pretrained_weights(model.encoder, cfg.detector.encoder, cfg.pretrained)
    sampler = BatchSampler(train_pools, spec, cfg.seed + 1000 * dist.rank, placements)
    if state:
        model.load_state_dict(state["model"])
        if dist.is_main:
            _restore_rng(sampler, state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming at step %d from %s", state["step"], work)
    model.to(dist.device)
    model.train()
    if not cfg.train_encoder:  # frozen: no gradients, no BatchNorm statistics updates
        model.encoder.eval()
        for prm in model.encoder.parameters():
            prm.requires_grad_(False)
    step_module = dist.wrap(_TrainStep(model, sampler, cfg, dist.device))
    params = [prm for prm in model.parameters() if prm.requires_grad]
    _run_phase("detector", "detector (synthetic anomalies -> restore + discriminate)", params, cfg.steps, cfg.lr,
               step_module, sampler, model, cfg, state, work, fingerprint, progress, dist)
    train_seconds = time.perf_counter() - t0
    dist.barrier()
    if not dist.is_main:
        return out
    model = model.to("cpu").eval()
    hold_batches = [b for pool in hold_pools for b in batches_of(pool, spec)]
    thresholds = calibrate_detector(model, hold_batches, cfg.threshold_quantile, cfg.pixel_quantile)
    weights = serialize_weights(model)
    manifest = write_bundle(
        out,
        manifest_fields={
            "producer": {"command": command or "train_detector()"},  # version: from package metadata
            "preprocess": spec.to_dict(),
            "model": {"architecture": "PrototypeDetectorNet", "config": cfg.detector.to_dict(),
                      "weights": "detector.safetensors", "pretrained": cfg.pretrained},
            "thresholds": thresholds,
            "classes": [],
            "datasets": ds_info,
            "extra": {"training": cfg.to_dict(), "train_seconds": round(train_seconds, 1),
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "device": str(dist.device), "world_size": dist.world_size},
        },
        files={"detector.safetensors": weights},
        overwrite=overwrite,
    )
    ckpt = work / "checkpoint.pt"
    if ckpt.exists():
        ckpt.unlink()
        if not any(work.iterdir()):
            work.rmdir()
    log.info("wrote bundle %s (%s) in %.0f s", out, manifest.bundle_id, train_seconds)
    return out


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``python -m protoinspect.training.train_detector``."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.train_detector", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="dataset folder (repeat for several products)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--format", default="auto", choices=["auto", "mvtec", "mtd"], help="dataset layout")
    p.add_argument("--preset", default="default", help="training budget: fast (the README demo), default (about "
                   "30 minutes for one data set on 2 CPU cores) or long (a GPU)")
    p.add_argument("--config", help="YAML/JSON training config applied on top of the preset (see training/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. steps=500 or detector.encoder=resnet18")
    p.add_argument("--pretrained", help="encoder weights: a local .pth/.safetensors file or torchvision:DEFAULT")
    p.add_argument("--work-dir", help="checkpoint folder (default <out>.work)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(args.set)
    if args.pretrained:
        overrides.append(f"pretrained={args.pretrained}")
    try:
        cfg = load_train_config(args.config, overrides, preset=args.preset)
        out = train_detector(args.data, args.out, cfg, data_format=args.format, work_dir=args.work_dir,
                             resume=not args.no_resume, overwrite=args.overwrite, progress=not args.quiet,
                             command=shlex.join(["python", "-m", "protoinspect.training.train_detector", *(argv or sys.argv[1:])]))
    except ProtoInspectError as exc:
        return report_error(exc)
    print(f"bundle written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
