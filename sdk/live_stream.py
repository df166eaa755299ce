"""Live camera streams: a bounded queue in front of an inspector, with the frame-drop policy the user chose.

A camera delivers frames at its own rate; when they come faster than they are inspected, something has
to give. :class:`LiveInspector` holds at most ``queue_size`` frames waiting for inspection and applies
``drop_policy`` when a frame arrives at a full queue:

- ``"block"``: :meth:`LiveInspector.submit` waits for room (with ``timeout=``: a frame that gets no room
  in time is dropped with ``drop_reason="block_timeout"`` and :class:`QueueFullError` is raised);
- ``"drop_oldest"``: the oldest waiting frame is discarded to make room (``drop_reason="drop_oldest"``);
- ``"drop_newest"``: the incoming frame is discarded (``drop_reason="drop_newest"``).

Never silently: every submitted frame comes out of the result stream exactly once, as a
:class:`StreamItem` that is inspected (``result``), failed (``error``: the exception inspection raised,
delivered, not swallowed and not re-raised in the worker) or dropped (``dropped=True`` with its
``drop_reason``). Items come out in frame-id order, which is submission order: a dropped frame is
emitted at its position, after the frames submitted before it, not at the moment it is dropped.
``counts`` adds up: ``submitted == inspected + failed + dropped + pending``.

Closing (:meth:`LiveInspector.close`, or leaving the ``with`` block) drains by default: frames waiting
are still inspected. ``close(drain=False)`` (and leaving the ``with`` block on an exception) cancels
them instead: they come out as dropped with ``drop_reason="cancelled"``. The frame being inspected
always finishes. Items stay readable after close until every one is read.

The policy and ordering live in :class:`FrameQueue`, which knows nothing of how a frame is inspected: a
worker takes a frame with :meth:`FrameQueue.take` and reports it with :meth:`FrameQueue.finish`, in any
order and from any thread. :class:`LiveInspector` runs one worker thread over an ``Inspector`` or any
callable ``frame -> InspectionResult``; a remote backend (a Triton client) can drive the same queue with
several requests in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import numpy as np

from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BackendError, ConfigError
from protoinspect.sdk.frame_queue import (
    BLOCK_TIMEOUT,
    CANCELLED,
    DROP_NEWEST,
    DROP_OLDEST,
    FrameQueue,
    InspectFn,
    QueueFullError,
    StreamClosedError,
    StreamCounts,
    StreamItem,
)

__all__ = ["BLOCK_TIMEOUT", "CANCELLED", "DROP_NEWEST", "DROP_OLDEST", "FrameQueue", "LiveInspector",
           "QueueFullError", "StreamClosedError", "StreamCounts", "StreamItem"]


def _inspect_fn(inspector: Any) -> InspectFn:
    method = getattr(inspector, "inspect", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(inspector):
        return inspector  # type: ignore[no-any-return]
    raise ConfigError(f"LiveInspector needs an Inspector or a callable frame -> InspectionResult, "
                      f"got {type(inspector).__name__}")


class LiveInspector:
    """Inspects a live stream of frames on a worker thread, applying the drop policy when frames come too fast.

    Example::

        with Inspector.from_bundle("bundles/tile", config=InspectorConfig(drop_policy="drop_oldest")) as insp, \\
                LiveInspector(insp) as live:
            for frame in camera:
                live.submit(frame)
                for item in live.ready():          # whatever is done, in frame order
                    if item.dropped:
                        log.warning("frame %d dropped (%s)", item.frame_id, item.drop_reason)
                    elif item.error is not None:
                        log.error("frame %d failed: %s", item.frame_id, item.error)
                    else:
                        act_on(item.result)

    The LiveInspector does not own the inspector: closing it leaves the inspector open. See the module
    docstring for ordering, closing and errors.
    """

    def __init__(self, inspector: Any, *, drop_policy: str | None = None, queue_size: int | None = None,
                 keep_frames: bool = False, workers: int = 1) -> None:
        """Start the worker thread(s).

        Args:
            inspector: an ``Inspector`` (its ``inspect`` is called) or any callable ``frame -> InspectionResult``.
            drop_policy: ``"block"``, ``"drop_oldest"`` or ``"drop_newest"``; None: the inspector's
                ``config.drop_policy`` (``InspectorConfig``'s default for a plain callable).
            queue_size: frames waiting at most; None: the inspector's ``config.queue_size`` likewise.
            keep_frames: hand each inspected frame back in its item (``item.frame``), e.g. to draw overlays.
            workers: inspection threads (1 for an in-process Inspector, which serialises calls anyway;
                more only for a callable that gains from concurrent calls, such as a remote server).

        Raises:
            ConfigError: an unknown policy, ``queue_size < 1``, ``workers < 1`` or an inspector that is
                not callable.
        """
        self._fn = _inspect_fn(inspector)
        config = getattr(inspector, "config", None)
        defaults = config if isinstance(config, InspectorConfig) else InspectorConfig()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        self.queue = FrameQueue(defaults.drop_policy if drop_policy is None else drop_policy,
                                defaults.queue_size if queue_size is None else queue_size, keep_frames=keep_frames)
        self._threads = [threading.Thread(target=self._work, name=f"protoinspect-live-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def drop_policy(self) -> str:
        """The policy in force."""
        return self.queue.drop_policy

    @property
    def queue_size(self) -> int:
        """Frames waiting at most."""
        return self.queue.queue_size

    @property
    def counts(self) -> StreamCounts:
        """Submitted / inspected / failed / dropped so far."""
        return self.queue.counts

    def submit(self, frame: np.ndarray, frame_id: int | None = None, timeout: float | None = None) -> int:
        """Hand a frame in; returns its id (see :meth:`FrameQueue.put` for arguments and errors)."""
        return self.queue.put(frame, frame_id, timeout)

    def get(self, timeout: float | None = None) -> StreamItem:
        """The next item in frame order (see :meth:`FrameQueue.get`)."""
        return self.queue.get(timeout)

    def ready(self) -> list[StreamItem]:
        """The items ready now, in frame order; never waits."""
        return self.queue.ready()

    def results(self, timeout: float | None = None) -> Iterator[StreamItem]:
        """Iterate the items until the stream is closed and every item read (see :meth:`FrameQueue.results`)."""
        return self.queue.results(timeout)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking frames and wait for the worker(s); idempotent. Unread items stay readable.

        Args:
            drain: True: frames still waiting are inspected first; False: they are emitted as dropped
                (``"cancelled"``). The frame being inspected finishes either way.
            timeout: seconds to wait for the workers; None: as long as it takes.

        Raises:
            TimeoutError: a worker is still inspecting after ``timeout``.
        """
        self.queue.close(drain)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"a live-stream worker is still inspecting after {timeout} s")

    def __enter__(self) -> LiveInspector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close: drain on a normal exit, cancel the waiting frames when an exception is propagating."""
        self.close(drain=exc_type is None)

    def __repr__(self) -> str:
        c = self.counts
        state = "closed" if self.queue.closed else "open"
        return (f"LiveInspector({state}, drop_policy={self.drop_policy!r}, queue_size={self.queue_size}, "
                f"submitted={c.submitted}, inspected={c.inspected}, failed={c.failed}, dropped={c.dropped})")

    def _work(self) -> None:
        while (task := self.queue.take()) is not None:
            frame_id, frame = task
            try:
                result = self._fn(frame)
                if result is None:
                    raise BackendError("the inspect callable returned None instead of an InspectionResult")
            except BaseException as exc:  # noqa: BLE001 - delivered in the stream as the item error, never lost
                self.queue.finish(frame_id, error=exc)
            else:
                self.queue.finish(frame_id, result=result)
            del frame, task
