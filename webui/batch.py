"""📁 Batch: many files, one after another; the table fills in as each finishes and every result is
written to `settings.output_dir` at once, so a crash mid-batch loses nothing already done."""

from __future__ import annotations

import csv
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from asr.engine import Engine, Transcription
from asr.errors import ASRError
from asr.settings import Settings

from .common import (BATCH_SIZE_MAX, batch_size_s, labelled_text, safe_stem, speaker_controls, speaker_options,
                     ui_error, write_result_files)
from .i18n import lang_of, t, tr

logger = logging.getLogger(__name__)

#: `speakers`: how many were told apart (empty when not asked); `text` then has one `说话人N：` line per turn.
CSV_FIELDS = ["file", "duration_s", "confidence", "status", "error", "speakers", "text", "processing_s"]

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


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.suffix in {".txt", ".srt", ".vtt", ".csv", ".tsv"}:
                archive.write(path, path.name)
    return target


def new_batch_dir(settings: Settings) -> Path:
    folder = settings.output_dir / f"batch-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def transcribe_batch(engine: Engine, settings: Settings, paths: list[str] | None, hotwords: str | None,
                     batch_size: float | None, request: gr.Request | None = None,
                     progress: gr.Progress | None = None, speakers: bool | None = False,
                     num_speakers: float | None = 0) -> Iterator[BatchUpdate]:
    """Yields (status Markdown, results table, downloads) after each file; downloads come with the last."""
    lang = lang_of(request)
    paths = [p for p in (paths or []) if p]
    if not paths:
        raise gr.Error(tr("no_files", lang), print_exception=False)
    if len(paths) > settings.batch_max_files:
        raise gr.Error(tr("too_many_files", lang, limit=settings.batch_max_files, count=len(paths)),
                       print_exception=False)
    diarize, count = speaker_options(speakers, num_speakers)
    try:
        engine.check_speakers(diarize, count)  # once, not as the same failure on every file
    except ASRError as exc:
        raise ui_error(exc, lang) from None
    folder = new_batch_dir(settings)
    csv_path = folder / "results.csv"
    rows: list[list[object]] = [[Path(p).name, "", "", "", tr("status_pending", lang)] for p in paths]
    records: list[dict[str, object]] = []
    ok = failed = 0
    size_s = batch_size_s(settings, batch_size)
    logger.info("batch of %d files into %s", len(paths), folder)

    def update(files: list[str] | None = None, extra: str = "") -> BatchUpdate:
        status = tr("batch_progress", lang, done=ok + failed, total=len(paths), ok=ok, failed=failed) + extra
        return status, {"headers": table_headers(lang), "data": [list(r) for r in rows]}, files

    yield update()
    for index, path in enumerate(paths):
        name = Path(path).name
        if progress is not None:
            progress((index, len(paths)), desc=f"{tr('recognising', lang)} {name}")
        try:
            result: Transcription | None = engine.transcribe(path, hotwords=hotwords, name=name, batch_size_s=size_s,
                                                             diarize=diarize, num_speakers=count)
            error = ""
        except ASRError as exc:
            result, error = None, str(exc)
        except Exception as exc:  # one broken file must not end the batch; the log has the traceback
            logger.exception("batch file %s failed", name)
            result, error = None, f"{type(exc).__name__}: {exc}"
        if result is not None:
            ok += 1
            write_result_files(result, folder, f"{index + 1:03d}_{safe_stem(name)}")
            rows[index] = [name, round(result.duration, 2), labelled_text(result), round(result.confidence, 4),
                           tr("status_ok", lang)]
            records.append({"file": name, "duration_s": round(result.duration, 3),
                            "confidence": round(result.confidence, 4), "status": "ok", "error": "",
                            "speakers": result.speakers if diarize else "", "text": labelled_text(result),
                            "processing_s": round(result.processing_time, 3)})
        else:
            failed += 1
            rows[index] = [name, "", "", "", tr("status_failed", lang, reason=error)]
            records.append({"file": name, "duration_s": "", "confidence": "", "status": "failed", "error": error,
                            "speakers": "", "text": "", "processing_s": ""})
        _write_csv(csv_path, records)
        yield update()
    archive = _zip(folder, folder / f"{folder.name}.zip")
    if progress is not None:
        progress((len(paths), len(paths)))
    yield update([str(csv_path), str(archive)], "  \n" + tr("batch_saved", lang, path=folder))


def create_batch_tab(engine: Engine, settings: Settings) -> None:
    with gr.Tab(t("tab_batch"), id="batch"):
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label=t("audio_files"), file_count="multiple", type="filepath", elem_id="batch-files")
                words = gr.Textbox(label=t("hotwords"), info=t("hotwords_info"), lines=2,
                                      value=", ".join(engine.default_hotwords))
                batch = gr.Slider(1, BATCH_SIZE_MAX, value=1, step=1, label=t("batch_size"),
                                  info=t("batch_size_info"))
                speakers, num_speakers = speaker_controls(engine, "batch")
                button = gr.Button(t("start_batch"), variant="primary", elem_id="batch-start")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="batch-status")
                table = gr.Dataframe(headers=table_headers("zh"), label=t("batch_table"), interactive=False,
                                     wrap=True, max_height=500, elem_id="batch-table",
                                     column_widths=["20%", "8%", "46%", "8%", "18%"])
                downloads = gr.File(label=t("batch_downloads"), file_count="multiple", interactive=False)

    def run(audio_files: list[str] | None, hotwords: str | None, batch_size: float | None,
            label_speakers: bool | None, speaker_count: float | None, request: gr.Request,
            progress: gr.Progress = gr.Progress()) -> Iterator[BatchUpdate]:
        yield from transcribe_batch(engine, settings, audio_files, hotwords, batch_size, request, progress,
                                    label_speakers, speaker_count)

    button.click(run, [files, words, batch, speakers, num_speakers], [status, table, downloads],
                 api_name="transcribe_batch",
                 concurrency_id="model", show_progress_on=[status])
