"""Durable jobs over HTTP: `POST /v1/jobs`, `GET /v1/jobs`, `GET|DELETE /v1/jobs/{id}`, `GET /v1/jobs/{id}/result`.

Thin: parse, call `jobs.JobService`, format. Results are formatted by the same code as
`/v1/audio/transcriptions` (`routes.render`), so a job's SRT is byte for byte the direct call's. With
`API_KEYS` each key sees only its own jobs: another key's job answers 404, as a job that does not exist.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from jobs import Job, JobService
from jobs.records import ACTIVE, FINISHED
from jobs.service import Upload
from jobs.sources import submit_named
from results import Owner

from .errors import APIError, bad_request, language, not_ready, sentence, unavailable
from .hotword_lists import request_hotwords
from .metrics import PREFIX, Metrics
from .openapi import ERROR_RESPONSES, JOB_BODY, JOB_RESPONSES, NOT_FOUND, error_response
from .routes import MODEL_IDS as _MODEL_IDS
from .routes import render, services
from .routing import ServiceRoute, caller, require_key
from .uploads import RESPONSE_FORMATS, JobUpload, job_upload

logger = logging.getLogger(__name__)

router = APIRouter(route_class=ServiceRoute, dependencies=[Depends(require_key)])
# Transcripts are private: no shared cache keeps them, no browser sniffs them (as api/results.py).
PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
EXTENSIONS = {"json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt"}
READ_RESPONSES = {**ERROR_RESPONSES, **NOT_FOUND}


def job_service(request: Request) -> JobService:
    service = getattr(request.app.state, "jobs", None)
    if service is None:
        raise unavailable(
            sentence("jobs_disabled", language(request)), code="jobs_disabled", retry_after_s=60, outcome="not_ready"
        )
    return service


def job_view(job: Job) -> dict[str, Any]:
    """A job as the API shows it."""
    total = job.total_s
    done = job.done_s
    eta = job.eta_s()
    files = [
        {
            "index": i,
            "name": f.name,
            "status": f.state,
            "duration": f.duration_s,
            "audio_seconds_done": round(f.done_s, 3),
            "error": f.error,
            "attempts": f.attempts,
        }
        for i, f in enumerate(job.files)
    ]
    view: dict[str, Any] = {
        "id": job.id,
        "object": "transcription.job",
        "kind": job.options.get("kind", "transcription"),
        "status": job.state,
        "created_at": round(job.created_at, 3),
        "started_at": job.started_at and round(job.started_at, 3),
        "finished_at": job.finished_at and round(job.finished_at, 3),
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "response_format": job.options.get("response_format", "json"),
        "model": _MODEL_IDS.get(job.options.get("model") or "paraformer", job.options.get("model")),
        "progress": {
            "audio_seconds_done": round(done, 3),
            "audio_seconds_total": None if total is None else round(total, 3),
            "fraction": round(min(done / total, 1.0), 4) if total else None,
            "eta_seconds": None if eta is None else round(eta, 1),
        },
        "file_counts": job.counts(),
        "files": files,
        "runs": job.runs,
        "callback": job.callback,
        "notice": job.notice,  # why a queued job waits: "storage_full" (it is tried again, not failed)
    }
    if job.finished and any(f.state == "done" for f in job.files):
        view["result_url"] = f"/v1/jobs/{job.id}/result"
    return view


async def room_for_a_job(request: Request, owner: Owner = Depends(caller)) -> None:
    """Before the files are received: a model that can load, and room in the queue for this owner."""
    api = services(request)
    if api.engine.state == "error":  # a job may wait for a loading model, never for one that failed
        raise not_ready(api.engine.state, language(request))
    await run_in_threadpool(job_service(request).check_room, owner)


def _not_found(job_id: str) -> APIError:
    return APIError(404, f"No job '{job_id}'.", code="job_not_found", param="job_id", outcome="not_found")


async def _own_job(request: Request, job_id: str, owner: Owner) -> Job:
    job = await run_in_threadpool(job_service(request).get, job_id, owner)
    if job is None:
        raise _not_found(job_id)
    return job


# ------------------------------------------------------------------------------------------ routes
@router.post(
    "/v1/jobs", status_code=202, dependencies=[Depends(room_for_a_job)], openapi_extra=JOB_BODY, responses=JOB_RESPONSES
)
async def create_job(
    request: Request, owner: Owner = Depends(caller), upload: JobUpload = Depends(job_upload)
) -> JSONResponse:
    form = upload.form
    if form.model != "sensevoice":  # SenseVoice takes none: not even the default list (api.uploads.check_model)
        form.hotwords = await request_hotwords(request, list(form.hotword_lists), form.hotwords)
    uploads = [Upload(f.filename or "", f.file) for f in upload.files]
    job = await run_in_threadpool(
        submit_named,
        job_service(request),
        owner,
        uploads,
        paths=upload.paths,
        urls=upload.urls,
        hotwords=form.hotwords,
        response_format=form.response_format,
        callback_url=upload.callback_url,
        diarize=form.diarize,
        num_speakers=form.num_speakers,
        granularities=sorted(form.granularities),
        itn=form.itn,
        model=form.model,
        language=form.language,
        tags=form.tags,
    )
    return JSONResponse(job_view(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/v1/jobs", responses=ERROR_RESPONSES)
async def list_jobs(
    request: Request, limit: int = Query(20, ge=1, le=100), owner: Owner = Depends(caller)
) -> JSONResponse:
    """The caller's own jobs, newest first (an admin key's too: see docs/security.md)."""
    jobs = await run_in_threadpool(job_service(request).list, owner, limit)
    return JSONResponse({"object": "list", "data": [job_view(j) for j in jobs]})


@router.get("/v1/jobs/{job_id}", responses=READ_RESPONSES)
async def get_job(request: Request, job_id: str, owner: Owner = Depends(caller)) -> JSONResponse:
    return JSONResponse(job_view(await _own_job(request, job_id, owner)))


@router.delete("/v1/jobs/{job_id}", responses=READ_RESPONSES)
async def cancel_job(request: Request, job_id: str, owner: Owner = Depends(caller)) -> JSONResponse:
    """Cancel a queued or running job (a running file stops at its next segment); delete a finished one."""
    service = job_service(request)
    job = await _own_job(request, job_id, owner)
    if job.finished:
        await run_in_threadpool(service.delete, job_id, owner)
        return JSONResponse({"id": job_id, "object": "transcription.job", "deleted": True})
    job = await run_in_threadpool(service.cancel, job_id, owner)
    if job is None:
        raise _not_found(job_id)
    return JSONResponse(job_view(job))


@router.get(
    "/v1/jobs/{job_id}/result",
    responses={
        200: {
            "description": "One file's result in `response_format`; a zip of every file's for several.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
                "text/vtt": {"schema": {"type": "string"}},
                "application/zip": {"schema": {"type": "string"}},
            },
        },
        **READ_RESPONSES,
        409: error_response("The job has not finished, or the file has no result."),
    },
)
async def job_result(
    request: Request,
    job_id: str,
    response_format: str | None = None,
    file: int | None = Query(None, ge=0),
    owner: Owner = Depends(caller),
) -> Response:
    """One file's result in `response_format` (the job's own by default); a zip of every file's for several."""
    service = job_service(request)
    job = await _own_job(request, job_id, owner)
    report = await run_in_threadpool(service.verification_report, job)
    if report is not None:  # a verification's result is its report (also at /v1/verifications/{id}/report)
        return JSONResponse(report.to_dict(language(request)), headers=PRIVATE)
    fmt = response_format or job.options.get("response_format", "json")
    if fmt not in RESPONSE_FORMATS:
        raise bad_request(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not '{fmt}'.", param="response_format"
        )
    if not job.finished:
        done = job.counts()["done"]
        raise APIError(
            409,
            f"The job is {job.state} ({done} of {len(job.files)} files done); its result is ready when it finishes.",
            code="job_not_finished",
            outcome="conflict",
        )
    if file is None and len(job.files) > 1:
        return await run_in_threadpool(_zip, service, job, fmt)
    index = file or 0
    if index >= len(job.files):
        raise bad_request(f"file must be between 0 and {len(job.files) - 1}.", param="file")
    result = await run_in_threadpool(service.result, job, index)
    if result is None:
        record = job.files[index]
        reason = record.error or job.error or f"the file was {record.state}"
        raise APIError(
            409, f"No result for file {index} ({record.name}): {reason}", code="no_result", outcome="conflict"
        )
    response = render(
        result, fmt, frozenset(job.options.get("granularities") or []), tags=bool(job.options.get("tags"))
    )
    response.headers.update(PRIVATE)
    return response


def _zip(service: JobService, job: Job, fmt: str) -> Response:
    """Every finished file's result as <n>_<name>.<ext>, plus job.json (the job, failures and reasons included)."""
    import json

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, record in enumerate(job.files):
            result = service.result(job, index)
            if result is not None:
                body = render(
                    result, fmt, frozenset(job.options.get("granularities") or []), tags=bool(job.options.get("tags"))
                ).body
                archive.writestr(f"{index + 1:03d}_{_entry_stem(record.name)}.{EXTENSIONS[fmt]}", body)
        archive.writestr("job.json", json.dumps(job_view(job), ensure_ascii=False, indent=1))
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"', **PRIVATE},
    )


def _entry_stem(name: str) -> str:
    # A client's name is never a path inside the zip either: word characters (Chinese included), dot and dash.
    stem = re.sub(r"[^\w.\-]+", "_", name.rsplit(".", 1)[0] if "." in name else name).strip("._")
    return stem[:80] or "audio"


# ------------------------------------------------------------------------------------------ metrics
class JobsCollector(Collector):
    """Jobs by state, read from the store at scrape time (the whole service's, every replica's)."""

    def __init__(self, service: JobService):
        self.service = service

    def collect(self) -> list[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_jobs", "Jobs by state (whole service, until removed by cleanup).", labels=["state"]
        )
        try:
            counts = self.service.store.count_by_state()
        except Exception:  # a store outage must not break /metrics
            logger.warning("could not count jobs for /metrics", exc_info=True)
            return []
        for state in (*ACTIVE, *FINISHED):
            family.add_metric([state], counts.get(state, 0))
        return [family]


def install_job_metrics(metrics: Metrics, service: JobService) -> None:
    """Jobs by state, queue wait and job duration (these two as seen by this process's workers)."""
    registry = metrics.registry
    registry.register(JobsCollector(service))
    buckets = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200)
    wait = Histogram(
        f"{PREFIX}_job_queue_wait_seconds",
        "From submission to a worker's first claim.",
        registry=registry,
        buckets=buckets,
    )
    duration = Histogram(
        f"{PREFIX}_job_duration_seconds",
        "From first claim to the end (restarts included), by final state.",
        ["state"],
        registry=registry,
        buckets=buckets,
    )

    def observe(event: str, job: Job) -> None:
        if event == "started" and job.started_at:
            wait.observe(max(job.started_at - job.created_at, 0.0))
        elif event == "finished" and job.started_at and job.finished_at:
            duration.labels(job.state).observe(max(job.finished_at - job.started_at, 0.0))

    service.add_observer(observe)
