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
from dataclasses import replace
import cv2
from protoinspect.sdk import Inspector, InspectorConfig
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.stages.mebin import MEBinSettings
from protoinspect.sdk.stages.regions import MapRegionFinder, RegionSettings
frames = [cv2.imread(p) for p in PATHS]
cfg = InspectorConfig(image_threshold=float("-inf"), pixel_threshold=float("-inf"), masker="otsu", threads=1)
with Inspector.from_bundle(BUNDLE, backend="onnxruntime", config=cfg) as insp:
    maps = [insp.inspect(f).model_map for f in frames]
# A 4-step detector's maps rarely hold a MEBin-stable region in the bundle's calibrated range: MEBin over
# these maps' range, without erosion, finds regions on every map (the rest of the path is the bundle's).
settings = replace(load_bundle(BUNDLE).manifest.discovery.settings, s_min=float(min(m.min() for m in maps)),
                   s_max=float(max(m.max() for m in maps)), mebin=MEBinSettings(erode_kernel=0, min_interval_len=1),
                   region_method="mebin")
eager = MapRegionFinder(RegionSettings(pixel_threshold=float("-inf"), min_area_px=1, discovery=settings))
out = []
with Inspector.from_bundle(BUNDLE, backend="onnxruntime", config=cfg, regions=eager) as insp:
    for f in frames:
        r = insp.inspect(f)
        out.append({"verdict": r.verdict.value, "score": r.anomaly_score, "class": r.image_class_name,
                    "mask": None if r.mask is None else int(r.mask.sum()),
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
    assert all(r["defects"] and all(cls is not None for _, cls in r["defects"]) for r in results)
    assert all(r["mask"] is not None for r in results)  # the Otsu masker ran on every anomalous frame

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
        assert a["mask"] == b["mask"]
        assert abs(a["score"] - b["score"]) <= 1e-5 * max(1.0, abs(b["score"]))


def test_the_blocker_really_blocks_torch() -> None:
    """The check itself: with the blocker installed, importing torch fails in the child process."""
    proc = run_python(BLOCK_TORCH + "import torch\n")
    assert proc.returncode != 0 and "blocked" in proc.stderr
