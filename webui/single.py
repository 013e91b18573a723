"""Single-file tab (placeholder being replaced by the full tab)."""

from __future__ import annotations

import gradio as gr

from asr.engine import Engine
from asr.errors import ASRError
from asr.settings import Settings


def create_single_tab(engine: Engine, settings: Settings) -> None:
    with gr.Tab("🎤 单个文件"):
        audio = gr.File(label="音频文件")
        hotwords = gr.Textbox(label="热词列表", value=", ".join(engine.default_hotwords))
        button = gr.Button("开始识别", variant="primary")
        text = gr.Textbox(label="识别结果")

    def run(path: str | None, words: str) -> str:
        if not path:
            raise gr.Error("请先上传音频文件")
        try:
            return engine.transcribe(path, hotwords=words).text
        except ASRError as exc:
            raise gr.Error(str(exc)) from None

    button.click(run, [audio, hotwords], text, api_name="transcribe", concurrency_id="model")
