"""Dispatch and workers: jobs go through Huey (SqliteHuey on one box, RedisHuey across boxes) to worker
threads that share this process's engine.

Huey hands each queued job to one worker. It does not notice a worker that dies while holding a task, so
the job record carries a lease: the worker renews it while it runs, and `recover()` (every third of a lease,
in every process with workers) puts a job whose lease lapsed back on the queue. A job held by a process of
this box that no longer exists is taken back at once, so `run.sh start` after a kill -9 resumes it
immediately. Claiming is an atomic update of the record, so a second copy of a task (a recovery racing a
slow worker) finds the job taken and does nothing: no job runs twice at once. Each file's result is
written before the file is marked done, and a job taken up again skips its finished files.

A job stops at the next model call (segment), or while ffmpeg decodes it or the VAD cuts it, when it is
cancelled, when its lease was taken over, or when the process shuts down (then it goes back on the queue
for the next start, or another replica). Those checks run with the engine's model lock held, so they read
only memory: each run has a monitor thread (`_Run`) that does the store's I/O on its own: it reads the
record every POLL_S for a cancel or a take-over, writes the progress every PROGRESS_EVERY_S and renews the
lease. A slow disk or Redis therefore slows that job's progress reports, never another request's model call.

A full disk (JOBS_DIR, or the store) never fails a good file: the job goes back on the queue, says why in
its `notice`, and is tried again JOB_STORAGE_RETRY_S later (`jobs.storage`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer

from asr.audio import load_audio, probe_duration
from asr.engine import Engine
from asr.errors import ASRError, ModelNotReadyError
from asr.progress import segment_hook, stop_check
from config.settings import Settings
from verification import Problem, Report

from .callbacks import allowed_hosts, check_callback_url, send
from .files import JobFiles
from .records import ACTIVE, Job, JobFile, is_job_id, new_job_id
from .storage import HUEY_LOGGERS, StorageFullError, StorageFullLogFilter, StorageMonitor, is_storage_full
from .store import JobStore, LimitReached, open_store
from .verification import VerificationSpec, report_of

logger = logging.getLogger(__name__)

TASK_NAME = "transcription_job"
#: A running job's monitor reads its record this often (a cancel from another process, a take-over).
POLL_S = 0.5
#: ... and writes its progress at most this often.
PROGRESS_EVERY_S = 1.0
#: Called with ("started" | "finished", job): metrics.
JobObserver = Callable[[str, Job], None]


class Reader(Protocol):
    """Who asks for a job: `id` owns what they submit; `may_read(owner)` says whether they may see a job
    (`results.Owner` is one: the owner itself, or an admin). A plain string is an owner id that reads its own."""

    id: str

    def may_read(self, owner_id: str) -> bool: ...


def _may_read(reader: Reader | str, owner_id: str) -> bool:
    return reader == owner_id if isinstance(reader, str) else reader.may_read(owner_id)


def _id_of(reader: Reader | str) -> str:
    return reader if isinstance(reader, str) else reader.id


class JobError(Exception):
    """A submission that cannot be accepted as it is (HTTP 400); the message is for the client."""

    def __init__(self, message: str, code: str = "invalid_value"):
        super().__init__(message)
        self.code = code


class QueueFull(Exception):
    """Too many jobs waiting: `status` 503 for the whole service, 429 for one key."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Interrupted(ASRError):
    """Raised at a segment boundary: this worker must let go of the job (shutdown, or its lease was taken)."""

    code = "interrupted"


class _Cancelled(ASRError):
    code = "cancelled"


class _Run:
    """One job run by this process. The checks made under the model lock (`check`, the segment hook) read and
    write only this object; the run's monitor thread (`JobService._monitor`) feeds it from the store and
    writes its progress back."""

    def __init__(self, job_id: str, worker: str, stopping: threading.Event):
        self.job_id, self.worker = job_id, worker
        self.stopping = stopping
        self.lost = threading.Event()  # another worker holds the job now
        self.cancelled = threading.Event()
        self.done = threading.Event()  # the run is over: the monitor ends
        #: (file index, audio seconds decoded) as the hook last saw it; written by the monitor.
        self.progress: tuple[int, float] | None = None

    def check(self) -> None:
        if self.stopping.is_set() or self.lost.is_set():
            raise _Interrupted(detail="the worker is stopping" if self.stopping.is_set() else "the job was taken over")
        if self.cancelled.is_set():
            raise _Cancelled()

    def apply_progress(self, job: Job) -> None:
        """Copy the progress into a record being written (only onto the file that is still running)."""
        if self.progress is None:
            return
        index, decoded = self.progress
        f = job.files[index]
        if f.state == "running":
            f.done_s = round(min(decoded, f.duration_s or decoded), 3)


@dataclass
class Upload:
    """One file handed to `submit`: its client name (display only) and an open binary stream or a path."""

    name: str
    source: BinaryIO | Path


class _Consumer(Consumer):
    # Huey's consumer normally owns the process and installs SIGINT/SIGTERM handlers; here it runs inside the
    # app, whose server (uvicorn) owns the signals and calls JobService.stop().
    def _set_signal_handlers(self) -> None:
        pass


def build_huey(settings: Settings) -> Huey:
    """SqliteHuey in JOBS_DIR (one box) or RedisHuey at JOBS_REDIS_URL (several boxes). Results are not kept
    by Huey: they are files, and the job record says where the job stands."""
    if settings.jobs_backend == "redis":
        return RedisHuey("paraformer-jobs", url=settings.jobs_redis_url, results=False, blocking=True, read_timeout=1)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("paraformer-jobs", filename=str(settings.jobs_dir / "queue.db"), results=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobService:
    """Submit, read, cancel and run jobs. `start()` starts this process's workers (JOB_WORKERS)."""

    def __init__(self, settings: Settings, engine: Engine, *, store: JobStore | None = None):
        self.settings = settings
        self.engine = engine
        self.store = store or open_store(
            settings.jobs_backend,
            settings.jobs_dir,
            settings.jobs_redis_url,
            connections=settings.job_store_connections,
        )
        self.files = JobFiles(settings.jobs_dir)
        self.huey = build_huey(settings)
        self._task = self.huey.task(name=TASK_NAME)(self.run_job)
        self.host = socket.gethostname()
        #: host:pid:random: tells this process's workers from a dead one's, even when a container reuses the pid.
        self.instance = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease_s = settings.job_lease_s
        #: The engine's decoding limits with the job's own size and length (a job is for the long ones).
        self.limits = replace(
            engine.limits, max_bytes=int(settings.job_max_upload_mb * 2**20), max_seconds=settings.job_max_audio_seconds
        )
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._recovery: threading.Thread | None = None
        self._observers: list[JobObserver] = []
        #: The jobs this process runs now, by id: a cancel made here reaches them at once.
        self._runs: dict[str, _Run] = {}
        #: /health's storage check: the folders this service writes uploads and results to.
        self.storage = StorageMonitor(
            [settings.jobs_dir, settings.temp_dir, settings.output_dir], min_free_mb=settings.storage_min_free_mb
        )
        self.storage_retry_s = settings.job_storage_retry_s
        self._huey_filter = StorageFullLogFilter(self.storage)

    # ------------------------------------------------------------------ submitting and reading
    def submit(
        self,
        owner: Reader | str,
        uploads: list[Upload],
        *,
        hotwords: str | None = None,
        batch_size_s: int | None = None,
        response_format: str = "json",
        source: str = "api",
        callback_url: str | None = None,
        diarize: bool = False,
        num_speakers: int | None = None,
        granularities: list[str] | None = None,
        itn: bool | None = None,
        verification: VerificationSpec | None = None,
        model: str | None = None,
        language: str | None = None,
        tags: bool = False,
    ) -> Job:
        """Store the files and queue the job. Raises JobError (bad request) or QueueFull (busy).

        The options are those of a direct transcription; `granularities` only shapes verbose_json results.
        With `verification` each file is transcribed with its settings A and B instead (`jobs.verification`)."""
        s = self.settings
        owner = _id_of(owner)
        if callback_url:
            reason = check_callback_url(callback_url, allowed_hosts(s.job_callback_hosts))
            if reason:
                raise JobError(reason, code="callback_not_allowed")
        if not uploads:
            raise JobError("Send at least one audio file.", code="missing_file")
        if len(uploads) > s.job_max_files:
            raise JobError(
                f"A job takes at most {s.job_max_files} files (JOB_MAX_FILES); this one has {len(uploads)}.",
                code="too_many_files",
            )
        model = self.engine.resolve_model(model)  # an unknown model, or hotwords it cannot use: refused now
        self.engine.check_request(model, hotwords, language)
        self.engine.resolve_hotwords(hotwords)  # a bad hotword list is refused now, not found out by a worker
        if verification is not None:
            self.engine.resolve_hotwords(verification.hotwords_a)
            self.engine.resolve_hotwords(verification.hotwords_b)
            if len(verification.references) != len(uploads):
                raise ValueError("a verification needs one reference per file")
        self.engine.check_speakers(diarize, num_speakers)
        self.check_room(owner)
        job = Job(
            id=new_job_id(),
            owner=owner,
            files=[],
            source=source,
            options={
                "hotwords": hotwords,
                "batch_size_s": batch_size_s,
                "response_format": response_format,
                "callback_url": callback_url or None,
                "diarize": diarize,
                "num_speakers": num_speakers,
                "granularities": sorted(granularities or []),
                "itn": itn,  # None: the ITN setting of the replica that runs it
                "model": model,  # "paraformer" or "sensevoice" (asr.engine.MODEL_ALIASES)
                "language": language,
                "tags": tags,
                **(verification.to_options() if verification is not None else {}),
            },
        )
        max_bytes = int(s.job_max_upload_mb * 2**20)
        try:
            for index, upload in enumerate(uploads):
                record = JobFile(name=_display_name(upload.name, index))
                try:
                    if isinstance(upload.source, Path):
                        with open(upload.source, "rb") as stream:
                            record.size = self.files.save_upload(job.id, index, stream, max_bytes)
                    else:
                        record.size = self.files.save_upload(job.id, index, upload.source, max_bytes)
                except ValueError as exc:  # over JOB_MAX_UPLOAD_MB: this file fails, the others go ahead
                    record.state, record.error = "failed", f"{record.name}: the file is {exc} (JOB_MAX_UPLOAD_MB)"
                job.files.append(record)
            # The limits are checked again in the same atomic step as the insert: parallel submissions that all
            # passed check_room above cannot overshoot them.
            self.store.create(job, max_active=s.job_max_queued, max_active_per_owner=s.job_max_queued_per_key)
        except LimitReached as exc:
            self.files.remove(job.id)
            raise self._queue_full(exc.scope, exc.count) from None
        except BaseException as exc:
            self.files.remove(job.id)
            if is_storage_full(exc):  # the upload's folder or the job store: nothing is kept, the client may retry
                self.storage.failed(exc)
                logger.warning("job upload refused: storage full (%s: %s)", type(exc).__name__, exc)
                raise StorageFullError(detail=str(exc)) from None
            raise
        self.storage.succeeded()
        try:
            self._task(job.id)
        except Exception as exc:  # Huey's queue is on a full disk: the record is in, recovery queues it later
            if not is_storage_full(exc):
                raise
            self.storage.failed(exc)
            logger.warning("job %s: stored, but the queue is full; recovery will queue it", job.id)
        logger.info(
            "job %s queued: %d file(s), %.1f MB, source %s",
            job.id,
            len(job.files),
            sum(f.size for f in job.files) / 1e6,
            source,
        )
        return job

    def check_room(self, owner: Reader | str) -> None:
        """Raise QueueFull when the service (503) or this owner (429) has too many jobs queued or running."""
        s = self.settings
        owner = _id_of(owner)
        if s.job_max_queued_per_key and self.store.count_active(owner) >= s.job_max_queued_per_key:
            raise self._queue_full("owner", s.job_max_queued_per_key)
        active = self.store.count_active()
        if active >= s.job_max_queued:
            raise self._queue_full("service", active)

    def _queue_full(self, scope: str, count: int) -> QueueFull:
        s = self.settings
        if scope == "owner":
            return QueueFull(
                f"You have {s.job_max_queued_per_key} jobs queued or running (JOB_MAX_QUEUED_PER_KEY); "
                f"wait for one to finish.",
                429,
            )
        return QueueFull(
            f"The service has {count} jobs queued or running (limit {s.job_max_queued}); try again later.", 503
        )

    def get(self, job_id: str, reader: Reader | str) -> Job | None:
        """The job, or None when it does not exist or `reader` may not see it (the two look the same)."""
        if not is_job_id(job_id):
            return None
        job = self.store.get(job_id)
        return job if job is not None and _may_read(reader, job.owner) else None

    def list(self, reader: Reader | str, limit: int = 50) -> list[Job]:
        """The jobs `reader` submitted, newest first."""
        return self.store.list_owner(_id_of(reader), limit)

    def cancel(self, job_id: str, owner: Reader | str) -> Job | None:
        """Cancel a queued job now, or a running one at its next segment; a finished job is returned as it is."""
        if self.get(job_id, owner) is None:
            return None

        def change(job: Job) -> bool:
            if job.finished:
                return False
            job.cancel_requested = True
            if job.state == "queued":
                _finish_cancelled(job)
            return True

        job, written = self.store.update(job_id, change)
        run = self._runs.get(job_id)
        if run is not None and job is not None and job.cancel_requested:
            run.cancelled.set()  # running here: it stops at its next check, without waiting for the monitor
        if job is not None and written and job.state == "cancelled":  # cancelled while queued: it ends here
            self._forget_uploads(job)
            self._ended(job)
        return job

    def delete(self, job_id: str, owner: Reader | str) -> bool:
        """Remove a finished job's files and record. False when it is not (yet) finished or not the owner's."""
        job = self.get(job_id, owner)
        if job is None or not job.finished:
            return False
        self.files.remove(job_id)
        self.store.delete(job_id)
        return True

    def result(self, job: Job, index: int) -> Any:
        """The Transcription of one finished file, or None."""
        return self.files.read_result(job.id, index) if job.files[index].state == "done" else None

    def _ended(self, job: Job) -> None:
        """Once per job, by whoever moved it to its final state."""
        self._notify("finished", job)

        def record(outcome: str) -> None:
            def change(j: Job) -> bool:
                j.callback = outcome
                return True

            self.store.update(job.id, change)

        send(job, record)

    def add_observer(self, observer: JobObserver) -> None:
        self._observers.append(observer)

    def _notify(self, event: str, job: Job) -> None:
        for observer in list(self._observers):
            try:
                observer(event, job)
            except Exception:
                logger.exception("job observer failed")

    # ------------------------------------------------------------------ workers
    def start(self) -> None:
        """Start JOB_WORKERS worker threads and the recovery loop (call once the engine is loaded)."""
        with self._start_lock:  # the model loader and the app's startup may both call it
            if self.settings.job_workers < 1 or self._consumer is not None:
                return
            self._start()

    def _start(self) -> None:
        self._stopping.clear()
        self.recover()
        self._consumer = _Consumer(
            self.huey,
            workers=self.settings.job_workers,
            worker_type="thread",
            periodic=False,
            check_worker_health=False,
            initial_delay=0.05,
            max_delay=0.5,
            backoff=1.2,
            shutdown_timeout=10,
        )
        for name in HUEY_LOGGERS:
            logging.getLogger(name).addFilter(self._huey_filter)
        self._consumer.start()
        self._recovery = threading.Thread(target=self._recovery_loop, name="job-recovery", daemon=True)
        self._recovery.start()
        logger.info(
            "job workers started: %d thread(s), backend %s, instance %s",
            self.settings.job_workers,
            self.settings.jobs_backend,
            self.instance,
        )

    def stop(self) -> None:
        """Stop the workers; a running job lets go at its next segment and goes back on the queue."""
        self._stopping.set()
        with self._start_lock:
            if self._consumer is not None:
                self._consumer.stop(graceful=True)
                self._consumer = None
                for name in HUEY_LOGGERS:
                    logging.getLogger(name).removeFilter(self._huey_filter)

    @property
    def running(self) -> bool:
        return self._consumer is not None

    def _recovery_loop(self) -> None:
        interval = max(self.lease_s / 3, 0.5)
        while not self._stopping.wait(interval):
            try:
                self.recover()
            except Exception as exc:  # a store hiccup must not end recovery for good
                if is_storage_full(exc):  # said once by the storage monitor; no traceback every round
                    self.storage.failed(exc)
                    logger.debug("job recovery: storage full (%s)", exc)
                else:
                    logger.exception("job recovery failed")

    def _stale(self, job: Job, now: float) -> bool:
        return self._stale_reason(job, now) is not None

    def _stale_reason(self, job: Job, now: float) -> str | None:
        """Why a running job's worker is gone (its process on this box no longer runs, or its lease lapsed), or None."""
        if job.state != "running":
            return None
        if not job.worker:
            return "no worker recorded"
        host, _, rest = job.worker.partition(":")
        pid_text, _, rest = rest.partition(":")
        if host == self.host and pid_text.isdigit():
            pid = int(pid_text)
            left = max(job.lease_until - now, 0.0)
            if pid == os.getpid():
                if not job.worker.startswith(self.instance + ":"):  # an earlier process that had our pid
                    return f"its process {pid} is gone (restarted; the lease had {left:.0f} s left)"
            elif not _pid_alive(pid):
                return f"its process {pid} is gone (the lease had {left:.0f} s left)"
        if job.lease_until < now:
            return f"its lease lapsed {now - job.lease_until:.0f} s ago (worker {job.worker})"
        return None

    def recover(self) -> int:
        """Queue again the jobs whose worker died, and queued jobs whose queue entry was lost. Returns how many."""
        now = time.time()
        pending: set[str] | None = None
        requeued = 0
        for job_id in self.store.active_ids():
            job = self.store.get(job_id)
            if job is None:
                continue
            if job.state == "running":
                reasons: list[str] = []

                def take_back(j: Job, reasons: list[str] = reasons) -> bool:
                    reason = self._stale_reason(j, time.time())
                    if reason is None:
                        return False
                    reasons.append(reason)
                    running = [i for i, f in enumerate(j.files) if f.state == "running"]
                    if running:
                        reasons.append(f"file {running[0]} interrupted on attempt {j.files[running[0]].attempts}")
                    return _requeue(j)

                job, taken = self.store.update(job_id, take_back)
                if not taken:
                    continue
                logger.warning("job %s: its worker is gone: %s; queued again", job_id, "; ".join(reasons))
            elif job.updated_at < now - self.lease_s:
                # Queued for a while: make sure Huey still has it (a process can die between dequeue and claim).
                if pending is None:
                    pending = {str(t.args[0]) for t in self.huey.pending() if t.args}
                    pending |= {str(t.args[0]) for t in self.huey.scheduled() if t.args}  # waiting for disk space
                if job_id in pending:
                    continue
                logger.warning("job %s: queued but not in the queue; queued again", job_id)
            else:
                continue
            self._task(job_id)
            requeued += 1
        return requeued

    def run_job(self, job_id: str) -> None:
        """The Huey task: claim the job, transcribe its unfinished files, record the outcome."""
        worker = f"{self.instance}:{threading.current_thread().name}"
        now = time.time()
        if self._stopping.is_set():
            self._task(job_id)  # leave it for the next start (or another replica)
            return

        def claim(job: Job) -> bool:
            if job.state != "queued" and not self._stale(job, time.time()):
                return False
            if job.cancel_requested:
                _finish_cancelled(job)
                return True
            job.state, job.worker, job.lease_until = "running", worker, now + self.lease_s
            job.runs += 1
            job.claimed_by.append(self.instance)
            job.started_at = job.started_at or now
            job.run_started_at, job.run_done_s = now, job.done_s
            for f in job.files:
                if f.state == "running":  # interrupted by the crash: starts over
                    f.state, f.done_s = "queued", 0.0
            return True

        try:
            job, claimed = self.store.update(job_id, claim)
        except Exception as exc:
            if not is_storage_full(exc):
                raise
            self.storage.failed(exc)
            logger.warning(
                "job %s: cannot claim it, the job store is full (%s); trying again in %.0f s",
                job_id,
                exc,
                self.storage_retry_s,
            )
            self._retry_later(job_id)
            return
        if job is None or not claimed:
            return
        if job.state == "cancelled":
            self._forget_uploads(job)
            self._ended(job)
            return
        if job.runs == 1:
            self._notify("started", job)
        logger.info(
            "job %s: run %d by %s, %d of %d files left",
            job_id,
            job.runs,
            worker,
            sum(not f.finished for f in job.files),
            len(job.files),
        )
        run = _Run(job_id, worker, self._stopping)
        self._runs[job_id] = run
        monitor = threading.Thread(target=self._monitor, args=(run,), name=f"job-{job_id[4:16]}", daemon=True)
        monitor.start()
        try:
            self._probe_durations(job, worker)
            outcome = self._run_files(job, run)
        except Exception as exc:
            if is_storage_full(exc):
                self.storage.failed(exc)
                outcome = "storage_full"
            else:
                # Left running: the lease lapses and recovery tries again (a store outage, say).
                logger.exception("job %s: worker error", job_id)
                return
        finally:
            run.done.set()
            monitor.join()
            self._runs.pop(job_id, None)
        if outcome in ("released", "storage_full"):
            notice = "storage_full" if outcome == "storage_full" else None

            def release(j: Job) -> bool:
                if j.worker != worker:
                    return False
                run.apply_progress(j)
                j.notice = notice
                return _requeue(j)

            try:
                _, released = self.store.update(job_id, release)
            except Exception as exc:  # the store itself is full: the lease lapses and recovery takes it back
                logger.warning(
                    "job %s: could not hand it back (%s: %s); recovery will once its lease lapses",
                    job_id,
                    type(exc).__name__,
                    exc,
                )
                return
            if released and notice:
                logger.warning(
                    "job %s: storage full; back on the queue, trying again in %.0f s", job_id, self.storage_retry_s
                )
                self._retry_later(job_id)
            elif released:
                self._task(job_id)
                logger.info("job %s: let go at shutdown; queued again", job_id)
            return
        if outcome == "lost":
            logger.warning("job %s: another worker took it over; this one stops", job_id)
            return

        def finish(j: Job) -> bool:
            if j.worker != worker:
                return False
            run.apply_progress(j)
            return _finish(j)

        finished, written = self.store.update(job_id, finish)
        if finished is not None and written:
            self._forget_uploads(finished)
            self._ended(finished)
            logger.info(
                "job %s %s: %s, %.1f s audio in %.1f s",
                job_id,
                finished.state,
                ", ".join(f"{n} {k}" for k, n in finished.counts().items() if n),
                finished.done_s,
                (finished.finished_at or 0) - (finished.started_at or 0),
            )

    def _retry_later(self, job_id: str) -> None:
        try:
            self._task.schedule(args=(job_id,), delay=self.storage_retry_s)
        except Exception as exc:  # Huey's own queue is on the full disk: recovery queues it again later
            logger.warning("job %s: could not schedule the retry (%s: %s)", job_id, type(exc).__name__, exc)

    def _monitor(self, run: _Run) -> None:
        """A run's store I/O, off the model lock: cancel and take-over checks, progress, the lease."""
        renew_every = self.lease_s / 3
        last_renew = last_progress = time.monotonic()
        written: tuple[int, float] | None = None
        failing = False
        while not run.done.wait(POLL_S):
            now = time.monotonic()
            try:
                if now - last_renew >= renew_every or (
                    run.progress != written and now - last_progress >= PROGRESS_EVERY_S
                ):
                    progress = run.progress

                    def renew(job: Job) -> bool:
                        if job.worker != run.worker:
                            return False
                        job.lease_until = time.time() + self.lease_s
                        run.apply_progress(job)
                        return True

                    job, ours = self.store.update(run.job_id, renew)
                    last_renew = last_progress = now
                    written = progress
                else:
                    job = self.store.get(run.job_id)
                    ours = job is not None and job.worker == run.worker
                if failing:
                    logger.info("job %s: the store answers again", run.job_id)
                    failing = False
            except Exception as exc:
                if not failing:
                    logger.warning(
                        "job %s: could not reach the job store (%s: %s); still trying",
                        run.job_id,
                        type(exc).__name__,
                        exc,
                    )
                    failing = True
                if is_storage_full(exc):
                    self.storage.failed(exc)
                continue
            if job is None or not ours:
                run.lost.set()
                return
            if job.cancel_requested:
                run.cancelled.set()

    def _probe_durations(self, job: Job, worker: str) -> None:
        todo = [i for i, f in enumerate(job.files) if f.duration_s is None and not f.finished]
        if not todo:
            return
        found = {i: probe_duration(self.files.upload_path(job.id, i)) for i in todo}

        def change(j: Job) -> bool:
            if j.worker != worker:
                return False
            for i, seconds in found.items():
                if seconds is not None and j.files[i].duration_s is None:
                    j.files[i].duration_s = round(seconds, 3)
            return True

        updated, _ = self.store.update(job.id, change)
        if updated is not None:
            job.files = updated.files

    def _run_files(self, job: Job, run: _Run) -> str:
        """Transcribe the unfinished files in order: "finished", "released" (shutdown), "lost" (lease taken) or
        "storage_full" (a write failed for want of space: the job waits and is tried again)."""
        options = job.options
        spec = VerificationSpec.of(options)
        worker = run.worker
        for index, record in enumerate(job.files):
            if record.finished:
                continue
            if self._stopping.is_set():
                return "released"
            if run.lost.is_set():
                return "lost"

            def start(j: Job, i: int = index) -> bool:
                if j.worker != worker:
                    return False
                j.files[i].state, j.files[i].done_s = "running", 0.0
                j.files[i].attempts += 1
                return True

            current, ours = self.store.update(job.id, start)
            if not ours or current is None:
                return "lost"
            if current.cancel_requested:
                return "finished"
            attempt = current.files[index].attempts
            run.progress = None
            path = self.files.upload_path(job.id, index)
            logger.info("job %s file %d started (attempt %d, %.1f MB)", job.id, index, attempt, record.size / 1e6)
            started = time.perf_counter()
            try:
                with stop_check(run.check):  # also while ffmpeg decodes and the VAD runs
                    audio = load_audio(path, limits=self.limits, name=record.name)
                    passes = 2 if spec is not None else 1  # a verification decodes each file twice
                    work_s = round(audio.duration * passes, 3)
                    self._update_file(job.id, worker, index, duration_s=work_s)
                    with segment_hook(self._segment_hook(run, index)):
                        if spec is not None:
                            result = self._verify_file(job.id, index, audio, record.name, spec, options)
                        else:
                            result = self.engine.transcribe(
                                audio,
                                hotwords=options.get("hotwords"),
                                batch_size_s=options.get("batch_size_s"),
                                name=record.name,
                                diarize=bool(options.get("diarize")),
                                num_speakers=options.get("num_speakers"),
                                itn=options.get("itn"),
                                model=options.get("model"),
                                language=options.get("language"),
                            )
                if spec is None:
                    self.files.write_result(job.id, index, result)
            except _Cancelled:
                logger.info("job %s file %d cancelled after %.1f s", job.id, index, time.perf_counter() - started)
                return "finished"
            except _Interrupted:
                outcome = "lost" if run.lost.is_set() else "released"
                logger.info(
                    "job %s file %d interrupted on attempt %d (%s)",
                    job.id,
                    index,
                    attempt,
                    "taken over by another worker" if outcome == "lost" else "shutdown",
                )
                return outcome
            except ModelNotReadyError:
                logger.info("job %s file %d interrupted on attempt %d (the model is not ready)", job.id, index, attempt)
                return "released"
            except ASRError as exc:
                logger.info("job %s file %d failed: %s", job.id, index, exc.code)
                if spec is not None:  # the report gives the reason in the reader's language
                    self.files.write_hypotheses(job.id, index, {"problem": Problem.of_exception("a", exc).to_dict()})
                self._update_file(job.id, worker, index, state="failed", error=str(exc))
                continue
            except Exception as exc:  # one broken file must not end the job; the log has the traceback
                if is_storage_full(exc):  # not the file's fault: it waits for space and runs again
                    self.storage.failed(exc)
                    logger.warning(
                        "job %s file %d interrupted on attempt %d: storage full (%s)", job.id, index, attempt, exc
                    )
                    return "storage_full"
                logger.exception("job %s file %d failed: internal error (%s)", job.id, index, type(exc).__name__)
                self._update_file(
                    job.id, worker, index, state="failed", error=f"{record.name}: internal error ({type(exc).__name__})"
                )
                continue
            processing = time.perf_counter() - started
            self._update_file(
                job.id,
                worker,
                index,
                state="done",
                done_s=work_s,
                duration_s=work_s,
                processing_s=round(processing, 3),
                text_chars=len(result.text),
                notice=None,
            )
            self.storage.succeeded()
            logger.info("job %s file %d done: %.1f s audio in %.1f s", job.id, index, result.duration, processing)
            self.files.remove_upload(job.id, index)
        return "finished"

    def _verify_file(
        self, job_id: str, index: int, audio: Any, name: str, spec: VerificationSpec, options: dict[str, Any]
    ) -> Any:
        """Settings A then B on one file; both texts are stored together (a restart redoes the file or skips it)."""
        texts = {}
        result = None
        for side, hotwords, itn in (("a", spec.hotwords_a, spec.itn_a), ("b", spec.hotwords_b, spec.itn_b)):
            result = self.engine.transcribe(
                audio, hotwords=hotwords, batch_size_s=options.get("batch_size_s"), name=name, itn=itn
            )
            texts[side] = result.text
        self.files.write_hypotheses(job_id, index, texts)
        return result

    def verification_report(self, job: Job) -> Report | None:
        """A verification job's report, scored from its stored texts; None for another kind of job."""
        spec = VerificationSpec.of(job.options)
        if spec is None:
            return None
        outcomes = [self.files.read_hypotheses(job.id, i) for i in range(len(job.files))]
        return report_of(job, spec, outcomes)

    def _update_file(self, job_id: str, worker: str, index: int, **values: Any) -> Job | None:
        notice = values.pop("notice", ...)

        def change(job: Job) -> bool:
            if job.worker != worker:
                return False
            for key, value in values.items():
                setattr(job.files[index], key, value)
            if notice is not ...:
                job.notice = notice
            return True

        job, _ = self.store.update(job_id, change)
        return job

    def _segment_hook(self, run: _Run, index: int) -> Callable[[float], None]:
        """Before each model call, with the model lock held: note the audio decoded so far (memory only; the
        run's monitor writes it), and stop if asked to."""
        decoded = 0.0
        upcoming = 0.0

        def hook(seconds: float) -> None:
            nonlocal decoded, upcoming
            decoded += upcoming  # the previous call has returned
            upcoming = seconds
            run.progress = (index, decoded)
            run.check()

        return hook

    def _forget_uploads(self, job: Job) -> None:
        # Results stay for JOB_RETENTION_H; the uploads (and their folder) are not needed once no file will be
        # (re)run.
        self.files.remove_uploads(job.id)


def _requeue(job: Job) -> bool:
    job.state, job.worker, job.lease_until = "queued", None, 0.0
    for f in job.files:
        if f.state == "running":
            f.state, f.done_s = "queued", 0.0
    return True


def _finish_cancelled(job: Job) -> None:
    job.state, job.finished_at, job.worker, job.lease_until = "cancelled", time.time(), None, 0.0
    for f in job.files:
        if f.state in ("queued", "running"):
            f.state = "cancelled"  # done_s stays: how far it got


def _finish(job: Job) -> bool:
    if job.cancel_requested:
        _finish_cancelled(job)
        return True
    job.worker, job.lease_until, job.finished_at = None, 0.0, time.time()
    if any(f.state == "done" for f in job.files):
        job.state = "done"
    else:
        job.state = "failed"
        reasons = [f.error for f in job.files if f.error]
        job.error = (
            f"All {len(job.files)} file(s) failed" + (f"; the first: {reasons[0]}" if reasons else "")
            if job.files
            else "The job has no files"
        )
    return True


def _display_name(name: str | None, index: int) -> str:
    """The client's file name without any folder part or control characters (for display and zip entries)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[:200]
    return base or f"file-{index + 1}"


__all__ = ["ACTIVE", "JobError", "JobService", "QueueFull", "Reader", "Upload", "build_huey"]
