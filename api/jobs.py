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
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from asr.errors import ASRError
from asr.settings import Settings
from jobs import Job, JobError, JobService, QueueFull
from jobs.records import ACTIVE, FINISHED
from jobs.service import Upload
from jobs.sources import allowed_dirs, download, server_file, url_name
from jobs.storage import StorageFullError, is_storage_full
from results import Owner, ResultAccess

from .errors import APIError, bad_request, from_asr_error, internal_error, language, too_large, unavailable
from .metrics import PREFIX, Metrics
from .routes import MULTIPART_SLACK_BYTES, RESPONSE_FORMATS, parse_form, render, services

logger = logging.getLogger(__name__)

router = APIRouter()
# Transcripts are private: no shared cache keeps them, no browser sniffs them (as api/results.py).
PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
EXTENSIONS = {"json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt"}
FILE_FIELDS = ("file", "file[]", "files")


def job_service(request: Request) -> JobService:
    service = getattr(request.app.state, "jobs", None)
    if service is None:
        raise unavailable("Jobs are not available on this server.", code="jobs_disabled", retry_after_s=60,
                          outcome="not_ready")
    return service


def job_view(job: Job) -> dict[str, Any]:
    """A job as the API shows it."""
    total = job.total_s
    done = job.done_s
    eta = job.eta_s()
    files = [{"index": i, "name": f.name, "status": f.state, "duration": f.duration_s,
              "audio_seconds_done": round(f.done_s, 3), "error": f.error, "attempts": f.attempts}
             for i, f in enumerate(job.files)]
    view: dict[str, Any] = {
        "id": job.id,
        "object": "transcription.job",
        "status": job.state,
        "created_at": round(job.created_at, 3),
        "started_at": job.started_at and round(job.started_at, 3),
        "finished_at": job.finished_at and round(job.finished_at, 3),
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "response_format": job.options.get("response_format", "json"),
        "progress": {"audio_seconds_done": round(done, 3), "audio_seconds_total": None if total is None
                     else round(total, 3), "fraction": round(min(done / total, 1.0), 4) if total else None,
                     "eta_seconds": None if eta is None else round(eta, 1)},
        "file_counts": job.counts(),
        "files": files,
        "runs": job.runs,
        "callback": job.callback,
        "notice": job.notice,  # why a queued job waits: "storage_full" (it is tried again, not failed)
    }
    if job.finished and any(f.state == "done" for f in job.files):
        view["result_url"] = f"/v1/jobs/{job.id}/result"
    return view


def caller(request: Request) -> Owner:
    """Who asks: an API key (with API_KEYS) or an admin key, else the browser's owner cookie (a client without
    keys keeps the cookie it is given, e.g. `curl -c jar -b jar`). Checks the key first (401)."""
    services(request).keys.check(request.headers.get("authorization"))
    access: ResultAccess = request.app.state.results
    owner = access.owner_of(request.headers)
    if owner is None:  # only without results.ResultsMiddleware, which gives every request an owner cookie
        raise APIError(401, "Send an API key or keep the owner cookie this service sets.", code="no_owner",
                       outcome="unauthorized")
    return owner


def _storage_full(request: Request) -> APIError:
    """507 Insufficient Storage, in the caller's language: nothing was kept, the client may try again later."""
    text = StorageFullError().message(language(request))
    return APIError(507, text[:1].upper() + text[1:], type="server_error", code="storage_full", outcome="error",
                    headers={"Retry-After": "60"})


def _not_found(job_id: str) -> APIError:
    return APIError(404, f"No job '{job_id}'.", code="job_not_found", param="job_id", outcome="not_found")


# ------------------------------------------------------------------------------------------ routes
@router.post("/v1/jobs")
async def create_job(request: Request) -> JSONResponse:
    api = services(request)
    with api.metrics.track("/v1/jobs"):
        owner = caller(request)
        service = job_service(request)
        s = api.settings
        limit = int(s.job_max_files * s.job_max_upload_mb * 2**20) + MULTIPART_SLACK_BYTES
        try:
            if int(request.headers.get("content-length", "0")) > limit:
                raise too_large(f"The upload is larger than {s.job_max_files} files of {s.job_max_upload_mb:.0f} MB "
                                f"(JOB_MAX_FILES x JOB_MAX_UPLOAD_MB).")
        except ValueError:
            pass
        if api.engine.state == "error":
            raise unavailable(f"The model is not available: {api.engine.load_error}", code="model_not_ready",
                              retry_after_s=60, outcome="not_ready")
        try:
            await run_in_threadpool(service.check_room, owner)  # before receiving the files
            async with request.form(max_files=api.settings.job_max_files + 1, max_fields=50) as form:
                params = parse_form(form, require_file=False)
                if params.stream:
                    raise bad_request("A job is not streamed: follow its progress at GET /v1/jobs/{id}, or use "
                                      "stream=true on /v1/audio/transcriptions.", param="stream",
                                      code="unsupported_value")
                uploads = [Upload(f.filename or "", f.file) for field in FILE_FIELDS for f in form.getlist(field)
                           if isinstance(f, UploadFile)]
                paths = [str(v) for v in form.getlist("path") if str(v).strip()]
                urls = [str(v).strip() for v in form.getlist("url") if str(v).strip()]
                if not (uploads or paths or urls):
                    raise bad_request("Send the audio as multipart/form-data uploads in the field 'file' (repeat "
                                      "it for several files).", param="file", code="missing_file")
                callback_url = str(form.get("callback_url") or "").strip() or None
                downloads: list[Path] = []
                try:
                    uploads += await run_in_threadpool(_named_files, s, paths, urls, downloads)
                    job = await run_in_threadpool(service.submit, owner, uploads, hotwords=params.hotwords,
                                                  response_format=params.response_format, callback_url=callback_url,
                                                  diarize=params.diarize, num_speakers=params.num_speakers,
                                                  granularities=sorted(params.granularities))
                finally:
                    for downloaded in downloads:  # copied into JOBS_DIR by submit, or refused
                        downloaded.unlink(missing_ok=True)
        except QueueFull as exc:
            if exc.status == 429:
                raise APIError(429, str(exc), type="rate_limit_error", code="too_many_jobs", outcome="busy",
                               headers={"Retry-After": "30"}) from None
            raise unavailable(str(exc), code="server_busy", retry_after_s=30, outcome="busy") from None
        except JobError as exc:
            param = {"callback_not_allowed": "callback_url", "path_not_allowed": "path", "path_not_found": "path",
                     "url_not_allowed": "url", "url_failed": "url"}.get(exc.code, "file")
            raise bad_request(str(exc), param=param, code=exc.code) from None
        except StorageFullError:
            raise _storage_full(request) from None
        except ASRError as exc:
            raise from_asr_error(exc) from None
        except APIError:
            raise
        except HTTPException as exc:  # starlette's multipart parser: malformed body, too many files
            raise bad_request(f"Could not read the multipart form: {exc.detail}") from None
        except Exception as exc:
            if is_storage_full(exc):  # the multipart parser's temp files: a full temp dir
                logger.warning("job submission refused: storage full (%s: %s)", type(exc).__name__, exc)
                raise _storage_full(request) from None
            logger.exception("job submission failed")
            raise internal_error() from None
        return JSONResponse(job_view(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/v1/jobs")
async def list_jobs(request: Request, limit: int = 20) -> JSONResponse:
    api = services(request)
    with api.metrics.track("/v1/jobs"):
        owner = caller(request)
        jobs = await run_in_threadpool(job_service(request).list, owner, min(max(limit, 1), 100))
        return JSONResponse({"object": "list", "data": [job_view(j) for j in jobs]})


@router.get("/v1/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> JSONResponse:
    api = services(request)
    with api.metrics.track("/v1/jobs/{id}"):
        owner = caller(request)
        job = await run_in_threadpool(job_service(request).get, job_id, owner)
        if job is None:
            raise _not_found(job_id)
        return JSONResponse(job_view(job))


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(request: Request, job_id: str) -> JSONResponse:
    """Cancel a queued or running job (a running file stops at its next segment); delete a finished one."""
    api = services(request)
    with api.metrics.track("/v1/jobs/{id}"):
        owner = caller(request)
        service = job_service(request)
        job = await run_in_threadpool(service.get, job_id, owner)
        if job is None:
            raise _not_found(job_id)
        if job.finished:
            await run_in_threadpool(service.delete, job_id, owner)
            return JSONResponse({"id": job_id, "object": "transcription.job", "deleted": True})
        job = await run_in_threadpool(service.cancel, job_id, owner)
        if job is None:
            raise _not_found(job_id)
        return JSONResponse(job_view(job))


@router.get("/v1/jobs/{job_id}/result")
async def job_result(request: Request, job_id: str, response_format: str | None = None,
                     file: int | None = None) -> Response:
    """One file's result in `response_format` (the job's own by default); a zip of every file's for several."""
    api = services(request)
    with api.metrics.track("/v1/jobs/{id}/result"):
        owner = caller(request)
        service = job_service(request)
        job = await run_in_threadpool(service.get, job_id, owner)
        if job is None:
            raise _not_found(job_id)
        fmt = response_format or job.options.get("response_format", "json")
        if fmt not in RESPONSE_FORMATS:
            raise bad_request(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not '{fmt}'.",
                              param="response_format")
        if not job.finished:
            done = job.counts()["done"]
            raise APIError(409, f"The job is {job.state} ({done} of {len(job.files)} files done); its result is "
                           f"ready when it finishes.", code="job_not_finished", outcome="conflict")
        if file is not None or len(job.files) == 1:
            index = 0 if file is None else file
            if not 0 <= index < len(job.files):
                raise bad_request(f"file must be between 0 and {len(job.files) - 1}.", param="file")
            result = await run_in_threadpool(service.result, job, index)
            if result is None:
                record = job.files[index]
                reason = record.error or job.error or f"the file was {record.state}"
                raise APIError(409, f"No result for file {index} ({record.name}): {reason}", code="no_result",
                               outcome="conflict")
            response = render(result, fmt, frozenset(job.options.get("granularities") or []))
            response.headers.update(PRIVATE)
            return response
        return await run_in_threadpool(_zip, service, job, fmt)


def _named_files(settings: Settings, paths: list[str], urls: list[str], downloads: list[Path]) -> list[Upload]:
    """Server files (JOB_ALLOWED_DIRS) and URLs (JOB_URL_HOSTS) a job names; downloads are listed in `downloads`."""
    named = [Upload(Path(p).name, server_file(p, allowed_dirs(settings.job_allowed_dirs))) for p in paths]
    for url in urls:
        downloads.append(download(url, settings.job_url_hosts, int(settings.job_max_upload_mb * 2**20),
                                  settings.jobs_dir / "downloads"))
        named.append(Upload(url_name(url), downloads[-1]))
    return named


def _zip(service: JobService, job: Job, fmt: str) -> Response:
    """Every finished file's result as <n>_<name>.<ext>, plus job.json (the job, failures and reasons included)."""
    import json

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, record in enumerate(job.files):
            result = service.result(job, index)
            if result is not None:
                body = render(result, fmt, frozenset(job.options.get("granularities") or [])).body
                archive.writestr(f"{index + 1:03d}_{_entry_stem(record.name)}.{EXTENSIONS[fmt]}", body)
        archive.writestr("job.json", json.dumps(job_view(job), ensure_ascii=False, indent=1))
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"', **PRIVATE})


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
        family = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs by state (whole service, until removed by cleanup).",
                                   labels=["state"])
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
    wait = Histogram(f"{PREFIX}_job_queue_wait_seconds", "From submission to a worker's first claim.",
                     registry=registry, buckets=buckets)
    duration = Histogram(f"{PREFIX}_job_duration_seconds", "From first claim to the end (restarts included), "
                         "by final state.", ["state"], registry=registry, buckets=buckets)

    def observe(event: str, job: Job) -> None:
        if event == "started" and job.started_at:
            wait.observe(max(job.started_at - job.created_at, 0.0))
        elif event == "finished" and job.started_at and job.finished_at:
            duration.labels(job.state).observe(max(job.finished_at - job.started_at, 0.0))

    service.add_observer(observe)
