"""Resumable training checkpoints: tensors with torch.save, read back with ``weights_only=True``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from protoinspect.sdk.errors import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(work_dir: Path, state: dict[str, Any], config: dict[str, Any]) -> Path:
    """Atomically write ``state`` (tensors, numbers, strings, nested dicts) and the config it belongs to."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save({"state": state, "config_json": json.dumps(config, sort_keys=True)}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(work_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """Return the saved state, or None if there is none; a checkpoint of another config is an error."""
    path = work_dir / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = f"checkpoint {path} is unreadable ({exc}); delete it to start over"
        raise ConfigError(msg) from exc
    if not isinstance(blob, dict) or "state" not in blob:
        msg = f"checkpoint {path} is not a ProtoInspect training checkpoint; delete it to start over"
        raise ConfigError(msg)
    if blob.get("config_json") != json.dumps(config, sort_keys=True):
        msg = f"checkpoint {path} was written with a different configuration or data; delete it or pass --no-resume"
        raise ConfigError(msg)
    return blob["state"]
