"""`stream=true` on `/v1/audio/transcriptions`: server-sent events as OpenAI's API sends them.

    data: {"type": "transcript.text.delta", "delta": "...", "start": 0.0, "end": 5.2}
    data: {"type": "transcript.text.done", "text": "...", "usage": {"type": "duration", "seconds": 120}}

One `transcript.text.delta` per speech segment as soon as the model has decoded it, in time order
(`asr.segments`), with `start` and `end` (seconds into the audio, our addition) so a client can show how far a long
file has got. Each delta is final: the segment's words punctuated on their own (`SpeechSegment.written`), with a
space before it where two Latin words meet. `transcript.text.done`'s `text` is exactly the deltas joined, so a
client that appends deltas shows the final text, character for character. The non-streamed response punctuates
the whole text at once and may differ from it at segment boundaries (a comma where a segment ends, say).

A failure after the stream has begun is an `error` event in OpenAI's error shape; input errors and a full server
are ordinary HTTP errors, since the audio is decoded and checked before the stream starts.

The transcription runs in a worker thread that owns the request's admission place until it ends. A client
that goes away stops it at the next segment: the model is freed without finishing a file nobody reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from asr.audio import Audio
from asr.engine import Engine, Transcription
from asr.errors import ASRError, ClientGoneError
from asr.segments import SpeechSegment, needs_space
from messages import Lang

from .errors import from_asr_error, internal_error

logger = logging.getLogger(__name__)

#: Headers that keep proxies (nginx: X-Accel-Buffering) from holding the events back.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_transcription(
    engine: Engine,
    audio: Audio,
    *,
    hotwords: str | None,
    lang: Lang,
    release: Callable[[], None],
    itn: bool | None = None,
    model: str | None = None,
    language: str | None = None,
) -> StreamingResponse:
    """Start transcribing `audio` now and answer with its events; `release()` runs when the work has ended.

    With ITN (`itn`, None: the engine's setting) each delta is written on its own, hotwords kept, so the deltas
    still add up to `transcript.text.done`'s text."""
    protected = engine.resolve_hotwords(hotwords) if engine.resolve_model(model) == "paraformer" else []
    written_form = (
        (lambda text: engine.itn.written(text, protected)) if (engine.config.itn if itn is None else itn) else None
    )
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    gone = threading.Event()

    def tell(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (kind, value))

    def on_segment(segment: SpeechSegment) -> None:
        if gone.is_set():
            raise ClientGoneError()
        tell("segment", segment)

    def work() -> None:
        try:
            tell(
                "done",
                engine.transcribe(
                    audio, hotwords=hotwords, on_segment=on_segment, itn=itn, model=model, language=language
                ),
            )
        except ClientGoneError:
            logger.info("streamed transcription of %s stopped: the client went away", audio.name or "upload")
        except Exception as exc:
            tell("error", exc)
        finally:
            release()

    loop.run_in_executor(None, work)
    return StreamingResponse(
        _events(events, gone, lang, written_form), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _events(
    events: asyncio.Queue[tuple[str, Any]],
    gone: threading.Event,
    lang: Lang,
    written_form: Callable[[str], str] | None = None,
) -> AsyncIterator[str]:
    written = ""
    try:
        while True:
            kind, value = await events.get()
            if kind == "segment":
                text = value.written
                if text and written_form is not None:  # off the model's thread, off the event loop
                    text = await run_in_threadpool(written_form, text)
                if not text:
                    continue
                delta = (" " if needs_space(written, text) else "") + text
                written += delta
                yield _event(
                    {
                        "type": "transcript.text.delta",
                        "delta": delta,
                        "start": round(value.start, 3),
                        "end": round(value.end, 3),
                    }
                )
            elif kind == "done":
                yield _event(done_event(value, written))
                return
            else:
                yield _event(_error_event(value, lang))
                return
    finally:
        gone.set()  # the client left, or the stream is over: either way no one reads further segments


def done_event(result: Transcription, written: str) -> dict:
    """The last event: `written`, the deltas joined (see the module's docstring), and the audio's duration."""
    return {
        "type": "transcript.text.done",
        "text": written,
        "usage": {"type": "duration", "seconds": math.ceil(result.duration)},
    }


def _error_event(exc: BaseException, lang: Lang) -> dict:
    if isinstance(exc, ASRError):
        error = from_asr_error(exc, lang)
    else:  # the engine has logged it; the client gets OpenAI's generic 500 message
        error = internal_error()
    return {"type": "error", **error.body()}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
