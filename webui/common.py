"""Helpers shared by the tabs: turning engine errors into UI notices and results into text/files."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import gradio as gr

from asr.engine import Transcription
from asr.errors import ASRError
from asr.settings import Settings
from asr.subtitles import to_srt, to_txt, to_vtt

from .i18n import tr

logger = logging.getLogger(__name__)

#: The batch-size control multiplies the server's FunASR `batch_size_s` (seconds of speech per model
#: pass): 1 = the configured default, the same as the API; larger packs more VAD segments per pass.
BATCH_SIZE_MAX = 8


def batch_size_s(settings: Settings, batch_size: float | int | None) -> int:
    """FunASR batch_size_s for the UI's batch-size value (clamped to 1..BATCH_SIZE_MAX)."""
    value = int(batch_size or 1)
    return settings.batch_size_s * min(max(value, 1), BATCH_SIZE_MAX)


def ui_error(exc: ASRError, lang: str) -> gr.Error:
    """A readable notice for the browser: the engine's message is already written for a person."""
    return gr.Error(str(exc), title=tr("failed", lang), print_exception=False)


def details_markdown(result: Transcription, lang: str) -> str:
    speed = (1.0 / result.rtf) if result.rtf else 0.0
    s = tr("seconds", lang)
    words = ", ".join(result.hotwords) or tr("none", lang)
    rows = [
        f"| {tr('audio_duration', lang)} | {result.duration:.2f} {s} |",
        f"| {tr('processing_time', lang)} | {result.processing_time:.2f} {s} |",
        f"| {tr('speed', lang)} | {speed:.1f} {tr('realtime', lang)} |",
        f"| {tr('wait_time', lang)} | {result.wait_time:.2f} {s} |",
        f"| {tr('confidence', lang)} | {result.confidence:.3f} |",
        f"| {tr('hotwords_used', lang)} | {words} |",
    ]
    return f"| {tr('details', lang)} | |\n|---|---|\n" + "\n".join(rows)


def sentence_headers(lang: str) -> list[str]:
    return [tr("col_start", lang), tr("col_end", lang), tr("col_text", lang)]


def sentence_rows(result: Transcription) -> list[list[object]]:
    return [[f"{s.start:.2f}", f"{s.end:.2f}", s.text] for s in result.sentences]


def safe_stem(name: str) -> str:
    """A file name stem that is safe on every OS (keeps Chinese characters)."""
    stem = re.sub(r"[^\w.\-]+", "_", Path(name).stem, flags=re.UNICODE).strip("._")
    return stem[:80] or "audio"


def write_result_files(result: Transcription, folder: Path, stem: str) -> list[Path]:
    """TXT, SRT and VTT for one result, in `folder`. Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    txt = result.text + "\n" if result.text else to_txt(result.sentences)
    files = {f"{stem}.txt": txt, f"{stem}.srt": to_srt(result.sentences), f"{stem}.vtt": to_vtt(result.sentences)}
    paths = []
    for name, content in files.items():
        path = folder / name
        path.write_text(content, encoding="utf-8")
        paths.append(path)
    return paths


def new_result_dir(settings: Settings, prefix: str) -> Path:
    """A fresh folder under the temp dir for one request's downloads (Gradio serves files from there)."""
    settings.temp_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=settings.temp_dir))
