"""🎙️ Live recording: record then transcribe, and a live transcript while recording.

The live part streams microphone chunks into an `asr.live.LiveSession`, which keeps the cost of each
chunk bounded (closed VAD segments are final, only the open one is decoded again).
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr
import numpy as np

from asr.engine import Engine
from asr.errors import ASRError
from asr.live import LiveSession
from config.settings import Settings
from results import ResultAccess

from .common import queue_concurrency, ui_error
from .i18n import lang_of, t, tr
from .single import transcribe_file

logger = logging.getLogger(__name__)

#: Seconds between two chunks the browser sends while recording.
STREAM_EVERY_S = 0.5


def live_html(final: str, partial: str) -> str:
    """Settled text in black, the open segment's tentative text in grey."""
    return (
        f'<div class="live-transcript" style="font-size:1.1em;min-height:4em">{html.escape(final)}'
        f'<span style="color:#888">{html.escape(partial)}</span></div>'
    )


def stream_chunk(
    engine: Engine,
    chunk: tuple[int, np.ndarray] | None,
    session: LiveSession | None,
    hotwords: str | None,
    request: gr.Request | None = None,
) -> tuple[str, LiveSession | None]:
    if chunk is None:
        return gr.skip(), session
    rate, samples = chunk
    try:
        session = session or LiveSession(engine, hotwords=hotwords)
        update = session.feed(samples, int(rate))
    except ASRError as exc:
        raise ui_error(exc, lang_of(request)) from None
    return live_html(update.final_text, update.partial_text), session


def finish_stream(session: LiveSession | None, request: gr.Request | None = None) -> tuple[str, None]:
    if session is None:
        return gr.skip(), None
    try:
        update = session.finish()
    except ASRError as exc:
        raise ui_error(exc, lang_of(request)) from None
    logger.info("live recording finished: %.1f s, %d segments", session.received_s, session.stats.segments_closed)
    return live_html(update.final_text, ""), None


def create_live_tab(engine: Engine, settings: Settings, access: ResultAccess) -> None:
    with gr.Tab(t("tab_live"), id="live"):
        words = gr.Textbox(
            label=t("hotwords"), info=t("hotwords_info"), lines=1, value=", ".join(engine.default_hotwords)
        )
        with gr.Row():
            with gr.Column():
                gr.Markdown(t("record_section"))
                recording = gr.Audio(
                    sources=["microphone", "upload"], type="filepath", label=t("record"), elem_id="live-recording"
                )
                button = gr.Button(t("start"), variant="primary", elem_id="live-start")
                text = gr.Textbox(label=t("result"), lines=4, buttons=["copy"], interactive=False, elem_id="live-text")
                with gr.Accordion(t("details"), open=False):
                    details = gr.Markdown()
            with gr.Column():
                gr.Markdown(t("live_section"))
                mic = gr.Audio(
                    sources=["microphone"], type="numpy", streaming=True, label=t("live_mic"), elem_id="live-mic"
                )
                live = gr.HTML(live_html("", ""), label=t("live_text"), elem_id="live-transcript")
                session = gr.State(None)

    def run(recording_file: str | None, hotwords: str | None, request: gr.Request) -> tuple[str, str]:
        if not recording_file:
            raise gr.Error(tr("no_recording", lang_of(request)), print_exception=False)
        # No downloads on this tab, so nothing is kept on disk.
        result_text, _, details_md, _, _ = transcribe_file(
            engine, settings, access, recording_file, hotwords, 1, request, keep_files=False
        )
        return result_text, details_md

    def on_chunk(chunk: Any, state: LiveSession | None, words: str | None, request: gr.Request):
        return stream_chunk(engine, chunk, state, words, request)

    def on_start() -> tuple[str, None]:
        return live_html("", ""), None

    button.click(run, [recording, words], [text, details], api_name="transcribe_recording", concurrency_id="model")
    # A stream holds its slot for the whole recording, so it gets its own limit rather than the "model"
    # one: two people talking must not lock every upload out. Model calls still take the engine's lock.
    mic.start_recording(on_start, None, [live, session], queue=False, api_visibility="private")
    mic.stream(
        on_chunk,
        [mic, session, words],
        [live, session],
        stream_every=STREAM_EVERY_S,
        time_limit=int(settings.max_audio_seconds),
        concurrency_id="live",
        concurrency_limit=queue_concurrency(settings, engine),
        show_progress="hidden",
        api_visibility="private",
    )
    mic.stop_recording(finish_stream, [session], [live, session], concurrency_id="model", api_visibility="private")
