"""The import graph between our packages, read from the source (ast): any edge outside the allowed set fails.

    kernels   -> torch, triton, the standard library
    sdk       -> kernels
    export    -> sdk, kernels
    training  -> sdk, kernels
    pipelines -> sdk, kernels, export, training   (the workflows joining training and export)

Module-level and function-level imports count alike, and so do ``importlib.import_module("...")``
calls with a literal name.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "sdk", "export", "training", "pipelines")
ALLOWED: dict[str, set[str]] = {
    "kernels": set(),
    "sdk": {"kernels"},
    "export": {"sdk", "kernels"},
    "training": {"sdk", "kernels"},
    "pipelines": {"sdk", "kernels", "export", "training"},
}
#: third-party top-level modules the kernels may import (besides the standard library)
KERNEL_THIRD_PARTY = {"torch", "triton"}


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append((node.lineno, node.args[0].value))
    return names


def _edges() -> list[tuple[str, str, str]]:
    """(package, imported module, file:line) for every import in our packages."""
    edges = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, name in _imported_names(tree):
                edges.append((package, name, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "protoinspect" and len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    return None


def test_packages_import_only_the_allowed_layers() -> None:
    bad = []
    for package, module, where in _edges():
        target = _layer(module)
        if target is not None and target != package and target not in ALLOWED[package]:
            bad.append(f"{where}: {package} -> {target} ({module})")
    assert not bad, "import edges outside the allowed layers:\n" + "\n".join(bad)


def test_kernels_depend_on_torch_and_triton_only() -> None:
    bad = []
    for package, module, where in _edges():
        top = module.split(".")[0]
        if package != "kernels" or _layer(module) == "kernels" or top in sys.stdlib_module_names:
            continue
        if top not in KERNEL_THIRD_PARTY:
            bad.append(f"{where}: {module}")
    assert not bad, "kernels/ imports beyond torch, triton and the standard library:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("import protoinspect.training.config", ["protoinspect.training.config"]),
    ("def f():\n    from protoinspect.export import onnx_export", ["protoinspect.export"]),
    ("import importlib\nimportlib.import_module('protoinspect.training.demo')", ["importlib", "protoinspect.training.demo"]),
    ("from . import sibling", []),
])
def test_the_reader_sees_every_kind_of_import(source: str, expected: list[str]) -> None:
    """The check itself: module-level, function-level and importlib imports are all seen."""
    assert [name for _, name in _imported_names(ast.parse(source))] == expected


def test_every_package_folder_is_checked() -> None:
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert folders <= set(PACKAGES), f"package folders not in the layer check: {folders - set(PACKAGES)}"


#: test files at the top of tests/: checks of the whole package, mirroring no single folder
CROSS_CUTTING_TESTS = {"test_layers.py", "test_package.py", "test_wheel_install.py"}


def test_tests_mirror_the_source_tree() -> None:
    """tests/<folder>/test_*.py sits in a folder named like a source folder (tests/sdk/stages <-> sdk/stages)."""
    tests = ROOT / "tests"
    bad = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        if len(rel.parts) == 1:
            if rel.name not in CROSS_CUTTING_TESTS:
                bad.append(f"{rel}: move it to the folder of the code it tests")
        elif not (ROOT / rel.parent).is_dir():
            bad.append(f"{rel}: no source folder {rel.parent}/")
    assert not bad, "test files outside the mirrored layout:\n" + "\n".join(bad)


def test_no_source_file_over_400_lines() -> None:
    long = [f"{p.relative_to(ROOT)}: {n} lines" for folder in (*PACKAGES, "tests", "benchmarks")
            for p in sorted((ROOT / folder).rglob("*.py")) if (n := len(p.read_text().splitlines())) > 400]
    assert not long, "split these by what they hold:\n" + "\n".join(long)
