"""Concurrent streams' chunks through one ONNX Runtime call: `SharedSession`.

Each stream's step calls `run()` with its own feeds (batch 1: its chunk and its cache rows). At most `slots` calls
run at once (one per core on CPU, each with one intra-op thread). A caller that finds a slot free runs at once, alone:
nothing ever waits for company, so a lone stream pays no latency for batching. Callers that arrive while every slot
is busy queue; the next caller to get a slot takes its share of the queued requests with the same shapes (1/slots
of them, up to `max_batch`: the other slots take the rest as they free up) and runs them as one call, their rows
stacked along the batch axis, then hands each caller its own rows back. So batches form exactly when chunks would
otherwise wait for a core, and the weights are read once for all of them.

Rows never mix: every op of the two graphs works row by row (attention, FSMN, norms, the linear layers), so a
stream's fp32 outputs are the same alone or batched. Inputs listed in `ragged` may differ in length along an axis
(the decoder's tokens): shorter rows are zero-padded at the end, which the causal decoder never reads back for the
real positions. The int8 graphs quantize their activations per row (`asr.onnx.row_quantization`), so int8 rows
are the same alone or batched too; an int8 export that takes one scale per call is run with `max_batch` 1.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False)  # a request is itself: the queue removes it by identity
class _Request:
    feeds: dict[str, np.ndarray]
    key: tuple
    taken: bool = False
    done: bool = False
    outputs: list[np.ndarray] = field(default_factory=list)
    error: BaseException | None = None


class SharedSession:
    """An ONNX Runtime session shared by every stream, at most `slots` calls at a time, queued requests batched."""

    def __init__(self, session: Any, *, slots: int, max_batch: int, ragged: dict[str, int] | None = None):
        self.session = session
        self.slots = max(1, slots)
        self.max_batch = max(1, max_batch)
        self.ragged = ragged or {}
        self._free = self.slots
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        #: Calls made and rows they carried (rows / calls: the mean batch size).
        self.calls = 0
        self.rows = 0

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The session's outputs for one stream's feeds (batch 1), each with its batch axis of 1."""
        request = _Request(feeds, self._key(feeds))
        with self._cond:
            self._queue.append(request)
            while not request.done and (request.taken or self._free == 0):
                self._cond.wait()
            if request.done:
                return self._result(request)
            batch = self._take(request)
            self._free -= 1
        try:
            self._run_batch(batch)
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()
        return self._result(request)

    def _key(self, feeds: dict[str, np.ndarray]) -> tuple:
        return tuple(
            (name, tuple(-1 if axis == self.ragged.get(name) else n for axis, n in enumerate(a.shape) if axis))
            for name, a in sorted(feeds.items())
        )

    def _take(self, first: _Request) -> list[_Request]:
        same = [r for r in self._queue if r is not first and r.key == first.key]
        # A share of the queue, not all of it: the other slots free up soon and take the rest, so the queue is worked
        # off on every core at once (one call of 4 chunks costs 0.6x of 4 calls, but all on one core).
        limit = min(self.max_batch, -(-(len(same) + 1) // self.slots))
        batch = [first, *same[: limit - 1]]
        for request in batch:
            request.taken = True
            self._queue.remove(request)
        return batch

    def _run_batch(self, batch: list[_Request]) -> None:
        try:
            if len(batch) == 1:
                outputs = self.session.run(None, batch[0].feeds)
                batch[0].outputs = outputs
            else:
                feeds = {name: self._stack(name, [r.feeds[name] for r in batch]) for name in batch[0].feeds}
                outputs = self.session.run(None, feeds)
                for i, request in enumerate(batch):
                    request.outputs = [out[i : i + 1] for out in outputs]
        except BaseException as exc:  # every caller of the batch gets the error
            for request in batch:
                request.error = exc
        with self._cond:
            self.calls += 1
            self.rows += len(batch)
            for request in batch:
                request.done = True

    def _stack(self, name: str, rows: list[np.ndarray]) -> np.ndarray:
        axis = self.ragged.get(name)
        if axis is not None:
            longest = max(r.shape[axis] for r in rows)
            padded = []
            for r in rows:
                widths = [(0, 0)] * r.ndim
                widths[axis] = (0, longest - r.shape[axis])
                padded.append(np.pad(r, widths) if longest > r.shape[axis] else r)
            rows = padded
        return np.concatenate(rows, axis=0)

    @staticmethod
    def _result(request: _Request) -> list[np.ndarray]:
        if request.error is not None:
            raise request.error
        return request.outputs
