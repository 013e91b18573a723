"""`callback_url`: a POST to the client's URL once its job has ended, to hosts an admin allows.

Only hosts listed in JOB_CALLBACK_HOSTS (exact names, or name:port) are called, and redirects are not followed,
so a job cannot make the server reach anything else on its network. The body is small JSON: the job's id,
state, file counts and error; the client then fetches the results with its key. Up to `ATTEMPTS` tries with
growing pauses, from a background thread; the outcome is kept on the job (`callback`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from .records import Job

logger = logging.getLogger(__name__)

ATTEMPTS = 3
PAUSES_S = (2.0, 10.0)
TIMEOUT_S = 10.0


def allowed_hosts(setting: str) -> set[str]:
    return {h.strip().lower() for h in setting.replace("\n", ",").split(",") if h.strip()}


def check_callback_url(url: str, hosts: set[str]) -> str | None:
    """None when `url` may be called, else the reason it may not (a message for the client)."""
    return url_refusal(url, hosts, field="callback_url", setting="JOB_CALLBACK_HOSTS", verb="calls")


def url_refusal(url: str, hosts: set[str], *, field: str, setting: str, verb: str, instead: str = "") -> str | None:
    """None when `url` is http(s) on one of the `hosts` an admin listed in `setting`, else why not (for the client).

    `field` names the form field in the message, `verb` what the server does with the host ("calls"), and
    `instead` what the client may do when the setting is empty.
    """
    if not hosts:
        return f"{field} is not enabled on this server ({setting} is empty){instead}."
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{field} must be an http:// or https:// URL."
    if parts.username or parts.password:
        return f"{field} must not carry a user name or password."
    host = parts.hostname.lower()
    with_port = f"{host}:{parts.port}" if parts.port else host
    if host not in hosts and with_port not in hosts:
        return f"{field}'s host '{host}' is not one this server {verb} ({setting})."
    return None


def payload(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "transcription.job",
        "status": job.state,
        "error": job.error,
        "file_counts": job.counts(),
        "finished_at": job.finished_at,
    }


def send(job: Job, record: Callable[[str], None], *, pauses: tuple[float, ...] = PAUSES_S) -> None:
    """POST the payload to the job's callback_url in a background thread; `record(outcome)` keeps the outcome."""
    url = job.options.get("callback_url")
    if not url:
        return

    def deliver() -> None:
        outcome = "failed"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = httpx.post(url, json=payload(job), timeout=TIMEOUT_S, follow_redirects=False)
                if response.status_code < 300:
                    outcome = f"sent ({response.status_code})"
                    break
                outcome = f"failed (HTTP {response.status_code})"
            except httpx.HTTPError as exc:
                outcome = f"failed ({type(exc).__name__})"
            if attempt < ATTEMPTS:
                time.sleep(pauses[min(attempt - 1, len(pauses) - 1)])
        log = logger.info if outcome.startswith("sent") else logger.warning
        log("job %s: callback %s after %d attempt(s)", job.id, outcome, attempt)
        try:
            record(outcome)
        except Exception:
            logger.exception("job %s: could not record the callback outcome", job.id)

    threading.Thread(target=deliver, name=f"callback-{job.id[:12]}", daemon=True).start()
