"""Tests of ``protoinspect inspect``: frame sources, overlays, the HTML report and the command itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from detector_bundles import make_exported_bundle

from protoinspect.sdk.errors import InputError
from protoinspect.sdk.inspect_cli import main
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.sdk.result import InspectionResult, Verdict
from protoinspect.sdk.sources import count_frames, iter_frames
from protoinspect.sdk.viz import overlay

SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}
SPEC = PreprocessSpec(image_size=(64, 64))
NAMES = ("b_frame.png", "a_frame.PNG", "c_frame.png")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported detector bundle (64x64 input); tests must not modify it."""
    return make_exported_bundle(tmp_path_factory.mktemp("inspect") / "bundle", np.random.default_rng(5), SPEC, **SMALL)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Three random 80x120 PNG frames and a text file that must be ignored."""
    rng = np.random.default_rng(0)
    d = tmp_path / "frames"
    d.mkdir()
    for name in NAMES:
        assert cv2.imwrite(str(d / name), rng.integers(0, 256, (80, 120, 3), dtype=np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_run_writes_results_overlays_and_report(bundle: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--save-overlays", "--quiet"]) == 0
    lines = _lines(out / "results.jsonl")
    assert [d["id"] for d in lines] == sorted(NAMES)
    for d in lines:
        assert d["verdict"] in ("OK", "ANOMALOUS") and isinstance(d["anomaly_score"], float)
        assert d["map_shape"] == [80, 120]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(f"{n}.jpg" for n in NAMES)
    assert cv2.imread(str(out / "overlays" / f"{NAMES[0]}.jpg")).shape == (80, 120, 3)
    page = (out / "report.html").read_text()
    assert all(name in page for name in NAMES)
    assert "sortable" in page and "<script>" in page
    assert len(list((out / "thumbs").iterdir())) == 3


def test_summary_and_custom_jsonl(bundle: Path, folder: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out, jsonl = tmp_path / "out", tmp_path / "elsewhere" / "r.jsonl"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--jsonl", str(jsonl),
                 "--no-report", "--budget-ms", "1e9"]) == 0
    text = capsys.readouterr().out
    assert "frames:     3" in text and "anomalous:" in text and "rejected:" in text
    assert "detect:" in text and "p95" in text
    assert len(_lines(jsonl)) == 3 and not (out / "report.html").exists()
    assert all(d["over_budget"] is False for d in _lines(jsonl))


def test_single_image(bundle: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(folder / NAMES[0]), "--bundle", str(bundle), "--out", str(out), "--quiet"]) == 0
    assert [d["id"] for d in _lines(out / "results.jsonl")] == [NAMES[0]]


def test_video(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 64))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG .avi")
    rng = np.random.default_rng(1)
    for _ in range(4):
        writer.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    writer.release()
    if not cv2.VideoCapture(str(path)).isOpened():
        pytest.skip("this OpenCV build cannot read back MJPG .avi")
    assert count_frames(path) in (4, None)
    out = tmp_path / "out"
    assert main([str(path), "--bundle", str(bundle), "--out", str(out), "--quiet"]) == 0
    assert [d["id"] for d in _lines(out / "results.jsonl")] == [f"clip.avi#{i}" for i in range(4)]


def test_missing_source_exits_2(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_such_frames"
    assert main([str(missing), "--bundle", str(bundle), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "no_such_frames" in capsys.readouterr().err


def test_bad_bundle_exits_2(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "not_a_bundle"
    bad.mkdir()
    assert main([str(folder), "--bundle", str(bad), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip()


def test_corrupt_image_exits_2_naming_it(bundle: Path, folder: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    out = tmp_path / "out"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--quiet"]) == 2
    assert "d_broken.png" in capsys.readouterr().err
    assert len(_lines(out / "results.jsonl")) == 3  # frames before it are kept
    assert (out / "report.html").exists()


def test_max_frames(bundle: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--max-frames", "2", "--quiet"]) == 0
    assert [d["id"] for d in _lines(out / "results.jsonl")] == sorted(NAMES)[:2]


def test_keyboard_interrupt_keeps_results(bundle: Path, folder: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import protoinspect.sdk.inspect_cli as cli

    real = cli._Run.process
    calls = []

    def process(self: cli._Run, frame_id: str, frame: np.ndarray) -> None:
        if calls:
            raise KeyboardInterrupt
        calls.append(frame_id)
        real(self, frame_id, frame)

    monkeypatch.setattr(cli._Run, "process", process)
    out = tmp_path / "out"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--quiet"]) == 130
    assert len(_lines(out / "results.jsonl")) == 1
    assert "interrupted" in (out / "report.html").read_text()


def test_iter_frames_folder_and_errors(folder: Path, tmp_path: Path) -> None:
    frames = list(iter_frames(folder))
    assert [f for f, _ in frames] == sorted(NAMES)
    assert all(im.shape == (80, 120, 3) and im.dtype == np.uint8 for _, im in frames)
    assert count_frames(folder) == 3 and count_frames(folder / NAMES[0]) == 1 and count_frames("0") is None
    with pytest.raises(InputError, match="nothing_here"):
        list(iter_frames(tmp_path / "nothing_here"))
    with pytest.raises(InputError, match="camera"):
        list(iter_frames("97"))


def _result(h: int, w: int) -> InspectionResult:
    from types import MappingProxyType

    from protoinspect.sdk.result import Defect

    amap = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    defect = Defect(None, None, False, 1.0, (w // 2, h // 2, w, h), (h // 2) * (w // 2))
    return InspectionResult(Verdict.ANOMALOUS, 0.9, amap, np.ones((h, w), bool), (defect,),
                            MappingProxyType({"total": 1.0}), False, "b", 0)


@pytest.mark.parametrize("gray", [False, True])
def test_overlay_shape_and_change(gray: bool) -> None:
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (50, 70) if gray else (50, 70, 3), dtype=np.uint8)
    out = overlay(frame, _result(50, 70), pixel_threshold=0.5)
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8
    if not gray:
        assert out.shape == frame.shape
        assert not np.array_equal(out, frame)
    with pytest.raises(InputError):
        overlay(frame, _result(50, 70), alpha=2.0)
