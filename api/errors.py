"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the HTTP status.

`to_api_error` is the one mapping from whatever a route raised to the answer the client gets; `api.routing`
applies it to every API route, and `handle_api_error` writes the answer.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from asr.errors import ASRError, FileTooLargeError, InputError, ModelNotReadyError
from jobs import JobError, QueueFull
from jobs.storage import is_storage_full
from messages import Lang, message, preferred_language

logger = logging.getLogger(__name__)

GENERIC_500 = "The server failed to process the request; the error has been logged."


class APIError(Exception):
    """An HTTP error with a message meant for the caller. `outcome` labels it in the metrics."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        outcome: str = "bad_request",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.outcome = outcome
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def too_large(message: str) -> APIError:
    return APIError(413, message, param="file", code="too_large", outcome="too_large")


def unavailable(message: str, *, code: str, retry_after_s: int, outcome: str) -> APIError:
    return APIError(
        503, message, type="server_error", code=code, outcome=outcome, headers={"Retry-After": str(retry_after_s)}
    )


def internal_error() -> APIError:
    return APIError(500, GENERIC_500, type="server_error", code="internal_error", outcome="error")


def sentence(key: str, lang: Lang, **params: object) -> str:
    """A catalogue message as a sentence of its own, as OpenAI's messages are."""
    text = message(key, lang, **params)
    if not text.endswith((".", "。")):
        text += "。" if lang == "zh" else "."
    return text[:1].upper() + text[1:]


#: The form field an input error is about (OpenAI's `param`); the file unless named here.
_PARAM_OF_ERROR = {
    "bad_hotwords": "hotwords",
    "speakers_unavailable": "diarize",
    "bad_speaker_count": "num_speakers",
    "unknown_model": "model",
    "hotwords_unsupported": "hotwords",
    "unsupported_language": "language",
    "callback_not_allowed": "callback_url",
    "path_not_allowed": "path",
    "path_not_found": "path",
    "url_not_allowed": "url",
    "url_failed": "url",
}


def from_asr_error(exc: ASRError, lang: Lang = "en") -> APIError:
    """The engine's catalogue message in `lang` (English, OpenAI's, unless the caller asked for Chinese)."""
    text = exc.message(lang)
    if not exc.name:  # a sentence of its own, as OpenAI's messages are
        text = text[:1].upper() + text[1:]
    if isinstance(exc, FileTooLargeError):
        return too_large(text)
    if isinstance(exc, InputError):
        return bad_request(text, param=_PARAM_OF_ERROR.get(exc.code, "file"), code=exc.code)
    if isinstance(exc, ModelNotReadyError):
        return unavailable(text, code=exc.code, retry_after_s=10, outcome="not_ready")
    return internal_error()


def not_ready(state: str, lang: Lang) -> APIError:
    """503 for an engine that is not `ready`: the catalogue's words, never the load error (it names folders)."""
    return from_asr_error(ModelNotReadyError(reason={"loading": "loading", "error": "failed"}.get(state, "")), lang)


def storage_full(lang: Lang) -> APIError:
    """507 Insufficient Storage, in the caller's language: nothing was kept, the client may try again later."""
    return APIError(
        507,
        sentence("storage_full", lang),
        type="server_error",
        code="storage_full",
        outcome="error",
        headers={"Retry-After": "60"},
    )


def to_api_error(exc: Exception, lang: Lang, route: str = "") -> APIError:
    """The answer for anything a route raised: its own APIError, the catalogue's message for an engine or job
    error, 400 for a request FastAPI or the multipart parser could not read, else a generic 500 (logged)."""
    if isinstance(exc, APIError):
        return exc
    if is_storage_full(exc):  # an upload, the multipart parser's temp files, a store: not the caller's fault
        logger.warning("%s refused: storage full (%s: %s)", route or "request", type(exc).__name__, exc)
        return storage_full(lang)
    if isinstance(exc, ASRError):
        error = from_asr_error(exc, lang)
        logger.log(
            logging.ERROR if error.status >= 500 else logging.INFO,
            "%s refused: %s (%s)%s",
            route or "request",
            error.code or error.outcome,
            exc.code,
            f": {exc.detail}" if exc.detail else "",
        )
        return error
    if isinstance(exc, QueueFull):
        if exc.status == 429:
            return APIError(
                429,
                str(exc),
                type="rate_limit_error",
                code="too_many_jobs",
                outcome="busy",
                headers={"Retry-After": "30"},
            )
        return unavailable(str(exc), code="server_busy", retry_after_s=30, outcome="busy")
    if isinstance(exc, JobError):
        return bad_request(str(exc), param=_PARAM_OF_ERROR.get(exc.code, "file"), code=exc.code)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return bad_request(f"{where or 'The request'}: {first.get('msg', 'is not valid')}.", param=where)
    if isinstance(exc, HTTPException):  # starlette's multipart parser: malformed body, too many files or fields
        if exc.status_code == 400:
            return bad_request(f"Could not read the multipart form: {exc.detail}")
        return APIError(exc.status_code, str(exc.detail), outcome="bad_request", headers=dict(exc.headers or {}))
    logger.exception("%s failed", route or "request")  # details go to the log, never to the client
    return internal_error()


def language(request: HTTPConnection) -> Lang:
    """The caller's language by Accept-Language (q-values read); English, OpenAI's language, by default. For a
    request or a WebSocket's handshake."""
    return preferred_language(request.headers.get("accept-language"), "en")


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
