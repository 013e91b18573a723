"""Per-call hooks for a long transcription: its progress, and points where its caller can stop it.

FunASR decodes a long file as a series of model calls (VAD segments, grouped up to `batch_size_s`). Every
such call passes through `asr.batching`, which calls `before_model_call(seconds)` first, in the caller's
thread. A caller that wants progress or the power to stop sets hooks for the duration of its own call:

    with segment_hook(lambda seconds: ...), stop_check(check):   # both may raise an ASRError subclass
        engine.transcribe(...)

`segment_hook` is called before each model call with the seconds that call decodes. `stop_check` is called
at every `checkpoint()`: before each model call too, and also where there is no model call for a long
time: while ffmpeg decodes (`asr.audio` polls it and kills ffmpeg when the check raises), between the VAD's
60-second chunks and between the punctuation model's pieces (`install_checkpoints`). Both hooks run with the
model lock held (all but the decoding's), so they must be cheap, in-memory, and never wait for storage or
the network: a slow hook would stall every other request.

The hooks live in context variables, so they only see their own caller's work, whatever else runs in the
engine at the same time. An exception they raise ends that transcription (the engine releases the model as
for any error) and reaches the caller unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: Called with the seconds of audio the next model call decodes, before that call.
SegmentHook = Callable[[float], None]
#: Called at each checkpoint; raises to stop the transcription there.
StopCheck = Callable[[], None]

_hook: ContextVar[SegmentHook | None] = ContextVar("asr_segment_hook", default=None)
_check: ContextVar[StopCheck | None] = ContextVar("asr_stop_check", default=None)


@contextmanager
def segment_hook(hook: SegmentHook) -> Iterator[None]:
    """Call `hook(seconds)` before each model call made by this thread's transcriptions inside the block."""
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)


@contextmanager
def stop_check(check: StopCheck) -> Iterator[None]:
    """Call `check()` at every checkpoint of this thread's decoding and transcriptions inside the block."""
    token = _check.set(check)
    try:
        yield
    finally:
        _check.reset(token)


def checkpoint() -> None:
    """Run the caller's stop check, if any."""
    check = _check.get()
    if check is not None:
        check()


def before_model_call(seconds: float) -> None:
    """The caller's stop check, then its hook, if any (called by `asr.batching` for every model call)."""
    checkpoint()
    hook = _hook.get()
    if hook is not None:
        hook(seconds)


def install_checkpoints(model: Any, method: str) -> None:
    """Run `checkpoint()` before every call of `model.<method>` (one step of a long loop inside FunASR)."""
    original = getattr(model, method)

    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        checkpoint()
        return original(*args, **kwargs)

    setattr(model, method, checked)
