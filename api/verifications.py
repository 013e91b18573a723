"""Verification (验证) over HTTP: `POST /v1/verifications`, `GET /v1/verifications/{id}`,
`GET /v1/verifications/{id}/report?format=json|csv|hotwords.csv|html`.

A verification is a durable job (`jobs.verification`): the recordings are transcribed without and with the named
hotword lists (setting A and B; `itn_a`/`itn_b` compare ITN off and on instead or as well), and the report is
scored from the stored texts. Thin: read the form and the manifest, call the job service, format. Owned like jobs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hotword_lists import split_refs
from jobs.service import Upload
from jobs.sources import allowed_dirs
from jobs.verification import plan
from results import Owner
from verification import ManifestError, parse_kaldi, parse_table

from .errors import APIError, bad_request, language
from .hotword_lists import request_hotwords
from .jobs import job_service, job_view, room_for_a_job
from .openapi import ERROR_RESPONSES, JOB_RESPONSES, NOT_FOUND
from .routing import ServiceRoute, caller, require_key
from .uploads import check_content_length, too_large

router = APIRouter(route_class=ServiceRoute, dependencies=[Depends(require_key)])
REPORT_FORMATS = {
    "json": "application/json",
    "csv": "text/csv",
    "hotwords.csv": "text/csv",
    "html": "text/html",
}
PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


def _flag(form: Any, name: str, default: bool) -> bool:
    value = form.get(name)
    if value is None or str(value).strip() == "":
        return default
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise bad_request(f"{name} must be true or false, not '{value}'.", param=name)


async def _manifest_text(form: Any, name: str) -> bytes | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        return await value.read(8 * 2**20)
    return str(value).encode() if value else None


@router.post("/v1/verifications", status_code=202, dependencies=[Depends(room_for_a_job)], responses=JOB_RESPONSES)
async def create_verification(request: Request, owner: Owner = Depends(caller)) -> JSONResponse:
    """Recordings (`file`, repeated) with a manifest naming them (`manifest`: TSV/CSV `path<TAB>text`, or Kaldi's
    `wav_scp` + `text`), the lists under test (`hotword_list`, and/or `hotwords`), optional `itn_a`, `itn_b`."""
    settings = request.app.state.api.settings
    lang = language(request)
    check_content_length(
        request,
        int(settings.job_max_files * settings.job_max_upload_mb * 2**20) + 9 * 2**20,
        lambda _: too_large(f"The upload is larger than {settings.job_max_files} files (JOB_MAX_FILES)."),
    )
    folder = Path(tempfile.mkdtemp(prefix="verification-", dir=settings.resolved_temp_dir()))
    try:
        async with request.form(max_files=settings.job_max_files + 3, max_fields=50) as form:
            files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
            for upload in files:  # the manifest names each upload by its file name
                name = Path((upload.filename or "").replace("\\", "/")).name
                if name in ("", ".", "..") or "\0" in name:
                    raise bad_request("Each uploaded recording needs a file name the manifest can name.", param="file")
                with open(folder / name, "wb") as out:
                    await run_in_threadpool(shutil.copyfileobj, upload.file, out)
            manifest = await _manifest_text(form, "manifest")
            wav_scp = await _manifest_text(form, "wav_scp")
            text = await _manifest_text(form, "text")
            refs = [str(v) for v in form.getlist("hotword_list")]
            own = form.get("hotwords")
            itn = _flag(form, "itn", False)
            itn_a, itn_b = _flag(form, "itn_a", itn), _flag(form, "itn_b", itn)
        # Uploads, or else server files under JOB_ALLOWED_DIRS (what an admin lets jobs read).
        base, allowed = (folder, [folder]) if files else (folder, allowed_dirs(settings.job_allowed_dirs))
        try:
            if wav_scp is not None and text is not None:
                items = parse_kaldi(wav_scp, text, base_dir=base, allowed_dirs=allowed)
            elif manifest is not None:
                items = parse_table(manifest, base_dir=base, allowed_dirs=allowed)
            else:
                raise bad_request(
                    "Send a manifest: 'manifest' (TSV or CSV: path, then the reference text) or Kaldi's 'wav_scp' "
                    "and 'text'.",
                    param="manifest",
                    code="missing_manifest",
                )
        except ManifestError as exc:
            raise bad_request(exc.message(lang), param="manifest", code="bad_manifest") from None
        if not split_refs(refs) and not own:
            raise bad_request(
                "Name the hotword lists to verify ('hotword_list') or give 'hotwords'.",
                param="hotword_list",
                code="missing_hotwords",
            )
        words_b = await request_hotwords(request, refs, str(own) if own else None) or ""
        words = request.app.state.api.engine.resolve_hotwords(words_b)
        spec, sources = plan(items, words, words_b, itn_a=itn_a, itn_b=itn_b)
        uploads = [Upload(name, path) for name, path in sources]
        job = await run_in_threadpool(job_service(request).submit, owner, uploads, verification=spec)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    view = job_view(job)
    view["object"] = "verification"
    return JSONResponse(view, status_code=202, headers={"Location": f"/v1/verifications/{job.id}"})


async def _own_verification(request: Request, job_id: str, owner: Owner) -> tuple[Any, Any]:
    service = job_service(request)
    job = await run_in_threadpool(service.get, job_id, owner)
    report = None if job is None else await run_in_threadpool(service.verification_report, job)
    if job is None or report is None:  # no such job, not the caller's, or a job of another kind
        raise APIError(404, f"No verification '{job_id}'.", code="job_not_found", param="job_id", outcome="not_found")
    return job, report


@router.get("/v1/verifications/{job_id}", responses={**ERROR_RESPONSES, **NOT_FOUND})
async def get_verification(request: Request, job_id: str, owner: Owner = Depends(caller)) -> JSONResponse:
    """The job's progress, and the report's overall figures so far."""
    job, report = await _own_verification(request, job_id, owner)
    view = job_view(job)
    view["object"] = "verification"
    summary = report.to_dict(language(request))
    view["report"] = {key: value for key, value in summary.items() if key != "files"}
    return JSONResponse(view, headers=PRIVATE)


@router.get("/v1/verifications/{job_id}/report", responses={**ERROR_RESPONSES, **NOT_FOUND})
async def verification_report(
    request: Request,
    job_id: str,
    format: str = Query("json", pattern=r"^(json|csv|hotwords\.csv|html)$"),
    owner: Owner = Depends(caller),
) -> Response:
    """The report: JSON (everything), CSV per file, CSV per hotword, or a readable HTML page with a chart."""
    _, report = await _own_verification(request, job_id, owner)
    lang = language(request)
    body = {
        "json": lambda: report.to_json(lang),
        "csv": lambda: report.files_csv(lang),
        "hotwords.csv": report.hotwords_csv,
        "html": lambda: report.to_html(lang),
    }[format]()
    headers = dict(PRIVATE)
    if format != "json":
        part = {"csv": "files.csv", "hotwords.csv": "hotwords.csv", "html": "html"}[format]
        headers["Content-Disposition"] = f'attachment; filename="verification-{job_id}.{part}"'
    return Response(body.encode("utf-8"), media_type=f"{REPORT_FORMATS[format]}; charset=utf-8", headers=headers)
