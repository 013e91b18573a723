"""The Gradio UI: one module per tab, composed by `build_ui`."""

from __future__ import annotations

import gradio as gr

from asr.engine import Engine
from asr.settings import Settings


def build_ui(engine: Engine, settings: Settings) -> gr.Blocks:
    from .single import create_single_tab

    with gr.Blocks(title="Paraformer 语音识别") as blocks:
        gr.Markdown("# Paraformer 语音识别")
        with gr.Tabs():
            create_single_tab(engine, settings)
    return blocks
