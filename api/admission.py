"""One admission limit for the whole service: API requests in flight plus UI jobs waiting in Gradio's queue.

The engine runs one model call at a time, so every admitted job is a job someone waits for. Rather than
let the API build an unbounded backlog next to the UI's bounded queue, both draw on the same budget,
`QUEUE_MAX_SIZE`: a job that would exceed it is refused at once (HTTP 503) instead of waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from messages import Lang, message

logger = logging.getLogger(__name__)


class Admission:
    """Counts API jobs in flight; reads the UI's waiting jobs from Gradio; refuses beyond `max_size`."""

    def __init__(self, max_size: int, ui_waiting: Callable[[], int] | None = None):
        self.max_size = max_size
        self._ui_waiting = ui_waiting or (lambda: 0)
        self._lock = threading.Lock()
        self._api = 0

    @property
    def api_in_flight(self) -> int:
        return self._api

    def ui_waiting(self) -> int:
        try:
            return int(self._ui_waiting())
        except Exception:  # a changed Gradio internal must not take the API down with it
            logger.debug("could not read the UI queue length", exc_info=True)
            return 0

    @property
    def depth(self) -> int:
        """Jobs counted against the limit now: API requests in flight + UI jobs waiting."""
        return self._api + self.ui_waiting()

    def full(self) -> bool:
        return self.depth >= self.max_size

    def try_enter(self) -> bool:
        """Take a place for one API job; False when the service is full. Pair with `leave()`."""
        with self._lock:
            if self._api + self.ui_waiting() >= self.max_size:
                return False
            self._api += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._api = max(0, self._api - 1)

    def busy_message(self, lang: Lang = "en") -> str:
        text = message("server_busy", lang, depth=self.depth, limit=self.max_size)
        return text[0].upper() + text[1:]

    def attach_gradio(self, blocks: Any) -> None:
        """Share the limit with a queued `gr.Blocks`: count its waiting jobs, and refuse new UI jobs when full.

        Gradio 6 keeps the queue in `blocks._queue` (created by `blocks.queue()`): `len()` is the number of
        waiting events, and `push()` answers ("queue_full") with HTTP 503 on its own. Gradio has no public hook,
        so this reads and wraps those two; if they are missing the API still counts its own jobs.
        """
        queue = getattr(blocks, "_queue", None)
        if queue is None or not hasattr(queue, "push"):
            logger.warning("Gradio queue not found: the API admission limit will not count UI jobs")
            return
        self._ui_waiting = lambda: len(queue)
        push = queue.push

        async def push_if_room(*args: Any, **kwargs: Any) -> Any:
            # Gradio already refuses when its own waiting jobs reach max_size; add the API's jobs to that count.
            if self._api and self.full():
                return False, self.busy_message(), "queue_full"
            return await push(*args, **kwargs)

        queue.push = push_if_room
