"""What `/openapi.json` says about the API beyond what FastAPI infers: the multipart bodies the upload
dependencies read (`api.uploads`), and the error answers (OpenAI's shape) each route can give."""

from __future__ import annotations

from typing import Any

from asr.speakers import MAX_SPEAKERS

ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_BODY}}}


#: Every API route: a request FastAPI cannot read (400), a missing or wrong key (401), a failure (500).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_response("The request is not valid (OpenAI's error shape; `code` says why)."),
    401: error_response("API_KEYS is set and the request has no valid `Authorization: Bearer <key>`."),
    500: error_response("An internal error; its details are in the server's log, never in the answer."),
}
NOT_FOUND = {404: error_response("No such record, or not the caller's (the two answer the same).")}
HOTWORD_LIST_RESPONSES = {
    **ERROR_RESPONSES,
    **NOT_FOUND,
    403: error_response("A shared list is changed, or made, only with an admin key."),
    409: error_response("The caller has a list of that name already, or HOTWORD_LISTS_PER_OWNER lists."),
}
BUSY = {503: error_response("The model is not ready or the service is full; `Retry-After` says when to try again.")}
TRANSCRIPTION_RESPONSES = {
    200: {
        "description": "The transcript in `response_format` (JSON, plain text, SRT or WebVTT), or with "
        "`stream=true` server-sent events.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/plain": {"schema": {"type": "string"}},
            "text/vtt": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    **ERROR_RESPONSES,
    404: error_response("A `hotword_list` that does not exist or is not the caller's."),
    413: error_response("The file is over MAX_UPLOAD_MB."),
    **BUSY,
}
JOB_RESPONSES = {
    **ERROR_RESPONSES,
    **NOT_FOUND,
    413: error_response("The upload is over JOB_MAX_FILES x JOB_MAX_UPLOAD_MB."),
    429: error_response("This key has JOB_MAX_QUEUED_PER_KEY jobs queued or running."),
    **BUSY,
}

_OPTIONS: dict[str, Any] = {
    "model": {
        "type": "string",
        "description": "The model, by its id in GET /v1/models: seaco-paraformer (the default; also whisper-1, "
        "what OpenAI clients send) or sensevoice where the server runs it. Another id is a 400 unknown_model.",
    },
    "tags": {
        "type": "boolean",
        "description": "sensevoice: lead each sentence of text, srt and vtt with its language, emotion and events, "
        "as [yue · angry · laughter].",
    },
    "language": {
        "type": "string",
        "description": "seaco-paraformer: zh (or empty). sensevoice: auto (or empty), zh, yue, en, ja or ko.",
    },
    "prompt": {"type": "string", "description": "Read as hotwords when `hotwords` is absent."},
    "hotwords": {
        "type": "string",
        "description": "Words to favour, separated by spaces, commas or new lines; empty for none.",
    },
    "hotword_list": {
        "type": "string",
        "description": "Hotword lists (/v1/hotword-lists) by id or name, several separated by commas (or the field "
        "repeated); their words come before `hotwords`.",
    },
    "response_format": {"type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"], "default": "json"},
    "timestamp_granularities[]": {
        "type": "array",
        "items": {"type": "string", "enum": ["segment", "word"]},
        "description": "With response_format=verbose_json.",
    },
    "diarize": {"type": "boolean", "description": "Label each sentence's speaker (needs ENABLE_SPK)."},
    "itn": {
        "type": "boolean",
        "description": "Written form: numbers, dates, times, money and percentages as written "
        "(2026年12月1日, 50%); default: the server's ITN setting. verbose_json then gives `text_spoken` too.",
    },
    "num_speakers": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_SPEAKERS,
        "description": "How many speakers, when known (implies diarize).",
    },
}


def _multipart(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


TRANSCRIPTION_BODY = _multipart(
    {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "The audio or video file."},
            **_OPTIONS,
            "stream": {
                "type": "boolean",
                "description": "Server-sent events as segments are decoded (json or text formats, no speakers).",
            },
        },
    }
)
JOB_BODY = _multipart(
    {
        "type": "object",
        "properties": {
            "file": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "description": "The audio files (repeat the field); or name them by `path` or `url`.",
            },
            "path": {
                "type": "array",
                "items": {"type": "string"},
                "description": "A file on the server under JOB_ALLOWED_DIRS.",
            },
            "url": {
                "type": "array",
                "items": {"type": "string"},
                "description": "An http(s) URL on one of JOB_URL_HOSTS.",
            },
            "callback_url": {"type": "string", "description": "POSTed the job when it ends (JOB_CALLBACK_HOSTS)."},
            **_OPTIONS,
        },
    }
)
