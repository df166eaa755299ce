"""The ONNX Runtime runtime (masking, detection, regions, classification, rejection) in a process where
``import torch`` fails: what runs on a Jetson or a line PC without torch."""

from __future__ import annotations

import json
from pathlib import Path

from import_probe import run_python

BLOCK_TORCH = '''
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "safetensors"):
            raise ImportError(f"{name} is blocked: this process has no torch")
sys.meta_path.insert(0, _NoTorch())
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch imported although blocked")
'''

INSPECT = '''
import json, sys
import cv2
from protoinspect.sdk import Inspector, InspectorConfig
paths = PATHS
cfg = InspectorConfig(image_threshold=float("-inf"), pixel_threshold=float("-inf"), masker="otsu", threads=1)
out = []
with Inspector.from_bundle(BUNDLE, backend="onnxruntime", config=cfg) as insp:
    for p in paths:
        r = insp.inspect(cv2.imread(p))
        out.append({"verdict": r.verdict.value, "score": r.anomaly_score, "class": r.image_class_name,
                    "defects": [[list(d.bbox_xyxy), d.class_name] for d in r.defects]})
print(json.dumps({"results": out, "torch_loaded": "torch" in sys.modules}))
'''


def _program(bundle: Path, paths: list[str]) -> str:
    return f"BUNDLE = {str(bundle)!r}\nPATHS = {paths!r}\n{INSPECT}"


def test_onnxruntime_runtime_runs_where_torch_cannot_be_imported(discovery_bundle: tuple[Path, Path],
                                                                  discovery_tile: Path) -> None:
    _, disc = discovery_bundle
    paths = [str(p) for p in sorted((discovery_tile / "test").glob("*/*.png"))[:4]]
    proc = run_python(BLOCK_TORCH + _program(disc, paths), timeout=180)
    assert proc.returncode == 0, proc.stderr
    isolated = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isolated["torch_loaded"] is False
    results = isolated["results"]
    assert len(results) == 4
    assert all(r["verdict"] in ("ANOMALOUS", "REJECTED") and r["class"] is not None for r in results)
    # defects come from MEBin on the model-size map (a tiny detector's maps may hold no stable region);
    # every defect found is classified
    assert all(cls is not None for r in results for _, cls in r["defects"])

    # the same frames in this process (torch importable) give the same answers
    scope: dict = {}
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(_program(disc, paths), "<in-process>", "exec"), scope)  # noqa: S102
    in_process = json.loads(buffer.getvalue().strip().splitlines()[-1])["results"]
    for a, b in zip(results, in_process):
        assert a["verdict"] == b["verdict"] and a["class"] == b["class"] and a["defects"] == b["defects"]
        assert abs(a["score"] - b["score"]) <= 1e-5 * max(1.0, abs(b["score"]))


def test_the_blocker_really_blocks_torch() -> None:
    """The check itself: with the blocker installed, importing torch fails in the child process."""
    proc = run_python(BLOCK_TORCH + "import torch\n")
    assert proc.returncode != 0 and "blocked" in proc.stderr
