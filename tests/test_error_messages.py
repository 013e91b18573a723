"""What a user reads when something is wrong: every bad file of tests/data/bad, through each UI tab
(gradio_client, a Chinese and an English caller) and the API (English, and Chinese on request), gets a
message in that language, with no server path and nothing of ffmpeg's own output."""

from __future__ import annotations

import ast
import csv
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from asr.audio import load_audio
from asr.errors import ASRError, InputError
from conftest import DATA, ROOT, Server
from messages import MESSAGES, Lang, message
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


#: The project's packages: every module is imported, so every error kind defined anywhere is seen, and its source
#: is read for the catalogue keys it names.
PACKAGES = ("asr", "api", "jobs", "results", "webui", "config", "messages")


def _project_modules() -> list[str]:
    names = ["app"]
    for package in PACKAGES:
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}.")]
    return names


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_catalogue_entry_is_in_chinese_and_english(key: str) -> None:
    entry = MESSAGES[key]
    assert isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(t, str) and t.strip() for t in entry), entry
    zh, en = entry
    assert CHINESE.search(zh), f"{key}: the Chinese text has no Chinese: {zh!r}"
    assert not CHINESE.search(en) and re.search(r"[A-Za-z]", en), f"{key}: not English: {en!r}"
    fields = sorted(re.findall(r"{(\w+)}", zh))
    assert fields == sorted(re.findall(r"{(\w+)}", en)), f"{key}: the two texts take different fields"
    for lang in ("zh", "en"):
        assert "{" not in message(key, lang, **{f: "x" for f in fields})  # formats with its fields alone


def _keys_named_in_source(kinds: dict[str, type]) -> set[tuple[str, str]]:
    """(key, where) for each catalogue key the project's code names: `message("key", ...)` calls, and error kinds
    raised with `reason="..."` (the key `code.reason`)."""
    found = set()
    for name in _project_modules():
        spec = importlib.util.find_spec(name)
        path = Path(spec.origin) if spec and spec.origin else None
        if path is None or path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            first = node.args[0] if node.args else None
            plain_call = isinstance(node.func, ast.Name)  # messages.message(), not an error's .message(lang)
            if plain_call and callee == "message" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add((first.value, where))
            reason = next((k.value for k in node.keywords if k.arg == "reason"), None)
            if callee in kinds and isinstance(reason, ast.Constant) and isinstance(reason.value, str):
                cls = kinds[callee]
                found.add((f"{cls.message_key or cls.code}.{reason.value}", where))
    return found


def test_every_error_kind_and_key_the_code_uses_is_in_the_catalogue() -> None:
    for name in _project_modules():
        importlib.import_module(name)
    kinds = {cls.__name__: cls for cls in _subclasses(ASRError)}
    assert {"StorageFullError", "ClientGoneError", "ModelLoadError"} <= set(kinds)  # defined outside asr.errors
    missing = [cls for cls in kinds.values() if (cls.message_key or cls.code) not in MESSAGES]
    assert not missing, f"error kinds without a catalogue entry: {missing}"
    named = _keys_named_in_source(kinds)
    assert any(key == "model_not_ready.failed" for key, _ in named)  # the scan sees what it should
    assert not [(k, w) for k, w in named if k not in MESSAGES], "keys not in the catalogue"


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
