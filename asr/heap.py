"""Giving freed heap memory back to the system when the engine goes idle.

A long file's working memory (decoded samples, features, intermediate arrays: tens of MB per request, more
with several at once) is freed after the request, but glibc keeps the freed pages in its arenas. After 10
requests of a 3-minute file, 5 at a time, a process held about 300 MiB more than after loading, all of it
free; `malloc_trim(0)` handed it back in under 0.2 s (docs/benchmarks.md, Memory). The engine trims once it
has been idle for a quiet period (HEAP_TRIM_QUIET_S), on a thread of its own, and once after loading.
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
    """Trims the heap in the background once the engine has been idle for `quiet_s` (every `enter()` matched by
    a `leave()`), at most once per idle period; `request()` trims now.

    Waiting for a quiet period is what keeps the trim off a stream of short requests: trimming in every short gap
    between them (at most every 10 s, as it once did) cost 15 % of their throughput on 2 cores, since the next
    requests fault the freed pages straight back in. A server that goes quiet still gives its memory back, a few
    seconds later.
    """

    def __init__(self, quiet_s: float = 3.0, *, enabled: bool = True):
        self.quiet_s = quiet_s
        self.trims = 0
        self._trim = _glibc_malloc_trim() if enabled else None
        self._condition = threading.Condition()
        self._running = False
        #: Requests inside the engine (decoding included).
        self._active = 0
        #: When the engine last went idle (monotonic), None while it is busy or once the idle period was trimmed.
        self._idle_since: float | None = None
        self._watcher: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._trim is not None

    def enter(self) -> None:
        """A request came in: no trim until the engine is idle again."""
        with self._condition:
            self._active += 1
            self._idle_since = None

    def leave(self) -> None:
        """A request left; when it was the last, trim if nothing else comes in for `quiet_s`."""
        with self._condition:
            self._active -= 1
            if self._trim is None or self._active > 0:
                return
            self._idle_since = time.monotonic()
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="heap-trim", daemon=True)
                self._watcher.start()
            self._condition.notify_all()

    def request(self) -> bool:
        """Start a trim now (after loading the models); False when trimming is off or one is running."""
        if self._trim is None:
            return False
        with self._condition:
            if self._running:
                return False
            self._running = True
        threading.Thread(target=self._run, name="heap-trim-now", daemon=True).start()
        return True

    def _watch(self) -> None:
        while True:
            with self._condition:
                while self._idle_since is None:
                    self._condition.wait()
                remaining = self._idle_since + self.quiet_s - time.monotonic()
                if remaining > 0:
                    self._condition.wait(remaining)
                    continue  # woken early (busy, idle again) or the period is over: look again
                self._idle_since = None
                if self._running:
                    continue
                self._running = True
            self._run()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            assert self._trim is not None
            self._trim(0)
            self.trims += 1
            logger.debug("heap trimmed in %.0f ms", (time.perf_counter() - started) * 1000)
        finally:
            with self._condition:
                self._running = False
