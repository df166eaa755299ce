"""The ``protoinspect`` command: one entry point, sub-commands resolved lazily.

Sub-commands that train or evaluate live in ``training`` and are imported only when invoked, so the
runtime SDK never imports training code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("protoinspect.training.demo:main", "synthesize a line, train a detector and evaluate it (the embedded default)"),
    "train": ("protoinspect.training.train_detector:main", "train a detector bundle: --data DIR [--data DIR ...] --out BUNDLE"),
    "evaluate": ("protoinspect.training.evaluate_detector:main", "evaluate a bundle: --data DIR --bundle BUNDLE [--json F]"),
    "synth": ("protoinspect.training.synthetic:main", "write the synthetic line-camera dataset: --out DIR"),
    "inspect": ("protoinspect.sdk.inspect_cli:main", "inspect images, a folder, a video or a camera: SOURCE --bundle BUNDLE [--out DIR]"),
    "discover": ("protoinspect.training.discover:main", "review defect classes on new images, propose new ones, edit into a new bundle"),
    "export": ("protoinspect.export.onnx_export:main", "export a bundle to ONNX with parity + TensorRT checks: BUNDLE [--opset N] [--no-verify]"),
    "build-engine": ("protoinspect.export.build_engine:main", "build TensorRT engines into a bundle: BUNDLE --precision fp32|fp16|int8 [--calib-dir DIR] [--dla N]"),
}


def report_error(exc: BaseException) -> int:
    """Print a typed ProtoInspect error for a command-line user and return the exit code (2)."""
    print(f"error: {exc}", file=sys.stderr)
    return 2


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
