"""A job and its files as plain data (stored as one JSON document per job), and their states.

A job is `queued` until a worker claims it, `running` while one holds its lease, then `done` (at least one
file transcribed), `failed` (none was; `error` says why) or `cancelled`. Each file has its own state, so a
job taken up again after a crash skips the files already finished.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FileState = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE: tuple[JobState, ...] = ("queued", "running")
FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled")


def new_job_id() -> str:
    """`job_` + 32 hex digits: 128 random bits, so an id cannot be guessed (it also names the job's folders)."""
    return "job_" + secrets.token_hex(16)


def is_job_id(value: str) -> bool:
    return len(value) == 36 and value.startswith("job_") and all(c in "0123456789abcdef" for c in value[4:])


@dataclass
class JobFile:
    """One input file of a job. `name` is the client's file name, for display only (never a path)."""

    name: str
    size: int = 0
    state: FileState = "queued"
    duration_s: float | None = None  # declared by the container at first, then the decoded length
    done_s: float = 0.0  # audio seconds decoded so far
    error: str | None = None
    attempts: int = 0  # how many times a worker started this file (1 unless a crash interrupted it)
    processing_s: float | None = None
    text_chars: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


@dataclass
class Job:
    id: str
    owner: str  # a digest of the API key or the browser's token; "" for an open API
    files: list[JobFile]
    options: dict[str, Any] = field(default_factory=dict)  # hotwords, batch_size_s, response_format
    state: JobState = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None  # first claim
    finished_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    error: str | None = None
    cancel_requested: bool = False
    worker: str | None = None  # the lease holder while running
    lease_until: float = 0.0
    runs: int = 0  # claims so far: 2 or more means it was taken up again after a crash or a restart
    claimed_by: list[str] = field(default_factory=list)  # the process (host:pid:random) of each claim
    run_started_at: float | None = None  # this run's start and audio done then: the rate behind the ETA
    run_done_s: float = 0.0
    source: str = "api"  # api | ui
    callback: str | None = None  # callback_url's outcome: "sent (200)", "failed (...)"; None before or without one
    notice: str | None = None  # why a job waits instead of running: "storage_full" (a disk filled); None otherwise

    # ------------------------------------------------------------------ progress
    @property
    def total_s(self) -> float | None:
        """Audio seconds in the job; None while a file's length is unknown."""
        durations = [f.duration_s for f in self.files if f.state != "failed"]
        return None if any(d is None for d in durations) else float(sum(d for d in durations if d is not None))

    @property
    def done_s(self) -> float:
        return float(sum(f.done_s for f in self.files if f.state != "failed"))

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at this run's pace; None before the first segment or while the total is unknown."""
        total, done = self.total_s, self.done_s
        if self.state != "running" or total is None or self.run_started_at is None:
            return None
        gained = done - self.run_done_s
        elapsed = (now or time.time()) - self.run_started_at
        if gained <= 0 or elapsed <= 0:
            return None
        return max(total - done, 0.0) * elapsed / gained

    def counts(self) -> dict[str, int]:
        result = {state: 0 for state in ("queued", "running", "done", "failed", "cancelled")}
        for f in self.files:
            result[f.state] += 1
        return result

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    # ------------------------------------------------------------------ storage
    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Job:
        doc = dict(doc)
        files = [JobFile(**f) for f in doc.pop("files")]
        return cls(files=files, **doc)
