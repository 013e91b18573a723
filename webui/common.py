"""Helpers shared by the tabs: turning engine errors into UI notices and results into text/files."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import gradio as gr

from asr.device import planned_device
from asr.engine import Engine, Transcription
from asr.errors import ASRError
from asr.speakers import MAX_SPEAKERS
from asr.subtitles import speaker_label, to_srt, to_txt, to_vtt, to_word_tsv
from config.settings import Settings
from messages import Lang
from results import Owner, ResultAccess

from .i18n import lang_of, t, tr

logger = logging.getLogger(__name__)

#: The batch-size control multiplies the server's FunASR `batch_size_s` (seconds of speech per model
#: pass): 1 = the configured default, the same as the API; larger packs more VAD segments per pass.
BATCH_SIZE_MAX = 8


def speaker_options(diarize: bool | None, num_speakers: float | int | None) -> tuple[bool, int | None]:
    """(diarize, num_speakers) for the engine from the UI's checkbox and number (0 or empty: find out)."""
    count = int(num_speakers or 0)
    return bool(diarize), (count if diarize and count > 0 else None)


def speaker_controls(engine: Engine, prefix: str) -> tuple[gr.Checkbox, gr.Number]:
    """The speakers checkbox and the number of speakers; greyed out when the server has no speaker model."""
    available = engine.config.enable_spk
    checkbox = gr.Checkbox(
        value=False,
        label=t("speakers"),
        interactive=available,
        info=t("speakers_info") if available else t("speakers_off_info"),
        elem_id=f"{prefix}-speakers",
    )
    count = gr.Number(
        value=0,
        minimum=0,
        maximum=MAX_SPEAKERS,
        step=1,
        precision=0,
        label=t("num_speakers"),
        interactive=available,
        elem_id=f"{prefix}-num-speakers",
    )
    return checkbox, count


#: The model picker's choices: label, engine name.
MODEL_CHOICES = [("SeACo-Paraformer", "paraformer"), ("SenseVoice-Small", "sensevoice")]


def model_controls(engine: Engine, prefix: str) -> tuple[gr.Radio, gr.Checkbox]:
    """The model picker and the tags checkbox, shown only where the server runs SenseVoice (ENABLE_SENSEVOICE)."""
    shown = engine.config.enable_sensevoice
    picker = gr.Radio(
        MODEL_CHOICES,
        value="paraformer",
        label=t("model"),
        info=t("model_info"),
        visible=shown,
        elem_id=f"{prefix}-model",
    )
    tags = gr.Checkbox(value=False, label=t("tags"), info=t("tags_info"), visible=shown, elem_id=f"{prefix}-tags")
    return picker, tags


def hide_hotwords_for(picker: gr.Radio, *boxes: Any) -> None:
    """SenseVoice takes no hotwords: its hotword boxes hide while it is chosen (what is sent is what is seen)."""

    def shown(model: str | None) -> Any:
        updates = [gr.update(visible=model != "sensevoice") for _ in boxes]
        return updates[0] if len(updates) == 1 else updates  # Gradio takes a list for one output as its value

    picker.change(shown, picker, list(boxes), queue=False, api_visibility="private")


def model_hotwords(model: str | None, hotwords: str | None) -> str | None:
    """The hotwords a UI request sends: none for SenseVoice (its hotword box is hidden), the box's otherwise."""
    return "" if model == "sensevoice" else hotwords


def itn_control(settings: Settings, prefix: str) -> gr.Checkbox:
    """The 数字规整 checkbox: written-form numbers (asr.itn), on when the ITN setting is."""
    return gr.Checkbox(value=settings.itn, label=t("itn"), info=t("itn_info"), elem_id=f"{prefix}-itn")


def queue_concurrency(settings: Settings, engine: Engine) -> int:
    """Jobs the UI queue hands the engine at once: MODEL_CONCURRENCY, or when 0: 2, or the engine's batch size when
    that is higher (only requests inside the engine together can share a model call)."""
    if settings.model_concurrency:
        return settings.model_concurrency
    device = engine.spec.device if engine.spec else planned_device(settings.device, settings.engine_backend)
    return max(2, engine.batch_max_requests(device))


def batch_size_s(settings: Settings, batch_size: float | int | None) -> int:
    """FunASR batch_size_s for the UI's batch-size value (clamped to 1..BATCH_SIZE_MAX)."""
    value = int(batch_size or 1)
    return settings.batch_size_s * min(max(value, 1), BATCH_SIZE_MAX)


def ui_error(exc: ASRError, lang: Lang) -> gr.Error:
    """A notice in the UI's language from the engine's catalogue; the detail (paths, ffmpeg) goes to the log."""
    if exc.detail:
        logger.info("UI request refused: %s (%s): %s", exc.code, exc.name or "input", exc.detail)
    return gr.Error(exc.message(lang), title=tr("failed", lang), print_exception=False)


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
    if result.speakers:
        rows.append(f"| {tr('speaker_count', lang)} | {result.speakers} |")
    if result.model == "sensevoice":
        rows.append(f"| {tr('model_used', lang)} | SenseVoice-Small |")
    return f"| {tr('details', lang)} | |\n|---|---|\n" + "\n".join(rows)


def sentence_headers(lang: str, with_speakers: bool = False, with_tags: bool = False) -> list[str]:
    speaker = [tr("col_speaker", lang)] if with_speakers else []
    tags = [tr("col_language", lang), tr("col_emotion", lang), tr("col_events", lang)] if with_tags else []
    return [tr("col_start", lang), tr("col_end", lang), *speaker, *tags, tr("col_text", lang)]


def empty_tables(lang: str, headers: list) -> list[dict[str, list]]:
    """Empty tables with their headers in `lang`: what a page shows before its first result.

    A Dataframe's headers are not `gr.I18n` keys, so the browser cannot translate them itself; `localise_tables`
    sends them in the request's language when the page loads."""
    return [{"headers": make(lang), "data": []} for make in headers]


def localise_tables(blocks: gr.Blocks, tables: list[tuple[gr.Dataframe, Any]]) -> None:
    """On page load, give each (table, headers(lang)) its headers in the browser's language."""

    def load(request: gr.Request) -> list[dict[str, list]]:
        return empty_tables(lang_of(request), [make for _, make in tables])

    blocks.load(load, None, [table for table, _ in tables], queue=False, api_visibility="private")


def sentence_rows(result: Transcription) -> list[list[object]]:
    """One row per sentence: start, end, the speaker (with speakers), SenseVoice's language, emotion and events
    (SenseVoice), the text: the columns of `sentence_headers(lang, result.speakers, result.model == "sensevoice")`."""
    rows: list[list[object]] = []
    for s in result.sentences:
        row: list[object] = [f"{s.start:.2f}", f"{s.end:.2f}"]
        if result.speakers:
            row.append(speaker_label(s.speaker) if s.speaker else "")
        if result.model == "sensevoice":
            row += [s.language or "", s.emotion or "", ", ".join(s.events)]
        rows.append([*row, s.text])
    return rows


def labelled_text(result: Transcription) -> str:
    """The text, or with speakers one `说话人N：` line per turn."""
    return to_txt(result.sentences).rstrip("\n") if result.speakers else result.text


def safe_stem(name: str) -> str:
    """A file name stem that is safe on every OS (keeps Chinese characters)."""
    stem = re.sub(r"[^\w.\-]+", "_", Path(name).stem, flags=re.UNICODE).strip("._")
    return stem[:80] or "audio"


def write_result_files(result: Transcription, folder: Path, stem: str, *, tags: bool = False) -> list[Path]:
    """TXT, SRT, VTT and the word times (TSV, when the model gave them) for one result, in `folder`; with `tags`,
    SenseVoice's language, emotion and events lead each sentence of the TXT, SRT and VTT."""
    folder.mkdir(parents=True, exist_ok=True)
    txt = labelled_text(result) + "\n" if result.text else to_txt(result.sentences)
    if tags and result.model == "sensevoice":
        txt = to_txt(result.sentences, tags=True)
    files = {
        f"{stem}.txt": txt,
        f"{stem}.srt": to_srt(result.sentences, tags=tags),
        f"{stem}.vtt": to_vtt(result.sentences, tags=tags),
    }
    if result.text_spoken is not None:  # ITN applied: the text as spoken too, in a file whose name says so
        files[f"{stem}.spoken.txt"] = result.text_spoken + "\n"
    words = to_word_tsv(result.sentences)
    if words:
        files[f"{stem}.words.tsv"] = words
    paths = []
    for name, content in files.items():
        path = folder / name
        path.write_text(content, encoding="utf-8")
        paths.append(path)
    return paths


def request_owner(access: ResultAccess, request: gr.Request | None, lang: str) -> Owner:
    """Who runs this event: the browser's owner cookie (or an API key a script sends)."""
    headers = {} if request is None else {str(k).lower(): str(v) for k, v in dict(request.headers or {}).items()}
    owner = access.owner_of(headers)
    if owner is None:  # only when the app runs without ResultsMiddleware, which gives every request a cookie
        raise gr.Error(tr("no_session", lang), print_exception=False)
    return owner


def kept_for(access: ResultAccess, lang: str) -> str:
    hours = access.retention_h
    return tr("kept_hours", lang, hours=f"{hours:g}") if hours > 0 else tr("kept_forever", lang)
