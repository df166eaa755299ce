"""Sub-commands that need training and export together: each wires an export step into a training
command (dependency injection; neither package imports the other)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from protoinspect.sdk.errors import ProtoInspectError


def export_main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect export``: the export command, with real parity frames from the bundle's training
    data (two test images per dataset, when reachable here) unless ``--frames`` or ``--no-verify`` is given."""
    from protoinspect.export.onnx_export import main as export_cli
    from protoinspect.training.dataset_frames import training_data_frames

    args = list(argv or [])
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("bundle", nargs="?")
    known, _ = probe.parse_known_args(args)
    wants_default_frames = known.bundle and not {"--frames", "--no-verify", "-h", "--help"} & set(args)
    if wants_default_frames and Path(known.bundle).is_dir():
        try:
            _, paths = training_data_frames(known.bundle)
        except ProtoInspectError as exc:  # a broken bundle: the export command below reports it, typed
            print(f"parity frames from the training data: none ({exc})")
            paths = []
        if paths:
            args += ["--frames", *paths]
    return export_cli(args)


def train_discovery_main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect train-discovery``: learn defect classes, then export ``classifier.onnx`` (unless ``--no-export``)."""
    from protoinspect.export.classifier_export import export_classifier_onnx
    from protoinspect.training.train_discovery import main as train_cli

    return train_cli(argv, export_classifier=export_classifier_onnx)


def discover_main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect discover``: review/edit classes; an edited bundle gets its ``classifier.onnx``."""
    from protoinspect.export.classifier_export import export_classifier_onnx
    from protoinspect.training.discover import main as discover_cli

    return discover_cli(argv, export_classifier=export_classifier_onnx)
