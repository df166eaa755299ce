"""The ``protoinspect`` command: one entry point, sub-commands resolved lazily.

Each sub-command's module is imported only when invoked. This is the top layer (``protoinspect.pipelines``):
the runtime SDK never imports training or export code; commands that join training and export are
wired in :mod:`protoinspect.pipelines.commands`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("protoinspect.pipelines.demo:main", "synthesize a line, train a detector and evaluate it (the embedded default)"),
    "train": ("protoinspect.training.train_detector:main", "train a detector bundle: --data DIR [--data DIR ...] --out BUNDLE"),
    "evaluate": ("protoinspect.training.evaluate_detector:main", "evaluate a bundle: --data DIR --bundle BUNDLE [--json F]"),
    "synth": ("protoinspect.training.synthetic:main", "write the synthetic line-camera dataset: --out DIR"),
    "inspect": ("protoinspect.sdk.inspect_cli:main", "inspect images, a folder, a video or a camera: SOURCE --bundle BUNDLE [--out DIR]"),
    "discover": ("protoinspect.pipelines.commands:discover_main", "review defect classes on new images, propose new ones, edit into a new bundle"),
    "export": ("protoinspect.pipelines.commands:export_main", "export a bundle to ONNX with parity + TensorRT checks: BUNDLE [--opset N] [--no-verify]"),
    "train-discovery": ("protoinspect.pipelines.commands:train_discovery_main", "learn defect classes on anomalies: --data DIR --bundle BUNDLE [--out NEW]"),
    "recalibrate": ("protoinspect.training.recalibrate:main", "re-derive a bundle's thresholds into a new bundle version"),
    "upgrade-bundle": ("protoinspect.sdk.bundle_upgrade:main", "seal a bundle written before manifest digests (checks every file first)"),
    "keygen": ("protoinspect.sdk.bundle_signing:keygen_main", "make an Ed25519 signing key: --out KEY [--overwrite] (writes KEY, mode 0600, and KEY.pub)"),
    "sign": ("protoinspect.sdk.bundle_signing:sign_main", "sign a sealed bundle's manifest digest: BUNDLE --key KEY (writes BUNDLE/signature.json)"),
    "verify": ("protoinspect.sdk.bundle_signing:verify_main", "check a bundle is intact and signed by a trusted key: BUNDLE --trusted-key PUB [...]"),
    "build-engine": ("protoinspect.export.build_engine:main", "build TensorRT engines into a bundle: BUNDLE --precision fp32|fp16|int8 [--calib-dir DIR] [--dla N]"),
    "export-triton": ("protoinspect.export.triton_repository:main", "write a Triton model repository from a bundle: BUNDLE --repo DIR [--overwrite] [--max-batch N] [--instances N] [--kind cpu|gpu]"),
    "serve-triton": ("protoinspect.export.triton_server:main", "serve a repository's inspector model with PyTriton's tritonserver on 127.0.0.1: --repo DIR --env VENV [--http-port N] [--grpc-port N]"),
}


def _usage() -> str:
    lines = ["usage: protoinspect COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "protoinspect COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its sub-command's ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from protoinspect.sdk import __version__

        print(f"protoinspect {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"protoinspect: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][0].split(":")
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
