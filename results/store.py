"""Result folders on disk, each under an unguessable name and recorded with the owner who made it.

A result is one folder `ROOT/<kind>-<YYYYmmdd-HHMMSS>-<32 hex digits>/` (the hex part: 128 bits from `secrets`)
with the user's files and a hidden `.result.json` naming its owner. Only the owner (or an admin) gets a
`Result` back; anyone else gets `ResultNotFound`, the same as for a name that does not exist, so a caller that
answers 404 to it says nothing about which names exist. Nothing here lists the folder to anyone but an
owner, and only that owner's results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Random bytes in a result name; docs/security.md states the bits and tests/test_results.py checks them.
RESULT_ID_BYTES = 16
RESULT_ID_BITS = RESULT_ID_BYTES * 8
META_NAME = ".result.json"
_ID_RE = re.compile(r"^(?P<kind>[a-z]{1,16})-(?P<time>\d{8}-\d{6})-(?P<token>[0-9a-f]{%d})$" % (RESULT_ID_BYTES * 2))  # noqa: UP031
_KIND_RE = re.compile(r"^[a-z]{1,16}$")


class ResultNotFound(LookupError):
    """No such result, or not the caller's: the two are deliberately the same error (answer 404)."""


@dataclass(frozen=True)
class Owner:
    """Who makes or asks for a result: `id` is a digest of their token, never the token itself.

    `admin` may read every result. Build one with `Owner.session(token)` (a browser's owner cookie),
    `Owner.api_key(key)`, or `results.access.owner_of(...)` from a request's headers.
    """

    id: str
    admin: bool = False

    @staticmethod
    def session(token: str) -> Owner:
        return Owner("session:" + _digest("session", token))

    @staticmethod
    def api_key(key: str, *, admin: bool = False) -> Owner:
        return Owner(("admin:" if admin else "key:") + _digest("api-key", key), admin=admin)

    def may_read(self, owner_id: str) -> bool:
        """True for the owner itself and for an admin: the check the jobs API uses on its own records too."""
        return self.admin or secrets.compare_digest(self.id, owner_id)


def _digest(kind: str, token: str) -> str:
    # Stored on disk instead of the token: a copy of OUTPUT_DIR does not hand out anyone's cookie or key.
    return hashlib.sha256(f"paraformer-{kind}:{token}".encode()).hexdigest()[:40]


def new_result_id(kind: str, now: float | None = None) -> str:
    """`<kind>-<YYYYmmdd-HHMMSS>-<32 hex>`: the time helps an operator reading the folder; the hex part is
    what makes it unguessable (RESULT_ID_BITS random bits from the OS's CSPRNG)."""
    if not _KIND_RE.match(kind):
        raise ValueError(f"result kind must be 1-16 lowercase letters, not {kind!r}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{kind}-{stamp}-{secrets.token_hex(RESULT_ID_BYTES)}"


def is_result_id(name: str) -> bool:
    return bool(_ID_RE.match(name))


@dataclass(frozen=True)
class Result:
    """One result folder. `info` is what its maker recorded (e.g. a batch's file count)."""

    id: str
    kind: str
    owner: str
    created: float
    folder: Path
    info: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """The downloadable files, by name: regular files only, never the record or a half-written `.tmp`."""
        out = []
        for path in sorted(self.folder.iterdir()):
            if _downloadable_name(path.name) and stat.S_ISREG(path.lstat().st_mode):
                out.append(path)
        return out


def _downloadable_name(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(".tmp") and "/" not in name and name not in ("", "..")


class ResultStore:
    """The results under one folder (`OUTPUT_DIR`). Safe to create several over the same folder: all state
    is on disk."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # ------------------------------------------------------------------------------------------ writing
    def create(self, kind: str, owner: Owner, **info: Any) -> Result:
        """A new, empty result folder owned by `owner`; its record is on disk before any file is."""
        self.root.mkdir(parents=True, exist_ok=True)
        result_id = new_result_id(kind)
        folder = self.root / result_id
        folder.mkdir(mode=0o750)  # a fresh name: an existing folder would mean a broken random source
        created = time.time()
        _write_json(
            folder / META_NAME, {"id": result_id, "kind": kind, "owner": owner.id, "created": created, "info": info}
        )
        logger.info("result %s… created (%s)", result_id[: -RESULT_ID_BYTES * 2 + 6], kind)
        return Result(result_id, kind, owner.id, created, folder, dict(info))

    def update_info(self, result: Result, **info: Any) -> Result:
        """Record more about a result (atomically: a crash leaves the old record or the new one)."""
        merged = {**result.info, **info}
        _write_json(
            result.folder / META_NAME,
            {"id": result.id, "kind": result.kind, "owner": result.owner, "created": result.created, "info": merged},
        )
        return Result(result.id, result.kind, result.owner, result.created, result.folder, merged)

    # ------------------------------------------------------------------------------------------ reading
    def get(self, result_id: str, reader: Owner) -> Result:
        """The result, when `reader` owns it or is an admin; `ResultNotFound` otherwise."""
        result = self._load(result_id)
        if result is None or not reader.may_read(result.owner):
            raise ResultNotFound(result_id)
        return result

    def file(self, result_id: str, name: str, reader: Owner) -> Path:
        """The path of one downloadable file of a result `reader` may read; `ResultNotFound` otherwise."""
        result = self.get(result_id, reader)
        if not _downloadable_name(name):
            raise ResultNotFound(result_id)
        path = result.folder / name
        try:
            if not stat.S_ISREG(path.lstat().st_mode):  # no links out of the folder, no sub-folders
                raise ResultNotFound(result_id)
        except OSError:
            raise ResultNotFound(result_id) from None
        return path

    def list(self, reader: Owner, *, kind: str | None = None, limit: int = 50, own_only: bool = False) -> list[Result]:
        """`reader`'s results (an admin's: everyone's, unless `own_only`), newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            if not is_result_id(entry.name) or (kind and not entry.name.startswith(kind + "-")):
                continue
            result = self._load(entry.name)
            if result is not None and (result.owner == reader.id if own_only else reader.may_read(result.owner)):
                found.append(result)
        found.sort(key=lambda r: r.created, reverse=True)
        return found[:limit]

    def locate(self, path: str | os.PathLike[str]) -> tuple[str, str] | None:
        """For a path inside the root, (result id, file name) as far as the path gives them ("" when it
        stops short); None for a path outside the root. Lexical and resolved forms are both checked, so
        neither `..` nor a symbolic link gets a path past this. A path with a NUL byte names no file: None."""
        if "\x00" in os.fspath(path):
            return None
        roots = {self.root.resolve(), Path(os.path.abspath(self.root))}
        lexical = Path(os.path.abspath(path))
        for candidate in (lexical, lexical.resolve()):
            for root in roots:
                if candidate.is_relative_to(root):
                    parts = candidate.relative_to(root).parts
                    return (parts[0] if parts else "", "/".join(parts[1:]))
        return None

    def _load(self, result_id: str) -> Result | None:
        if not is_result_id(result_id):
            return None
        folder = self.root / result_id
        try:
            if not stat.S_ISDIR(folder.lstat().st_mode):
                return None
            meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
            if meta.get("id") != result_id or not isinstance(meta.get("owner"), str):
                return None
            return Result(
                result_id,
                str(meta["kind"]),
                meta["owner"],
                float(meta["created"]),
                folder,
                dict(meta.get("info") or {}),
            )
        except (OSError, ValueError, KeyError, TypeError):
            # No record (a folder from before ownership, or a damaged one): nobody but an operator on the
            # box can read it, and retention removes it in time.
            return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
