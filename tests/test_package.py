"""Package-level tests: import direction (the runtime SDK never pulls in training/torch), the CLI, optional deps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import protoinspect.sdk
from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import MissingDependencyError

from import_probe import loaded_after

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("protoinspect.training", "protoinspect.export", "tensorrt", "triton", "torch")


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _loaded_after(code: str) -> list[str]:
    return loaded_after(code, HEAVY)


def test_runtime_sdk_imports_no_training_or_torch() -> None:
    loaded = _loaded_after("import protoinspect.sdk, protoinspect.sdk.preprocess, protoinspect.sdk.bundle, protoinspect.sdk.errors, protoinspect.pipelines.cli, protoinspect.sdk._imports")
    assert loaded == [], f"the runtime SDK imported {loaded}"


def test_probe_detects_heavy_imports() -> None:
    """The probe itself works: importing training code is seen."""
    loaded = _loaded_after("import protoinspect.training.config")
    assert "protoinspect.training" in loaded and "torch" in loaded


def test_cli_help_imports_no_training() -> None:
    loaded = _loaded_after("from protoinspect.pipelines.cli import main\nimport contextlib, io\n"
                           "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])")
    assert loaded == []


def test_cli_help_lists_commands() -> None:
    proc = _python("-m", "protoinspect.pipelines.cli", "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("demo", "train", "evaluate", "synth"):
        assert f"  {command} " in proc.stdout, proc.stdout
    assert "usage" in proc.stdout.lower()


def test_cli_without_arguments_prints_usage_and_fails() -> None:
    proc = _python("-m", "protoinspect.pipelines.cli")
    assert proc.returncode == 2
    assert "usage" in proc.stdout.lower()


def test_cli_unknown_command() -> None:
    proc = _python("-m", "protoinspect.pipelines.cli", "frobnicate")
    assert proc.returncode == 2
    assert "unknown command 'frobnicate'" in proc.stderr
    assert "demo" in proc.stderr  # lists what exists
    assert "Traceback" not in proc.stderr


def test_cli_version() -> None:
    proc = _python("-m", "protoinspect.pipelines.cli", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"protoinspect {protoinspect.sdk.__version__}"
    assert protoinspect.sdk.__version__ in (ROOT / "pyproject.toml").read_text()


def test_cli_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.pipelines.cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["no-such-command"]) == 2
    assert "no-such-command" in capsys.readouterr().err


def test_cli_commands_resolve_to_functions() -> None:
    import importlib

    from protoinspect.pipelines.cli import COMMANDS

    for name, (target, _) in COMMANDS.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_require_missing_module_names_the_install_command() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require("surely_not_a_module_xyz")
    assert isinstance(info.value, ImportError)
    msg = str(info.value)
    assert "pip install" in msg and "surely_not_a_module_xyz" in msg


def test_require_known_hint_and_present_module() -> None:
    import numpy

    assert require("numpy") is numpy
    with pytest.raises(MissingDependencyError, match="pip install 'protoinspect\\[onnx\\]'"):
        require("onnxruntime.surely_missing_submodule_xyz")  # hint of the top-level package, installed or not


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run is the README's test command verbatim, and that command runs `pip check` before the tests."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert len(ci) == 1, ci
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{ci[0]}\n```" in readme
    assert "&& pip check &&" in ci[0]
    setup = readme[readme.index("## Set-up"):readme.index("## Use")]
    assert setup.count("```bash\n") == 2, "README's set-up holds exactly two commands: the main job and the tests"
