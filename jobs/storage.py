"""A full disk, told apart from every other failure, and the storage condition /health reports.

A write that fails for want of space (ENOSPC, a quota, SQLite's "database or disk is full", Redis out of
memory) is not the file's fault: an upload gets `StorageFullError` (HTTP 507 with the catalogue's message),
and a running job goes back on the queue to be tried again (`jobs.service`), never failed for it.

`StorageMonitor` keeps the last such failure and, with the free space of the folders the service writes to,
gives /health its `storage` check: "full" after a failed write (until a write succeeds again, at most
FAILURE_HOLD_S) or under 1 MB free, "low" under STORAGE_MIN_FREE_MB free, else "ok".
"""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from asr.errors import ASRError

logger = logging.getLogger(__name__)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageFullError(ASRError):
    """No room to store an upload or a result (HTTP 507 Insufficient Storage)."""

    code = "storage_full"


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a write that failed for want of space."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFullError):
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.OperationalError) and (
            getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "disk is full" in str(current)
            or "database or disk is full" in str(current)
        ):
            return True
        if type(current).__name__ in ("ResponseError", "OutOfMemoryError") and str(current).startswith("OOM"):
            return True  # Redis at maxmemory refuses writes with "OOM command not allowed"
        current = current.__cause__ or current.__context__
    return False


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


class StorageMonitor:
    """The last failed write for want of space, and the free space of the folders the service writes to."""

    #: A failure older than this no longer marks storage full by itself (the space may be back).
    FAILURE_HOLD_S = 300.0

    def __init__(self, paths: list[Path], *, min_free_mb: float = 200.0):
        self.paths = [Path(p) for p in dict.fromkeys(str(p) for p in paths)]
        self.min_free_bytes = int(min_free_mb * 2**20)
        self._lock = threading.Lock()
        self._failed_at: float | None = None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._failed_at is None:
                logger.warning("storage full: %s: %s", type(exc).__name__, exc)
            self._failed_at = time.time()

    def succeeded(self) -> None:
        with self._lock:
            if self._failed_at is not None:
                logger.info("storage: writes succeed again")
            self._failed_at = None

    def status(self) -> dict[str, Any]:
        """/health's `storage` check: {"status": "ok" | "low" | "full", "free_mb": {folder name: MB}, ...}.

        Folders are named by their last part only: /health is public, server paths are not."""
        free = {p.name or str(p): _free_bytes(p) for p in self.paths}
        with self._lock:
            failed_at = self._failed_at
        now = time.time()
        full = failed_at is not None and now - failed_at < self.FAILURE_HOLD_S
        if full or any(b is not None and b < 2**20 for b in free.values()):
            status = "full"
        elif any(b is not None and b < self.min_free_bytes for b in free.values()):
            status = "low"
        else:
            status = "ok"
        body: dict[str, Any] = {
            "status": status,
            "free_mb": {k: None if b is None else round(b / 2**20, 1) for k, b in free.items()},
            "min_free_mb": round(self.min_free_bytes / 2**20, 1),
        }
        if failed_at is not None:
            body["last_failure_s_ago"] = round(now - failed_at, 1)
        if status != "ok":
            body["detail"] = (
                "a write failed for want of space; jobs wait and are tried again"
                if full
                else "free space is under STORAGE_MIN_FREE_MB"
            )
        return body


class StorageFullLogFilter(logging.Filter):
    """Huey logs a traceback every poll while its queue's disk is full: note it once in the monitor instead."""

    def __init__(self, monitor: StorageMonitor):
        super().__init__()
        self.monitor = monitor

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_storage_full(exc):
            self.monitor.failed(exc)  # logs one WARNING per episode
            return False
        return True


#: Huey's loggers that report a failed queue read or write.
HUEY_LOGGERS = ("huey.consumer.Worker", "huey.consumer.Scheduler", "huey.consumer", "huey")

__all__ = ["HUEY_LOGGERS", "StorageFullError", "StorageFullLogFilter", "StorageMonitor", "is_storage_full"]
