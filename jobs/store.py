"""Job records: one JSON document per job, changed only through atomic read-modify-write (`update`).

Every rule about states lives in Python (`jobs.service`), once; a store only has to make `update` atomic
across threads, processes and, for Redis, boxes:

- `SQLiteJobStore` (default): one file in JOBS_DIR, WAL mode, each update in a `BEGIN IMMEDIATE`
  transaction. Any number of processes on one box.
- `RedisJobStore`: WATCH/MULTI optimistic transactions, for replicas on several boxes.

Neither imports the app: `ops/cleanup.py` opens the same store from the same settings.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from .records import ACTIVE, FINISHED, Job

logger = logging.getLogger(__name__)

#: A change to a job: edit it in place and return True to write it, False to leave the record as it was.
Change = Callable[[Job], bool]


class JobStore(ABC):
    """Where job records live. Thread-safe; one instance per process is enough."""

    @abstractmethod
    def create(self, job: Job) -> None: ...

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def update(self, job_id: str, change: Change) -> tuple[Job | None, bool]:
        """Apply `change` atomically: (the job as stored afterwards, whether written); (None, False) if absent."""

    @abstractmethod
    def list_owner(self, owner: str, limit: int = 50) -> list[Job]:
        """An owner's jobs, newest first."""

    @abstractmethod
    def active_ids(self) -> list[str]:
        """Ids of queued and running jobs (for recovery)."""

    @abstractmethod
    def count_active(self, owner: str | None = None) -> int: ...

    @abstractmethod
    def count_by_state(self) -> dict[str, int]: ...

    @abstractmethod
    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of jobs that finished before `cutoff` (epoch seconds)."""

    @abstractmethod
    def delete(self, job_id: str) -> None: ...

    def close(self) -> None:  # noqa: B027 (optional)
        pass


class SQLiteJobStore(JobStore):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL,"
                       " created_at REAL NOT NULL, finished_at REAL, doc TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, finished_at)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE takes the write lock up front,
            # so two processes never both read a job and then both write it).
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def create(self, job: Job) -> None:
        db = self._connect()
        db.execute("INSERT INTO jobs (id, owner, state, created_at, finished_at, doc) VALUES (?, ?, ?, ?, ?, ?)",
                   (job.id, job.owner, job.state, job.created_at, job.finished_at, json.dumps(job.to_doc())))

    def get(self, job_id: str) -> Job | None:
        row = self._connect().execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_doc(json.loads(row[0])) if row else None

    def update(self, job_id: str, change: Change) -> tuple[Job | None, bool]:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None, False
            job = Job.from_doc(json.loads(row[0]))
            if not change(job):
                db.execute("ROLLBACK")
                return job, False
            job.updated_at = time.time()
            db.execute("UPDATE jobs SET state = ?, finished_at = ?, doc = ? WHERE id = ?",
                       (job.state, job.finished_at, json.dumps(job.to_doc()), job_id))
            db.execute("COMMIT")
            return job, True
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def list_owner(self, owner: str, limit: int = 50) -> list[Job]:
        rows = self._connect().execute("SELECT doc FROM jobs WHERE owner = ? ORDER BY created_at DESC LIMIT ?",
                                       (owner, limit)).fetchall()
        return [Job.from_doc(json.loads(r[0])) for r in rows]

    def active_ids(self) -> list[str]:
        marks = ",".join("?" * len(ACTIVE))
        rows = self._connect().execute(f"SELECT id FROM jobs WHERE state IN ({marks}) ORDER BY created_at",
                                       ACTIVE).fetchall()
        return [r[0] for r in rows]

    def count_active(self, owner: str | None = None) -> int:
        marks = ",".join("?" * len(ACTIVE))
        if owner is None:
            return self._connect().execute(f"SELECT count(*) FROM jobs WHERE state IN ({marks})", ACTIVE).fetchone()[0]
        return self._connect().execute(f"SELECT count(*) FROM jobs WHERE state IN ({marks}) AND owner = ?",
                                       (*ACTIVE, owner)).fetchone()[0]

    def count_by_state(self) -> dict[str, int]:
        rows = self._connect().execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in (*ACTIVE, *FINISHED)} | dict(rows)

    def finished_before(self, cutoff: float) -> list[str]:
        marks = ",".join("?" * len(FINISHED))
        rows = self._connect().execute(f"SELECT id FROM jobs WHERE state IN ({marks}) AND finished_at < ?",
                                       (*FINISHED, cutoff)).fetchall()
        return [r[0] for r in rows]

    def delete(self, job_id: str) -> None:
        self._connect().execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class RedisJobStore(JobStore):
    """Keys under `prefix`: job:<id> (the JSON document), owner:<owner> (zset by creation), active and
    active:<owner> (sets of queued/running ids), finished (zset by finish time)."""

    def __init__(self, url: str, prefix: str = "paraformer:jobs:"):
        import redis

        self._redis_module = redis
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _index(self, pipe: object, job: Job, created: bool = False) -> None:
        if created:
            pipe.zadd(self._key("owner", job.owner), {job.id: job.created_at})  # type: ignore[attr-defined]
        if job.state in ACTIVE:
            pipe.sadd(self._key("active"), job.id)  # type: ignore[attr-defined]
            pipe.sadd(self._key("active", job.owner), job.id)  # type: ignore[attr-defined]
        else:
            pipe.srem(self._key("active"), job.id)  # type: ignore[attr-defined]
            pipe.srem(self._key("active", job.owner), job.id)  # type: ignore[attr-defined]
            pipe.zadd(self._key("finished"), {job.id: job.finished_at or time.time()})  # type: ignore[attr-defined]

    def create(self, job: Job) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._key("job", job.id), json.dumps(job.to_doc()))
            self._index(pipe, job, created=True)
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        raw = self.client.get(self._key("job", job_id))
        return Job.from_doc(json.loads(raw)) if raw else None

    def update(self, job_id: str, change: Change) -> tuple[Job | None, bool]:
        key = self._key("job", job_id)
        while True:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return None, False
                    job = Job.from_doc(json.loads(raw))
                    if not change(job):
                        return job, False
                    job.updated_at = time.time()
                    pipe.multi()
                    pipe.set(key, json.dumps(job.to_doc()))
                    self._index(pipe, job)
                    pipe.execute()
                    return job, True
                except self._redis_module.WatchError:
                    continue  # someone else changed it between our read and write: read again

    def _jobs(self, ids: list) -> list[Job]:
        if not ids:
            return []
        raws = self.client.mget([self._key("job", i.decode() if isinstance(i, bytes) else i) for i in ids])
        return [Job.from_doc(json.loads(r)) for r in raws if r]

    def list_owner(self, owner: str, limit: int = 50) -> list[Job]:
        return self._jobs(self.client.zrevrange(self._key("owner", owner), 0, limit - 1))

    def active_ids(self) -> list[str]:
        jobs = self._jobs(list(self.client.smembers(self._key("active"))))
        return [j.id for j in sorted(jobs, key=lambda j: j.created_at)]

    def count_active(self, owner: str | None = None) -> int:
        return int(self.client.scard(self._key("active") if owner is None else self._key("active", owner)))

    def count_by_state(self) -> dict[str, int]:
        counts = {state: 0 for state in (*ACTIVE, *FINISHED)}
        for job in self._jobs(list(self.client.smembers(self._key("active")))):
            counts[job.state] += 1
        for job in self._jobs(self.client.zrange(self._key("finished"), 0, -1)):
            counts[job.state] += 1
        return counts

    def finished_before(self, cutoff: float) -> list[str]:
        return [i.decode() for i in self.client.zrangebyscore(self._key("finished"), "-inf", f"({cutoff}")]

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("job", job_id))
            pipe.zrem(self._key("finished"), job_id)
            pipe.srem(self._key("active"), job_id)
            if job is not None:
                pipe.zrem(self._key("owner", job.owner), job_id)
                pipe.srem(self._key("active", job.owner), job_id)
            pipe.execute()

    def close(self) -> None:
        self.client.close()


def open_store(backend: str, jobs_dir: Path, redis_url: str) -> JobStore:
    """The store the settings name: JOBS_BACKEND, JOBS_DIR, JOBS_REDIS_URL."""
    if backend == "redis":
        return RedisJobStore(redis_url)
    return SQLiteJobStore(Path(jobs_dir) / "jobs.db")
