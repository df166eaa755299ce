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


def test_live_block_on_a_folder_keeps_every_frame(bundle: Path, folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--save-overlays",
                 "--drop-policy", "block", "--queue-size", "1"]) == 0
    lines = _lines(out / "results.jsonl")
    assert [d["id"] for d in lines] == sorted(NAMES) and all("verdict" in d for d in lines)
    assert len(list((out / "overlays").iterdir())) == 3 and all(n in (out / "report.html").read_text() for n in NAMES)
    text = capsys.readouterr().out
    assert "frames:     3" in text and "dropped:    0  (policy block)" in text


@pytest.mark.parametrize(("flags", "policy", "dropped"), [
    (["--drop-policy", "drop_oldest"], "drop_oldest", ["f1", "f2"]),
    (["--drop-policy", "drop_newest"], "drop_newest", ["f3", "f4"]),
    ([], "block", []),  # a camera goes live without flags, with the config's default policy
])
def test_live_camera_reports_dropped_frames(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], flags: list[str], policy: str,
                                            dropped: list[str]) -> None:
    import threading

    from protoinspect.sdk import sources
    from protoinspect.sdk.inspector import Inspector

    started, gate = threading.Event(), threading.Event()
    real = Inspector.inspect

    def inspect(self: Inspector, frame: np.ndarray) -> InspectionResult:
        started.set()
        assert gate.wait(10)
        return real(self, frame)

    def camera(source: object) -> object:  # frame f0 is being inspected while f1..f4 arrive
        rng = np.random.default_rng(4)
        for k in range(5):
            yield f"f{k}", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            assert started.wait(10)
        gate.set()

    monkeypatch.setattr(Inspector, "inspect", inspect)
    monkeypatch.setattr(sources, "iter_frames", camera)
    monkeypatch.setattr(sources, "is_camera", lambda source: str(source) == "7")
    out = tmp_path / "out"
    if policy == "block":
        gate.set()  # block never drops: nothing to hold back
    assert main(["7", "--bundle", str(bundle), "--out", str(out), "--queue-size", "2", "--no-report", *flags]) == 0
    lines = _lines(out / "results.jsonl")
    assert [d["id"] for d in lines] == [f"f{k}" for k in range(5)]
    assert [d["id"] for d in lines if d.get("dropped")] == dropped
    assert all(d["drop_reason"] == policy for d in lines if d.get("dropped"))
    assert all("verdict" in d for d in lines if not d.get("dropped"))
    text = capsys.readouterr().out
    assert f"frames:     {5 - len(dropped)}" in text and f"dropped:    {len(dropped)}  (policy {policy})" in text
    assert ("dropped ids: " + ", ".join(dropped) in text) == bool(dropped)


def test_live_bad_queue_size_exits_2(bundle: Path, folder: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(folder), "--bundle", str(bundle), "--out", str(tmp_path / "out"), "--queue-size", "0"]) == 2
    assert "--queue-size must be >= 1" in capsys.readouterr().err


def test_live_corrupt_image_exits_2_after_recording_the_frames_read(bundle: Path, folder: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "d_broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--no-report", "--quiet",
                 "--drop-policy", "block"]) == 2
    assert "d_broken.png" in capsys.readouterr().err
    assert [d["id"] for d in _lines(out / "results.jsonl")] == sorted(NAMES)


def test_live_keyboard_interrupt_keeps_results(bundle: Path, folder: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import protoinspect.sdk.inspect_cli as cli

    real, calls = cli._Run.record, []

    def record(self: cli._Run, frame_id: str, frame: np.ndarray, result: InspectionResult) -> None:
        calls.append(frame_id)
        if len(calls) == 2:  # one Ctrl-C, while the second result is being recorded
            raise KeyboardInterrupt
        real(self, frame_id, frame, result)

    monkeypatch.setattr(cli._Run, "record", record)
    out = tmp_path / "out"
    assert main([str(folder), "--bundle", str(bundle), "--out", str(out), "--quiet", "--drop-policy", "block"]) == 130
    lines = _lines(out / "results.jsonl")
    assert lines[0]["id"] == min(NAMES) and "verdict" in lines[0]
    assert [d["id"] for d in lines] == [n for n in sorted(NAMES) if n != calls[1]]  # the rest: inspected or cancelled
    assert "interrupted" in (out / "report.html").read_text()
