"""Live transcription of a growing recording (the web UI's live tab), on the streaming core.

A `LiveSession` feeds microphone chunks into an `asr.streaming.StreamSession` in 2pass mode with
re-decoded drafts: a streaming FSMN-VAD cuts sentences; a sentence the VAD has closed is transcribed
once through `Engine.transcribe` and its text is final; the open one is decoded again on each chunk
for the tentative text. As on the WebSocket endpoint, finals run off the feeding path (`FinalsInOrder`): a
chunk never waits for the sentence before it, whose last draft stands in for it until its final is in. So each chunk costs one VAD step plus at most one decode of the open segment,
which the VAD cuts at 15 s; audio before the open segment is dropped. The WebSocket endpoint's 2pass
streams run on the same `StreamSession`. Nothing here knows about Gradio.
"""  # noqa: E501

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE
from .engine import Engine
from .streaming import (
    FinalsInOrder,
    StreamConfig,
    StreamingVad,
    StreamResult,
    StreamSession,
    StreamStats,
    get_streaming_vad,
    to_mono_16k,
)

__all__ = ["LiveSession", "LiveUpdate", "StreamingVad", "get_streaming_vad", "to_mono_16k"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveUpdate:
    """What to show after a chunk: the settled text and the tentative text of the open segment."""

    final_text: str
    partial_text: str

    @property
    def text(self) -> str:
        return self.final_text + self.partial_text


class LiveSession:
    """One recording. Call `feed()` per chunk, `finish()` when the recording stops. Not thread-safe:
    one session belongs to one browser stream, whose chunks arrive one after another."""

    def __init__(
        self,
        engine: Engine,
        vad: StreamingVad | None = None,
        *,
        hotwords: str | None = None,
        min_partial_s: float = 0.3,
    ):
        # Checked now: the stream skips input errors per segment (a blip too short to decode), which would
        # otherwise swallow a bad hotword list and leave the speaker with no text and no reason.
        engine.resolve_hotwords(hotwords)
        config = StreamConfig(mode="2pass", partials="redecode", hotwords=hotwords, min_partial_s=min_partial_s)
        self._stream = StreamSession(engine, config, vad=vad or get_streaming_vad(engine), defer_finals=True)
        self._finals_in_order = FinalsInOrder(self._stream)
        self._finals: list[str] = []
        #: The last draft of each sentence whose final is still being transcribed, shown until it is in.
        self._standing_in: dict[int, str] = {}
        self._draft = ""
        self._received = 0.0

    @property
    def stats(self) -> StreamStats:
        return self._stream.stats

    @property
    def received_s(self) -> float:
        return self._received

    @property
    def buffered_s(self) -> float:
        return self._stream.buffered_s

    def feed(self, samples: np.ndarray, sample_rate: int) -> LiveUpdate:
        chunk = to_mono_16k(samples, sample_rate)
        self._received += chunk.size / SAMPLE_RATE
        for result in self._stream.feed(chunk):
            self._take(result)
        self._collect(self._finals_in_order.ready())
        return self._update()

    def finish(self) -> LiveUpdate:
        """Close the open segment (the recording stopped mid-speech) and return the whole text."""
        for result in self._stream.finish():
            self._take(result)
        self._draft = ""
        self._collect(self._finals_in_order.drain())
        return self._update()

    def _take(self, result: StreamResult) -> None:
        if result.kind == "closed":
            self._standing_in[id(result.closed)] = self._draft
            self._draft = ""
            self._finals_in_order.submit(result)
        elif result.kind == "draft":
            self._draft = result.text

    def _collect(self, finals: list[StreamResult]) -> None:
        for final in finals:
            if final.text:
                self._finals.append(final.text)
        waiting = {id(closed.closed) for closed in self._finals_in_order.waiting}
        self._standing_in = {key: text for key, text in self._standing_in.items() if key in waiting}

    def _update(self) -> LiveUpdate:
        return LiveUpdate("".join(self._finals), "".join(self._standing_in.values()) + self._draft)
