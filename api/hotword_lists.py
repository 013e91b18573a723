"""Hotword lists over HTTP: `POST|GET /v1/hotword-lists`, `GET|PUT|DELETE /v1/hotword-lists/{id}`,
`GET /v1/hotword-lists/{id}/export?format=txt|csv`, and the `hotword_list` field of requests.

Thin: read the JSON or the uploaded file, call `hotword_lists.HotwordListService`, format. Owned like jobs:
another owner's list answers 404, as one that does not exist.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hotword_lists import FormatError, HotwordList, HotwordListError, HotwordListService, split_refs
from hotword_lists.records import parse_file, parse_words, to_csv, to_text
from results import Owner

from .errors import APIError, bad_request, language, sentence, unavailable
from .openapi import ERROR_RESPONSES, HOTWORD_LIST_RESPONSES, NOT_FOUND
from .routing import ServiceRoute, caller, require_key

router = APIRouter(route_class=ServiceRoute, dependencies=[Depends(require_key)])
MAX_BODY_BYTES = 1024 * 1024
LIST_RESPONSES = {**ERROR_RESPONSES, **NOT_FOUND}
LIST_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "words": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "string"}},
                                {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {"word": {"type": "string"}, "weight": {"type": "number"}},
                                        "required": ["word"],
                                    },
                                },
                                {"type": "string", "description": "FunASR's hotword file: `word weight` lines"},
                            ]
                        },
                        "shared": {"type": "boolean", "description": "admin keys only: a list for everyone"},
                    },
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "file": {"type": "string", "format": "binary", "description": ".txt (`word weight`) or .csv"},
                        "shared": {"type": "boolean"},
                    },
                }
            },
        }
    }
}


def list_service(request: Request) -> HotwordListService:
    service = request.app.state.api.hotword_lists
    if service is None:
        raise unavailable(
            sentence("hotword_lists_disabled", language(request)),
            code="hotword_lists_disabled",
            retry_after_s=60,
            outcome="not_ready",
        )
    return service


def list_error(exc: HotwordListError, request: Request) -> APIError:
    outcome = {404: "not_found", 403: "forbidden", 409: "conflict"}.get(exc.status, "bad_request")
    return APIError(
        exc.status,
        sentence(exc.key, language(request), **exc.params),
        code=exc.code,
        param="hotword_list",
        outcome=outcome,
    )


def list_view(hotword_list: HotwordList) -> dict[str, Any]:
    return {
        "id": hotword_list.id,
        "object": "hotword_list",
        "name": hotword_list.name,
        "shared": hotword_list.shared,
        "words": [w.as_dict() for w in hotword_list.words],
        "created_at": round(hotword_list.created_at, 3),
        "updated_at": round(hotword_list.updated_at, 3),
    }


async def _call(request: Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except HotwordListError as exc:
        raise list_error(exc, request) from None


async def _read_body(request: Request, service: HotwordListService) -> dict[str, Any]:
    """name, words (parsed) and shared, from JSON or from a multipart upload of a .txt or .csv file."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=10) as form:
                upload = form.get("file")
                shared = str(form.get("shared", "")).lower() == "true"
                body: dict[str, Any] = {"name": form.get("name"), "shared": shared}
                if isinstance(upload, UploadFile):
                    data = await upload.read(MAX_BODY_BYTES + 1)
                    if len(data) > MAX_BODY_BYTES:
                        raise bad_request("The hotword file is over 1 MB.", param="file")
                    body["words"] = parse_file(upload.filename or "", data)
                    if body["name"] is None and upload.filename:
                        body["name"] = upload.filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            return body
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise bad_request("The request body is over 1 MB.")
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            raise bad_request('The body must be JSON: {"name": ..., "words": [...]}.') from None
        if not isinstance(doc, dict):
            raise bad_request('The body must be a JSON object: {"name": ..., "words": [...]}.')
        body = {"name": doc.get("name"), "shared": doc.get("shared") is True}
        if "words" in doc:
            body["words"] = parse_words(doc["words"])
        return body
    except FormatError as exc:
        raise list_error(service.format_error(exc), request) from None


@router.post("/v1/hotword-lists", status_code=201, openapi_extra=LIST_BODY, responses=HOTWORD_LIST_RESPONSES)
async def create_list(request: Request, owner: Owner = Depends(caller)) -> JSONResponse:
    service = list_service(request)
    body = await _read_body(request, service)
    name, words = body.get("name"), body.get("words", [])
    created = await _call(request, service.create, owner, name, words, shared=body["shared"])
    return JSONResponse(list_view(created), status_code=201, headers={"Location": f"/v1/hotword-lists/{created.id}"})


@router.get("/v1/hotword-lists", responses=ERROR_RESPONSES)
async def list_lists(request: Request, owner: Owner = Depends(caller)) -> JSONResponse:
    """The caller's own lists, then the shared ones."""
    lists = await _call(request, list_service(request).visible, owner)
    return JSONResponse({"object": "list", "data": [list_view(item) for item in lists]})


@router.get("/v1/hotword-lists/{list_id}", responses=LIST_RESPONSES)
async def get_list(request: Request, list_id: str, owner: Owner = Depends(caller)) -> JSONResponse:
    return JSONResponse(list_view(await _call(request, list_service(request).get, list_id, owner)))


@router.get("/v1/hotword-lists/{list_id}/export", responses=LIST_RESPONSES)
async def export_list(
    request: Request, list_id: str, format: str = Query("txt", pattern="^(txt|csv)$"), owner: Owner = Depends(caller)
) -> Response:
    """FunASR's hotword file (`word weight` lines) or CSV (`word,weight`)."""
    hotword_list = await _call(request, list_service(request).get, list_id, owner)
    text = to_csv(hotword_list.words) if format == "csv" else to_text(hotword_list.words)
    media = "text/csv" if format == "csv" else "text/plain"
    filename = f"hotwords-{hotword_list.id}.{format}"
    return Response(
        text.encode("utf-8"),
        media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.put("/v1/hotword-lists/{list_id}", openapi_extra=LIST_BODY, responses=HOTWORD_LIST_RESPONSES)
async def replace_list(request: Request, list_id: str, owner: Owner = Depends(caller)) -> JSONResponse:
    """A new name, new words, or both (what the body leaves out is kept)."""
    service = list_service(request)
    await _call(request, service.get, list_id, owner)  # 404 before reading a body for a list one cannot see
    body = await _read_body(request, service)
    changed = await _call(request, service.update, list_id, owner, name=body.get("name"), words=body.get("words"))
    return JSONResponse(list_view(changed))


@router.delete("/v1/hotword-lists/{list_id}", status_code=204, responses=HOTWORD_LIST_RESPONSES)
async def delete_list(request: Request, list_id: str, owner: Owner = Depends(caller)) -> Response:
    await _call(request, list_service(request).delete, list_id, owner)
    return Response(status_code=204)


async def request_hotwords(request: Request, refs: list[str], hotwords: str | None) -> str | None:
    """The hotwords a transcription or job request ends up with (`hotword_list` + `hotwords`); see
    `HotwordListService.request_hotwords`."""
    service = request.app.state.api.hotword_lists
    if service is None:
        return hotwords
    owner = request.app.state.results.owner_of(request.headers)
    return await _call(request, service.request_hotwords, split_refs(refs), hotwords, owner)
