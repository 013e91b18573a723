"""FunASR's WebSocket protocol at `ws://HOST:PORT` (no path), so FunASR's own clients work unmodified.

The protocol is FunASR's `runtime/docs/websocket_protocol.md`: a JSON message opens an utterance
(`mode` offline | online | 2pass, `wav_name`, `wav_format`, `audio_fs`, `chunk_size`, `hotwords`, ...),
binary audio follows, `{"is_speaking": false}` ends it; then the next utterance may start on the same
connection. Answers carry `mode` (offline, online, 2pass-online, 2pass-offline), `text`, `wav_name`,
`is_final`, and for recognised sentences `timestamp` and `stamp_sents`.

This module only translates: offline utterances go to `Engine.transcribe`, online and 2pass ones to an
`asr.streaming.StreamSession`; model calls run in worker threads so the event loop keeps serving.
Every error is a JSON message `{"is_final": false, "is_end": true, "error", "code"}` (the shape FunASR's
reference server uses, which its client reports) followed by a close with a WebSocket close code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from asr.audio import SAMPLE_RATE
from asr.engine import Transcription
from asr.errors import ASRError, ClientGoneError, FileTooLargeError, InputError, ModelLoadError, ModelNotReadyError
from asr.progress import stop_check
from asr.stream_capacity import default_max_streams, streams_per_core
from asr.streaming import StreamConfig, StreamResult, StreamSession, online_model_state, to_mono_16k
from hotword_lists import HotwordListError, split_refs
from messages import Lang, message
from results import Owner

from .errors import APIError, language
from .ws_protocol import TOO_LARGE

logger = logging.getLogger(__name__)

MODES = ("offline", "online", "2pass")
DEFAULT_MODE = "2pass"
#: Sample rates a PCM stream may declare (FunASR's clients send 8000 or 16000; resampled to 16 kHz).
MIN_AUDIO_FS, MAX_AUDIO_FS = 8000, 48000
MAX_CHUNK_UNITS = 50  # chunk_size[1] x 60 ms: up to 3 s per streaming step
# chunk_size[0] (history) and [2] (look-ahead), in the same units. FunASR's clients send 0 to 10 ([5, 10, 5],
# [8, 8, 4], [0, 10, 5]); the session keeps and re-encodes that much audio each step, so an unbounded value is a
# memory request: [0, 10, 20000] took a server from 1.3 GB to 14.5 GB.
MAX_CONTEXT_UNITS = 20
MAX_CHUNK_INTERVAL = 100  # accepted (the server steps by chunk_size), bounded like every number of the message

# RFC 6455 close codes.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # bad message, missing or wrong key
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011
CLOSE_TRY_LATER = 1013  # stream limit reached, model not ready


class StreamError(Exception):
    """Ends a stream: sent to the client as JSON, then the connection closes with `close_code`."""

    def __init__(self, message: str, code: str, close_code: int = CLOSE_POLICY, outcome: str = "bad_request"):
        super().__init__(message)
        self.message, self.code, self.close_code, self.outcome = message, code, close_code, outcome


class StreamRegistry:
    """Open streams (MAX_STREAMS): counted on the event loop, so no lock is needed."""

    def __init__(self, max_streams: int, *, auto: bool = False, online_backend: str = "torch"):
        self.max_streams = max_streams
        #: True when the limit is MAX_STREAMS=auto's figure for this machine (asr.stream_capacity).
        self.auto = auto
        #: The streaming model's planned backend, whose measured streams per core `auto` uses.
        self.online_backend = online_backend
        self.open = 0
        self.opened_total = 0

    @classmethod
    def for_setting(cls, setting: int | str, device: str, ncpu: int, online_backend: str = "torch") -> StreamRegistry:
        """MAX_STREAMS as set, or with `auto` what this machine carries (`device`: the engine's planned device;
        `online_backend`: the streaming model's planned backend)."""
        if setting == "auto":
            return cls(default_max_streams(device, ncpu, online_backend), auto=True, online_backend=online_backend)
        return cls(int(setting), online_backend=online_backend)

    def try_enter(self) -> bool:
        if self.open >= self.max_streams:
            return False
        self.open += 1
        self.opened_total += 1
        return True

    def leave(self) -> None:
        self.open = max(0, self.open - 1)

    def info(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "max": self.max_streams,
            # Where the limit comes from, so an operator can plan: MAX_STREAMS, or auto's per-core figure.
            "max_from": "auto" if self.auto else "MAX_STREAMS",
            "streams_per_core": streams_per_core(self.online_backend),
            "opened_total": self.opened_total,
            "online_model": online_model_state(),
        }


@dataclass
class Utterance:
    """One utterance's settings, from its first JSON message."""

    mode: str
    wav_name: str = "microphone"
    wav_format: str = "pcm"
    audio_fs: int = SAMPLE_RATE
    hotwords: list[str] | None = None
    chunk_size: tuple[int, int, int] = (5, 10, 5)
    encoder_look_back: int = 4
    decoder_look_back: int = 1
    #: Written form for finals and offline answers (FunASR's `itn`); None: the server's ITN setting.
    itn: bool | None = None
    #: Hotword lists named by id or name (our `hotword_list`); their words come before `hotwords`.
    hotword_lists: tuple[str, ...] = ()
    #: FunASR's SenseVoice fields: `svs_lang` (auto, zh, yue, en, ja, ko) makes the finals (2pass-offline, offline)
    #: SenseVoice's where the server runs it; `svs_itn` is their written form (our ITN step).
    svs_lang: str | None = None
    svs_itn: bool | None = None

    def final_model(self, models: list[str]) -> str | None:
        """ "sensevoice" for an utterance that sent `svs_lang` to a server that runs it; else the default (None),
        as FunASR's runtime ignores the SenseVoice fields when its offline model is a Paraformer."""
        return "sensevoice" if self.svs_lang is not None and "sensevoice" in models else None

    @property
    def pcm(self) -> bool:
        return self.wav_format == "pcm"

    def stream_config(self, hotwords: list[str] | None, final_model: str | None = None) -> StreamConfig:
        return StreamConfig(
            mode="online" if self.mode == "online" else "2pass",
            chunk_size=self.chunk_size,
            encoder_look_back=self.encoder_look_back,
            decoder_look_back=self.decoder_look_back,
            hotwords=hotwords,
            itn=self.final_itn(final_model),
            final_model=final_model,
            language=self.svs_lang if final_model else None,
        )

    def final_itn(self, final_model: str | None) -> bool | None:
        """The finals' written form: `svs_itn` for SenseVoice finals when sent, else `itn`."""
        return self.svs_itn if final_model and self.svs_itn is not None else self.itn


@dataclass
class Connection:
    """What one WebSocket holds; `close()` drops it all."""

    utterance: Utterance | None = None  # the current or last settings
    active: bool = False  # inside an utterance (audio expected)
    offline_audio: bytearray = field(default_factory=bytearray)
    odd_byte: bytes = b""  # half an int16 sample left over from the last frame
    session: StreamSession | None = None
    utterances: int = 0
    #: The language of this stream's error messages (the handshake's Accept-Language).
    lang: Lang = "en"
    #: Who streams (its key, else its owner cookie): whose hotword lists it may name.
    owner: Owner | None = None
    #: The current utterance's hotwords, its lists' and its own (None: the service's default).
    hotwords: list[str] | None = None
    #: 2pass finals waiting to be transcribed and sent, in order, by `finals_task`.
    finals: asyncio.Queue | None = None
    finals_task: asyncio.Task | None = None
    #: Finals queued or being made: the client waits for them, so the stream is not idle.
    finals_pending: int = 0
    #: The client left while its offline utterance was being transcribed (the work stopped).
    left_during_work: bool = False
    #: A message that arrived while an offline utterance was being transcribed, served next.
    held_message: dict | None = None

    def close(self) -> None:
        if self.finals_task is not None:
            self.finals_task.cancel()  # a sentence being transcribed finishes in its thread; nobody reads it
            self.finals_task = None
        self.offline_audio = bytearray()
        self.odd_byte = b""
        if self.session is not None:
            self.session.close()
            self.session = None


# ------------------------------------------------------------------------------------------ parsing
def parse_hotwords(value: Any) -> list[str] | None:
    """FunASR's hotwords: a JSON object word -> weight (as a string or an object), or a plain list.

    SeACo biases every hotword alike, so weights are accepted and not used. An empty value means "the
    service's default hotwords" (FunASR's clients always send the key, empty when the user gave none).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise StreamError(
                    "hotwords: not valid JSON; send a JSON object word -> weight, e.g. "
                    '"{\\"阿里巴巴\\": 20}", or words separated by commas',
                    "bad_hotwords",
                ) from None
        else:
            return [text]  # split and checked by the engine's hotword rules
    if isinstance(value, dict):
        words = [str(word).strip() for word in value if str(word).strip()]
        return words or None
    if isinstance(value, list) and all(isinstance(word, str) for word in value):
        return [word for word in value if word.strip()] or None
    raise StreamError("hotwords must be a JSON object word -> weight (or a string of words)", "bad_hotwords")


def _int(message: dict, key: str, default: int, low: int, high: int) -> int:
    value = message.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise StreamError(f"{key} must be an integer from {low} to {high}", f"bad_{key}")
    try:
        number = int(value)
    except (ValueError, OverflowError):  # "x", NaN, 1e400
        raise StreamError(f"{key} must be an integer from {low} to {high}, not {value!r}", f"bad_{key}") from None
    if not low <= number <= high:
        raise StreamError(f"{key} must be from {low} to {high}, not {number}", f"bad_{key}")
    return number


def parse_chunk_size(value: Any) -> tuple[int, int, int]:
    items = value
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    try:
        numbers = [int(x) for x in items if not isinstance(x, bool)] if isinstance(items, (list, tuple)) else []
    except (TypeError, ValueError, OverflowError):
        numbers = []
    if (
        len(numbers) != 3
        or not 0 <= numbers[0] <= MAX_CONTEXT_UNITS
        or not 1 <= numbers[1] <= MAX_CHUNK_UNITS
        or not 0 <= numbers[2] <= MAX_CONTEXT_UNITS
    ):
        raise StreamError(
            f"chunk_size must be three integers like [5, 10, 5] (look-back, chunk, look-ahead in 60 ms units; "
            f"look-back and look-ahead 0 to {MAX_CONTEXT_UNITS}, chunk 1 to {MAX_CHUNK_UNITS}), not {str(value)[:80]}",
            "bad_chunk_size",
        )
    return numbers[0], numbers[1], numbers[2]


def parse_utterance(message: dict, previous: Utterance | None) -> Utterance:
    """The first JSON message of an utterance; keys it leaves out keep the previous utterance's values."""
    # FunASR's Python and C++ servers take a first message without a mode as 2pass (the PyPI client
    # `funasr-client` sends none unless asked).
    mode = message.get("mode", previous.mode if previous else DEFAULT_MODE)
    if mode not in MODES:
        raise StreamError(f"unknown mode {mode!r}: use offline, online or 2pass", "bad_mode")
    base = previous or Utterance(mode=mode)
    wav_name = message.get("wav_name", base.wav_name)
    wav_format = message.get("wav_format", base.wav_format)
    if not isinstance(wav_name, str) or not isinstance(wav_format, str) or not wav_format.strip():
        raise StreamError("wav_name and wav_format must be strings", "bad_message")
    wav_format = wav_format.strip().lower()
    if wav_format == "wav":  # FunASR's clients send a .wav file's samples without its header
        wav_format = "pcm"
    if wav_format != "pcm" and mode != "offline":
        raise StreamError(
            f"{mode} mode takes 16-bit PCM only (wav_format pcm); send {wav_format} files in offline mode",
            "bad_wav_format",
        )
    audio_fs = _int(message, "audio_fs", base.audio_fs, MIN_AUDIO_FS, MAX_AUDIO_FS)
    if mode != "offline" and audio_fs != SAMPLE_RATE and audio_fs != 8000:
        logger.debug("stream at %d Hz is resampled to 16 kHz chunk by chunk", audio_fs)
    chunk_size = parse_chunk_size(message["chunk_size"]) if "chunk_size" in message else base.chunk_size
    if "chunk_interval" in message:
        _int(message, "chunk_interval", 10, 1, MAX_CHUNK_INTERVAL)
    itn = message.get("itn", base.itn)
    if itn in (0, 1):  # FunASR's clients send true/false; 1 and 0 mean the same
        itn = bool(itn)
    elif itn is not None:
        raise StreamError("itn must be true or false", "bad_itn")
    return Utterance(
        mode=mode,
        wav_name=wav_name[:200],
        wav_format=wav_format,
        audio_fs=audio_fs,
        hotwords=parse_hotwords(message["hotwords"]) if "hotwords" in message else base.hotwords,
        chunk_size=chunk_size,
        encoder_look_back=_int(message, "encoder_chunk_look_back", base.encoder_look_back, 0, 16),
        decoder_look_back=_int(message, "decoder_chunk_look_back", base.decoder_look_back, 0, 16),
        itn=itn,
        svs_lang=_svs_lang(message, base.svs_lang),
        svs_itn=_svs_itn(message, base.svs_itn),
        hotword_lists=parse_list_refs(message["hotword_list"]) if "hotword_list" in message else base.hotword_lists,
    )


def _svs_lang(message: dict, previous: str | None) -> str | None:
    if "svs_lang" not in message:
        return previous
    value = message["svs_lang"]
    if not isinstance(value, str):
        raise StreamError("svs_lang must be a language: auto, zh, yue, en, ja or ko", "bad_svs_lang")
    return value.strip().lower() or "auto"


def _svs_itn(message: dict, previous: bool | None) -> bool | None:
    if "svs_itn" not in message:
        return previous
    value = message["svs_itn"]
    if value in (0, 1):  # true/false as FunASR's clients send them; 1 and 0 mean the same
        return bool(value)
    raise StreamError("svs_itn must be true or false", "bad_itn")


def parse_list_refs(value: Any) -> tuple[str, ...]:
    """Our `hotword_list`: a list id or name, several separated by commas, or a JSON list of them."""
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return tuple(split_refs(value))
    raise StreamError("hotword_list must be a list id or name, or a list of them", "bad_hotword_list")


# ------------------------------------------------------------------------------------------ answers
def _ms(seconds: float, offset_s: float) -> int:
    return round((seconds + offset_s) * 1000)


def stamp_sents(result: Transcription, offset_s: float = 0.0) -> list[dict[str, Any]]:
    """FunASR's `stamp_sents`: per sentence its words (space-separated, without the closing punctuation), that
    punctuation, its span and each word's span, in ms from the start of the utterance."""
    sents = []
    for sentence in result.sentences:
        text = sentence.text
        punc = text[-1] if text and text[-1] in "，。？！、,.?!;；" else ""
        words = [w for w in sentence.words if w.text not in "，。？！、,.?!;；"]
        sents.append(
            {
                "text_seg": " ".join(w.text for w in words) if words else text[: len(text) - len(punc)],
                "punc": punc,
                "start": _ms(sentence.start, offset_s),
                "end": _ms(sentence.end, offset_s),
                "ts_list": [[_ms(w.start, offset_s), _ms(w.end, offset_s)] for w in words],
            }
        )
        if result.model == "sensevoice":  # ours: what SenseVoice said of the sentence (docs/streaming.md)
            sents[-1].update(language=sentence.language, emotion=sentence.emotion, events=list(sentence.events))
    return sents


def final_answer(
    mode: str, wav_name: str, result: Transcription | None, *, is_final: bool, offset_s: float = 0.0
) -> dict[str, Any]:
    """An `offline` or `2pass-offline` answer. `timestamp` is FunASR's JSON string of [start, end] in ms per word
    (a Chinese character, or an English word); per sentence when the model gave no word times."""
    answer: dict[str, Any] = {
        "mode": mode,
        "wav_name": wav_name,
        "text": result.text if result else "",
        "is_final": is_final,
    }
    if result is not None and result.sentences:
        sents = stamp_sents(result, offset_s)
        spans = [span for s in sents for span in s["ts_list"]] or [[s["start"], s["end"]] for s in sents]
        answer["timestamp"] = json.dumps(spans)
        answer["stamp_sents"] = sents
        answer["confidence"] = round(result.confidence, 4)
    if is_final:
        answer["is_end"] = True
    return answer


def stream_answer(utterance: Utterance, result: StreamResult) -> dict[str, Any]:
    """An online or 2pass answer. `end_ms` (ours, not FunASR's) says up to where in the utterance's audio the
    answer goes, so a client can line answers up with what it sent (the streaming benchmark does)."""
    if result.kind == "partial":
        answer = {
            "mode": "online" if utterance.mode == "online" else "2pass-online",
            "wav_name": utterance.wav_name,
            "text": result.text,
            "is_final": result.is_last,
        }
        if result.is_last:
            answer["is_end"] = True
    else:
        answer = final_answer(
            "2pass-offline", utterance.wav_name, result.transcription, is_final=result.is_last, offset_s=result.start
        )  # the engine's sentence times count from the segment
    answer["end_ms"] = round(result.end * 1000)
    return answer


def error_answer(error: StreamError, wav_name: str | None) -> dict[str, Any]:
    return {
        "mode": "error",
        "wav_name": wav_name or "",
        "text": "",
        "is_final": False,
        "is_end": True,
        "error": error.message,
        "code": error.code,
    }


def asr_stream_error(exc: ASRError, lang: Lang = "en") -> StreamError:
    if isinstance(exc, FileTooLargeError):
        return StreamError(exc.message(lang), exc.code, CLOSE_TOO_BIG, "too_large")
    if isinstance(exc, InputError):
        return StreamError(exc.message(lang), exc.code, CLOSE_POLICY, "bad_request")
    if isinstance(exc, ModelNotReadyError):
        return StreamError(exc.message(lang), exc.code, CLOSE_TRY_LATER, "not_ready")
    if isinstance(exc, ModelLoadError):
        # str() is the operator's text (server folders): the client gets the catalogue's "failed to load".
        return StreamError(exc.message(lang), "model_not_available", CLOSE_ERROR, "not_ready")
    return StreamError(
        "The server failed to process the stream; the error has been logged.", "internal_error", CLOSE_ERROR, "error"
    )


# ------------------------------------------------------------------------------------------ endpoint
def pcm_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


async def funasr_stream(websocket: WebSocket) -> None:
    """The WebSocket route: one connection, utterance after utterance, until the client closes."""
    api = websocket.app.state.api
    registry: StreamRegistry = api.streams
    metrics = api.metrics
    subprotocols = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="binary" if "binary" in subprotocols else None)
    conn = Connection(lang=language(websocket))  # Accept-Language, else English (FunASR's clients send none)
    entered = False
    outcome = "ok"
    try:
        _check_key(api, websocket)
        conn.owner = _owner(websocket)
        if api.engine.state != "ready":
            # The catalogue's sentence, in the handshake's Accept-Language: never the load error's text (it is the
            # operator's and names server folders; it is in the log and the admin's /health).
            reason = "loading" if api.engine.state in ("loading", "not_loaded") else "failed"
            raise asr_stream_error(ModelNotReadyError(reason=reason), conn.lang)
        if not registry.try_enter():
            raise StreamError(
                f"The service is at its limit of {registry.max_streams} open streams (MAX_STREAMS); try again shortly.",
                "too_many_streams",
                CLOSE_TRY_LATER,
                "busy",
            )
        entered = True
        logger.info("stream opened (%d open)", registry.open)
        await _serve(websocket, api, conn)
    except StreamError as exc:
        outcome = exc.outcome
        logger.info("stream closed: %s (%s)", exc.code, exc.message if exc.outcome != "unauthorized" else "")
        await _send_error(websocket, exc, conn.utterance.wav_name if conn.utterance else None)
    except WebSocketDisconnect:
        outcome = "disconnected" if conn.active or conn.left_during_work else "ok"
    except Exception:
        outcome = "error"
        logger.exception("stream failed")
        await _send_error(websocket, asr_stream_error(ASRError()), conn.utterance.wav_name if conn.utterance else None)
    finally:
        conn.close()
        if entered:
            registry.leave()
            logger.info("stream ended: %s, %d utterances (%d open)", outcome, conn.utterances, registry.open)
        metrics.streams.labels(outcome).inc()
        if websocket.client_state == WebSocketState.CONNECTED and outcome in ("ok",):
            try:
                await websocket.close(CLOSE_NORMAL)
            except RuntimeError:
                pass


def _check_key(api: Any, websocket: WebSocket) -> None:
    """API_KEYS: the `Authorization: Bearer` header, or `?api_key=` for browsers (they cannot set headers)."""
    authorization = websocket.headers.get("authorization")
    if not authorization and websocket.query_params.get("api_key"):
        authorization = f"Bearer {websocket.query_params['api_key']}"
    try:
        api.keys.check(authorization)
    except APIError as exc:
        raise StreamError(
            exc.message.replace(
                "send the header 'Authorization: Bearer <key>'",
                "send the header 'Authorization: Bearer <key>' or ?api_key=<key>",
            ),
            exc.code or "unauthorized",
            CLOSE_POLICY,
            "unauthorized",
        ) from None


def _owner(websocket: WebSocket) -> Owner | None:
    headers = dict(websocket.headers)
    if not headers.get("authorization") and websocket.query_params.get("api_key"):
        headers["authorization"] = f"Bearer {websocket.query_params['api_key']}"
    return websocket.app.state.results.owner_of(headers)


async def _send(websocket: WebSocket, answer: dict[str, Any]) -> None:
    """Send one answer; a connection that closed meanwhile (the client left, a keepalive ping went
    unanswered) ends the stream as a disconnect, not as a server error."""
    try:
        await websocket.send_text(json.dumps(answer, ensure_ascii=False))
    except (RuntimeError, OSError) as exc:
        raise WebSocketDisconnect(CLOSE_GOING_AWAY, reason=str(exc)[:100]) from None


async def _send_error(websocket: WebSocket, error: StreamError, wav_name: str | None) -> None:
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        await websocket.send_text(json.dumps(error_answer(error, wav_name), ensure_ascii=False))
        await websocket.close(error.close_code, reason=error.code[:100])
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass  # the client is gone already


async def _serve(websocket: WebSocket, api: Any, conn: Connection) -> None:
    settings = api.settings
    max_frame = settings.stream_max_frame_kb * 1024
    while True:
        try:
            message, conn.held_message = conn.held_message, None
            if message is None:
                message = await asyncio.wait_for(websocket.receive(), timeout=settings.stream_idle_timeout_s)
        except TimeoutError:
            if conn.finals_pending:
                continue
            raise StreamError(
                f"no message for {settings.stream_idle_timeout_s:g} s (STREAM_IDLE_TIMEOUT_S); closing the idle stream",
                "idle_timeout",
                CLOSE_GOING_AWAY,
                "idle_timeout",
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL))
        received = time.perf_counter()
        data = message.get("bytes")
        text = message.get("text")
        # Over the limit: the server protocol read no more of it than the limit (api.ws_protocol), or, under a
        # server without that protocol, the message itself.
        if TOO_LARGE in message or len(data if data is not None else (text or "").encode()) > max_frame:
            raise StreamError(
                f"a message over the limit of {settings.stream_max_frame_kb} KB (STREAM_MAX_FRAME_KB); send audio "
                "in smaller chunks",
                "frame_too_large",
                CLOSE_TOO_BIG,
                "too_large",
            )
        if data is not None:
            await _on_audio(websocket, api, conn, data, received)
        elif text is not None:
            await _on_json(websocket, api, conn, text)


def _not_finite(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]} is out of range")
    return number


async def _on_json(websocket: WebSocket, api: Any, conn: Connection, text: str) -> None:
    try:
        message = json.loads(text, parse_constant=_not_finite, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise StreamError(
            f"not valid JSON ({exc.msg} at character {exc.pos}); text messages must be JSON objects", "bad_json"
        ) from None
    except ValueError as exc:  # Infinity, NaN, 1e400
        raise StreamError(f"not valid JSON: {exc}; numbers must be finite", "bad_json") from None
    except RecursionError:  # "[" * 100000
        raise StreamError(
            "not valid JSON: nested too deeply; text messages are flat JSON objects", "bad_json"
        ) from None
    if not isinstance(message, dict):
        raise StreamError("a text message must be a JSON object", "bad_json")
    speaking = message.get("is_speaking", True)
    if not isinstance(speaking, bool):
        raise StreamError("is_speaking must be true or false", "bad_message")
    if not conn.active:
        if not speaking and conn.utterance is None:
            raise StreamError(
                '{"is_speaking": false} before any audio: send the JSON configuration with the mode first',
                "missing_mode",
            )
        if not speaking:
            return  # a second end-of-utterance in a row: nothing is open
        conn.utterance = parse_utterance(message, conn.utterance)
        await _start(api, conn)
    elif "mode" in message and message["mode"] != conn.utterance.mode:
        raise StreamError(
            f'mode {message["mode"]!r} sent mid-utterance; send {{"is_speaking": false}} to end '
            f"the {conn.utterance.mode} utterance first",
            "bad_message",
        )
    if not speaking:
        await _finish(websocket, api, conn)


async def _start(api: Any, conn: Connection) -> None:
    utterance = conn.utterance
    assert utterance is not None
    own = None if utterance.hotwords is None else ",".join(utterance.hotwords)

    def hotwords() -> list[str] | None:
        words = own
        if api.hotword_lists is not None:  # read at each utterance: a list changed meanwhile is used as it is now
            words = api.hotword_lists.request_hotwords(list(utterance.hotword_lists), own, conn.owner)
        return None if words is None else api.engine.resolve_hotwords(words)

    final_model = utterance.final_model(api.engine.models)

    def prepare() -> list[str] | None:
        """The utterance's hotwords and its streaming session, in one trip to a worker thread."""
        if final_model is not None:
            # SenseVoice finals: no hotwords (a clear error for a stream that sends some), a language it knows.
            api.engine.check_request(
                final_model, utterance.hotwords or list(utterance.hotword_lists), utterance.svs_lang
            )
            words: list[str] | None = []
        else:
            words = hotwords()
        if utterance.mode != "offline":
            config = utterance.stream_config(words, final_model)
            try:
                if conn.session is None:
                    conn.session = StreamSession(api.engine, config, defer_finals=True)
                else:
                    conn.session.reconfigure(config)
            except ASRError as exc:
                logger.error("streaming model unavailable: %s", exc)
                raise
        return words

    try:
        conn.hotwords = await run_in_threadpool(prepare)
    except HotwordListError as exc:
        raise StreamError(message(exc.key, conn.lang, **exc.params), exc.code) from None
    except ASRError as exc:
        raise asr_stream_error(exc, conn.lang) from None
    conn.active = True
    conn.utterances += 1


async def _on_audio(websocket: WebSocket, api: Any, conn: Connection, data: bytes, received: float) -> None:
    if not conn.active:
        if conn.utterance is None:
            raise StreamError(
                "audio before the configuration: send the JSON message with the mode first, e.g. "
                '{"mode": "2pass", "wav_format": "pcm", "audio_fs": 16000, "is_speaking": true}',
                "missing_mode",
            )
        await _start(api, conn)  # FunASR's servers keep the last settings for the next utterance
    utterance = conn.utterance
    assert utterance is not None
    if utterance.mode == "offline":
        limit = api.engine.limits.max_bytes
        if len(conn.offline_audio) + len(data) > limit:
            raise StreamError(
                f"the utterance is over the upload limit of {limit / 2**20:.0f} MB (MAX_UPLOAD_MB)",
                "too_large",
                CLOSE_TOO_BIG,
                "too_large",
            )
        conn.offline_audio += data
        return
    data = conn.odd_byte + data
    cut = len(data) - len(data) % 2
    conn.odd_byte = data[cut:]
    samples = pcm_to_float(data[:cut])
    if utterance.audio_fs != SAMPLE_RATE:
        samples = to_mono_16k(samples, utterance.audio_fs)
    if (
        conn.session is not None
        and conn.session.utterance_seconds + samples.size / SAMPLE_RATE > api.engine.limits.max_seconds
    ):
        raise StreamError(
            f"the utterance is longer than {api.engine.limits.max_seconds:.0f} s (MAX_AUDIO_SECONDS); "
            f'send {{"is_speaking": false}} to end it and start the next',
            "too_long",
            CLOSE_POLICY,
        )
    api.metrics.stream_audio_seconds.labels(utterance.mode).inc(samples.size / SAMPLE_RATE)
    results = await _run_session(conn, conn.session.feed, samples)
    await _send_results(websocket, api, conn, results, received)


async def _finish(websocket: WebSocket, api: Any, conn: Connection) -> None:
    utterance = conn.utterance
    assert utterance is not None
    received = time.perf_counter()
    conn.active = False
    if utterance.mode == "offline":
        await _finish_offline(websocket, api, conn, utterance)
        return
    conn.odd_byte = b""
    results = await _run_session(conn, conn.session.finish)
    await _send_results(websocket, api, conn, results, received)


async def _finish_offline(websocket: WebSocket, api: Any, conn: Connection, utterance: Utterance) -> None:
    audio, conn.offline_audio = bytes(conn.offline_audio), bytearray()
    if not audio:  # nothing was said: an empty final answer, as FunASR's servers give
        await _send(websocket, final_answer("offline", utterance.wav_name, None, is_final=True))
        return
    if not api.admission.try_enter():
        raise StreamError(api.admission.busy_message(), "server_busy", CLOSE_TRY_LATER, "busy")
    try:
        if utterance.pcm:
            samples = np.frombuffer(audio[: len(audio) - len(audio) % 2], dtype="<i2")
            call = dict(source=samples, sample_rate=utterance.audio_fs)
        else:
            call = dict(source=audio)
        final_model = utterance.final_model(api.engine.models)
        transcribe = partial(
            api.engine.transcribe,
            hotwords=conn.hotwords,
            name=utterance.wav_name or "stream",
            itn=utterance.final_itn(final_model),
            model=final_model,
            language=utterance.svs_lang if final_model else None,
        )
        result = await _unless_the_client_leaves(websocket, conn, transcribe, **call)
        api.metrics.stream_audio_seconds.labels("offline").inc(result.duration)
    except ASRError as exc:
        raise asr_stream_error(exc, conn.lang) from None
    finally:
        api.admission.leave()
    await _send(websocket, final_answer("offline", utterance.wav_name, result, is_final=True))


async def _unless_the_client_leaves(websocket: WebSocket, conn: Connection, work: Any, **kwargs: Any) -> Any:
    """`work(**kwargs)` in a worker thread while the socket is watched: a client that leaves stops the work at its
    next checkpoint (`asr.progress`), so a long file nobody waits for frees the model; a message that arrives
    meanwhile is kept for `_serve`."""
    gone = threading.Event()

    def check() -> None:
        if gone.is_set():
            raise ClientGoneError()

    def run() -> Any:
        with stop_check(check):
            return work(**kwargs)

    task = asyncio.ensure_future(run_in_threadpool(run))
    watch = asyncio.ensure_future(websocket.receive())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if watch.done() and watch.result()["type"] == "websocket.disconnect":
            gone.set()
            conn.left_during_work = True
            name = conn.utterance.wav_name if conn.utterance else ""
            logger.info("offline transcription of %s stopped: the client went away", name or "stream")
            with contextlib.suppress(Exception):
                await task
            raise WebSocketDisconnect(watch.result().get("code", CLOSE_GOING_AWAY))
        if watch.done():
            conn.held_message = watch.result()
        return await task
    finally:
        if not watch.done():
            watch.cancel()


async def _run_session(conn: Connection, fn: Any, *args: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args)
    except ASRError as exc:
        raise asr_stream_error(exc, conn.lang) from None


async def _send_results(
    websocket: WebSocket, api: Any, conn: Connection, results: list[StreamResult], received: float
) -> None:
    """Partials now; finals (and the utterance's last answer) in order through the connection's finals task, so a
    sentence waiting for its turn at the engine never holds up the partials that follow it."""
    utterance, session = conn.utterance, conn.session
    assert utterance is not None and session is not None
    for result in results:
        if result.kind in ("closed", "final"):
            if conn.finals_task is None:
                conn.finals = asyncio.Queue()
                conn.finals_task = asyncio.create_task(_send_finals(websocket, api, conn))
            conn.finals_pending += 1
            conn.finals.put_nowait((session, utterance, result, received))
            continue
        await _send(websocket, stream_answer(utterance, result))
        if result.text:
            api.metrics.partial_latency.observe(time.perf_counter() - received)


async def _send_finals(websocket: WebSocket, api: Any, conn: Connection) -> None:
    assert conn.finals is not None
    while True:
        session, utterance, result, received = await conn.finals.get()
        try:
            if result.kind == "closed":
                result = await _run_session(conn, session.final, result)
            await _send(websocket, stream_answer(utterance, result))
            conn.finals_pending -= 1
        except StreamError as exc:
            logger.info("stream closed: %s (%s)", exc.code, exc.message)
            await _send_error(websocket, exc, utterance.wav_name)
            return
        except (RuntimeError, WebSocketDisconnect, OSError):
            return  # the client is gone
        except Exception:
            logger.exception("stream final failed")
            await _send_error(websocket, asr_stream_error(ASRError()), utterance.wav_name)
            return
        api.metrics.final_latency.observe(time.perf_counter() - received)
