"""`GET /v1/results` (the caller's own stored results) and `GET /v1/results/{id}/{name}` (one file of one):
the same store and the same rule as the UI's downloads.

Who the caller is comes from `results.ResultAccess.owner_of`: an admin key, an API key, else the owner cookie a
browser holds. Another caller's result is a 404, exactly like a name that does not exist; an admin key reads any
result by its id. Listing is the same rule as `GET /v1/jobs`: everyone, admins included, lists their own.
"""

from __future__ import annotations

import datetime as dt
import mimetypes

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from results import Owner, Result, ResultAccess, ResultNotFound

from .errors import APIError
from .openapi import ERROR_RESPONSES, NOT_FOUND
from .routing import ServiceRoute, require_key

router = APIRouter(route_class=ServiceRoute, dependencies=[Depends(require_key)])
MAX_LISTED = 200
# Transcripts are private: no shared cache keeps them, no browser sniffs them into HTML.
PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


def _caller(request: Request) -> tuple[ResultAccess, Owner]:
    access: ResultAccess = request.app.state.results
    owner = access.owner_of(request.headers)
    if owner is None:  # only without the middleware (which gives every request an owner cookie)
        raise _not_found()
    return access, owner


def _not_found() -> APIError:
    return APIError(404, "No such result.", code="not_found", outcome="not_found")


def describe(result: Result, owner: Owner) -> dict:
    """A result as the API shows it; the owner's id only to an admin."""
    body = {
        "id": result.id,
        "object": "result",
        "kind": result.kind,
        "created_at": int(result.created),
        "created": dt.datetime.fromtimestamp(result.created, dt.UTC).isoformat(timespec="seconds"),
        "info": result.info,
        "files": [
            {"name": p.name, "bytes": p.stat().st_size, "url": f"/v1/results/{result.id}/{p.name}"}
            for p in result.files()
        ],
    }
    if owner.admin:
        body["owner"] = result.owner
    return body


@router.get("/v1/results", responses=ERROR_RESPONSES)
async def list_results(request: Request) -> JSONResponse:
    access, owner = _caller(request)
    found = access.store.list(owner, limit=MAX_LISTED, own_only=True)
    return JSONResponse({"object": "list", "data": [describe(r, owner) for r in found]}, headers=PRIVATE)


@router.get(
    "/v1/results/{result_id}/{name}",
    response_class=FileResponse,
    responses={
        200: {"description": "The file, as an attachment.", "content": {"application/octet-stream": {}}},
        **ERROR_RESPONSES,
        **NOT_FOUND,
    },
)
async def get_result_file(result_id: str, name: str, request: Request) -> FileResponse:
    access, owner = _caller(request)
    try:
        path = access.store.file(result_id, name, owner)
    except ResultNotFound:
        raise _not_found() from None
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(
        path, media_type=media_type, filename=name, content_disposition_type="attachment", headers=PRIVATE
    )
