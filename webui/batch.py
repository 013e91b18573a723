"""📁 Batch: many files, one after another; the table fills in as each finishes and every result is
written to its result folder in `settings.output_dir` at once, so a crash mid-batch loses nothing already
done. The batch belongs to the browser that ran it: "my earlier batches" lists that browser's batches after
a reload, and nobody else's."""

from __future__ import annotations

import csv
import logging
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from asr.engine import Engine, Transcription
from asr.errors import ASRError
from config.settings import Settings
from messages import message
from results import Result, ResultAccess

from .common import (
    BATCH_SIZE_MAX,
    batch_size_s,
    hide_hotwords_for,
    itn_control,
    kept_for,
    labelled_text,
    model_controls,
    model_hotwords,
    request_owner,
    safe_stem,
    speaker_controls,
    speaker_options,
    ui_error,
    write_result_files,
)
from .i18n import lang_of, t, tr

logger = logging.getLogger(__name__)

#: `speakers`: how many were told apart (empty when not asked); `text` then has one `说话人N：` line per turn.
#: `model`: which model transcribed the file; `languages`, `emotions`, `events`: SenseVoice's, each value once, in
#: the order they first occur, space-separated (empty for SeACo-Paraformer).
CSV_FIELDS = [
    "file",
    "duration_s",
    "confidence",
    "status",
    "error",
    "speakers",
    "text",
    "processing_s",
    "model",
    "languages",
    "emotions",
    "events",
]


def _described(result: Transcription) -> dict[str, str]:
    """The CSV's SenseVoice columns for one result: what its sentences said, each value once."""

    def once(values: list[str]) -> str:
        return " ".join(dict.fromkeys(v for v in values if v))

    sentences = result.sentences
    return {
        "model": result.model,
        "languages": once([s.language or "" for s in sentences]),
        "emotions": once([s.emotion or "" for s in sentences]),
        "events": once([e for s in sentences for e in s.events]),
    }


CSV_NAME = "results.csv"
HISTORY_MAX = 20

BatchUpdate = tuple[str, dict[str, list], list[str] | None]


def table_headers(lang: str) -> list[str]:
    return [tr(k, lang) for k in ("col_file", "col_duration", "col_text", "col_confidence", "col_status")]


def _write_csv(path: Path, records: list[dict[str, object]]) -> None:
    # Rewritten whole after each file (a batch is at most a few dozen rows); replace() keeps it never half-written.
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8-sig") as out:  # the BOM lets Excel read the Chinese text
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(records)
    os.replace(tmp, path)


def _csv_rows(path: Path) -> int:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return sum(1 for _ in csv.DictReader(handle))
    except OSError:
        return 0


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.suffix in {".txt", ".srt", ".vtt", ".csv", ".tsv"}:
                archive.write(path, path.name)
    return target


def _zip_name(result: Result) -> str:
    # The batch's time, not its whole name: the download is named for people; the folder keeps the secret part.
    return result.id.rsplit("-", 1)[0] + ".zip"


def transcribe_batch(
    engine: Engine,
    settings: Settings,
    access: ResultAccess,
    paths: list[str] | None,
    hotwords: str | None,
    batch_size: float | None,
    request: gr.Request | None = None,
    progress: gr.Progress | None = None,
    speakers: bool | None = False,
    num_speakers: float | None = 0,
    itn: bool | None = None,
    model: str | None = None,
    tags: bool | None = False,
) -> Iterator[BatchUpdate]:
    """Yields (status Markdown, results table, downloads) after each file; downloads come with the last."""
    lang = lang_of(request)
    paths = [p for p in (paths or []) if p]
    if not paths:
        raise gr.Error(tr("no_files", lang), print_exception=False)
    if len(paths) > settings.batch_max_files:
        raise gr.Error(
            tr("too_many_files", lang, limit=settings.batch_max_files, count=len(paths)), print_exception=False
        )
    diarize, count = speaker_options(speakers, num_speakers)
    try:
        engine.check_speakers(diarize, count)  # once, not as the same failure on every file
    except ASRError as exc:
        raise ui_error(exc, lang) from None
    owner = request_owner(access, request, lang)
    if not all(access.may_use_upload(p, owner) for p in paths):  # someone else's upload paths
        raise gr.Error(tr("no_files", lang), print_exception=False)
    batch = access.store.create("batch", owner, total=len(paths))
    folder = batch.folder
    csv_path = folder / CSV_NAME
    rows: list[list[object]] = [[Path(p).name, "", "", "", tr("status_pending", lang)] for p in paths]
    records: list[dict[str, object]] = []
    ok = failed = 0
    size_s = batch_size_s(settings, batch_size)
    logger.info("batch of %d files into result %s…", len(paths), batch.id[:-26])

    def update(files: list[str] | None = None, extra: str = "") -> BatchUpdate:
        status = tr("batch_progress", lang, done=ok + failed, total=len(paths), ok=ok, failed=failed) + extra
        return status, {"headers": table_headers(lang), "data": [list(r) for r in rows]}, files

    yield update()
    for index, path in enumerate(paths):
        name = Path(path).name
        if progress is not None:
            progress((index, len(paths)), desc=f"{tr('recognising', lang)} {name}")
        try:
            result: Transcription | None = engine.transcribe(
                path,
                hotwords=model_hotwords(model, hotwords),
                name=name,
                batch_size_s=size_s,
                diarize=diarize,
                num_speakers=count,
                itn=itn,
                model=model,
            )
            error = ""
        except ASRError as exc:
            result, error = None, exc.message(lang)
        except Exception:  # one broken file must not end the batch; the log has the traceback
            logger.exception("batch file %s failed", name)
            result, error = None, message("internal", lang)
        if result is not None:
            ok += 1
            write_result_files(result, folder, f"{index + 1:03d}_{safe_stem(name)}", tags=bool(tags))
            rows[index] = [
                name,
                round(result.duration, 2),
                labelled_text(result),
                round(result.confidence, 4),
                tr("status_ok", lang),
            ]
            records.append(
                {
                    "file": name,
                    "duration_s": round(result.duration, 3),
                    "confidence": round(result.confidence, 4),
                    "status": "ok",
                    "error": "",
                    "speakers": result.speakers if diarize else "",
                    "text": labelled_text(result),
                    "processing_s": round(result.processing_time, 3),
                    **_described(result),
                }
            )
        else:
            failed += 1
            rows[index] = [name, "", "", "", tr("status_failed", lang, reason=error)]
            records.append(
                {
                    "file": name,
                    "duration_s": "",
                    "confidence": "",
                    "status": "failed",
                    "error": error,
                    "speakers": "",
                    "text": "",
                    "processing_s": "",
                    "model": model or "paraformer",
                    "languages": "",
                    "emotions": "",
                    "events": "",
                }
            )
        _write_csv(csv_path, records)
        yield update()
    archive = _zip(folder, folder / _zip_name(batch))
    access.store.update_info(batch, finished=True, ok=ok, failed=failed)
    if progress is not None:
        progress((len(paths), len(paths)))
    yield update([str(csv_path), str(archive)], "  \n" + tr("batch_saved", lang, kept=kept_for(access, lang)))


def history_headers(lang: str) -> list[str]:
    return [tr(k, lang) for k in ("col_time", "col_files", "col_status")]


def batch_history(access: ResultAccess, request: gr.Request | None = None) -> tuple[dict[str, list], list[str]]:
    """This browser's earlier batches, newest first: a table, and each one's zip (or its CSV when the batch
    never finished, e.g. the server restarted mid-batch)."""
    lang = lang_of(request)
    rows: list[list[object]] = []
    files: list[str] = []
    for result in access.store.list(request_owner(access, request, lang), kind="batch", limit=HISTORY_MAX):
        info = result.info
        total = info.get("total", "")
        if info.get("finished"):
            status = tr("history_done", lang, ok=info.get("ok", 0), failed=info.get("failed", 0))
            download = result.folder / _zip_name(result)
        else:
            download = result.folder / CSV_NAME
            status = tr("history_unfinished", lang, done=_csv_rows(download), total=total)
        rows.append([time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.created)), total, status])
        if download.is_file():
            files.append(str(download))
    return {"headers": history_headers(lang), "data": rows}, files


def create_batch_tab(
    engine: Engine,
    settings: Settings,
    access: ResultAccess,
    blocks: gr.Blocks,
    *,
    job_button: bool = False,
    pick_list: Callable[[gr.Textbox], Any] | None = None,
) -> dict[str, Any]:
    """The tab; returns its inputs and status (and, with `job_button`, a button to run them as a job)."""
    with gr.Tab(t("tab_batch"), id="batch"):
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label=t("audio_files"), file_count="multiple", type="filepath", elem_id="batch-files")
                model, tags = model_controls(engine, "batch")
                words = gr.Textbox(
                    label=t("hotwords"), info=t("hotwords_info"), lines=2, value=", ".join(engine.default_hotwords)
                )
                if pick_list is not None:  # the jobs button sends this box too
                    pick_list(words)
                hide_hotwords_for(model, words)
                batch = gr.Slider(1, BATCH_SIZE_MAX, value=1, step=1, label=t("batch_size"), info=t("batch_size_info"))
                speakers, num_speakers = speaker_controls(engine, "batch")
                itn = itn_control(settings, "batch")
                button = gr.Button(t("start_batch"), variant="primary", elem_id="batch-start")
                submit_job = gr.Button(t("submit_job"), elem_id="batch-submit-job") if job_button else None
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="batch-status")
                table = gr.Dataframe(
                    headers=table_headers("zh"),
                    label=t("batch_table"),
                    interactive=False,
                    wrap=True,
                    max_height=500,
                    elem_id="batch-table",
                    column_widths=["20%", "8%", "46%", "8%", "18%"],
                )
                downloads = gr.File(label=t("batch_downloads"), file_count="multiple", interactive=False)
        with gr.Accordion(t("history"), open=True, elem_id="batch-history"):
            history = gr.Dataframe(
                headers=history_headers("zh"),
                interactive=False,
                wrap=True,
                max_height=300,
                elem_id="batch-history-table",
            )
            history_files = gr.File(
                label=t("history_downloads"), file_count="multiple", interactive=False, elem_id="batch-history-files"
            )
            refresh = gr.Button(t("history_refresh"), size="sm")

    def run(
        audio_files: list[str] | None,
        hotwords: str | None,
        batch_size: float | None,
        label_speakers: bool | None,
        speaker_count: float | None,
        written_numbers: bool | None,
        recognizer: str | None,
        with_tags: bool | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[BatchUpdate]:
        yield from transcribe_batch(
            engine,
            settings,
            access,
            audio_files,
            hotwords,
            batch_size,
            request,
            progress,
            label_speakers,
            speaker_count,
            written_numbers,
            recognizer,
            with_tags,
        )

    def earlier_batches(request: gr.Request) -> tuple[dict[str, list], list[str]]:
        return batch_history(access, request)

    event = button.click(
        run,
        [files, words, batch, speakers, num_speakers, itn, model, tags],
        [status, table, downloads],
        api_name="transcribe_batch",
        concurrency_id="model",
        show_progress_on=[status],
    )
    # Not queued behind the model: the list is a few small files read from disk.
    event.then(earlier_batches, None, [history, history_files], queue=False, api_visibility="private")
    refresh.click(earlier_batches, None, [history, history_files], api_name="batch_history", queue=False)
    blocks.load(earlier_batches, None, [history, history_files], queue=False, api_visibility="private")
    return {
        "files": files,
        "hotwords": words,
        "batch_size": batch,
        "status": status,
        "job_button": submit_job,
        "speakers": speakers,
        "num_speakers": num_speakers,
        "itn": itn,
        "model": model,
        "tags": tags,
        "table": table,
    }
