"""Job records: one JSON document per job, changed only through atomic read-modify-write (`update`).

Every rule about states lives in Python (`jobs.service`), once; a store only has to make `update` atomic
across threads, processes and, for Redis, boxes:

- `SQLiteJobStore` (default): one file in JOBS_DIR, WAL mode, each update in a `BEGIN IMMEDIATE`
  transaction. Any number of processes on one box. A process keeps at most JOB_STORE_CONNECTIONS
  connections, lent to one thread at a time (a connection per thread grew with the server's thread pool).
- `RedisJobStore`: WATCH/MULTI optimistic transactions, for replicas on several boxes.

`create` checks the service's and the owner's limits on active jobs in the same atomic step as the insert
(a SQLite transaction, a Redis Lua script), so parallel submissions cannot overshoot them.

Neither imports the app: `ops/cleanup.py` opens the same store from the same settings.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .records import ACTIVE, FINISHED, Job

logger = logging.getLogger(__name__)

#: A change to a job: edit it in place and return True to write it, False to leave the record as it was.
Change = Callable[[Job], bool]


class LimitReached(Exception):
    """`create` refused a job: `scope` "service" or "owner" already has `count` active jobs (its limit)."""

    def __init__(self, scope: str, count: int):
        super().__init__(f"{scope} limit reached ({count} active)")
        self.scope, self.count = scope, count


class JobStore(ABC):
    """Where job records live. Thread-safe; one instance per process is enough."""

    @abstractmethod
    def create(self, job: Job, *, max_active: int | None = None, max_active_per_owner: int | None = None) -> None:
        """Insert a new job. With limits (0 or None: none), raise LimitReached instead when the service already
        has `max_active` queued or running jobs, or the job's owner `max_active_per_owner`: checked and
        inserted as one atomic step."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def update(self, job_id: str, change: Change) -> tuple[Job | None, bool]:
        """Apply `change` atomically: (the job as stored afterwards, whether written); (None, False) if absent."""

    @abstractmethod
    def list_owner(self, owner: str, limit: int = 50) -> list[Job]:
        """An owner's jobs, newest first."""

    @abstractmethod
    def list_all(self, limit: int = 50) -> list[Job]:
        """Every owner's jobs, newest first (an admin's listing)."""

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
    def __init__(self, path: Path, connections: int = 4):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_connections = max(1, int(connections))
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._slots = queue.Queue[None]()
        for _ in range(self.max_connections):
            self._slots.put(None)
        with self._connection() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL,"
                " created_at REAL NOT NULL, finished_at REAL, doc TEXT NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, finished_at)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at)")

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE takes the write lock up front,
        # so two processes never both read a job and then both write it).
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a connection to this thread for one operation: an idle one, a new one while fewer than
        `max_connections` are open, else wait for one to come back."""
        self._slots.get()  # one slot per connection lent out
        try:
            try:
                db = self._idle.get_nowait()
            except queue.Empty:
                db = self._open()
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            finally:
                self._idle.put(db)
        finally:
            self._slots.put(None)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._connection() as db:
            return db.execute(sql, args).fetchall()

    def create(self, job: Job, *, max_active: int | None = None, max_active_per_owner: int | None = None) -> None:
        marks = ",".join("?" * len(ACTIVE))
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: no other process counts or inserts meanwhile
            if max_active_per_owner:
                count = db.execute(
                    f"SELECT count(*) FROM jobs WHERE state IN ({marks}) AND owner = ?", (*ACTIVE, job.owner)
                ).fetchone()[0]
                if count >= max_active_per_owner:
                    db.execute("ROLLBACK")
                    raise LimitReached("owner", count)
            if max_active:
                count = db.execute(f"SELECT count(*) FROM jobs WHERE state IN ({marks})", ACTIVE).fetchone()[0]
                if count >= max_active:
                    db.execute("ROLLBACK")
                    raise LimitReached("service", count)
            db.execute(
                "INSERT INTO jobs (id, owner, state, created_at, finished_at, doc) VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, job.owner, job.state, job.created_at, job.finished_at, json.dumps(job.to_doc())),
            )
            db.execute("COMMIT")

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT doc FROM jobs WHERE id = ?", (job_id,))
        return Job.from_doc(json.loads(rows[0][0])) if rows else None

    def update(self, job_id: str, change: Change) -> tuple[Job | None, bool]:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None, False
            job = Job.from_doc(json.loads(row[0]))
            if not change(job):
                db.execute("ROLLBACK")
                return job, False
            job.updated_at = time.time()
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, doc = ? WHERE id = ?",
                (job.state, job.finished_at, json.dumps(job.to_doc()), job_id),
            )
            db.execute("COMMIT")
            return job, True

    def list_owner(self, owner: str, limit: int = 50) -> list[Job]:
        rows = self._read("SELECT doc FROM jobs WHERE owner = ? ORDER BY created_at DESC LIMIT ?", (owner, limit))
        return [Job.from_doc(json.loads(r[0])) for r in rows]

    def list_all(self, limit: int = 50) -> list[Job]:
        rows = self._read("SELECT doc FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [Job.from_doc(json.loads(r[0])) for r in rows]

    def active_ids(self) -> list[str]:
        marks = ",".join("?" * len(ACTIVE))
        return [r[0] for r in self._read(f"SELECT id FROM jobs WHERE state IN ({marks}) ORDER BY created_at", ACTIVE)]

    def count_active(self, owner: str | None = None) -> int:
        marks = ",".join("?" * len(ACTIVE))
        if owner is None:
            return self._read(f"SELECT count(*) FROM jobs WHERE state IN ({marks})", ACTIVE)[0][0]
        return self._read(f"SELECT count(*) FROM jobs WHERE state IN ({marks}) AND owner = ?", (*ACTIVE, owner))[0][0]

    def count_by_state(self) -> dict[str, int]:
        rows = self._read("SELECT state, count(*) FROM jobs GROUP BY state")
        return {state: 0 for state in (*ACTIVE, *FINISHED)} | dict(rows)

    def finished_before(self, cutoff: float) -> list[str]:
        marks = ",".join("?" * len(FINISHED))
        rows = self._read(f"SELECT id FROM jobs WHERE state IN ({marks}) AND finished_at < ?", (*FINISHED, cutoff))
        return [r[0] for r in rows]

    def delete(self, job_id: str) -> None:
        with self._connection() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class RedisJobStore(JobStore):
    """Keys under `prefix`: job:<id> (the JSON document), owner:<owner> (zset by creation), active and
    active:<owner> (sets of queued/running ids), finished (zset by finish time)."""

    def __init__(self, url: str, prefix: str = "paraformer:jobs:", connections: int = 4):
        import redis

        self._redis_module = redis
        # A bounded pool that waits for a free connection (redis-py's default pool keeps one per concurrent caller
        # for good, as many as the server's thread pool ever ran at once).
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=max(1, int(connections)), timeout=30)
        self.client = redis.Redis(connection_pool=pool)
        self.prefix = prefix
        self._create_script = self.client.register_script(self._CREATE)

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

    #: Check the limits and insert, atomically (Redis runs a script alone). KEYS: job, active, active:<owner>,
    #: owner:<owner>; ARGV: document, id, created_at, max active (0: none), max per owner (0: none), state.
    _CREATE = """
local per_owner = redis.call('SCARD', KEYS[3])
if tonumber(ARGV[5]) > 0 and per_owner >= tonumber(ARGV[5]) then return {'owner', per_owner} end
local active = redis.call('SCARD', KEYS[2])
if tonumber(ARGV[4]) > 0 and active >= tonumber(ARGV[4]) then return {'service', active} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
if ARGV[6] == 'queued' or ARGV[6] == 'running' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[2])
end
return {'ok', 0}
"""

    def create(self, job: Job, *, max_active: int | None = None, max_active_per_owner: int | None = None) -> None:
        if job.state not in ACTIVE:  # never from the service; kept simple for a finished record (tests, imports)
            with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self._key("job", job.id), json.dumps(job.to_doc()))
                self._index(pipe, job, created=True)
                pipe.execute()
            return
        outcome, count = self._create_script(
            keys=[
                self._key("job", job.id),
                self._key("active"),
                self._key("active", job.owner),
                self._key("owner", job.owner),
            ],
            args=[
                json.dumps(job.to_doc()),
                job.id,
                job.created_at,
                max_active or 0,
                max_active_per_owner or 0,
                job.state,
            ],
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        if outcome != "ok":
            raise LimitReached(outcome, int(count))

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

    def list_all(self, limit: int = 50) -> list[Job]:
        # Owners' zsets hold every job by creation time; merge their newest `limit` each.
        jobs: list[Job] = []
        for key in self.client.scan_iter(match=self._key("owner", "*"), count=500):
            jobs += self._jobs(self.client.zrevrange(key, 0, limit - 1))
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)[:limit]

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


def open_store(backend: str, jobs_dir: Path, redis_url: str, *, connections: int = 4) -> JobStore:
    """The store the settings name: JOBS_BACKEND, JOBS_DIR, JOBS_REDIS_URL (JOB_STORE_CONNECTIONS)."""
    if backend == "redis":
        return RedisJobStore(redis_url, connections=connections)
    return SQLiteJobStore(Path(jobs_dir) / "jobs.db", connections=connections)
