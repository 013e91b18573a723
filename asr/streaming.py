"""Real-time recognition of one audio stream: FunASR's online and 2pass modes, and the web UI's live tab,
without any protocol or UI.

- **online**: the streaming Paraformer (paraformer-zh-streaming) decodes each 600 ms chunk with its
  encoder and decoder caches, so a chunk costs the same at minute 10 as at second 1. Its text per
  chunk is an increment: the partial text of the utterance is the concatenation.
- **2pass**: the same partials, plus a streaming FSMN-VAD that cuts sentences; each closed segment
  goes through `Engine.transcribe` (SeACo with hotwords, punctuation, sentence times, confidence), so
  its final text is what a file upload of that segment gives. The streaming model's cache is reset at
  every segment end, as FunASR's runtime does. A closed sentence is urgent in the engine (file jobs give
  way to it at their next segment); with `defer_finals` the caller transcribes it with `final()` on a
  thread of its own (the WebSocket endpoint does), so the partials after it never wait for it.
- **2pass with re-decoded drafts** (the web UI's live tab, `partials="redecode"`): instead of the
  streaming model, the open segment is decoded again by the engine on each feed for a tentative text
  (not counted as a request); no second model is needed.

One `StreamSession` serves one stream, utterance after utterance (`finish()` ends one). Sessions are
not thread-safe (one stream's chunks arrive in order; `final()` may run beside them); the models they share
are: the streaming Paraformer's copies and the VAD take one call at a time each, the engine owns its own lock.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .audio import SAMPLE_RATE
from .engine import Engine, Transcription
from .errors import InputError
from .stream_models import (
    SAMPLES_PER_CHUNK_UNIT,
    VAD_CHUNK_MS,
    OnlineModel,
    StreamingModel,
    StreamingVad,
    get_online_model,
    get_streaming_vad,
    online_model_state,
    preload,
    to_mono_16k,
)

__all__ = [  # the models' names too: the callers of a stream need them with it
    "ClosedSegment",
    "FinalsInOrder",
    "OnlineModel",
    "StreamConfig",
    "StreamingModel",
    "StreamMode",
    "StreamResult",
    "StreamSession",
    "StreamStats",
    "StreamingVad",
    "get_online_model",
    "get_streaming_vad",
    "online_model_state",
    "preload",
    "to_mono_16k",
    "VAD_CHUNK_MS",
]

StreamMode = Literal["online", "2pass"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamConfig:
    """How one utterance is recognised (FunASR's first message, parsed)."""

    mode: StreamMode = "2pass"
    #: Streaming model look-ahead configuration in 60 ms units: (history, chunk, look-ahead).
    chunk_size: tuple[int, int, int] = (5, 10, 5)
    encoder_look_back: int = 4
    decoder_look_back: int = 1
    #: Hotwords for the final (engine) pass: None = the engine's default list.
    hotwords: str | list[str] | None = None
    #: Written form for finals (`asr.itn`; None: the engine's ITN setting). Partials and drafts stay as spoken,
    #: as FunASR's runtime sends them.
    itn: bool | None = None
    #: Where 2pass partials come from: the streaming model ("online"), or the engine re-decoding the open
    #: segment on each feed ("redecode": a `draft` with the segment's whole tentative text).
    partials: Literal["online", "redecode"] = "online"
    #: redecode: the open segment is decoded once it is this long.
    min_partial_s: float = 0.3
    #: The engine model of the final pass (and redecode drafts): None is the default (SeACo-Paraformer);
    #: "sensevoice" with `language` (FunASR's `svs_lang`). Partials always come from the streaming Paraformer.
    final_model: str | None = None
    language: str | None = None

    @property
    def chunk_samples(self) -> int:
        return self.chunk_size[1] * SAMPLES_PER_CHUNK_UNIT


@dataclass(frozen=True)
class ClosedSegment:
    """A sentence the VAD has closed, not yet transcribed (a session with `defer_finals`)."""

    samples: np.ndarray
    hotwords: str | list[str] | None
    itn: bool | None = None
    model: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class StreamResult:
    """One answer: an online `partial` (new text since the last partial), a `draft` (the open segment's
    whole tentative text, redecode only), a `final` segment, or, with `defer_finals`, a `closed` segment whose
    final `StreamSession.final()` gives.

    `start`/`end` are seconds from the start of the utterance: the audio a partial covers, or the
    segment. `is_last` marks the result that ends the utterance (after `finish()`).
    """

    kind: Literal["partial", "draft", "final", "closed"]
    text: str
    start: float
    end: float
    transcription: Transcription | None = None
    is_last: bool = False
    closed: ClosedSegment | None = None


@dataclass
class StreamStats:
    chunks: int = 0
    partial_steps: int = 0
    segments_closed: int = 0
    audio_seconds: float = 0.0
    #: Most samples held in memory at once (the open segment plus a short look-back).
    max_buffered: int = 0
    #: Seconds of audio the last feed sent to the engine (closed segments and the draft), and the most.
    last_decoded_s: float = 0.0
    max_decoded_s: float = 0.0


@dataclass
class _Utterance:
    """Per-utterance state, dropped whole by `finish()`."""

    online_cache: dict[str, Any] = field(default_factory=dict)
    vad_cache: dict[str, Any] = field(default_factory=dict)
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    pending_start: int = 0  # sample index of pending[0] since the utterance began
    online_dirty: bool = False  # the streaming model has audio it has not finalised
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    buffer_start: int = 0
    vad_pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    open_start: int | None = None  # sample index where the open VAD segment began
    received: int = 0


#: Audio kept before the current position while nobody speaks, so a segment start the VAD reports
#: late (it looks back up to a few hundred ms) is still in the buffer.
LOOKBACK_S = 2.0


class StreamSession:
    """One stream. `feed()` 16 kHz float32 mono samples as they arrive, `finish()` at the end of an
    utterance (the session then starts the next one), `close()` when the stream goes away."""

    def __init__(
        self,
        engine: Engine,
        config: StreamConfig,
        *,
        online: StreamingModel | None = None,
        vad: StreamingVad | None = None,
        defer_finals: bool = False,
    ):
        self.engine = engine
        self.config = config
        #: Closed sentences come back as `closed` results, for the caller to pass to `final()` on a thread of
        #: its own: the next partials then never wait for a sentence's turn at the engine.
        self.defer_finals = defer_finals
        self.online = online
        self.vad = vad
        self.stats = StreamStats()
        self._u = _Utterance()
        self._decoded = 0
        self.reconfigure(config)

    def reconfigure(self, config: StreamConfig) -> None:
        """Settings for the next utterance (only between utterances: the caches depend on them). Loads
        the streaming model and the VAD on first need."""
        if config.mode == "online" or config.partials == "online":
            self.online = self.online or get_online_model(self.engine)
        if config.mode == "2pass":
            self.vad = self.vad or get_streaming_vad(self.engine)
        self.config = config

    @property
    def utterance_seconds(self) -> float:
        return self._u.received / SAMPLE_RATE

    @property
    def buffered_s(self) -> float:
        """Seconds of audio held now (the open segment, a short look-back, a partial chunk)."""
        return (self._u.buffer.size + self._u.pending.size) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[StreamResult]:
        u = self._u
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not chunk.size:
            return []
        self.stats.chunks += 1
        self.stats.audio_seconds += chunk.size / SAMPLE_RATE
        self._decoded = 0
        u.received += chunk.size
        results = []
        if self._streaming_partials:
            u.pending = np.concatenate([u.pending, chunk])
            results += self._online_steps()
        if self.config.mode == "2pass":
            u.buffer = np.concatenate([u.buffer, chunk])
            u.vad_pending = np.concatenate([u.vad_pending, chunk])
            # The VAD steps on 200 ms at least: FunASR's clients send 60 ms frames, and a VAD call costs
            # mostly its fixed overhead, under a lock every stream shares.
            if u.vad_pending.size >= VAD_CHUNK_MS * SAMPLE_RATE // 1000:
                results += self._vad_step()
            if self.config.partials == "redecode":
                results += self._draft()
            self._trim()
        self.stats.max_buffered = max(self.stats.max_buffered, u.buffer.size + u.pending.size)
        self._record_decoded()
        return results

    def finish(self) -> list[StreamResult]:
        """End the utterance: flush the streaming model, close the open segment. The last result has
        `is_last` set (an empty one when there is nothing left to say)."""
        u = self._u
        results: list[StreamResult] = []
        end = u.received / SAMPLE_RATE
        self._decoded = 0
        if self.config.mode == "online":
            text = self._online_final()
            results.append(StreamResult("partial", text, u.pending_start / SAMPLE_RATE, end, is_last=True))
        else:
            if u.vad_pending.size:
                results += self._vad_step()
            if self._streaming_partials:
                self._online_final()  # the final pass gives this text; the streaming model only resets
            if u.open_start is not None:
                results += self._close_segment(u.open_start, u.received)
        if self.config.mode == "2pass":
            if results and results[-1].kind in ("final", "closed"):
                results[-1] = replace(results[-1], is_last=True)
            else:
                results.append(StreamResult("final", "", end, end, is_last=True))
        self._record_decoded()
        self._u = _Utterance()
        return results

    def close(self) -> None:
        """Drop everything the stream holds (also fine mid-utterance: nothing is transcribed)."""
        self._u = _Utterance()

    @property
    def _streaming_partials(self) -> bool:
        return self.config.mode == "online" or self.config.partials == "online"

    def _record_decoded(self) -> None:
        self.stats.last_decoded_s = self._decoded / SAMPLE_RATE
        self.stats.max_decoded_s = max(self.stats.max_decoded_s, self.stats.last_decoded_s)

    # ------------------------------------------------------------------ online pass
    def _online_steps(self) -> list[StreamResult]:
        u, stride = self._u, self.config.chunk_samples
        results = []
        while u.pending.size >= stride:
            piece, u.pending = u.pending[:stride], u.pending[stride:]
            text = self._step(piece, is_final=False)
            start = u.pending_start / SAMPLE_RATE
            u.pending_start += stride
            if text:
                results.append(StreamResult("partial", text, start, u.pending_start / SAMPLE_RATE))
        return results

    def _online_final(self) -> str:
        """Run the streaming model's last step on what is pending, then reset its cache."""
        u = self._u
        text = ""
        if u.online_dirty or u.pending.size:
            text = self._step(u.pending, is_final=True)
        u.pending_start += u.pending.size
        u.pending = np.zeros(0, dtype=np.float32)
        u.online_cache = {}
        u.online_dirty = False
        return text

    def _step(self, samples: np.ndarray, *, is_final: bool) -> str:
        c = self.config
        self.stats.partial_steps += 1
        self._u.online_dirty = not is_final
        return self.online.step(
            samples,
            self._u.online_cache,
            is_final=is_final,
            chunk_size=c.chunk_size,
            encoder_look_back=c.encoder_look_back,
            decoder_look_back=c.decoder_look_back,
        )

    # ------------------------------------------------------------------ final pass (2pass)
    def _vad_step(self) -> list[StreamResult]:
        u = self._u
        samples, u.vad_pending = u.vad_pending, np.zeros(0, dtype=np.float32)
        results = []
        for start_ms, end_ms in self.vad.step(samples, u.vad_cache):
            results += self._on_vad_event(start_ms, end_ms)
        return results

    def _on_vad_event(self, start_ms: int, end_ms: int) -> list[StreamResult]:
        u = self._u
        if start_ms >= 0:
            u.open_start = start_ms * SAMPLE_RATE // 1000
        if end_ms < 0 or u.open_start is None:
            return []
        # The segment ended: the streaming model starts afresh for the next sentence, as in FunASR's runtime.
        if self._streaming_partials:
            self._online_final()
        start, u.open_start = u.open_start, None
        return self._close_segment(start, end_ms * SAMPLE_RATE // 1000)

    def _close_segment(self, start: int, end: int) -> list[StreamResult]:
        u = self._u
        begin = max(start - u.buffer_start, 0)
        segment = u.buffer[begin : max(end - u.buffer_start, begin)]
        self.stats.segments_closed += 1
        if self.defer_finals:
            return [
                StreamResult(
                    "closed",
                    "",
                    start / SAMPLE_RATE,
                    end / SAMPLE_RATE,
                    closed=ClosedSegment(
                        segment.copy(),
                        self.config.hotwords,
                        self.config.itn,
                        self.config.final_model,
                        self.config.language,
                    ),
                )
            ]
        result = self._transcribe(
            segment,
            self.config.hotwords,
            urgent=True,
            itn=self.config.itn,
            model=self.config.final_model,
            language=self.config.language,
        )
        if result is None:
            return []
        return [StreamResult("final", result.text, start / SAMPLE_RATE, end / SAMPLE_RATE, result)]

    def final(self, closed: StreamResult) -> StreamResult:
        """The `final` result of a `closed` one (thread-safe: it only calls the engine, ahead of file jobs)."""
        assert closed.closed is not None
        c = closed.closed
        result = self._transcribe(c.samples, c.hotwords, urgent=True, itn=c.itn, model=c.model, language=c.language)
        return replace(closed, kind="final", text=result.text if result else "", transcription=result, closed=None)

    def _draft(self) -> list[StreamResult]:
        u = self._u
        if u.open_start is None:
            return []
        tail = u.buffer[max(u.open_start - u.buffer_start, 0) :]
        if tail.size < self.config.min_partial_s * SAMPLE_RATE:
            return []
        # A draft of a segment that will be transcribed again when it closes: not a request of its own.
        result = self._transcribe(
            tail,
            self.config.hotwords,
            record=False,
            itn=False,
            model=self.config.final_model,
            language=self.config.language,
        )
        if result is None:
            return []
        return [StreamResult("draft", result.text, u.open_start / SAMPLE_RATE, u.received / SAMPLE_RATE, result)]

    def _transcribe(
        self,
        samples: np.ndarray,
        hotwords: str | list[str] | None,
        *,
        record: bool = True,
        urgent: bool = False,
        itn: bool | None = None,
        model: str | None = None,
        language: str | None = None,
    ) -> Transcription | None:
        # A sentence someone is waiting to read is urgent: file jobs give way to it (asr.batching).
        self._decoded += samples.size
        try:
            return self.engine.transcribe(
                samples,
                sample_rate=SAMPLE_RATE,
                hotwords=hotwords,
                name="stream",
                record=record,
                urgent=urgent,
                itn=itn,
                model=model,
                language=language,
            )
        except InputError as exc:  # a blip shorter than the minimum length: nothing to say
            logger.debug("stream segment skipped: %s", exc)
            return None

    def _trim(self) -> None:
        # Keep only what a later segment can still need: the open segment, else a short look-back.
        u = self._u
        total = u.buffer_start + u.buffer.size
        keep_from = u.open_start if u.open_start is not None else total - int(LOOKBACK_S * SAMPLE_RATE)
        drop = min(max(keep_from - u.buffer_start, 0), u.buffer.size)
        if drop:
            u.buffer = u.buffer[drop:]
            u.buffer_start += drop


#: Threads that transcribe live streams' closed sentences (each a call into the engine, which serialises them);
#: shared, so a stream left open by a client that went away holds no thread of its own.
_finals_executor = ThreadPoolExecutor(4, thread_name_prefix="stream-finals")


class FinalsInOrder:
    """A stream's closed sentences (`closed` results of a session with `defer_finals`) transcribed off the feeding
    path, handed back in the order they were closed: the partials after a sentence never wait for its final.
    The WebSocket endpoint does the same with a task of its own per connection."""

    def __init__(self, session: StreamSession):
        self._session = session
        self._pending: deque[tuple[StreamResult, Future[StreamResult]]] = deque()

    def submit(self, closed: StreamResult) -> None:
        self._pending.append((closed, _finals_executor.submit(self._session.final, closed)))

    @property
    def waiting(self) -> list[StreamResult]:
        """The closed results whose finals are not handed back yet, oldest first."""
        return [closed for closed, _ in self._pending]

    def ready(self) -> list[StreamResult]:
        """The finals done so far, in order (a final done before an older one waits for it)."""
        done = []
        while self._pending and self._pending[0][1].done():
            done.append(self._pending.popleft()[1].result())
        return done

    def drain(self) -> list[StreamResult]:
        """Every final still to come, in order (waits for them)."""
        done = []
        while self._pending:
            done.append(self._pending.popleft()[1].result())
        return done
