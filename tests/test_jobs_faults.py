"""Jobs under faults and load: a slow store, a full disk, parallel submissions, cancel during decoding and VAD,
the operator's log lines, and what must not grow with traffic (store connections, upload folders).

In-process: the real JobService (SQLite store or Redis, SqliteHuey, worker threads) on tiny engines.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA, UTTERANCE, TinyModels, make_settings

from asr.engine import Engine
from asr.settings import Settings
from jobs import Job, JobService
from jobs.service import QueueFull, Upload
from jobs.store import SQLiteJobStore

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))


def job_settings(engine: Engine, tmp: Path, **overrides: object) -> Settings:
    return engine.settings.model_copy(update={"jobs_dir": tmp / "jobs", "job_lease_s": 3.0, **overrides})


def wait_for(predicate, timeout: float = 60, every: float = 0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met in time")


@pytest.fixture(scope="module")
def batching_engine(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    eng = Engine(make_settings(tiny_models, tmp_path_factory.mktemp("batching"), batch_max_requests=4))
    eng.load()
    return eng


@pytest.fixture(scope="module")
def ten_minute_wav(long_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    audio, rate = sf.read(long_wav, dtype="float32")
    path = tmp_path_factory.mktemp("ten") / "ten_minutes.wav"
    sf.write(path, np.tile(audio, 5), rate, subtype="PCM_16")
    return path


class SlowStore(SQLiteJobStore):
    """A store whose every read and write takes 2 s once `slow` is set (a slow disk, a far Redis)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.slow = threading.Event()

    def _pause(self) -> None:
        if self.slow.is_set():
            time.sleep(2.0)

    def get(self, job_id: str) -> Job | None:
        self._pause()
        return super().get(job_id)

    def update(self, job_id, change):
        self._pause()
        return super().update(job_id, change)


# ------------------------------------------------------------------------------------ no store I/O under the lock
def test_a_store_that_blocks_for_2_s_delays_no_other_requests_model_call(batching_engine: Engine, tmp_path: Path,
                                                                         ten_minute_wav: Path) -> None:
    settings = job_settings(batching_engine, tmp_path, job_lease_s=30.0)
    store = SlowStore(settings.jobs_dir / "jobs.db")
    service = JobService(settings, batching_engine, store=store)
    try:
        # batch_size_s=1: one model call per VAD segment, so the job reaches the model (and its hook) often.
        job = service.submit("", [Upload("long.wav", ten_minute_wav)], batch_size_s=1)
        service.start()
        wait_for(lambda: service.get(job.id, "").files[0].done_s > 0)
        store.slow.set()
        elapsed = []
        for _ in range(4):  # other users' requests while the job runs and its store takes 2 s per call
            started = time.perf_counter()
            batching_engine.transcribe(UTTERANCE)
            elapsed.append(time.perf_counter() - started)
        store.slow.clear()
        still_running = service.get(job.id, "").state == "running"
        print(f"\nother requests with the job's store blocking 2 s per call: {[round(e, 2) for e in elapsed]} s")
        assert still_running, "the job must still be running while the other requests were measured"
        assert max(elapsed) < 1.0, f"another request waited for the job's store: {elapsed}"
        service.cancel(job.id, "")
        wait_for(lambda: service.get(job.id, "").finished)
    finally:
        store.slow.clear()
        service.stop()
