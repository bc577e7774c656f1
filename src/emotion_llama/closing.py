"""Objects that hold a resource (a native model, a thread) until closed; a ``with`` block closes them."""

from __future__ import annotations

from contextlib import AbstractContextManager


class Closeable(AbstractContextManager["Closeable"]):
    """``with obj:`` returns ``obj`` and calls :meth:`close` on the way out, error or not."""

    def close(self) -> None:
        """Release what the object holds; calling it again does nothing."""

    def __exit__(self, *exc: object) -> None:
        self.close()
