"""Who is asking, over HTTP: the owner cookie, API keys and admin keys, and the guard in front of Gradio's
file route.

Every browser gets an owner cookie (`paraformer_owner`: 256 random bits, HttpOnly, kept for 400 days) on its
first request; the results it makes belong to that cookie, so a reload (or a second tab) finds them again and
another browser cannot read them. An API key, sent as `Authorization: Bearer <key>`, is an owner too; a key
in `ADMIN_API_KEYS` reads everything.

`ResultsMiddleware` wraps the whole app. It gives a request without the cookie a fresh one (in the request it
passes on, and with `Set-Cookie` on the answer), and it answers 404 to any request for a file under
`OUTPUT_DIR` (`/gradio_api/file=...` in every spelling) unless the caller owns that result. Gradio itself
serves the owner's file (it keeps its login check, ranges and content types); OUTPUT_DIR is never in Gradio's
`allowed_paths`. Uploads get the same rule: each one Gradio stores (TEMP_DIR/<content hash>/<name>) is marked
with who sent it (`UploadOwners`), and its URL answers 404 to anyone else; the UI accepts it as input only
from them.

For code that keeps its own records (the jobs API): `access.owner_of(request.headers)` says who asks, and
`owner.may_read(record_owner_id)` whether they may see a record; answer 404 when they may not.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .store import Owner, ResultNotFound, ResultStore

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)

OWNER_COOKIE = "paraformer_owner"
OWNER_TOKEN_BYTES = 32
#: Browsers keep a cookie at most 400 days; the results themselves go after OUTPUT_RETENTION_H.
COOKIE_MAX_AGE_S = 400 * 24 * 3600
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32)
# Gradio's file route, mounted at "/": /gradio_api/file=<path> and the older /gradio_api/file/<path>.
# Matched anywhere in the path, so a prefix (root_path, a proxy's sub-path) changes nothing.
_FILE_ROUTE_RE = re.compile(r"/file[=/]")
_NOT_FOUND = b'{"detail":"Not Found"}'
_UPLOAD_ROUTE_RE = re.compile(r"/upload/?$")  # Gradio's POST /gradio_api/upload
UPLOAD_MARK = ".owner-"


def _keys(secret: SecretStr | None) -> list[bytes]:
    raw = secret.get_secret_value() if secret else ""
    return [key.strip().encode() for key in raw.split(",") if key.strip()]


def _matches(sent: bytes, keys: list[bytes]) -> bool:
    # compare_digest with every key, no early exit, as api/auth.py does.
    return any([hmac.compare_digest(sent, key) for key in keys])


class UploadOwners:
    """Who sent each upload in Gradio's upload folder: an empty `.owner-<owner id>` file in the upload's own
    folder (Gradio names that folder by the content's hash, so two people sending the same file both own it).
    On disk, so it holds across restarts and replicas sharing TEMP_DIR, and ops/cleanup.py ages it out with
    the upload."""

    def __init__(self, upload_dir: Path):
        self.upload_dir = Path(upload_dir)

    def contains(self, path: str | os.PathLike[str]) -> bool:
        if "\x00" in os.fspath(path):
            return False
        lexical = Path(os.path.abspath(path))
        roots = {self.upload_dir.resolve(), Path(os.path.abspath(self.upload_dir))}
        return any(p.is_relative_to(r) and p != r for p in (lexical, lexical.resolve()) for r in roots)

    def record(self, path: str | os.PathLike[str], owner: Owner) -> None:
        target = Path(os.path.abspath(path))
        if self.contains(target) and target.parent.is_dir():
            (target.parent / _mark_name(owner)).touch()

    def allows(self, path: str | os.PathLike[str], owner: Owner | None) -> bool:
        """May `owner` fetch or use this file of the upload folder? Yes for the uploads they sent and for files
        no upload mark claims (what Gradio puts there by itself); never for another person's upload."""
        folder = Path(os.path.abspath(path)).parent
        if not self.contains(path) or folder == Path(os.path.abspath(self.upload_dir)):
            return True
        marks = [p for p in _listdir(folder) if p.startswith(UPLOAD_MARK)]
        if Path(path).name.startswith(UPLOAD_MARK):
            return False  # the marks themselves are nobody's download
        if not marks:
            return True
        if owner is None:
            return False
        if owner.admin:
            return True
        mine = folder / _mark_name(owner)
        if mine.name not in marks:
            return False
        try:
            mine.touch()  # in use: cleanup must not drop the mark before the upload itself
        except OSError:
            pass
        return True


def _mark_name(owner: Owner) -> str:
    return UPLOAD_MARK + owner.id.replace(":", "-")


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


class ResultAccess:
    """The store and the keys that decide who owns and who may read a result (and an upload)."""

    def __init__(
        self,
        store: ResultStore,
        *,
        api_keys: SecretStr | None = None,
        admin_keys: SecretStr | None = None,
        retention_h: float = 0.0,
        upload_dir: Path | None = None,
    ):
        self.store = store
        self.retention_h = retention_h
        self.uploads = UploadOwners(upload_dir) if upload_dir else None
        self._api_keys = _keys(api_keys)
        self._admin_keys = _keys(admin_keys)

    @classmethod
    def from_settings(cls, settings: Settings, upload_dir: Path | None = None) -> ResultAccess:
        """`upload_dir`: the folder Gradio stores uploads in (app.py's `gradio_upload_dir`); TEMP_DIR by default."""
        return cls(
            ResultStore(settings.output_dir),
            api_keys=settings.api_keys,
            admin_keys=settings.admin_api_keys,
            retention_h=settings.output_retention_h,
            upload_dir=upload_dir or settings.temp_dir,
        )

    def may_use_upload(self, path: str | os.PathLike[str], owner: Owner | None) -> bool:
        """May `owner` fetch this file, or give it to the model as input? (See `UploadOwners.allows`.)"""
        return self.uploads is None or self.uploads.allows(path, owner)

    def owner_of(self, headers: Mapping[str, str]) -> Owner | None:
        """The caller: an admin key, else an API key, else the owner cookie; None when it sent none of them."""
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            sent = token.encode()
            if self._admin_keys and _matches(sent, self._admin_keys):
                return Owner.api_key(token, admin=True)
            if self._api_keys and _matches(sent, self._api_keys):
                return Owner.api_key(token)
        cookie = owner_cookie(headers)
        return Owner.session(cookie) if cookie else None


def owner_cookie(headers: Mapping[str, str]) -> str | None:
    """The owner token from the Cookie header, when it is one this service could have issued."""
    raw = headers.get("cookie")
    if not raw:
        return None
    # Starlette's lenient parser: one odd cookie of another app on this host must not hide ours
    # (http.cookies gives up on the whole header).
    value = cookie_parser(raw).get(OWNER_COOKIE, "")
    return value if _TOKEN_RE.match(value) else None


def file_route_target(path: str) -> str | None:
    """The file path a Gradio file-route URL path asks for, or None when it is not that route."""
    match = _FILE_ROUTE_RE.search(path)
    return path[match.end() :] if match else None


class ResultsMiddleware:
    """Issues owner cookies and lets only a result's owner (or an admin) fetch its files."""

    def __init__(self, app: ASGIApp, access: ResultAccess):
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        extra: list[tuple[bytes, bytes]] = []
        if owner_cookie(headers) is None:
            token = secrets.token_urlsafe(OWNER_TOKEN_BYTES)
            scope = _with_cookie(scope, token)
            headers = Headers(scope=scope)
            extra.append((b"set-cookie", _set_cookie(token, secure=_is_https(scope, headers)).encode()))
        target = file_route_target(scope["path"]) if scope["method"] in ("GET", "HEAD") else None
        if target is not None and "\x00" in target:  # no file has such a name: not a server error, not a log line
            logger.debug("file route with a NUL byte refused")
            await _not_found(send, extra)
            return
        if target is not None:
            located = self.access.store.locate(target)
            uploads = self.access.uploads
            if located is not None or (uploads is not None and uploads.contains(target)):
                owner = self.access.owner_of(headers)
                try:
                    if owner is None:
                        raise ResultNotFound(target)
                    if located is not None:
                        self.access.store.file(located[0], located[1], owner)
                    elif not self.access.may_use_upload(target, owner):
                        raise ResultNotFound(target)
                except ResultNotFound:
                    await _not_found(send, extra)
                    return
                # Transcripts and recordings: no shared cache may keep them, no browser may sniff them.
                extra += [(b"cache-control", b"private, no-store"), (b"x-content-type-options", b"nosniff")]
        elif scope["method"] == "POST" and self.access.uploads is not None and _UPLOAD_ROUTE_RE.search(scope["path"]):
            owner = self.access.owner_of(headers)
            if owner is not None:
                await self.app(scope, receive, _UploadRecorder(send, self.access.uploads, owner, extra))
                return

        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _UploadRecorder:
    """Holds back the answer to an upload until its paths are marked as the sender's, so no later request
    can see them unmarked."""

    def __init__(self, send: Send, uploads: UploadOwners, owner: Owner, extra: list[tuple[bytes, bytes]]):
        self.send, self.uploads, self.owner, self.extra = send, uploads, owner, extra
        self.start: Message | None = None
        self.body: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = {**message, "headers": [*message.get("headers", []), *self.extra]}
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.body)
        if self.start["status"] == 200:
            try:
                paths = json.loads(body)
            except ValueError:
                paths = []
            for path in paths if isinstance(paths, list) else []:
                if isinstance(path, str):
                    self.uploads.record(path, self.owner)
        await self.send(self.start)
        await self.send({"type": "http.response.body", "body": body})


def _with_cookie(scope: Scope, token: str) -> Scope:
    """The scope with the new owner cookie added to its Cookie header (merged: parsers read only the first)."""
    cookies = [value for name, value in scope["headers"] if name == b"cookie"]
    others = [(name, value) for name, value in scope["headers"] if name != b"cookie"]
    merged = b"; ".join([*cookies, f"{OWNER_COOKIE}={token}".encode()])
    return {**scope, "headers": [*others, (b"cookie", merged)]}


def _set_cookie(token: str, *, secure: bool) -> str:
    return f"{OWNER_COOKIE}={token}; Max-Age={COOKIE_MAX_AGE_S}; Path=/; HttpOnly; SameSite=Lax" + (
        "; Secure" if secure else ""
    )


def _is_https(scope: Scope, headers: Headers) -> bool:
    # Behind nginx with TLS the app sees http; the proxy says what the browser used.
    return scope.get("scheme") == "https" or headers.get("x-forwarded-proto", "").lower() == "https"


async def _not_found(send: Send, extra: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_NOT_FOUND)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": _NOT_FOUND})
