"""The built wheel installs under the ``protoinspect`` import name only, beside transformers and its ``kernels``.

Issue 10: our old top-level ``kernels`` package shadowed Hugging Face's ``kernels`` distribution (a dependency
of transformers 5), so transformers imported ours. This test builds the wheel (not editable), installs it
into a fresh virtual environment together with transformers and ``kernels`` at the versions of this
environment, and imports both from a working directory outside the checkout. Slow (a venv and a pip install
from the package registry or pip's cache), but it runs in CI.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_FOLDERS = ("sdk", "kernels", "export", "training")


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _pinned(dist: str, fallback: str) -> str:
    """``dist==version`` of this environment (pip's cache has it), else the fallback range."""
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return fallback


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)], cwd=out)
    wheels = sorted(out.glob("protoinspect-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_only_the_protoinspect_import_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top_level = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top_level == {"protoinspect"}, f"top-level names in the wheel: {sorted(top_level)}"
    assert "protoinspect/__init__.py" not in names  # a namespace package: no folder of its own
    tracked = subprocess.run(["git", "ls-files", *OUR_FOLDERS], cwd=ROOT, capture_output=True, text=True, check=False)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: cannot list the package files")
    expected = {f"protoinspect/{f}" for f in tracked.stdout.split() if f.endswith((".py", ".yaml"))}
    missing = sorted(expected - set(names))
    assert not missing, f"files of the checkout missing from the wheel (pyproject's packages list?): {missing}"


@pytest.mark.slow
def test_wheel_beside_transformers_and_hf_kernels(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = venv / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    requirements = [_pinned("transformers", "transformers>=5,<6"), _pinned("kernels", "kernels")]
    _run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel), *requirements],
         cwd=tmp_path)
    _run([str(py), "-m", "pip", "check"], cwd=tmp_path)
    probe = (
        "import json, sysconfig\n"
        "from pathlib import Path\n"
        "import kernels\n"
        "from kernels import CUDAProperties  # Hugging Face's kernel hub, not ours\n"
        "import transformers  # its torch-dependent kernel hub integration runs in test_grounding.py\n"
        "import protoinspect.sdk, protoinspect.kernels\n"
        "from protoinspect.sdk import Inspector, InspectorConfig\n"
        "site = Path(sysconfig.get_paths()['purelib']).resolve()\n"
        "print(json.dumps({'hf_kernels': str(Path(kernels.__file__).resolve()),\n"
        "                  'ours': str(Path(protoinspect.kernels.__file__).resolve()),\n"
        "                  'sdk': str(Path(protoinspect.sdk.__file__).resolve()), 'site': str(site)}))\n"
    )
    got = json.loads(_run([str(py), "-c", probe], cwd=tmp_path).stdout.strip().splitlines()[-1])
    site = Path(got["site"])
    assert Path(got["hf_kernels"]) == site / "kernels" / "__init__.py"
    assert Path(got["ours"]) == site / "protoinspect" / "kernels" / "__init__.py"
    assert Path(got["sdk"]) == site / "protoinspect" / "sdk" / "__init__.py"
    assert not any((site / name).exists() for name in ("sdk", "export", "training"))
    assert not (site / "kernels" / "prototype_attention.py").exists()  # nothing of ours in HF's folder
    cli = venv / "bin" / "protoinspect"
    assert "usage" in _run([str(cli), "--help"], cwd=tmp_path).stdout.lower()
