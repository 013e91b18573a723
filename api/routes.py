"""The OpenAI-compatible routes: `POST /v1/audio/transcriptions`, `GET /v1/models`, and `GET /metrics`.

Routes translate HTTP to engine calls and back: the upload is read and checked by a dependency (`api.uploads`),
errors become answers in one place (`api.routing`). The engine call runs in a worker thread, so the event
loop (and /health, and the UI) keeps answering while a file is transcribed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from asr.engine import Engine, Transcription, Word
from asr.subtitles import to_srt, to_txt, to_vtt
from config.settings import Settings
from hotword_lists import HotwordListService

from .admission import Admission
from .auth import APIKeys
from .errors import language
from .funasr_ws import StreamRegistry
from .hotword_lists import request_hotwords
from .metrics import Metrics
from .openapi import ERROR_RESPONSES, TRANSCRIPTION_BODY, TRANSCRIPTION_RESPONSES
from .routing import ServiceRoute, require_key
from .transcription_stream import stream_transcription
from .uploads import Place, TranscriptionUpload, admitted, transcription_upload

#: The ids `/v1/models` lists, by the engine's model names; each is also a name `model=` accepts.
MODEL_IDS = {"paraformer": "seaco-paraformer", "sensevoice": "sensevoice"}
MODEL_ID = MODEL_IDS["paraformer"]
#: OpenAI's `language` in verbose_json is the language's English name.
LANGUAGE_NAMES = {"zh": "chinese", "yue": "cantonese", "en": "english", "ja": "japanese", "ko": "korean"}

router = APIRouter(route_class=ServiceRoute)


@dataclass
class APIServices:
    """What the routes need, kept on `app.state.api` by `install_api`."""

    engine: Engine
    settings: Settings
    admission: Admission
    metrics: Metrics
    keys: APIKeys
    streams: StreamRegistry
    hotword_lists: HotwordListService | None = None


def services(request: Request) -> APIServices:
    return request.app.state.api


# ------------------------------------------------------------------------------------------ routes
@router.get("/v1/models", dependencies=[Depends(require_key)], responses=ERROR_RESPONSES)
async def list_models(request: Request) -> JSONResponse:
    """The models this server runs (SeACo-Paraformer, and SenseVoice when loaded); `model=` chooses by id."""
    engine = services(request).engine
    cards = [
        {"id": MODEL_IDS[name], "object": "model", "created": int(engine.started_at), "owned_by": "funasr"}
        for name in engine.models
    ]
    return JSONResponse({"object": "list", "data": cards})


@router.post(
    "/v1/audio/transcriptions",
    dependencies=[Depends(require_key)],
    openapi_extra=TRANSCRIPTION_BODY,
    responses=TRANSCRIPTION_RESPONSES,
)
async def create_transcription(
    request: Request,
    place: Place = Depends(admitted, scope="function"),
    upload: TranscriptionUpload = Depends(transcription_upload),
) -> Response:
    engine, form = services(request).engine, upload.form
    if form.model != "sensevoice":  # SenseVoice takes none: not even the default list (api.uploads.check_model)
        form.hotwords = await request_hotwords(request, list(form.hotword_lists), form.hotwords)
    if form.stream:  # input errors are HTTP errors: the audio is checked before the stream starts
        audio = await run_in_threadpool(engine.decode, upload.data, name=upload.name)
        return stream_transcription(
            engine,
            audio,
            hotwords=form.hotwords,
            itn=form.itn,
            lang=language(request),
            release=place.hand_over(),
            model=form.model,
            language=form.language,
        )  # the stream's worker frees the place
    result = await run_in_threadpool(
        engine.transcribe,
        upload.data,
        hotwords=form.hotwords,
        name=upload.name,
        diarize=form.diarize,
        num_speakers=form.num_speakers,
        itn=form.itn,
        model=form.model,
        language=form.language,
    )
    return render(result, form.response_format, form.granularities, tags=form.tags)


@router.get(
    "/metrics",
    dependencies=[Depends(require_key)],
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."},
        **ERROR_RESPONSES,
    },
)
async def metrics(request: Request) -> Response:
    return Response(services(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------------------------------ response
def render(
    result: Transcription, response_format: str, granularities: frozenset[str] = frozenset(), *, tags: bool = False
) -> Response:
    """The answer in `response_format`; `tags` puts SenseVoice's language, emotion and events before each
    sentence of text, SRT and VTT (`asr.subtitles.tag_label`)."""
    if response_format == "text":
        if result.speakers or (tags and result.model == "sensevoice"):
            return PlainTextResponse(to_txt(result.sentences, tags=tags))  # one line per turn, 说话人N：
        return PlainTextResponse(result.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(result.sentences, tags=tags))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(result.sentences, tags=tags), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(result, granularities))
    return JSONResponse({"text": result.text})


def verbose_json(result: Transcription, granularities: frozenset[str] = frozenset()) -> dict:
    """OpenAI's verbose_json, plus our `confidence` (whole text, see docs/engine.md: Confidence).

    Segments come unless only words were asked for, as with OpenAI; `words` (OpenAI's shape: word, start,
    end) when timestamp_granularities has `word`, then each segment lists its own words too. A segment has
    `speaker` (1, 2, ...) when the request asked for speakers. With SenseVoice each segment also has
    `language`, `emotion` and `events` (docs/api.md: SenseVoice), and `language` is the one most sentences have.
    """
    with_words = "word" in granularities
    with_segments = "segment" in granularities or not granularities
    body: dict = {
        "task": "transcribe",
        "language": _language_of(result),
        "model": MODEL_IDS.get(result.model, result.model),
        "duration": round(result.duration, 3),
        "text": result.text,
        # The words the model was biased with: the named lists' and the request's own (or the default list).
        "hotwords": list(result.hotwords),
    }
    if result.text_spoken is not None:  # ITN applied: `text` (and segments, words) are written, this as spoken
        body["text_spoken"] = result.text_spoken
    if with_words:
        body["words"] = [_word_json(w) for w in result.words]
    if with_segments:
        segments = []
        for i, s in enumerate(result.sentences):
            segment = {
                "id": i,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
            }
            if s.speaker is not None:
                segment["speaker"] = s.speaker
            if result.model == "sensevoice":
                segment.update(language=s.language, emotion=s.emotion, events=list(s.events))
            if with_words:
                segment["words"] = [_word_json(w) for w in s.words]
            segments.append(segment)
        body["segments"] = segments
    if any(s.speaker is not None for s in result.sentences):
        body["speakers"] = result.speakers
    body["confidence"] = round(result.confidence, 4)
    body["usage"] = {"type": "duration", "seconds": math.ceil(result.duration)}
    return body


def _language_of(result: Transcription) -> str:
    """OpenAI's language name: SenseVoice's most frequent sentence language (by duration), else Chinese."""
    spoken: dict[str, float] = {}
    for s in result.sentences:
        if s.language in LANGUAGE_NAMES:
            spoken[s.language] = spoken.get(s.language, 0.0) + s.end - s.start
    return LANGUAGE_NAMES[max(spoken, key=spoken.__getitem__)] if spoken else "chinese"


def _word_json(word: Word) -> dict:
    return {"word": word.text, "start": round(word.start, 3), "end": round(word.end, 3)}
