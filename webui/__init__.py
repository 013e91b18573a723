"""The Gradio UI: one module per tab, each given the engine and the settings, composed by `build_ui`."""

from __future__ import annotations

import logging

import gradio as gr

from asr.engine import Engine
from config.settings import Settings
from hotword_lists import HotwordListService
from jobs import JobService
from results import ResultAccess

from .batch import create_batch_tab, table_headers
from .common import localise_tables, sentence_headers
from .hotword_lists import create_hotword_lists_tab, hotword_list_picker
from .i18n import build_i18n, gradio_notices_head, t
from .jobs import BatchJobInputs, attach_batch_jobs
from .live import create_live_tab
from .single import create_single_tab
from .sysinfo import create_sysinfo_tab
from .verification import verification_headers

logger = logging.getLogger(__name__)

__all__ = ["build_ui", "build_i18n", "gradio_notices_head"]


def build_ui(
    engine: Engine,
    settings: Settings,
    access: ResultAccess | None = None,
    jobs: JobService | None = None,
    hotword_lists: HotwordListService | None = None,
) -> gr.Blocks:
    """The tabs (the live one only with `settings.enable_live_tab`; the jobs one with `jobs`; 热词库 and the list
    pickers with `hotword_lists`). `access` (default: from `settings`) owns the result files the tabs write; serve
    the UI behind `results.ResultsMiddleware`.

    The wording comes from `build_i18n()`: pass it to `gr.mount_gradio_app(..., i18n=...)` or
    `blocks.launch(i18n=...)` (launch() replaces what is attached here).
    """
    access = access or ResultAccess.from_settings(settings)
    with gr.Blocks(title="Paraformer 语音识别") as blocks:
        gr.Markdown(t("title"))
        gr.Markdown(t("subtitle"))
        pick_list = None
        if hotword_lists is not None:
            lists = hotword_lists

            def pick_list(box: gr.Textbox) -> None:
                hotword_list_picker(lists, access, blocks, box, f"{box.elem_id or 'batch-hotwords'}-list")

        with gr.Tabs() as tabs:
            sentences = create_single_tab(engine, settings, access, pick_list)
            batch = create_batch_tab(engine, settings, access, blocks, job_button=jobs is not None, pick_list=pick_list)
            if jobs is not None:
                inputs = BatchJobInputs(
                    batch["files"],
                    batch["hotwords"],
                    batch["batch_size"],
                    batch["job_button"],
                    batch["status"],
                    batch["speakers"],
                    batch["num_speakers"],
                    batch["itn"],
                    batch["model"],
                    batch["tags"],
                )
                attach_batch_jobs(jobs, settings, access, inputs, tabs, blocks)
            if settings.enable_live_tab:
                create_live_tab(engine, settings, access)
            verify_table = None
            if hotword_lists is not None:
                verify_table = create_hotword_lists_tab(hotword_lists, access, blocks, jobs)
            create_sysinfo_tab(engine, settings, blocks)
        tables = [(sentences, sentence_headers), (batch["table"], table_headers)]
        if verify_table is not None:
            tables.append((verify_table, verification_headers))
        localise_tables(blocks, tables)
    # What mount_gradio_app(i18n=...) sets; attached here too so a mount without it still speaks both languages.
    blocks.i18n_instance = build_i18n()
    return blocks
