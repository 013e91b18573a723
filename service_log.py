"""The one log format of the app and the ops scripts, and what keeps the log trustworthy.

Every line is `time LEVEL logger: message`, one event per line. Two things users send could break that:

- Control characters (a file name `a.wav\\n2026-12-01 22:00:00,000 ERROR fake: ...`, a hotword, a job name, a
  WebSocket `wav_name`) would write a forged line. The formatter escapes them in every message, whoever logs
  it, so no call site has to remember; a traceback below a message keeps its own lines.
- Secrets in URLs: browsers pass `?api_key=` (they cannot set headers), and a job's source URL may be signed.
  Every query value in a message is replaced by `***`, keys kept, uvicorn's access lines included.
"""

from __future__ import annotations

import logging
import re
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: C0 controls but the tab (it breaks no line), DEL, C1 controls, the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
#: A query string after a path or URL: `?key=value&key=value`.
_QUERY = re.compile(r"(?<=[^\s?])\?((?:[^\s\"'=&#?]+=[^\s\"'&#]*&?)+)")
_QUERY_VALUE = re.compile(r"=[^&]*")


_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED_CONTROLS:
        return _NAMED_CONTROLS[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def _redact_query(match: re.Match[str]) -> str:
    return "?" + _QUERY_VALUE.sub("=***", match.group(1))


def safe_message(text: str) -> str:
    """`text` as one log line: control characters escaped, query values in URLs replaced by `***`."""
    return _QUERY.sub(_redact_query, _CONTROL.sub(_escape_control, text))


class SafeFormatter(logging.Formatter):
    """LOG_FORMAT with each message made `safe_message`."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = safe_message(record.message)
        return super().formatMessage(record)


def _not_root_info(record: logging.LogRecord) -> bool:
    # FunASR logs through the root logger (`logging.info`), at INFO once per request with the hotword
    # list: keep its warnings and errors, drop the rest.
    return record.name != "root" or record.levelno >= logging.WARNING


def configure_logging(level: str) -> None:
    """The app's logging: one format, to stdout (run.sh appends stdout to logs/app.log)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(SafeFormatter())
    handler.addFilter(_not_root_info)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("funasr", "modelscope", "httpx", "urllib3", "jieba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
