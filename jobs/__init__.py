"""Durable transcription jobs: work that outlives the request (or browser tab) that brought it.

- `records`: a job and its files as plain data, and the rules for moving between states;
- `store`: where records live (SQLite by default, Redis across boxes), with atomic read-modify-write;
- `files`: uploads and results on disk under JOBS_DIR, named by random ids, never by client names;
- `service`: dispatch through Huey (SqliteHuey / RedisHuey), the workers that run jobs on the engine,
  and recovery of jobs whose process died.

Used by `api/` and `webui/`; uses `asr/`; knows nothing of HTTP or Gradio.
"""

from __future__ import annotations

from .records import FileState, Job, JobFile, JobState, new_job_id
from .service import JobError, JobService, QueueFull
from .store import JobStore, open_store

__all__ = [
    "FileState",
    "Job",
    "JobError",
    "JobFile",
    "JobService",
    "JobState",
    "JobStore",
    "QueueFull",
    "new_job_id",
    "open_store",
]
