"""``protoinspect inspect SOURCE --bundle B``: inspect images, a folder, a video or a camera at the line.

Writes one JSON line per frame (flushed as it goes), optional overlay JPEGs, an HTML report and a
closing summary. Ctrl-C stops the run cleanly: everything processed so far is kept and reported.

A camera (and any source given ``--drop-policy`` or ``--queue-size``) is inspected live, through a
:class:`~protoinspect.sdk.live_stream.LiveInspector`: frames are read while earlier ones are inspected,
and when they come faster the drop policy decides. A dropped frame gets its own JSON line
(``{"id": ..., "dropped": true, "drop_reason": ...}``) at its place in frame order, and the summary
counts them and names their ids. ``--max-frames`` then counts frames read, dropped ones included.

Exit codes: 0 success, 2 bad arguments / source / bundle / unreadable frame, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from protoinspect.sdk.config import DROP_POLICIES
from protoinspect.sdk.errors import ProtoInspectError

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``protoinspect inspect``."""
    p = argparse.ArgumentParser(
        prog="protoinspect inspect",
        description="Inspect an image, a folder of images, a video file or a camera index with a model bundle.")
    p.add_argument("source", metavar="SOURCE",
                   help="image file, folder of images, video file or camera index such as 0")
    p.add_argument("--bundle", required=True, help="model bundle directory")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "torch"), default="auto",
                   help="runtime (default auto: onnxruntime when the bundle has detector.onnx)")
    p.add_argument("--color-order", choices=("bgr", "rgb"), default="bgr",
                   help="channel order of the frames (default bgr: frames come from OpenCV)")
    p.add_argument("--out", default="protoinspect-inspect", help="output folder (default protoinspect-inspect)")
    p.add_argument("--jsonl", default=None, help="results file, one JSON line per frame (default OUT/results.jsonl)")
    p.add_argument("--save-overlays", action="store_true", help="write OUT/overlays/<id>.jpg per frame")
    p.add_argument("--no-report", action="store_true", help="do not write OUT/report.html")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--budget-ms", type=float, default=None, metavar="X",
                   help="latency budget per frame; frames over it are flagged over_budget")
    p.add_argument("--drop-policy", choices=DROP_POLICIES, default=None,
                   help="when frames come faster than they are inspected: block (default: wait; a camera's "
                        "driver may then drop frames unseen), drop_oldest or drop_newest; every dropped frame "
                        "is reported. Cameras are always inspected live; other sources when this is given")
    p.add_argument("--queue-size", type=int, default=None, metavar="N",
                   help="frames waiting for inspection at most in live mode (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


def _progress(total: int | None, quiet: bool) -> Any:
    """A tqdm bar on stderr, or None when quiet or tqdm is not installed."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True)


class _Run:
    """State of one run: output files, counters and the report."""

    def __init__(self, args: argparse.Namespace, inspector: Any) -> None:
        from protoinspect.sdk.report import HtmlReport

        self.args = args
        self.inspector = inspector
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = Path(args.jsonl) if args.jsonl else self.out / "results.jsonl"
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self.jsonl: IO[str] = self.jsonl_path.open("w", encoding="utf-8")
        self.overlay_dir = self.out / "overlays"
        if args.save_overlays:
            self.overlay_dir.mkdir(parents=True, exist_ok=True)
        self.report = None if args.no_report else HtmlReport(
            self.out, bundle_id=inspector.bundle.manifest.bundle_id, backend=inspector.backend.name)
        self.timings: list[dict[str, float]] = []
        self.verdicts: list[str] = []
        self.dropped: list[str] = []
        self.live_policy: str | None = None  # set by a live run: the summary then reports dropped frames
        self._overlay_names: set[str] = set()

    def process(self, frame_id: str, frame: Any) -> None:
        """Inspect one frame and record it everywhere."""
        self.record(frame_id, frame, self.inspector.inspect(frame))

    def record_dropped(self, frame_id: str, reason: str | None) -> None:
        """Record a frame the live stream dropped: its own JSON line, and its id for the summary."""
        self.jsonl.write(json.dumps({"id": frame_id, "dropped": True, "drop_reason": reason}) + "\n")
        self.jsonl.flush()
        self.dropped.append(frame_id)

    def record_error(self, frame_id: str, error: BaseException) -> None:
        """Record a frame whose inspection failed in the live stream (its own JSON line)."""
        self.jsonl.write(json.dumps({"id": frame_id, "error": f"{type(error).__name__}: {error}"}) + "\n")
        self.jsonl.flush()

    def record(self, frame_id: str, frame: Any, result: Any) -> None:
        """Record one inspected frame everywhere: the JSON line, the counters, the overlay and the report."""
        self.jsonl.write(json.dumps({"id": frame_id, **result.to_dict()}) + "\n")
        self.jsonl.flush()
        self.timings.append(dict(result.timings_ms))
        self.verdicts.append(result.verdict.value)
        if not (self.args.save_overlays or self.report is not None):
            return
        from protoinspect.sdk.viz import overlay

        image = overlay(frame, result, pixel_threshold=self.inspector.pixel_threshold)
        if self.args.save_overlays:
            self._save_overlay(frame_id, image)
        if self.report is not None:
            self.report.add(frame_id, image, result)

    def _save_overlay(self, frame_id: str, image: Any) -> None:
        from protoinspect.sdk._imports import require
        from protoinspect.sdk.report import safe_name

        cv2 = require("cv2")
        name, k = safe_name(frame_id), 1
        while name in self._overlay_names:
            k += 1
            name = f"{safe_name(frame_id)}-{k}"
        self._overlay_names.add(name)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if ok:
            (self.overlay_dir / f"{name}.jpg").write_bytes(data.tobytes())

    def finish(self, interrupted: bool) -> Path | None:
        """Close the results file and write the report; returns the report path (None without one)."""
        self.jsonl.close()
        if self.report is None:
            return None
        self.report.interrupted = interrupted
        return self.report.write()

    def summary(self, report_path: Path | None, elapsed_s: float, interrupted: bool) -> str:
        """The closing summary as text."""
        from protoinspect.sdk.report import stage_percentiles

        n = len(self.verdicts)
        lines = [
            f"frames:     {n}" + ("  (interrupted)" if interrupted else ""),
            f"anomalous:  {self.verdicts.count('ANOMALOUS')}",
            f"rejected:   {self.verdicts.count('REJECTED')}",
        ]
        if self.live_policy is not None:
            lines.append(f"dropped:    {len(self.dropped)}  (policy {self.live_policy})")
            if self.dropped:
                shown = ", ".join(self.dropped[:10])
                more = f" ... (+{len(self.dropped) - 10}, all in the results file)" if len(self.dropped) > 10 else ""
                lines.append(f"dropped ids: {shown}{more}")
        for stage, (p50, p95) in stage_percentiles(self.timings).items():
            lines.append(f"{stage + ':':<11} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms")
        if n and elapsed_s > 0:
            lines.append(f"throughput: {n / elapsed_s:.1f} frames/s (wall clock, I/O included)")
        lines.append(f"results:    {self.jsonl_path}")
        lines.append(f"report:     {report_path if report_path is not None else '-'}")
        return "\n".join(lines)


def _emit(run: _Run, items: Any, names: dict[int, str], bar: Any, strict: bool) -> None:
    """Record live-stream items; with ``strict``, raise the first inspection error once all are recorded."""
    first_error: BaseException | None = None
    for item in items:
        name = names.pop(item.frame_id)
        if item.dropped:
            run.record_dropped(name, item.drop_reason)
        elif item.error is not None:
            run.record_error(name, item.error)
            first_error = first_error or item.error
        else:
            run.record(name, item.frame, item.result)
        if bar is not None:
            bar.update(1)
    if strict and first_error is not None:
        raise first_error


def _ready(live: Any) -> Iterator[Any]:
    """The items ready now, taken one at a time (an interrupt while recording one loses none of the others)."""
    while True:
        try:
            yield live.get(timeout=0)
        except TimeoutError:
            return


def _inspect_live(run: _Run, args: argparse.Namespace, bar: Any) -> None:
    """Inspect the source through a LiveInspector (policy and queue size from the inspector's config).

    An inspection error or an unreadable frame stops the run like the plain loop does, once the frames
    already read are inspected and recorded; on Ctrl-C the frames still waiting are cancelled instead and
    recorded as dropped (``"cancelled"``).
    """
    from protoinspect.sdk.live_stream import LiveInspector
    from protoinspect.sdk.sources import iter_frames

    live = LiveInspector(run.inspector, keep_frames=args.save_overlays or run.report is not None)
    run.live_policy = live.drop_policy
    names: dict[int, str] = {}
    try:
        for read, (name, frame) in enumerate(iter_frames(args.source), start=1):
            names[live.submit(frame)] = name
            _emit(run, _ready(live), names, bar, strict=True)
            if args.max_frames is not None and read >= args.max_frames:
                break
        live.close()
        _emit(run, live.results(), names, bar, strict=True)
    except BaseException as exc:
        live.close(drain=not isinstance(exc, KeyboardInterrupt))
        _emit(run, live.results(), names, bar, strict=False)
        raise


def _error(message: str) -> int:
    print(f"protoinspect inspect: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _check_args(args: argparse.Namespace) -> str | None:
    if args.max_frames is not None and args.max_frames < 1:
        return f"--max-frames must be >= 1, got {args.max_frames}"
    if args.budget_ms is not None and not args.budget_ms > 0:
        return f"--budget-ms must be > 0, got {args.budget_ms}"
    if args.queue_size is not None and args.queue_size < 1:
        return f"--queue-size must be >= 1, got {args.queue_size}"
    from protoinspect.sdk.sources import is_camera

    if not is_camera(args.source) and not Path(args.source).exists():
        return f"source {args.source!r} does not exist (give an image, a folder, a video or a camera index)"
    if not Path(args.bundle).is_dir():
        return f"bundle {args.bundle!r} is not a directory"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``protoinspect inspect``.

    Args:
        argv: arguments after ``inspect``; None: ``sys.argv[2:]``.

    Returns:
        0 on success, 2 on a bad argument, source, bundle or unreadable frame (message on stderr),
        130 when interrupted with Ctrl-C (results so far are kept, the summary and report written).
    """
    args = build_parser().parse_args(list(sys.argv[2:] if argv is None else argv))
    problem = _check_args(args)
    if problem is not None:
        return _error(problem)

    from protoinspect.sdk.config import InspectorConfig
    from protoinspect.sdk.inspector import Inspector
    from protoinspect.sdk.sources import count_frames, is_camera, iter_frames

    try:
        live_settings = {k: v for k, v in (("drop_policy", args.drop_policy), ("queue_size", args.queue_size))
                         if v is not None}
        config = InspectorConfig(color_order=args.color_order, latency_budget_ms=args.budget_ms, **live_settings)
        inspector = Inspector.from_bundle(args.bundle, backend=args.backend, config=config)
    except ProtoInspectError as exc:
        return _error(str(exc))

    code, interrupted = EXIT_OK, False
    bar = None
    start = time.perf_counter()
    try:
        run = _Run(args, inspector)
        try:
            total = count_frames(args.source)
            if args.max_frames is not None:
                total = args.max_frames if total is None else min(total, args.max_frames)
            bar = _progress(total, args.quiet)
            if is_camera(args.source) or live_settings:
                _inspect_live(run, args, bar)
            else:
                for frame_id, frame in iter_frames(args.source):
                    run.process(frame_id, frame)
                    if bar is not None:
                        bar.update(1)
                    if args.max_frames is not None and len(run.verdicts) >= args.max_frames:
                        break
        except KeyboardInterrupt:
            interrupted, code = True, EXIT_INTERRUPTED
        except ProtoInspectError as exc:  # an unreadable frame (InputError) or a runtime failure
            code = _error(str(exc))
        finally:
            if bar is not None:
                bar.close()
            report_path = run.finish(interrupted)
        if interrupted:
            print("protoinspect inspect: interrupted; results so far are kept", file=sys.stderr)
        if not args.quiet:
            print(run.summary(report_path, time.perf_counter() - start, interrupted))
    except OSError as exc:
        code = _error(f"cannot write output: {exc}")
    finally:
        inspector.close()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
