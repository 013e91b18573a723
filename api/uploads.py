"""The upload dependencies: one place that reads a transcription's or a job's multipart form, checks its fields and
its size, and hands the route what it needs. Any failure is raised as an error the route class maps to an answer
(`api.routing`), so routes never parse or catch.

FastAPI does not read these forms itself (they hold files of up to MAX_UPLOAD_MB, read once, with limits on files
and fields); their shape is declared for the OpenAPI schema by `TRANSCRIPTION_BODY` and `JOB_BODY`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from asr.engine import Engine
from asr.errors import FileTooLargeError, HotwordsUnsupportedError
from asr.sensevoice import SENSEVOICE
from messages import Lang

from .errors import APIError, bad_request, from_asr_error, language, not_ready, too_large, unavailable

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MANDARIN = ("zh", "zh-cn", "zh-hans", "cmn", "chinese", "mandarin")
MULTIPART_SLACK_BYTES = 64 * 1024  # form fields and boundaries around the file
RETRY_AFTER_BUSY_S = 5
JOB_FILE_FIELDS = ("file", "file[]", "files")


@dataclass
class TranscriptionForm:
    file: UploadFile | None  # None only where the caller reads its files itself (jobs: several)
    response_format: str
    hotwords: str | None
    granularities: frozenset[str] = frozenset()
    #: Hotword lists named by id or name (`hotword_list`, several allowed); their words come before `hotwords`.
    hotword_lists: tuple[str, ...] = ()
    diarize: bool = False
    num_speakers: int | None = None
    stream: bool = False
    #: Written form (ITN); None: the server's ITN setting.
    itn: bool | None = None
    #: OpenAI's `model` (the engine's names, `asr.engine.MODEL_ALIASES`); None: the default model.
    model: str | None = None
    #: OpenAI's `language`, lower case (None: not given; the model's check is the engine's).
    language: str | None = None
    #: `hotwords` came from OpenAI's `prompt` (no `hotwords` field): a model without hotwords ignores it.
    prompt_as_hotwords: bool = False
    #: text/SRT/VTT lead each sentence with SenseVoice's tags (`[yue · angry · laughter]`); opt-in.
    tags: bool = False


@dataclass
class TranscriptionUpload:
    """One transcription request, read: its form's options and the file's bytes."""

    form: TranscriptionForm
    data: bytes
    name: str


@dataclass
class JobUpload:
    """One job submission, read: its options, its uploaded files (still open), and the paths and URLs it names."""

    form: TranscriptionForm
    files: list[UploadFile]
    paths: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    callback_url: str | None = None


class Place:
    """A place under the admission limit, held for the request; `hand_over()` when a worker releases it later."""

    def __init__(self, release: Callable[[], None]):
        self._release = release
        self.handed_over = False

    def hand_over(self) -> Callable[[], None]:
        self.handed_over = True
        return self._release


# ------------------------------------------------------------------------------------------ dependencies
async def admitted(request: Request) -> AsyncIterator[Place]:
    """Before the upload is read: its size by Content-Length, a ready model and a place under the admission
    limit (a loading or full server cannot use the file anyway). The place is freed when the route is done,
    unless a stream took it over."""
    api = request.app.state.api
    lang = language(request)
    check_content_length(
        request,
        api.engine.limits.max_bytes + MULTIPART_SLACK_BYTES,
        lambda length: _too_large("", length, api.engine.limits.max_bytes, lang),
    )
    if api.engine.state != "ready":
        raise not_ready(api.engine.state, lang)
    if not api.admission.try_enter():
        raise unavailable(
            api.admission.busy_message(lang), code="server_busy", retry_after_s=RETRY_AFTER_BUSY_S, outcome="busy"
        )
    place = Place(api.admission.leave)
    try:
        yield place
    finally:
        if not place.handed_over:
            api.admission.leave()


async def transcription_upload(request: Request) -> AsyncIterator[TranscriptionUpload]:
    """The form of `POST /v1/audio/transcriptions`, checked, and its file read (within MAX_UPLOAD_MB)."""
    api = request.app.state.api
    lang = language(request)
    async with request.form(max_files=1, max_fields=50) as form:
        params = parse_form(form)
        check_model(api.engine, params)  # before reading the upload
        api.engine.check_speakers(params.diarize, params.num_speakers)
        file = params.file
        max_bytes = api.engine.limits.max_bytes
        if file.size is not None and file.size > max_bytes:
            raise _too_large(file.filename or "", file.size, max_bytes, lang)
        yield TranscriptionUpload(params, await file.read(), file.filename or "upload")


async def job_upload(request: Request) -> AsyncIterator[JobUpload]:
    """The form of `POST /v1/jobs`: its options, up to JOB_MAX_FILES uploads, and the paths and URLs it names."""
    api = request.app.state.api
    s = api.settings
    check_content_length(
        request,
        int(s.job_max_files * s.job_max_upload_mb * 2**20) + MULTIPART_SLACK_BYTES,
        lambda _: too_large(
            f"The upload is larger than {s.job_max_files} files of "
            f"{s.job_max_upload_mb:.0f} MB (JOB_MAX_FILES x JOB_MAX_UPLOAD_MB)."
        ),
    )
    async with request.form(max_files=s.job_max_files + 1, max_fields=50) as form:
        params = parse_form(form, require_file=False)
        check_model(api.engine, params)
        if params.stream:
            raise bad_request(
                "A job is not streamed: follow its progress at GET /v1/jobs/{id}, or use "
                "stream=true on /v1/audio/transcriptions.",
                param="stream",
                code="unsupported_value",
            )
        files = [f for name in JOB_FILE_FIELDS for f in form.getlist(name) if isinstance(f, UploadFile)]
        paths = [str(v) for v in form.getlist("path") if str(v).strip()]
        urls = [str(v).strip() for v in form.getlist("url") if str(v).strip()]
        if not (files or paths or urls):
            raise bad_request(
                "Send the audio as multipart/form-data uploads in the field 'file' (repeat it for several files).",
                param="file",
                code="missing_file",
            )
        yield JobUpload(params, files, paths, urls, str(form.get("callback_url") or "").strip() or None)


# ------------------------------------------------------------------------------------------ checks
def check_content_length(request: Request, limit: int, error: Callable[[int], APIError]) -> None:
    """Refuse an oversized upload from its header, before receiving it: raise `error(length)`."""
    try:
        length = int(request.headers.get("content-length", "0"))
    except ValueError:
        return
    if length > limit:
        raise error(length)


def parse_form(form: FormData, *, require_file: bool = True) -> TranscriptionForm:
    """The transcription fields of a multipart form, checked; `file` must be one upload unless `require_file`
    is False (then it is left to the caller: None here)."""
    file = form.get("file") if require_file else None
    if require_file and not isinstance(file, UploadFile):
        raise bad_request(
            "Send the audio as a multipart/form-data upload in the field 'file'.", param="file", code="missing_file"
        )
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise bad_request(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not '{response_format}'.",
            param="response_format",
        )
    language = str(form.get("language") or "").strip().lower()
    granularities = [
        str(g) for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    ]
    for granularity in granularities:
        if granularity not in ("segment", "word"):
            raise bad_request(
                f"timestamp_granularities must be 'segment' or 'word', not '{granularity}'.",
                param="timestamp_granularities",
            )
    if granularities and response_format != "verbose_json":
        raise bad_request(
            "timestamp_granularities need response_format=verbose_json (as with OpenAI).",
            param="timestamp_granularities",
            code="unsupported_value",
        )
    stream = _form_bool(form, "stream")
    if stream and response_format not in ("json", "text"):
        raise bad_request(
            f"stream=true sends the text as events; it goes with response_format json or text, not "
            f"'{response_format}' (ask without stream for subtitles or segments).",
            param="stream",
            code="unsupported_value",
        )
    # `diarize` (ours and OpenAI's diarizing models') or `spk` (FunASR's funasr-server): label the speakers.
    diarize = _form_bool(form, "diarize") or _form_bool(form, "spk")
    num_speakers = _form_int(form, "num_speakers", "speakers")
    if num_speakers is not None and not diarize:
        diarize = True  # a speaker count is a request for speakers
    if stream and diarize:
        raise bad_request(
            "Speakers are labelled once the whole file is recognised, so they do not come with "
            "stream=true: ask for them without stream.",
            param="stream",
            code="unsupported_value",
        )
    # `hotwords` wins; without it the OpenAI `prompt` is read as hotwords (SeACo has no text prompt).
    # Neither: None, the engine's default list. An empty `hotwords` means "no hotwords".
    hotwords = form.get("hotwords")
    prompt_as_hotwords = hotwords is None and bool(form.get("prompt"))
    if hotwords is None:
        hotwords = form.get("prompt") or None
    return TranscriptionForm(
        file=file,
        response_format=response_format,
        hotwords=None if hotwords is None else str(hotwords),
        granularities=frozenset(granularities),
        diarize=diarize,
        num_speakers=num_speakers,
        stream=stream,
        itn=None if form.get("itn") is None else _form_bool(form, "itn"),
        hotword_lists=tuple(str(v) for v in form.getlist("hotword_list") + form.getlist("hotword_list[]")),
        model=str(form.get("model") or "").strip() or None,
        language=language or None,
        prompt_as_hotwords=prompt_as_hotwords,
        tags=_form_bool(form, "tags"),
    )


def check_model(engine: Engine, form: TranscriptionForm) -> None:
    """Resolve `form.model` to the engine's name (in place) and refuse what that model cannot do: an unknown
    model, hotwords (or hotword lists) for SenseVoice, a language it does not recognise (SeACo: Mandarin only)."""
    form.model = engine.resolve_model(form.model)
    if form.model == SENSEVOICE:
        if form.prompt_as_hotwords:  # OpenAI's prompt is no hotword list for a model without hotwords
            form.hotwords = None
        if form.hotword_lists:
            raise HotwordsUnsupportedError(model=SENSEVOICE)
        engine.check_request(form.model, form.hotwords, form.language)
        return
    language = form.language or ""
    if language and language not in MANDARIN and not language.startswith("zh"):
        raise bad_request(
            f"This model recognizes Mandarin Chinese only; use language=zh (or leave it out), or "
            f"model=sensevoice where the server runs it, not '{language}'.",
            param="language",
            code="unsupported_language",
        )
    form.language = None  # SeACo-Paraformer takes no language


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


def _too_large(name: str, size: int, max_bytes: int, lang: Lang) -> APIError:
    return from_asr_error(FileTooLargeError.of(name, size, max_bytes), lang)
