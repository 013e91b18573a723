"""🎤 Single file: one upload, its text, confidence, details, sentence timestamps and downloads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from asr.engine import Engine
from asr.errors import ASRError
from config.settings import Settings
from results import ResultAccess

from .common import (
    BATCH_SIZE_MAX,
    batch_size_s,
    details_markdown,
    hide_hotwords_for,
    itn_control,
    labelled_text,
    model_controls,
    model_hotwords,
    request_owner,
    safe_stem,
    sentence_headers,
    sentence_rows,
    speaker_controls,
    speaker_options,
    ui_error,
    write_result_files,
)
from .i18n import lang_of, t, tr

logger = logging.getLogger(__name__)


def transcribe_file(
    engine: Engine,
    settings: Settings,
    access: ResultAccess,
    path: str | None,
    hotwords: str | None,
    batch_size: float | None,
    request: gr.Request | None = None,
    speakers: bool | None = False,
    num_speakers: float | None = 0,
    itn: bool | None = None,
    model: str | None = None,
    tags: bool | None = False,
    *,
    keep_files: bool = True,
) -> tuple[str, float, str, dict[str, list], list[str]]:
    """Text, confidence, details (Markdown), sentence rows and [TXT, SRT, VTT, words TSV] paths for one file;
    the files are a result owned by the requesting browser (none is written with `keep_files=False`)."""
    lang = lang_of(request)
    if not path:
        raise gr.Error(tr("no_file", lang), print_exception=False)
    owner = request_owner(access, request, lang)
    if not access.may_use_upload(path, owner):  # someone else's upload path, copied from their page
        raise gr.Error(tr("no_file", lang), print_exception=False)
    name = Path(path).name
    try:
        diarize, count = speaker_options(speakers, num_speakers)
        result = engine.transcribe(
            path,
            hotwords=model_hotwords(model, hotwords),
            name=name,
            batch_size_s=batch_size_s(settings, batch_size),
            diarize=diarize,
            num_speakers=count,
            itn=itn,
            model=model,
        )
    except ASRError as exc:
        raise ui_error(exc, lang) from None
    files: list[Path] = []
    if keep_files:  # a fresh result folder in OUTPUT_DIR: only this browser (and an admin) can fetch its files
        files = write_result_files(
            result, access.store.create("single", owner).folder, safe_stem(name), tags=bool(tags)
        )
    headers = sentence_headers(lang, bool(result.speakers), result.model == "sensevoice")
    table = {"headers": headers, "data": sentence_rows(result)}
    return (
        labelled_text(result),
        round(result.confidence, 4),
        details_markdown(result, lang),
        table,
        [str(p) for p in files],
    )


def create_single_tab(
    engine: Engine, settings: Settings, access: ResultAccess, pick_list: Callable[[gr.Textbox], Any] | None = None
) -> gr.Dataframe:
    """The tab; returns its sentence table (its headers follow the browser's language, see `localise_tables`)."""
    with gr.Tab(t("tab_single"), id="single"):
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.File(label=t("audio_file"), type="filepath", elem_id="single-file")
                model, tags = model_controls(engine, "single")
                words = gr.Textbox(
                    label=t("hotwords"),
                    info=t("hotwords_info"),
                    lines=2,
                    value=", ".join(engine.default_hotwords),
                    elem_id="single-hotwords",
                )
                if pick_list is not None:
                    pick_list(words)
                hide_hotwords_for(model, words)
                batch = gr.Slider(1, BATCH_SIZE_MAX, value=1, step=1, label=t("batch_size"), info=t("batch_size_info"))
                speakers, num_speakers = speaker_controls(engine, "single")
                itn = itn_control(settings, "single")
                button = gr.Button(t("start"), variant="primary", elem_id="single-start")
            with gr.Column(scale=2):
                text = gr.Textbox(
                    label=t("result"), lines=6, buttons=["copy"], interactive=False, elem_id="single-text"
                )
                confidence = gr.Number(label=t("confidence"), precision=4, interactive=False)
                with gr.Accordion(t("details"), open=True):
                    details = gr.Markdown()
                sentences = gr.Dataframe(
                    headers=sentence_headers("zh"),
                    label=t("sentences"),
                    interactive=False,
                    wrap=True,
                    max_height=300,
                    elem_id="single-sentences",
                )
                downloads = gr.File(label=t("downloads_words"), file_count="multiple", interactive=False)

    # The parameter names are what gradio_client shows for the `/transcribe` endpoint.
    def run(
        audio_file: str | None,
        hotwords: str | None,
        batch_size: float | None,
        label_speakers: bool | None,
        speaker_count: float | None,
        written_numbers: bool | None,
        recognizer: str | None,
        with_tags: bool | None,
        request: gr.Request,
    ):
        return transcribe_file(
            engine,
            settings,
            access,
            audio_file,
            hotwords,
            batch_size,
            request,
            label_speakers,
            speaker_count,
            written_numbers,
            recognizer,
            with_tags,
        )

    button.click(
        run,
        [audio, words, batch, speakers, num_speakers, itn, model, tags],
        [text, confidence, details, sentences, downloads],
        api_name="transcribe",
        concurrency_id="model",
    )
    return sentences
