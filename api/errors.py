"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the HTTP status."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from asr.errors import ASRError, FileTooLargeError, InputError, ModelNotReadyError
from messages import Lang

GENERIC_500 = "The server failed to process the request; the error has been logged."


class APIError(Exception):
    """An HTTP error with a message meant for the caller. `outcome` labels it in the metrics."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, outcome: str = "bad_request", headers: dict[str, str] | None = None):
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
    return APIError(503, message, type="server_error", code=code, outcome=outcome,
                    headers={"Retry-After": str(retry_after_s)})


def internal_error() -> APIError:
    return APIError(500, GENERIC_500, type="server_error", code="internal_error", outcome="error")


#: The form field an input error is about (OpenAI's `param`); the file unless named here.
_PARAM_OF_ERROR = {"bad_hotwords": "hotwords", "speakers_unavailable": "diarize", "bad_speaker_count": "num_speakers"}


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


def language(request: Request) -> Lang:
    """'zh' when the caller's first Accept-Language is Chinese; else 'en', OpenAI's language."""
    first = (request.headers.get("accept-language") or "").split(",")[0].split(";")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
