"""The open / closed life of a runtime, shared by the detector backends and the classifier runtimes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from protoinspect.sdk.errors import BackendError

_Runtime = TypeVar("_Runtime", bound="RuntimeLifecycle")


class RuntimeLifecycle(ABC):
    """Closed state, idempotent :meth:`close` and the context manager of a runtime.

    Subclasses set ``name`` (class attribute) and ``device``, call :meth:`_open` once their runtime objects
    exist, and implement :meth:`_release` and :meth:`describe`.
    """

    name: ClassVar[str] = ""
    device: str

    def _open(self) -> None:
        """Mark the runtime open (the end of a successful ``__init__``)."""
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (and before a successful ``__init__``)."""
        return getattr(self, "_closed", True)

    def _require_open(self) -> None:
        """Raise :class:`BackendError` when the runtime is closed."""
        if self.closed:
            msg = f"{type(self).__name__} ({self.name}, {self.device}) is closed: create a new one to run again"
            raise BackendError(msg)

    @abstractmethod
    def _release(self) -> None:
        """Drop the runtime objects (called once by :meth:`close`)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What runs where, JSON-safe."""

    def close(self) -> None:
        """Release the runtime objects; idempotent. Running afterwards raises :class:`BackendError`."""
        if not self.closed:
            self._closed = True
            self._release()

    def __enter__(self: _Runtime) -> _Runtime:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
