"""📋 Jobs: the batch tab's files as a durable job, and this browser's recent jobs with progress and downloads.

A job runs on the server whatever the page does: reload it, close it, come back tomorrow (within
JOB_RETENTION_H). It belongs to the browser's owner (the `paraformer_owner` cookie, `results.access`), the
same owner as its results and uploads, so it is listed in the browser that submitted it and in no other;
its downloads are an owned result folder in OUTPUT_DIR, which only that owner can fetch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from asr.errors import ASRError
from config.settings import Settings
from jobs import Job, JobError, JobService, QueueFull
from jobs.service import Upload
from results import Owner, Result, ResultAccess

from .batch import _described, _write_csv, _zip
from .common import batch_size_s, model_hotwords, request_owner, safe_stem, speaker_options, write_result_files
from .i18n import lang_of, t, tr

logger = logging.getLogger(__name__)

REFRESH_S = 2.0
LIST_LIMIT = 20


@dataclass
class BatchJobInputs:
    """The batch tab's controls a job is submitted from."""

    files: gr.File
    hotwords: gr.Textbox
    batch_size: gr.Slider
    button: gr.Button
    status: gr.Markdown
    speakers: gr.Checkbox
    num_speakers: gr.Number
    itn: gr.Checkbox
    model: gr.Radio
    tags: gr.Checkbox


def job_table_headers(lang: str) -> list[str]:
    return [tr(k, lang) for k in ("col_job", "col_submitted", "col_job_files", "col_status", "col_progress", "col_eta")]


def file_table_headers(lang: str) -> list[str]:
    return [tr(k, lang) for k in ("col_file", "col_duration", "col_status", "col_text")]


def _state(job_or_file_state: str, lang: str) -> str:
    return tr(f"job_{job_or_file_state}", lang)


def _progress(job: Job) -> str:
    total = job.total_s
    if not total:
        return f"{job.done_s:.0f} s"
    return f"{min(job.done_s / total, 1.0) * 100:.0f}% ({job.done_s:.0f}/{total:.0f} s)"


def job_rows(jobs: list[Job], lang: str) -> list[list[Any]]:
    rows = []
    for job in jobs:
        counts = job.counts()
        eta = job.eta_s()
        rows.append(
            [
                job.id[4:16],
                time.strftime("%m-%d %H:%M", time.localtime(job.created_at)),
                f"{counts['done']}/{len(job.files)}" + (f" (❌{counts['failed']})" if counts["failed"] else ""),
                _state(job.state, lang),
                _progress(job),
                "" if eta is None else f"{eta:.0f} s",
            ]
        )
    return rows


def job_choices(jobs: list[Job]) -> list[tuple[str, str]]:
    return [
        (f"{job.id[4:16]} · {time.strftime('%m-%d %H:%M', time.localtime(job.created_at))} · {len(job.files)}", job.id)
        for job in jobs
    ]


def detail(
    service: JobService, access: ResultAccess, owner: Owner, job: Job, lang: str
) -> tuple[str, dict, list[str] | None]:
    """(summary Markdown, per-file table, downloads once finished) for one job."""
    rows = []
    for index, f in enumerate(job.files):
        text = ""
        if f.state == "done":
            result = service.result(job, index)
            text = result.text if result else ""
        status = _state(f.state, lang) + (f": {f.error}" if f.error else "")
        rows.append([f.name, "" if f.duration_s is None else round(f.duration_s, 2), status, text])
    counts = job.counts()
    summary = tr(
        "job_summary",
        lang,
        id=job.id,
        state=_state(job.state, lang),
        done=counts["done"],
        total=len(job.files),
        failed=counts["failed"],
        progress=_progress(job),
    )
    if job.error:
        summary += f"  \n❌ {job.error}"
    files = build_downloads(service, access, owner, job) if job.finished else None
    return summary, {"headers": file_table_headers(lang), "data": rows}, files


_download_folders: dict[str, Result] = {}


def _download_folder(access: ResultAccess, owner: Owner, job: Job) -> Result:
    """The job's owned result folder (made once; found again after a restart by its record)."""
    known = _download_folders.get(job.id)
    if known is None:
        known = next((r for r in access.store.list(owner, kind="job", limit=200) if r.info.get("job") == job.id), None)
    if known is None:
        known = access.store.create("job", Owner(job.owner), job=job.id, total=len(job.files))
    _download_folders[job.id] = known
    return known


def build_downloads(service: JobService, access: ResultAccess, owner: Owner, job: Job) -> list[str] | None:
    """TXT/SRT/VTT per finished file, a CSV and a zip, in an owned result folder (written once, then reused)."""
    if not any(f.state == "done" for f in job.files):
        return None
    result = _download_folder(access, owner, job)
    folder = result.folder
    archive = folder / f"{job.id}.zip"
    csv_path = folder / "results.csv"
    if not archive.exists():
        records: list[dict[str, object]] = []
        for index, f in enumerate(job.files):
            transcription = service.result(job, index)
            if transcription is not None:
                stem = f"{index + 1:03d}_{safe_stem(f.name)}"
                write_result_files(transcription, folder, stem, tags=bool(job.options.get("tags")))
            records.append(
                {
                    "file": f.name,
                    "duration_s": "" if f.duration_s is None else round(f.duration_s, 3),
                    "confidence": round(transcription.confidence, 4) if transcription else "",
                    "status": f.state,
                    "error": f.error or "",
                    "speakers": transcription.speakers or "" if transcription else "",
                    "text": transcription.text if transcription else "",
                    "processing_s": f.processing_s or "",
                    "model": job.options.get("model") or "paraformer",
                    **({k: v for k, v in _described(transcription).items() if k != "model"} if transcription else {}),
                }
            )
        _write_csv(csv_path, records)
        tmp = folder / "archive.zip.tmp"
        _zip(folder, tmp)
        tmp.replace(archive)
        access.store.update_info(result, finished=True, ok=job.counts()["done"], failed=job.counts()["failed"])
    return [str(csv_path), str(archive)]


def attach_batch_jobs(
    service: JobService,
    settings: Settings,
    access: ResultAccess,
    inputs: BatchJobInputs,
    tabs: gr.Tabs,
    blocks: gr.Blocks,
) -> None:
    """The 📋 Jobs tab, and the batch tab's "run as a background job" button wired to it."""
    with gr.Tab(t("tab_jobs"), id="jobs") as tab:
        # Ticks only while this browser has a job queued or running (refresh turns it off and on).
        timer = gr.Timer(REFRESH_S, active=False)
        gr.Markdown(t("jobs_intro"))
        jobs_table = gr.Dataframe(
            headers=job_table_headers("zh"), label=t("jobs_table"), interactive=False, wrap=True, elem_id="jobs-table"
        )
        with gr.Row():
            chosen = gr.Dropdown(label=t("job_select"), choices=[], elem_id="jobs-select", scale=3)
            cancel = gr.Button(t("cancel_job"), variant="stop", elem_id="jobs-cancel", scale=1)
        summary = gr.Markdown(elem_id="jobs-summary")
        files_table = gr.Dataframe(
            headers=file_table_headers("zh"),
            label=t("batch_table"),
            interactive=False,
            wrap=True,
            max_height=400,
            elem_id="jobs-files",
            column_widths=["22%", "10%", "23%", "45%"],
        )
        downloads = gr.File(
            label=t("batch_downloads"), file_count="multiple", interactive=False, elem_id="jobs-downloads"
        )

    def submit(
        paths: list[str] | None,
        hotwords: str | None,
        size: float | None,
        speakers: bool | None,
        num_speakers: float | None,
        itn: bool | None,
        model: str | None,
        tags: bool | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        lang = lang_of(request)
        paths = [p for p in (paths or []) if p]
        if not paths:
            raise gr.Error(tr("no_files", lang), print_exception=False)
        owner = request_owner(access, request, lang)
        if not all(access.may_use_upload(p, owner) for p in paths):  # someone else's upload paths
            raise gr.Error(tr("no_files", lang), print_exception=False)
        diarize, count = speaker_options(speakers, num_speakers)
        try:
            job = service.submit(
                owner,
                [Upload(Path(p).name, Path(p)) for p in paths],
                hotwords=model_hotwords(model, hotwords),
                batch_size_s=batch_size_s(settings, size),
                source="ui",
                diarize=diarize,
                num_speakers=count,
                itn=itn,
                model=model,
                tags=bool(tags),
            )
        except (JobError, QueueFull, ASRError) as exc:
            text = exc.message(lang) if isinstance(exc, ASRError) else str(exc)  # the engine's, in the UI's language
            raise gr.Error(text, title=tr("failed", lang), print_exception=False) from None
        return (
            tr("job_submitted", lang, id=job.id[4:16]),
            gr.Tabs(selected="jobs"),
            gr.Dropdown(choices=job_choices(service.list(owner, LIST_LIMIT)), value=job.id),
            gr.Timer(active=True),
        )

    def refresh(job_id: str | None, request: gr.Request) -> tuple[Any, ...]:
        lang = lang_of(request)
        owner = request_owner(access, request, lang)
        jobs = service.list(owner, LIST_LIMIT)
        if not job_id and jobs:
            job_id = jobs[0].id
        table = {"headers": job_table_headers(lang), "data": job_rows(jobs, lang)}
        picked = gr.Dropdown(choices=job_choices(jobs), value=job_id)
        ticking = gr.Timer(active=any(not j.finished for j in jobs))
        job = service.get(job_id, owner) if job_id else None
        if job is None:
            return table, picked, tr("no_jobs", lang) if not jobs else "", None, None, ticking
        text, rows, files = detail(service, access, owner, job, lang)
        return table, picked, text, rows, files, ticking

    def cancel_job(job_id: str | None, request: gr.Request) -> str:
        lang = lang_of(request)
        job = service.cancel(job_id, request_owner(access, request, lang)) if job_id else None
        if job is None:
            raise gr.Error(tr("no_jobs", lang), print_exception=False)
        if not job.finished:
            return tr("job_cancelling", lang)
        counts = job.counts()
        return tr(
            "job_summary",
            lang,
            id=job.id,
            state=_state(job.state, lang),
            done=counts["done"],
            total=len(job.files),
            failed=counts["failed"],
            progress=_progress(job),
        )

    view = [jobs_table, chosen, summary, files_table, downloads, timer]
    hidden: dict[str, Any] = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    # Not queued: submitting stores files and returns; listing reads records. Neither waits for the model.
    inputs.button.click(
        submit,
        [
            inputs.files,
            inputs.hotwords,
            inputs.batch_size,
            inputs.speakers,
            inputs.num_speakers,
            inputs.itn,
            inputs.model,
            inputs.tags,
        ],
        [inputs.status, tabs, chosen, timer],
        queue=False,
        api_visibility="private",
    ).then(refresh, [chosen], view, **hidden)
    blocks.load(refresh, [chosen], view, **hidden)
    timer.tick(refresh, [chosen], view, **hidden)
    tab.select(refresh, [chosen], view, **hidden)
    chosen.input(refresh, [chosen], view, **hidden)
    cancel.click(cancel_job, [chosen], [summary], queue=False, api_visibility="private")
