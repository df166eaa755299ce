"""The frame-drop policy and the ordered result stream of a live camera, independent of how frames are inspected.

:class:`FrameQueue` holds at most ``queue_size`` frames waiting for inspection and applies the
``drop_policy`` the user chose when a frame arrives at a full queue (``"block"``, ``"drop_oldest"``,
``"drop_newest"``). Every submitted frame comes out of the stream exactly once, in frame-id order, as a
:class:`StreamItem`: inspected, failed (with the exception) or dropped (with the reason), never silently.
Workers :meth:`~FrameQueue.take` frames and :meth:`~FrameQueue.finish` them in any order and from any thread:
:class:`protoinspect.sdk.live_stream.LiveInspector` runs a worker thread over an in-process Inspector; a
remote backend (a Triton client) can drive the same queue with several requests in flight. The semantics
(ordering, closing, errors) are described in :mod:`protoinspect.sdk.live_stream`.
"""

from __future__ import annotations

import numbers
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protoinspect.sdk.config import DROP_POLICIES
from protoinspect.sdk.errors import BackendError, ConfigError, InputError, ProtoInspectError
from protoinspect.sdk.result import InspectionResult

InspectFn = Callable[[np.ndarray], InspectionResult]

#: ``StreamItem.drop_reason`` values
DROP_OLDEST = "drop_oldest"  # waiting in a full queue, discarded to make room for a newer frame
DROP_NEWEST = "drop_newest"  # arrived at a full queue and was discarded
BLOCK_TIMEOUT = "block_timeout"  # policy "block": no room within submit's timeout
CANCELLED = "cancelled"  # still waiting when the stream was closed with drain=False


class QueueFullError(ProtoInspectError, TimeoutError):
    """Policy ``"block"``: no room in the queue within ``submit``'s timeout. The frame is not lost without a
    trace: it is in the result stream as dropped (``drop_reason="block_timeout"``) under :attr:`frame_id`."""

    def __init__(self, message: str, frame_id: int) -> None:
        super().__init__(message)
        self.frame_id = frame_id


class StreamClosedError(BackendError):
    """The stream is closed: ``submit`` after ``close()``, or ``get()`` once every item has been read."""


@dataclass(frozen=True, eq=False)
class StreamItem:
    """What became of one submitted frame.

    Attributes:
        frame_id: the id ``submit`` returned.
        result: the inspection result; None when the frame was dropped or inspection failed.
        dropped: True when the frame was never inspected because of the drop policy or a cancel.
        drop_reason: ``"drop_oldest"``, ``"drop_newest"``, ``"block_timeout"`` or ``"cancelled"``; None
            unless dropped.
        error: the exception inspection raised (the stream goes on with the next frame); None otherwise.
        submitted_at: ``time.monotonic()`` when ``submit`` was called.
        started_at: ``time.monotonic()`` when inspection started; None when dropped.
        finished_at: ``time.monotonic()`` when inspection ended or the frame was dropped.
        frame: the frame itself when the stream keeps frames (``keep_frames=True``) and it was not
            dropped; None otherwise (dropped frames are released at once).
    """

    frame_id: int
    result: InspectionResult | None
    dropped: bool
    drop_reason: str | None
    error: BaseException | None
    submitted_at: float
    started_at: float | None
    finished_at: float
    frame: np.ndarray | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        """``"inspected"``, ``"failed"`` or ``"dropped"``."""
        return "dropped" if self.dropped else ("failed" if self.error is not None else "inspected")

    @property
    def latency_s(self) -> float:
        """Seconds from ``submit`` to the end of inspection (or to the drop)."""
        return self.finished_at - self.submitted_at


@dataclass(frozen=True)
class StreamCounts:
    """Frames of a stream so far; ``submitted == inspected + failed + dropped + pending``."""

    submitted: int
    inspected: int
    failed: int
    dropped: int

    @property
    def pending(self) -> int:
        """Frames waiting or being inspected."""
        return self.submitted - self.inspected - self.failed - self.dropped


class _Slot:
    __slots__ = ("frame", "frame_id", "item", "started_at", "submitted_at")

    def __init__(self, frame_id: int, submitted_at: float) -> None:
        self.frame_id = frame_id
        self.frame: np.ndarray | None = None
        self.submitted_at = submitted_at
        self.started_at: float | None = None
        self.item: StreamItem | None = None


def _check_settings(drop_policy: Any, queue_size: Any) -> None:
    if drop_policy not in DROP_POLICIES:
        raise ConfigError(f"drop_policy must be one of {', '.join(DROP_POLICIES)}, got {drop_policy!r}")
    if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
        raise ConfigError(f"queue_size must be an integer >= 1, got {queue_size!r}")


class FrameQueue:
    """The drop policy and the ordered result stream, independent of how frames are inspected.

    Producers call :meth:`put`; workers call :meth:`take` and then :meth:`finish` (any number of workers,
    finishing in any order); consumers read :meth:`get`, :meth:`ready` or :meth:`results`, in frame-id
    order. Thread-safe: one lock, condition variables, no polling.
    """

    def __init__(self, drop_policy: str = "block", queue_size: int = 4, *, keep_frames: bool = False) -> None:
        """
        Args:
            drop_policy: ``"block"``, ``"drop_oldest"`` or ``"drop_newest"`` (see the module docstring).
            queue_size: frames held waiting for a worker (>= 1; frames taken by workers are not counted).
            keep_frames: hand each inspected frame back in its :class:`StreamItem` (``item.frame``).

        Raises:
            ConfigError: an unknown policy or ``queue_size < 1``.
        """
        _check_settings(drop_policy, queue_size)
        self.drop_policy = drop_policy
        self.queue_size = queue_size
        self.keep_frames = bool(keep_frames)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)  # producers of "block" wait here
        self._work = threading.Condition(self._lock)  # workers wait here
        self._ready = threading.Condition(self._lock)  # consumers wait here
        self._waiting: deque[_Slot] = deque()  # not yet taken by a worker, oldest first
        self._running: dict[int, _Slot] = {}
        self._order: deque[_Slot] = deque()  # every slot whose item is not yet read, in frame-id order
        self._last_id: int | None = None
        self._closed = False
        self._n = {"submitted": 0, "inspected": 0, "failed": 0, "dropped": 0}

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def counts(self) -> StreamCounts:
        """A snapshot of the counters."""
        with self._lock:
            return StreamCounts(**self._n)

    def put(self, frame: np.ndarray, frame_id: int | None = None, timeout: float | None = None) -> int:
        """Submit a frame; returns its id. Never blocks unless the policy is ``"block"`` and the queue is full.

        Args:
            frame: the frame (not copied: do not write into it afterwards).
            frame_id: an integer greater than every id before it; None: the previous id + 1 (from 0).
            timeout: ``"block"`` only: seconds to wait for room; None: wait as long as it takes.

        Raises:
            QueueFullError: ``"block"`` and no room within ``timeout`` (the frame is emitted as dropped).
            StreamClosedError: the stream is closed (also when it closes while this call waits).
            InputError: a None frame, ``frame_id`` not an integer greater than the previous id, or a
                negative timeout.
        """
        if frame is None:
            raise InputError("frame is None (a camera read that failed?): nothing to inspect")
        if timeout is not None and not timeout >= 0:
            raise InputError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
        now = time.monotonic()
        with self._lock:
            self._check_put(frame_id)
            if self.drop_policy == "block":
                deadline = None if timeout is None else now + timeout
                while len(self._waiting) >= self.queue_size and not self._closed:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        slot = self._new_slot(frame_id, now)
                        self._drop(slot, BLOCK_TIMEOUT)
                        raise QueueFullError(f"frame {slot.frame_id}: no room in the queue of {self.queue_size} "
                                             f"within {timeout} s (emitted as dropped, reason block_timeout)",
                                             slot.frame_id)
                    self._space.wait(remaining)
                self._check_put(frame_id)
            slot = self._new_slot(frame_id, now)
            if len(self._waiting) >= self.queue_size:
                if self.drop_policy == "drop_newest":
                    self._drop(slot, DROP_NEWEST)
                    return slot.frame_id
                self._drop(self._waiting.popleft(), DROP_OLDEST)
            slot.frame = frame
            self._waiting.append(slot)
            self._work.notify()
            return slot.frame_id

    def take(self) -> tuple[int, np.ndarray] | None:
        """Worker side: wait for the oldest waiting frame and return ``(frame_id, frame)``; the caller must
        :meth:`finish` it. Returns None once the stream is closed and no frame waits (the worker stops)."""
        with self._lock:
            while not self._waiting:
                if self._closed:
                    return None
                self._work.wait()
            slot = self._waiting.popleft()
            self._space.notify()
            slot.started_at = time.monotonic()
            self._running[slot.frame_id] = slot
            frame = slot.frame
            if not self.keep_frames:
                slot.frame = None
            assert frame is not None
            return slot.frame_id, frame

    def finish(self, frame_id: int, result: InspectionResult | None = None,
               error: BaseException | None = None) -> None:
        """Worker side: report what inspecting a taken frame gave, a result or the exception it raised.

        Raises:
            InputError: ``frame_id`` is not a taken, unfinished frame, or neither / both of result and error.
        """
        if (result is None) == (error is None):
            raise InputError("finish() needs exactly one of result= and error=")
        with self._lock:
            slot = self._running.pop(frame_id, None)
            if slot is None:
                raise InputError(f"frame {frame_id} is not being inspected (never taken, or finished already)")
            assert slot.started_at is not None
            slot.item = StreamItem(frame_id, result, False, None, error, slot.submitted_at, slot.started_at,
                                   time.monotonic(), slot.frame)
            slot.frame = None
            self._n["inspected" if error is None else "failed"] += 1
            self._ready.notify_all()

    def get(self, timeout: float | None = None) -> StreamItem:
        """The next item in frame-id order, waiting for it when it is not ready.

        Raises:
            TimeoutError: no item within ``timeout`` seconds (None: wait as long as it takes).
            StreamClosedError: the stream is closed and every item has been read (the end of the stream).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._order and self._order[0].item is not None:
                    return self._pop()
                if self._closed and not self._order:
                    raise StreamClosedError("the stream is closed and every item has been read")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no stream item within {timeout} s")
                self._ready.wait(remaining)

    def ready(self) -> list[StreamItem]:
        """Every item ready now, in frame-id order (possibly none); never waits."""
        with self._lock:
            items = []
            while self._order and self._order[0].item is not None:
                items.append(self._pop())
            return items

    def results(self, timeout: float | None = None) -> Iterator[StreamItem]:
        """Iterate the items in frame-id order until the stream is closed and every item read.

        Read it from a consumer thread while producing, or after :meth:`close`: without a close it waits
        for more frames. ``timeout``: per item, as in :meth:`get`.
        """
        while True:
            try:
                yield self.get(timeout)
            except StreamClosedError:
                return

    def close(self, drain: bool = True) -> None:
        """No more frames. ``drain=True``: waiting frames are still handed to workers; False: they are
        emitted as dropped (``"cancelled"``). Wakes every waiting producer, worker and consumer; idempotent."""
        with self._lock:
            self._closed = True
            if not drain:
                while self._waiting:
                    self._drop(self._waiting.popleft(), CANCELLED)
            self._space.notify_all()
            self._work.notify_all()
            self._ready.notify_all()

    # -- under the lock ------------------------------------------------------------------------------

    def _check_put(self, frame_id: int | None) -> None:
        if self._closed:
            raise StreamClosedError("the stream is closed: no more frames can be submitted")
        if frame_id is None:
            return
        if not isinstance(frame_id, numbers.Integral) or isinstance(frame_id, bool):
            raise InputError(f"frame_id must be an integer or None, got {frame_id!r}")
        if self._last_id is not None and frame_id <= self._last_id:
            raise InputError(f"frame_id must increase: got {frame_id} after {self._last_id}")

    def _new_slot(self, frame_id: int | None, submitted_at: float) -> _Slot:
        new_id = int(frame_id) if frame_id is not None else (0 if self._last_id is None else self._last_id + 1)
        self._last_id = new_id
        slot = _Slot(new_id, submitted_at)
        self._order.append(slot)
        self._n["submitted"] += 1
        return slot

    def _drop(self, slot: _Slot, reason: str) -> None:
        slot.frame = None
        slot.item = StreamItem(slot.frame_id, None, True, reason, None, slot.submitted_at, None, time.monotonic())
        self._n["dropped"] += 1
        self._ready.notify_all()

    def _pop(self) -> StreamItem:
        item = self._order.popleft().item
        assert item is not None
        return item
