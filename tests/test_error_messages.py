"""What a user reads when something is wrong: every bad file of tests/data/bad, through each UI tab
(gradio_client, a Chinese and an English caller) and the API (English, and Chinese on request), gets a
message in that language, with no server path and nothing of ffmpeg's own output."""

from __future__ import annotations

import csv
import re

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from asr import errors
from asr.audio import load_audio
from asr.errors import ASRError, InputError
from conftest import DATA, Server
from messages import Lang
from webui.live import stream_chunk

BAD_DIR = DATA / "bad"
BAD_FILES = sorted(BAD_DIR.iterdir())
#: The bad files that cannot be transcribed (the others decode: truncated, dropout, silence, noise...).
REFUSED = {
    "empty.wav": "empty",
    "header_only.wav": "empty",
    "not_audio.wav": "not_audio",
    "random_bytes.mp3": "not_audio",
    "image_renamed.wav": "not_audio",
    "video_no_audio.mp4": "no_audio_stream",
    "50ms.wav": "too_short",
}
LANGS: dict[Lang, str] = {"zh": "zh-CN,zh;q=0.9", "en": "en-US,en;q=0.9"}

CHINESE = re.compile(r"[\u4e00-\u9fff]")
PATH = re.compile(r"/[\w.~-]*[A-Za-z_][\w.~-]*")  # "/tmp/x", "/work": a slash and a name ("3/4" and " / " pass)
FFMPEG = re.compile(r"ffmpeg|pipe:|Invalid data|Error opening|moov atom|_pipe|matches no streams|Output file", re.I)


def assert_readable(text: str, lang: Lang) -> None:
    assert not PATH.search(text), f"a path in {text!r}"
    assert not FFMPEG.search(text), f"ffmpeg's words in {text!r}"
    if lang == "zh":
        assert CHINESE.search(text), f"not Chinese: {text!r}"
    else:
        assert not CHINESE.search(text), f"not English: {text!r}"


# ----------------------------------------------------------------------------------- catalogue
def _subclasses(cls: type) -> list[type]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _subclasses(sub)]


def test_every_error_kind_has_both_languages() -> None:
    for cls in _subclasses(ASRError):
        key = cls.message_key or cls.code
        assert key in errors.MESSAGES, cls
    for key, (zh, en) in errors.MESSAGES.items():
        assert CHINESE.search(zh) and not CHINESE.search(en), key
        assert sorted(re.findall(r"{\w+}", zh)) == sorted(re.findall(r"{\w+}", en)), key


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_engine_errors_keep_paths_and_ffmpeg_for_the_log(name: str) -> None:
    path = BAD_DIR / name
    with pytest.raises(InputError) as refused:
        load_audio(path, name=str(path))  # even a caller that passes a full path as the name
    error = refused.value
    assert error.code == REFUSED[name]
    for lang in LANGS:
        text = error.message(lang)
        assert text.startswith(name) and len(text) > len(name) + 4
        assert_readable(text, lang)
    assert str(error) == error.message("en")
    if name in ("not_audio.wav", "random_bytes.mp3"):
        assert error.detail  # ffmpeg's line, for the log


# ----------------------------------------------------------------------------------- web UI
@pytest.fixture(scope="module", params=list(LANGS))
def ui(request: pytest.FixtureRequest, server: Server) -> tuple[Client, Lang]:
    lang = request.param
    return Client(server.url, verbose=False, headers={"Accept-Language": LANGS[lang]}), lang


@pytest.mark.parametrize("endpoint", ["/transcribe", "/transcribe_recording"])
def test_single_and_recording_tabs(ui: tuple[Client, Lang], endpoint: str) -> None:
    client, lang = ui
    for name in sorted(REFUSED):
        args = [handle_file(str(BAD_DIR / name)), ""] + ([1] if endpoint == "/transcribe" else [])
        with pytest.raises(AppError) as refused:
            client.predict(*args, api_name=endpoint)
        text = str(refused.value)
        assert name in text, text
        assert_readable(text, lang)


def test_batch_tab(ui: tuple[Client, Lang], server: Server) -> None:
    client, lang = ui
    status, table, files = client.predict([handle_file(str(p)) for p in BAD_FILES], "", 1, api_name="/transcribe_batch")
    assert_readable(status, lang)
    assert str(server.log.parent) not in status
    failed = {row[0]: row[4] for row in table["data"] if row[4].startswith("❌")}
    assert set(REFUSED) <= set(failed), failed
    for _name, cell in failed.items():
        assert_readable(cell, lang)
    csv_file = next(f for f in files if f.endswith(".csv"))
    with open(csv_file, encoding="utf-8-sig") as handle:
        for record in csv.DictReader(handle):
            if record["status"] == "failed":
                assert_readable(record["error"], lang)
    log = server.log_text()
    assert "ffmpeg could not decode not_audio.wav" in log  # what the user is spared, the operator gets


@pytest.mark.parametrize("lang", list(LANGS))
def test_live_stream_refuses_bad_hotwords_in_the_callers_language(engine, lang: Lang) -> None:
    request = gr.Request(headers={"accept-language": LANGS[lang]})
    chunk = (16000, np.zeros(8000, dtype=np.int16))
    with pytest.raises(gr.Error) as refused:
        stream_chunk(engine, chunk, None, "x" * 30, request)  # a 30-letter hotword: over the limit
    assert_readable(refused.value.message, lang)


# ----------------------------------------------------------------------------------- API
@pytest.mark.parametrize("lang", [None, "zh"])
def test_api_bad_files(server: Server, lang: Lang | None) -> None:
    headers = {"Accept-Language": LANGS[lang]} if lang else {}
    for name, code in sorted(REFUSED.items()):
        with open(BAD_DIR / name, "rb") as audio:
            response = httpx.post(
                server.url + "/v1/audio/transcriptions", files={"file": (name, audio)}, headers=headers, timeout=60
            )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["message"].startswith(name)
        assert_readable(error["message"], lang or "en")
