"""验证 / Verification, in the 热词库 tab: recordings with their reference transcripts (a transcript column filled
in beside each file, or a manifest), a hotword list, and a background job that transcribes each file without and
with the list. The report (overall CER, recall per hotword) shows here and downloads as HTML, CSV and JSON.

Thin: the manifest is read by `verification`, the job is `jobs.JobService`'s (`jobs.verification.plan`), so a
verification started here is the same job `GET /v1/verifications/{id}` shows.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from asr.errors import ASRError
from hotword_lists import HotwordListError, HotwordListService
from jobs import JobError, JobService, QueueFull
from jobs.service import Upload
from jobs.verification import plan
from messages import message
from results import ResultAccess
from verification import ManifestError, Report, items_from_pairs, parse_table

from .common import request_owner
from .i18n import lang_of, t, tr

logger = logging.getLogger(__name__)


def summary_markdown(report: Report, state: str, done: int, total: int, lang: str) -> str:
    """Progress, overall CER A -> B and each hotword's recall A -> B."""
    data = report.to_dict(lang)  # type: ignore[arg-type]
    summary = data["summary"]

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value * 100:.1f}%"

    lines = [
        tr("verify_progress", lang, state=tr(f"job_{state}", lang), done=done, total=total),
        "",
        f"| | {tr('verify_without', lang)} | {tr('verify_with', lang)} |",
        "|---|---|---|",
        f"| CER | {pct(summary['a']['cer'])} | {pct(summary['b']['cer'])} |",
    ]
    for row in data["hotword_stats"]:
        lines.append(
            f"| {tr('verify_recall', lang, word=row['word'], n=row['occurrences'])} | {pct(row['a']['recall'])} "
            f"| {pct(row['b']['recall'])} |"
        )
    return "\n".join(lines)


def verification_headers(lang: str) -> list[str]:
    return [tr("verify_col_file", lang), tr("verify_col_reference", lang)]


def create_verification_section(
    service: HotwordListService, jobs: JobService, access: ResultAccess, blocks: gr.Blocks, picker_choices: Any
) -> gr.Dataframe:
    """The section; returns its transcript table (headers in the browser's language: `localise_tables`)."""
    with gr.Accordion(t("verify_section"), open=False):
        gr.Markdown(t("verify_intro"))
        with gr.Row():
            with gr.Column(scale=1):
                recordings = gr.File(
                    label=t("verify_files"), file_count="multiple", type="filepath", elem_id="verify-files"
                )
                manifest = gr.File(
                    label=t("verify_manifest"), file_types=[".tsv", ".csv", ".txt"], elem_id="verify-manifest"
                )
                picked = gr.Dropdown(label=t("lists_pick"), choices=[], value=None, elem_id="verify-list")
                start = gr.Button(t("verify_start"), variant="primary", elem_id="verify-start")
            with gr.Column(scale=1):
                table = gr.Dataframe(
                    headers=verification_headers("zh"),
                    col_count=(2, "fixed"),
                    interactive=True,
                    elem_id="verify-table",
                )
        job_id = gr.State(None)
        status = gr.Markdown(elem_id="verify-status")
        refresh = gr.Button(t("verify_refresh"), elem_id="verify-refresh")
        downloads = gr.File(
            label=t("verify_downloads"), file_count="multiple", interactive=False, elem_id="verify-downloads"
        )

    def fill(paths: list[str] | None) -> list[list[str]]:
        return [[Path(p).name, ""] for p in (paths or [])]

    def items_of(paths: list[str], rows: Any, manifest_path: str | None, folder: Path, lang: str) -> list:
        if manifest_path:  # the manifest names the uploads by file name: they are linked side by side in `folder`
            for path in paths:
                target = folder / Path(path).name
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copyfile(path, target)
            return parse_table(Path(manifest_path).read_bytes(), base_dir=folder, allowed_dirs=[folder])
        names = [Path(p).name for p in paths]
        values = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
        references = {str(r[0]): str(r[1] or "") for r in values if r and len(r) > 1}
        return items_from_pairs([(p, references.get(n, "")) for p, n in zip(paths, names, strict=True)], names=names)

    def begin(
        paths: list[str] | None, rows: Any, manifest_path: str | None, list_id: str | None, request: gr.Request
    ) -> tuple[Any, str]:
        lang = lang_of(request)
        owner = request_owner(access, request, lang)
        paths = [p for p in (paths or []) if p]
        if not paths or not all(access.may_use_upload(p, owner) for p in paths):
            raise gr.Error(tr("no_files", lang), print_exception=False)
        if manifest_path and not access.may_use_upload(manifest_path, owner):
            raise gr.Error(tr("no_file", lang), print_exception=False)
        if not list_id:
            raise gr.Error(tr("lists_none_picked", lang), print_exception=False)
        folder = Path(tempfile.mkdtemp(prefix="verification-", dir=Path(paths[0]).parent.parent))
        try:
            items = items_of(paths, rows, manifest_path, folder, lang)
            words_b = service.request_hotwords([list_id], None, owner) or ""
            spec, sources = plan(items, jobs.engine.resolve_hotwords(words_b), words_b)
            job = jobs.submit(owner, [Upload(name, path) for name, path in sources], source="ui", verification=spec)
        except ManifestError as exc:
            raise gr.Error(exc.message(lang), print_exception=False) from None  # type: ignore[arg-type]
        except HotwordListError as exc:
            raise gr.Error(message(exc.key, lang, **exc.params), print_exception=False) from None  # type: ignore[arg-type]
        except (JobError, QueueFull, ASRError) as exc:
            text = exc.message(lang) if isinstance(exc, ASRError) else str(exc)
            raise gr.Error(text, print_exception=False) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return job.id, tr("verify_submitted", lang, id=job.id[4:16])

    def show(current: str | None, request: gr.Request) -> tuple[str, list[str]]:
        lang = lang_of(request)
        if not current:
            return "", []
        owner = request_owner(access, request, lang)
        job = jobs.get(current, owner)
        report = jobs.verification_report(job) if job is not None else None
        if job is None or report is None:
            return "", []
        counts = job.counts()
        text = summary_markdown(report, job.state, counts["done"] + counts["failed"], len(job.files), lang)
        if not job.finished:
            return text, []
        folder = access.store.create("verification", owner).folder
        files = {
            "verification.html": report.to_html(lang),  # type: ignore[arg-type]
            "verification.files.csv": report.files_csv(lang),  # type: ignore[arg-type]
            "verification.hotwords.csv": report.hotwords_csv(),
            "verification.json": report.to_json(lang),  # type: ignore[arg-type]
        }
        for name, content in files.items():
            (folder / name).write_text(content, encoding="utf-8")
        return text, [str(folder / name) for name in files]

    private: dict[str, Any] = {"api_visibility": "private"}
    recordings.upload(fill, recordings, table, **private)
    blocks.load(picker_choices, None, picked, queue=False, **private)
    picked.focus(picker_choices, None, picked, queue=False, **private)
    start.click(begin, [recordings, table, manifest, picked], [job_id, status], **private)
    refresh.click(show, job_id, [status, downloads], **private)
    return table
