"""Tests of the live-stream frame-drop policies (``sdk/frame_queue.py``, ``sdk/live_stream.py``).

A fake inspect callable is gated by threading.Events, so which frame is in flight and which wait in the
queue is known exactly: no test depends on timing except the ``block`` waits that must not return.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BackendError, ConfigError, InputError
from protoinspect.sdk.frame_queue import FrameQueue
from protoinspect.sdk.live_stream import LiveInspector, QueueFullError, StreamClosedError, StreamItem
from protoinspect.sdk.result import InspectionResult, Verdict

WAIT = 10.0  # seconds: only reached when a test is failing


def _frame(k: int) -> np.ndarray:
    return np.full((4, 4, 3), k, np.uint8)


def _result(frame: np.ndarray) -> InspectionResult:
    """A result whose score is the frame's pixel value, so each result names its frame."""
    score = float(frame.flat[0])
    return InspectionResult(Verdict.OK, score, np.zeros((2, 2), np.float32), None, (), {"total": 0.0},
                            False, "fake", 0)


class GatedInspect:
    """frame -> InspectionResult; every call is announced on ``started`` and waits for ``gate``."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.gate = threading.Event()
        self.started: queue.Queue[int] = queue.Queue()
        self.fail_on = fail_on

    def __call__(self, frame: np.ndarray) -> InspectionResult:
        k = int(frame.flat[0])
        self.started.put(k)
        assert self.gate.wait(WAIT), "gate never opened"
        if k == self.fail_on:
            raise ValueError(f"cannot inspect frame {k}")
        return _result(frame)

    def in_flight(self) -> int:
        """Wait until the worker is inspecting a frame; return that frame's value."""
        return self.started.get(timeout=WAIT)


def _drain(live: LiveInspector) -> list[StreamItem]:
    live.close()
    return list(live.results(timeout=WAIT))


def _check_counts(live: LiveInspector, items: list[StreamItem]) -> None:
    c = live.counts
    assert c.pending == 0 and c.submitted == len(items) == c.inspected + c.failed + c.dropped
    assert c.dropped == sum(i.dropped for i in items) and c.failed == sum(i.error is not None for i in items)


def _fill(live: LiveInspector, fake: GatedInspect, n: int) -> list[int]:
    """Submit frames 0..n-1 with frame 0 in flight before the others arrive; returns the ids."""
    ids = [live.submit(_frame(0))]
    assert fake.in_flight() == 0
    return ids + [live.submit(_frame(k)) for k in range(1, n)]


def test_block_keeps_every_frame_in_order() -> None:
    live = LiveInspector(lambda f: _result(f), drop_policy="block", queue_size=2)
    ids = [live.submit(_frame(k)) for k in range(30)]
    items = _drain(live)
    assert ids == list(range(30)) and [i.frame_id for i in items] == ids
    assert [i.result.anomaly_score for i in items] == [float(k) for k in range(30)]  # type: ignore[union-attr]
    assert all(i.status == "inspected" and not i.dropped and i.drop_reason is None for i in items)
    _check_counts(live, items)


def test_block_waits_for_room() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="block", queue_size=1)
    _fill(live, fake, 2)  # 0 in flight, 1 waiting: the queue is full
    done = threading.Event()
    producer = threading.Thread(target=lambda: (live.submit(_frame(2)), done.set()))
    producer.start()
    assert not done.wait(0.2)  # submit waits while the queue is full
    fake.gate.set()
    assert done.wait(WAIT)
    producer.join(WAIT)
    items = _drain(live)
    assert [(i.frame_id, i.status) for i in items] == [(0, "inspected"), (1, "inspected"), (2, "inspected")]


def test_block_timeout_raises_and_emits_the_frame_as_dropped() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="block", queue_size=1)
    _fill(live, fake, 2)
    with pytest.raises(QueueFullError, match="block_timeout") as info:
        live.submit(_frame(2), timeout=0.01)
    assert info.value.frame_id == 2 and isinstance(info.value, TimeoutError)
    fake.gate.set()
    items = _drain(live)
    assert [(i.frame_id, i.drop_reason) for i in items] == [(0, None), (1, None), (2, "block_timeout")]
    _check_counts(live, items)


def test_drop_oldest_discards_the_oldest_waiting_frames_and_says_so() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="drop_oldest", queue_size=2)
    assert _fill(live, fake, 6) == [0, 1, 2, 3, 4, 5]  # 1, 2, 3 pushed out by 3, 4, 5
    assert live.ready() == []  # dropped frames wait for frame 0: the stream stays in frame order
    assert live.counts.dropped == 3
    fake.gate.set()
    items = _drain(live)
    assert [(i.frame_id, i.status, i.drop_reason) for i in items] == [
        (0, "inspected", None), (1, "dropped", "drop_oldest"), (2, "dropped", "drop_oldest"),
        (3, "dropped", "drop_oldest"), (4, "inspected", None), (5, "inspected", None)]
    assert [i.result.anomaly_score for i in items if i.result is not None] == [0.0, 4.0, 5.0]
    assert all(i.result is None and i.started_at is None and i.frame is None for i in items if i.dropped)
    _check_counts(live, items)


def test_drop_newest_discards_the_incoming_frames_and_says_so() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="drop_newest", queue_size=2)
    assert _fill(live, fake, 6) == [0, 1, 2, 3, 4, 5]
    fake.gate.set()
    items = _drain(live)
    assert [(i.frame_id, i.drop_reason) for i in items] == [
        (0, None), (1, None), (2, None), (3, "drop_newest"), (4, "drop_newest"), (5, "drop_newest")]
    assert [i.result.anomaly_score for i in items if i.result is not None] == [0.0, 1.0, 2.0]
    assert all(i.latency_s >= 0 for i in items)
    _check_counts(live, items)


def test_order_kept_when_workers_finish_out_of_order() -> None:
    q = FrameQueue("block", 4)
    for k in range(3):
        q.put(_frame(k))
    tasks = [q.take() for _ in range(3)]
    assert [t[0] for t in tasks if t is not None] == [0, 1, 2]
    q.finish(2, result=_result(_frame(2)))
    q.finish(1, error=RuntimeError("server down"))
    assert q.ready() == []
    q.finish(0, result=_result(_frame(0)))
    assert [(i.frame_id, i.status) for i in q.ready()] == [(0, "inspected"), (1, "failed"), (2, "inspected")]
    with pytest.raises(InputError, match="not being inspected"):
        q.finish(0, result=_result(_frame(0)))
    with pytest.raises(InputError, match="exactly one"):
        q.finish(0)


def test_two_workers_keep_the_stream_in_frame_order() -> None:
    gate, last_done = threading.Event(), threading.Event()

    def inspect(frame: np.ndarray) -> InspectionResult:
        if frame.flat[0] == 0:
            assert gate.wait(WAIT)
        if frame.flat[0] == 3:
            last_done.set()
        return _result(frame)

    live = LiveInspector(inspect, drop_policy="block", queue_size=8, workers=2)
    for k in range(4):
        live.submit(_frame(k))
    assert last_done.wait(WAIT)  # the second worker did 1, 2 and 3 while frame 0 is held
    assert live.ready() == []
    gate.set()
    assert live.get(timeout=WAIT).frame_id == 0
    assert [i.frame_id for i in _drain(live)] == [1, 2, 3]


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest"])
def test_every_frame_comes_out_once_in_order_with_concurrent_producers_and_consumer(policy: str) -> None:
    live = LiveInspector(lambda f: _result(f), drop_policy=policy, queue_size=2, workers=2)
    seen: list[StreamItem] = []
    consumer = threading.Thread(target=lambda: seen.extend(live.results(timeout=WAIT)))
    consumer.start()
    producers = [threading.Thread(target=lambda: [live.submit(_frame(k % 200)) for k in range(300)])
                 for _ in range(2)]
    for t in producers:
        t.start()
    for t in producers:
        t.join(WAIT)
    live.close()
    consumer.join(WAIT)
    assert [i.frame_id for i in seen] == list(range(600))
    _check_counts(live, seen)
    assert policy != "block" or live.counts.inspected == 600


def test_an_exception_in_inspection_is_delivered_not_lost() -> None:
    fake = GatedInspect(fail_on=1)
    fake.gate.set()
    live = LiveInspector(fake, drop_policy="block", queue_size=4)
    for k in range(3):
        live.submit(_frame(k))
    items = _drain(live)
    assert [i.status for i in items] == ["inspected", "failed", "inspected"]
    assert isinstance(items[1].error, ValueError) and "frame 1" in str(items[1].error) and items[1].result is None
    _check_counts(live, items)


def test_a_callable_returning_none_is_a_failed_item() -> None:
    live = LiveInspector(lambda f: None, queue_size=1)
    live.submit(_frame(0))
    (item,) = _drain(live)
    assert item.status == "failed" and isinstance(item.error, BackendError)


def test_close_drains_pending_frames_by_default() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="drop_oldest", queue_size=3)
    _fill(live, fake, 4)
    live.queue.close()  # what close() does before it waits for the worker
    with pytest.raises(StreamClosedError, match="no more frames"):
        live.submit(_frame(9))
    fake.gate.set()
    live.close()
    items = list(live.results(timeout=WAIT))
    assert [i.status for i in items] == ["inspected"] * 4
    with pytest.raises(StreamClosedError, match="every item has been read"):
        live.get(timeout=WAIT)


def test_close_without_drain_cancels_waiting_frames_and_the_in_flight_one_finishes() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="block", queue_size=3)
    _fill(live, fake, 3)
    with pytest.raises(TimeoutError, match="still inspecting"):
        live.close(drain=False, timeout=0.01)
    fake.gate.set()
    live.close()
    items = list(live.results(timeout=WAIT))
    assert [(i.frame_id, i.status, i.drop_reason) for i in items] == [
        (0, "inspected", None), (1, "dropped", "cancelled"), (2, "dropped", "cancelled")]
    _check_counts(live, items)


def test_a_blocked_producer_is_woken_by_close() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="block", queue_size=1)
    _fill(live, fake, 2)
    errors: queue.Queue[BaseException] = queue.Queue()

    def produce() -> None:
        try:
            live.submit(_frame(2))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.put(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    live.queue.close(drain=False)
    assert isinstance(errors.get(timeout=WAIT), StreamClosedError)
    fake.gate.set()
    live.close()
    assert [i.drop_reason for i in live.results(timeout=WAIT)] == [None, "cancelled"]


def test_context_manager_cancels_on_an_exception() -> None:
    fake = GatedInspect()
    with pytest.raises(KeyError), LiveInspector(fake, queue_size=2) as live:
        _fill(live, fake, 3)
        fake.gate.set()
        raise KeyError("camera unplugged")
    items = list(live.results(timeout=WAIT))
    assert items[0].status == "inspected" and len(items) == 3
    assert all(i.status == "inspected" or i.drop_reason == "cancelled" for i in items)


def test_frame_ids_given_by_the_caller_must_increase() -> None:
    live = LiveInspector(lambda f: _result(f), queue_size=4)
    assert live.submit(_frame(0), frame_id=10) == 10
    assert live.submit(_frame(1)) == 11
    with pytest.raises(InputError, match="increase"):
        live.submit(_frame(2), frame_id=11)
    with pytest.raises(InputError, match="integer"):
        live.submit(_frame(2), frame_id="12")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="None"):
        live.submit(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="timeout"):
        live.submit(_frame(2), timeout=-1)
    assert live.submit(_frame(3), frame_id=np.int64(20)) == 20
    assert [i.frame_id for i in _drain(live)] == [10, 11, 20]


def test_keep_frames_hands_inspected_frames_back() -> None:
    fake = GatedInspect()
    live = LiveInspector(fake, drop_policy="drop_newest", queue_size=1, keep_frames=True)
    _fill(live, fake, 3)
    fake.gate.set()
    items = _drain(live)
    assert [i.frame is not None and int(i.frame.flat[0]) == i.frame_id for i in items] == [True, True, False]


@pytest.mark.parametrize("kwargs", [{"drop_policy": "drop_random"}, {"drop_policy": None},
                                    {"queue_size": 0}, {"queue_size": 2.0}, {"queue_size": True}])
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        InspectorConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults_roundtrip_and_live_settings() -> None:
    cfg = InspectorConfig()
    assert (cfg.drop_policy, cfg.queue_size) == ("block", 4)
    cfg = InspectorConfig(drop_policy="drop_newest", queue_size=7)
    assert InspectorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="drop_policy"):
        InspectorConfig.from_dict({"drop_policy": "newest"})
    fake_inspector = SimpleNamespace(config=cfg, inspect=_result)
    with LiveInspector(fake_inspector) as live:
        assert (live.drop_policy, live.queue_size) == ("drop_newest", 7)
        assert "drop_newest" in repr(live)
    with LiveInspector(fake_inspector, drop_policy="drop_oldest", queue_size=1) as live:
        assert (live.drop_policy, live.queue_size) == ("drop_oldest", 1)
    with pytest.raises(ConfigError, match="drop_policy"):
        LiveInspector(fake_inspector, drop_policy="oldest")
    with pytest.raises(ConfigError, match="queue_size"):
        LiveInspector(fake_inspector, queue_size=0)
    with pytest.raises(ConfigError, match="workers"):
        LiveInspector(fake_inspector, workers=0)
    with pytest.raises(ConfigError, match="callable"):
        LiveInspector(42)


def test_public_names_in_the_sdk_package() -> None:
    from protoinspect import sdk

    for name in ("LiveInspector", "StreamItem", "FrameQueue", "QueueFullError", "StreamClosedError"):
        assert name in sdk.__all__ and getattr(sdk, name) is not None


def test_a_real_inspector_through_the_live_stream(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from detector_bundles import make_detector_bundle

    from protoinspect.sdk.inspector import Inspector

    bundle = make_detector_bundle(tmp_path / "bundle", np.random.default_rng(3))
    frames = [np.random.default_rng(k).integers(0, 256, (48, 40, 3), dtype=np.uint8) for k in range(3)]
    config = InspectorConfig(drop_policy="block", queue_size=1)
    with Inspector.from_bundle(bundle, backend="torch", config=config) as insp:
        with LiveInspector(insp) as live:
            for frame in frames:
                live.submit(frame)
        items = list(live.results(timeout=WAIT))
        direct = [insp.inspect(frame).anomaly_score for frame in frames]
    assert [i.status for i in items] == ["inspected"] * 3
    assert [i.result.anomaly_score for i in items] == pytest.approx(direct, rel=1e-5)  # type: ignore[union-attr]
