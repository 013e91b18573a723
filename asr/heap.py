"""Giving freed heap memory back to the system when the engine goes idle.

A long file's working memory (decoded samples, features, intermediate arrays: tens of MB per request, more
with several at once) is freed after the request, but glibc keeps the freed pages in its arenas. After 10
requests of a 3-minute file, 5 at a time, a process held about 300 MiB more than after loading, all of it
free; `malloc_trim(0)` handed it back in under 0.2 s (docs/benchmarks.md, Memory). The engine asks for that
when its last request leaves; it runs on a thread of its own, at most every `min_interval_s`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None else None  # CDLL calls release the GIL
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
        return None


class HeapTrimmer:
    """`request()` trims the heap in the background, unless a trim ran less than `min_interval_s` ago."""

    def __init__(self, min_interval_s: float = 10.0, *, enabled: bool = True):
        self.min_interval_s = min_interval_s
        self.trims = 0
        self._trim = _glibc_malloc_trim() if enabled else None
        self._lock = threading.Lock()
        self._running = False
        self._last = float("-inf")

    @property
    def available(self) -> bool:
        return self._trim is not None

    def request(self) -> bool:
        """Start a trim now if none ran recently; True when one was started."""
        if self._trim is None:
            return False
        with self._lock:
            now = time.monotonic()
            if self._running or now - self._last < self.min_interval_s:
                return False
            self._running, self._last = True, now
        threading.Thread(target=self._run, name="heap-trim", daemon=True).start()
        return True

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            assert self._trim is not None
            self._trim(0)
            self.trims += 1
            logger.debug("heap trimmed in %.0f ms", (time.perf_counter() - started) * 1000)
        finally:
            with self._lock:
                self._running = False
