"""A per-call hook between model calls: progress of a long transcription, and a way to stop it there.

FunASR decodes a long file as a series of model calls (VAD segments, grouped up to `batch_size_s`). Every
such call passes through `asr.batching`, which calls `before_model_call(seconds)` first, in the caller's
thread. A caller that wants progress or the power to stop sets a hook for the duration of its own call:

    with segment_hook(lambda seconds: ...):   # may raise an ASRError subclass to stop the transcription
        engine.transcribe(...)

The hook lives in a context variable, so it only sees its own caller's segments, whatever else runs in
the engine at the same time. An exception it raises ends that transcription (the engine releases the
model as for any error) and reaches the caller unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: Called with the seconds of audio the next model call decodes, before that call.
SegmentHook = Callable[[float], None]

_hook: ContextVar[SegmentHook | None] = ContextVar("asr_segment_hook", default=None)


@contextmanager
def segment_hook(hook: SegmentHook) -> Iterator[None]:
    """Call `hook(seconds)` before each model call made by this thread's transcriptions inside the block."""
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)


def before_model_call(seconds: float) -> None:
    """Run the caller's hook, if any (called by `asr.batching` for every model call)."""
    hook = _hook.get()
    if hook is not None:
        hook(seconds)
