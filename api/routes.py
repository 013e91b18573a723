"""The OpenAI-compatible routes: `POST /v1/audio/transcriptions`, `GET /v1/models`, and `GET /metrics`.

Routes translate HTTP to engine calls and back; the engine call runs in a worker thread, so the event
loop (and /health, and the UI) keeps answering while a file is transcribed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from asr.engine import Engine, Transcription, Word
from asr.errors import ASRError, FileTooLargeError, ModelNotReadyError
from messages import Lang
from config.settings import Settings
from asr.subtitles import to_srt, to_txt, to_vtt

from .admission import Admission
from .auth import APIKeys
from .errors import APIError, bad_request, from_asr_error, internal_error, language, unavailable
from .funasr_ws import StreamRegistry
from .metrics import Metrics
from .transcription_stream import stream_transcription

logger = logging.getLogger(__name__)

MODEL_ID = "seaco-paraformer"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MANDARIN = ("zh", "zh-cn", "zh-hans", "cmn", "chinese", "mandarin")
RETRY_AFTER_BUSY_S = 5
MULTIPART_SLACK_BYTES = 64 * 1024  # form fields and boundaries around the file

router = APIRouter()


@dataclass
class APIServices:
    """What the routes need, kept on `app.state.api` by `install_api`."""

    engine: Engine
    settings: Settings
    admission: Admission
    metrics: Metrics
    keys: APIKeys
    streams: StreamRegistry


@dataclass
class TranscriptionForm:
    file: UploadFile | None  # None only where the caller reads its files itself (jobs: several)
    response_format: str
    hotwords: str | None
    granularities: frozenset[str] = frozenset()
    diarize: bool = False
    num_speakers: int | None = None
    stream: bool = False


def services(request: Request) -> APIServices:
    return request.app.state.api


# ------------------------------------------------------------------------------------------ routes
@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    api = services(request)
    with api.metrics.track("/v1/models"):
        api.keys.check(request.headers.get("authorization"))
        card = {"id": MODEL_ID, "object": "model", "created": int(api.engine.started_at), "owned_by": "funasr"}
        return JSONResponse({"object": "list", "data": [card]})


@router.post("/v1/audio/transcriptions")
async def create_transcription(request: Request) -> Response:
    api = services(request)
    with api.metrics.track("/v1/audio/transcriptions"):
        api.keys.check(request.headers.get("authorization"))
        lang = language(request)
        _check_content_length(request, api.engine.limits.max_bytes, lang)
        if api.engine.state != "ready":  # before reading the upload: a loading server cannot use it anyway
            reason = {"loading": "loading", "error": "failed"}.get(api.engine.state, "")
            raise from_asr_error(ModelNotReadyError(reason=reason), lang)
        if not api.admission.try_enter():
            logger.warning("API request refused: %s", api.admission.busy_message())
            raise unavailable(api.admission.busy_message(lang), code="server_busy", retry_after_s=RETRY_AFTER_BUSY_S,
                              outcome="busy")
        streaming = False
        try:
            async with request.form(max_files=1, max_fields=50) as form:
                params = parse_form(form)
                api.engine.check_speakers(params.diarize, params.num_speakers)  # before reading the upload
                data = await _read_upload(params.file, api.engine.limits.max_bytes, lang)
                name = params.file.filename or "upload"
                if params.stream:  # input errors are HTTP errors: the audio is checked before the stream starts
                    audio = await run_in_threadpool(api.engine.decode, data, name=name)
                    streaming = True  # from here the stream's worker owns the admission place
                    return stream_transcription(api.engine, audio, hotwords=params.hotwords, lang=lang,
                                                release=api.admission.leave)
                result = await run_in_threadpool(api.engine.transcribe, data, hotwords=params.hotwords, name=name,
                                                 diarize=params.diarize, num_speakers=params.num_speakers)
        except ASRError as exc:
            error = from_asr_error(exc, lang)
            logger.log(logging.ERROR if error.status >= 500 else logging.INFO, "API transcription refused: %s (%s)%s",
                       error.code or error.outcome, exc.code, f": {exc.detail}" if exc.detail else "")
            raise error from None
        except APIError:
            raise
        except HTTPException as exc:  # starlette's multipart parser: malformed body, too many files
            raise bad_request(f"Could not read the multipart form: {exc.detail}") from None
        except Exception:  # details go to the log, never to the client
            logger.exception("API transcription failed")
            raise internal_error() from None
        finally:
            if not streaming:
                api.admission.leave()
        return render(result, params.response_format, params.granularities)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    api = services(request)
    with api.metrics.track("/metrics"):
        api.keys.check(request.headers.get("authorization"))
        return Response(api.metrics.render(), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------------------------------ request
def _check_content_length(request: Request, max_bytes: int, lang: Lang) -> None:
    """Refuse an oversized upload from its header, before receiving it."""
    try:
        length = int(request.headers.get("content-length", "0"))
    except ValueError:
        return
    if length > max_bytes + MULTIPART_SLACK_BYTES:
        raise _too_large("", length, max_bytes, lang)


def parse_form(form: FormData, *, require_file: bool = True) -> TranscriptionForm:
    """The transcription fields of a multipart form, checked; `file` must be one upload unless `require_file`
    is False (then it is left to the caller: None here)."""
    file = form.get("file") if require_file else None
    if require_file and not isinstance(file, UploadFile):
        raise bad_request("Send the audio as a multipart/form-data upload in the field 'file'.", param="file",
                          code="missing_file")
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise bad_request(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not '{response_format}'.",
                          param="response_format")
    language = str(form.get("language") or "").strip().lower()
    if language and language not in MANDARIN and not language.startswith("zh"):
        raise bad_request(f"This service recognizes Mandarin Chinese only; use language=zh (or leave it out), "
                          f"not '{language}'.", param="language", code="unsupported_language")
    granularities = [str(g) for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")]
    for granularity in granularities:
        if granularity not in ("segment", "word"):
            raise bad_request(f"timestamp_granularities must be 'segment' or 'word', not '{granularity}'.",
                              param="timestamp_granularities")
    if granularities and response_format != "verbose_json":
        raise bad_request("timestamp_granularities need response_format=verbose_json (as with OpenAI).",
                          param="timestamp_granularities", code="unsupported_value")
    stream = _form_bool(form, "stream")
    if stream and response_format not in ("json", "text"):
        raise bad_request(f"stream=true sends the text as events; it goes with response_format json or text, not "
                          f"'{response_format}' (ask without stream for subtitles or segments).", param="stream",
                          code="unsupported_value")
    # `diarize` (ours and OpenAI's diarizing models') or `spk` (FunASR's funasr-server): label the speakers.
    diarize = _form_bool(form, "diarize") or _form_bool(form, "spk")
    num_speakers = _form_int(form, "num_speakers", "speakers")
    if num_speakers is not None and not diarize:
        diarize = True  # a speaker count is a request for speakers
    if stream and diarize:
        raise bad_request("Speakers are labelled once the whole file is recognised, so they do not come with "
                          "stream=true: ask for them without stream.", param="stream", code="unsupported_value")
    # `hotwords` wins; without it the OpenAI `prompt` is read as hotwords (SeACo has no text prompt).
    # Neither: None, the engine's default list. An empty `hotwords` means "no hotwords".
    hotwords = form.get("hotwords")
    if hotwords is None:
        hotwords = form.get("prompt") or None
    return TranscriptionForm(file=file, response_format=response_format,
                             hotwords=None if hotwords is None else str(hotwords),
                             granularities=frozenset(granularities), diarize=diarize, num_speakers=num_speakers,
                             stream=stream)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _form_bool(form: FormData, name: str) -> bool:
    value = form.get(name)
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise bad_request(f"{name} must be true or false, not '{value}'.", param=name)


def _form_int(form: FormData, *names: str) -> int | None:
    for name in names:
        value = form.get(name)
        if value is None or str(value).strip() == "":
            continue
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad_request(f"{name} must be a whole number of speakers, not '{value}'.", param=name) from None
    return None


async def _read_upload(file: UploadFile, max_bytes: int, lang: Lang) -> bytes:
    if file.size is not None and file.size > max_bytes:
        raise _too_large(file.filename or "", file.size, max_bytes, lang)
    return await file.read()


def _too_large(name: str, size: int, max_bytes: int, lang: Lang) -> APIError:
    return from_asr_error(FileTooLargeError.of(name, size, max_bytes), lang)


# ------------------------------------------------------------------------------------------ response
def render(result: Transcription, response_format: str, granularities: frozenset[str] = frozenset()) -> Response:
    if response_format == "text":
        if result.speakers:
            return PlainTextResponse(to_txt(result.sentences))  # one line per turn, 说话人N：
        return PlainTextResponse(result.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(result.sentences))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(result.sentences), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(result, granularities))
    return JSONResponse({"text": result.text})


def verbose_json(result: Transcription, granularities: frozenset[str] = frozenset()) -> dict:
    """OpenAI's verbose_json, plus our `confidence` (whole text, see docs/engine.md: Confidence).

    Segments come unless only words were asked for, as with OpenAI; `words` (OpenAI's shape: word, start,
    end) when timestamp_granularities has `word`, then each segment lists its own words too. A segment has
    `speaker` (1, 2, ...) when the request asked for speakers.
    """
    with_words = "word" in granularities
    with_segments = "segment" in granularities or not granularities
    body: dict = {
        "task": "transcribe",
        "language": "chinese",
        "duration": round(result.duration, 3),
        "text": result.text,
    }
    if with_words:
        body["words"] = [_word_json(w) for w in result.words]
    if with_segments:
        segments = []
        for i, s in enumerate(result.sentences):
            segment = {"id": i, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                       "tokens": [], "temperature": 0.0}
            if s.speaker is not None:
                segment["speaker"] = s.speaker
            if with_words:
                segment["words"] = [_word_json(w) for w in s.words]
            segments.append(segment)
        body["segments"] = segments
    if any(s.speaker is not None for s in result.sentences):
        body["speakers"] = result.speakers
    body["confidence"] = round(result.confidence, 4)
    body["usage"] = {"type": "duration", "seconds": math.ceil(result.duration)}
    return body


def _word_json(word: Word) -> dict:
    return {"word": word.text, "start": round(word.start, 3), "end": round(word.end, 3)}
