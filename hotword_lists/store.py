"""Where hotword lists live: beside the job records, so every replica that shares the jobs shares the lists.

- `SQLiteListStore`: `hotword_lists.db` in JOBS_DIR (WAL; any number of processes on one box).
- `RedisListStore`: the jobs' Redis (JOBS_BACKEND=redis), for replicas on several boxes.

Each request reads the lists it names from the store, so a change made through one replica is what the next
request on any replica gets, without a restart. A name is unique per owner; the per-owner limit and the name
check are made in the same atomic step as the write, so parallel requests cannot overshoot or duplicate.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from .records import HotwordList


class ListLimitReached(Exception):
    """The owner already has its limit of lists."""


class NameTaken(Exception):
    """The owner already has a list of that name."""


class ListStore(ABC):
    @abstractmethod
    def create(self, hotword_list: HotwordList, *, max_per_owner: int) -> None:
        """Insert, unless the owner has `max_per_owner` lists (ListLimitReached) or one of that name (NameTaken)."""

    @abstractmethod
    def get(self, list_id: str) -> HotwordList | None: ...

    @abstractmethod
    def by_name(self, owner: str, name: str) -> HotwordList | None: ...

    @abstractmethod
    def of_owner(self, owner: str) -> list[HotwordList]:
        """The owner's lists, by name."""

    @abstractmethod
    def replace(self, hotword_list: HotwordList) -> bool:
        """Store the list's new state (same id and owner); False if it is gone; NameTaken if renamed onto another."""

    @abstractmethod
    def delete(self, list_id: str) -> bool: ...

    def close(self) -> None:  # noqa: B027 (optional)
        pass


class SQLiteListStore(ListStore):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection behind a lock: list operations are small and rare next to transcriptions.
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS hotword_lists (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
                " name TEXT NOT NULL, doc TEXT NOT NULL, UNIQUE (owner, name))"
            )

    def create(self, hotword_list: HotwordList, *, max_per_owner: int) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (count,) = self._db.execute(
                    "SELECT COUNT(*) FROM hotword_lists WHERE owner = ?", (hotword_list.owner,)
                ).fetchone()
                if max_per_owner and count >= max_per_owner:
                    raise ListLimitReached()
                self._db.execute(
                    "INSERT INTO hotword_lists (id, owner, name, doc) VALUES (?, ?, ?, ?)",
                    (hotword_list.id, hotword_list.owner, hotword_list.name, json.dumps(hotword_list.to_doc())),
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise NameTaken() from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _one(self, sql: str, args: tuple) -> HotwordList | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return HotwordList.from_doc(json.loads(row[0])) if row else None

    def get(self, list_id: str) -> HotwordList | None:
        return self._one("SELECT doc FROM hotword_lists WHERE id = ?", (list_id,))

    def by_name(self, owner: str, name: str) -> HotwordList | None:
        return self._one("SELECT doc FROM hotword_lists WHERE owner = ? AND name = ?", (owner, name))

    def of_owner(self, owner: str) -> list[HotwordList]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM hotword_lists WHERE owner = ? ORDER BY name", (owner,)).fetchall()
        return [HotwordList.from_doc(json.loads(doc)) for (doc,) in rows]

    def replace(self, hotword_list: HotwordList) -> bool:
        try:
            with self._lock:
                cursor = self._db.execute(
                    "UPDATE hotword_lists SET name = ?, doc = ? WHERE id = ? AND owner = ?",
                    (hotword_list.name, json.dumps(hotword_list.to_doc()), hotword_list.id, hotword_list.owner),
                )
        except sqlite3.IntegrityError:
            raise NameTaken() from None
        return cursor.rowcount == 1

    def delete(self, list_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM hotword_lists WHERE id = ?", (list_id,)).rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


# KEYS: the list's key, the owner's name index. ARGV: id, name, doc, the owner's limit (create only).
# Returns 1 written, 0 limit reached, -1 name taken, -2 gone (replace only).
_CREATE = """
if tonumber(ARGV[4]) > 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return -1 end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""
_REPLACE = """
local stored = redis.call('GET', KEYS[1])
if not stored then return -2 end
local old = cjson.decode(stored)['name']
if ARGV[2] ~= old then
  if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return -1 end
  redis.call('HDEL', KEYS[2], old)
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""
_DELETE = """
local doc = redis.call('GET', KEYS[1])
if not doc then return 0 end
local list = cjson.decode(doc)
redis.call('HDEL', ARGV[1] .. list['owner'], list['name'])
redis.call('DEL', KEYS[1])
return 1
"""


class RedisListStore(ListStore):
    """Keys under `prefix`: list:<id> (the JSON document) and names:<owner> (a hash name -> id)."""

    def __init__(self, url: str, prefix: str = "paraformer:hotword_lists:", connections: int = 4):
        import redis

        pool = redis.BlockingConnectionPool.from_url(url, max_connections=max(1, int(connections)), timeout=30)
        self._redis = redis.Redis(connection_pool=pool, decode_responses=False)
        self.prefix = prefix
        self._create = self._redis.register_script(_CREATE)
        self._replace = self._redis.register_script(_REPLACE)
        self._delete = self._redis.register_script(_DELETE)

    def _list_key(self, list_id: str) -> str:
        return f"{self.prefix}list:{list_id}"

    def _names_key(self, owner: str) -> str:
        return f"{self.prefix}names:{owner}"

    def create(self, hotword_list: HotwordList, *, max_per_owner: int) -> None:
        keys = [self._list_key(hotword_list.id), self._names_key(hotword_list.owner)]
        doc = json.dumps(hotword_list.to_doc())
        outcome = self._create(keys=keys, args=[hotword_list.id, hotword_list.name, doc, max_per_owner or 0])
        if outcome == 0:
            raise ListLimitReached()
        if outcome == -1:
            raise NameTaken()

    def get(self, list_id: str) -> HotwordList | None:
        doc = self._redis.get(self._list_key(list_id))
        return HotwordList.from_doc(json.loads(doc)) if doc else None

    def by_name(self, owner: str, name: str) -> HotwordList | None:
        list_id = self._redis.hget(self._names_key(owner), name)
        return self.get(list_id.decode()) if list_id else None

    def of_owner(self, owner: str) -> list[HotwordList]:
        ids = self._redis.hvals(self._names_key(owner))
        docs = self._redis.mget([self._list_key(i.decode()) for i in ids]) if ids else []
        return sorted((HotwordList.from_doc(json.loads(d)) for d in docs if d), key=lambda item: item.name)

    def replace(self, hotword_list: HotwordList) -> bool:
        current = self.get(hotword_list.id)
        if current is None or current.owner != hotword_list.owner:
            return False
        keys = [self._list_key(hotword_list.id), self._names_key(hotword_list.owner)]
        doc = json.dumps(hotword_list.to_doc())
        outcome = self._replace(keys=keys, args=[hotword_list.id, hotword_list.name, doc])
        if outcome == -1:
            raise NameTaken()
        return outcome == 1

    def delete(self, list_id: str) -> bool:
        return self._delete(keys=[self._list_key(list_id)], args=[f"{self.prefix}names:"]) == 1

    def close(self) -> None:
        self._redis.close()


def open_list_store(backend: str, jobs_dir: Path, redis_url: str) -> ListStore:
    """The store beside the jobs': JOBS_BACKEND, JOBS_DIR, JOBS_REDIS_URL."""
    if backend == "redis":
        return RedisListStore(redis_url)
    return SQLiteListStore(Path(jobs_dir) / "hotword_lists.db")
