"""SenseVoice over the OpenAI-compatible API on a live server: the `openai` client chooses the model per request,
`/v1/models` lists both, verbose_json carries language, emotion and events, and hotwords to SenseVoice are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf
from openai import OpenAI

from conftest import UTTERANCE, Server

ROUTE = "/v1/audio/transcriptions"


def post(server: Server, headers: dict | None = None, **data: str) -> httpx.Response:
    with open(UTTERANCE, "rb") as f:
        return httpx.post(
            server.url + ROUTE, files={"file": (UTTERANCE.name, f)}, data=data, headers=headers or {}, timeout=120
        )


def test_openai_client_chooses_the_model_per_request(sv_server: Server) -> None:
    client = OpenAI(base_url=sv_server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["seaco-paraformer", "sensevoice"]
    with open(UTTERANCE, "rb") as audio:
        sv = client.audio.transcriptions.create(
            model="sensevoice",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["segment"],
            language="yue",
        )
    with open(UTTERANCE, "rb") as audio:
        seaco = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert sv.text and seaco.text and sv.text != seaco.text  # two different models answered
    assert sv.model_extra["model"] == "sensevoice" and seaco.model_extra["model"] == "seaco-paraformer"
    duration = sf.info(UTTERANCE).duration
    for segment in sv.segments:
        extra = segment.model_extra
        assert set(extra) >= {"language", "emotion", "events"} and isinstance(extra["events"], list)
        assert extra["language"] in (None, "zh", "en", "yue", "ja", "ko", "nospeech")
        assert 0 <= segment.start <= segment.end <= duration + 0.01 and "<|" not in segment.text
    assert "<|" not in sv.text
    assert all("emotion" not in s.model_extra for s in seaco.segments)  # SeACo has no such fields
    with open(UTTERANCE, "rb") as audio:
        srt = client.audio.transcriptions.create(model="sensevoice", file=audio, response_format="srt")
    assert "<|" not in srt and srt.strip()


def test_hotwords_to_sensevoice_are_refused_in_the_callers_language(sv_server: Server) -> None:
    client = OpenAI(base_url=sv_server.url + "/v1", api_key="unused", max_retries=0)
    with open(UTTERANCE, "rb") as audio, pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model="sensevoice", file=audio, extra_body={"hotwords": "达摩院"})
    error = refused.value.body
    assert error["code"] == "hotwords_unsupported" and error["param"] == "hotwords"
    zh = post(sv_server, {"Accept-Language": "zh-CN"}, model="sensevoice", hotwords="达摩院")
    assert zh.status_code == 400 and "热词" in zh.json()["error"]["message"]
    # OpenAI's prompt is read as hotwords for SeACo only: SenseVoice ignores it rather than refuse it.
    assert post(sv_server, model="sensevoice", prompt="达摩院").status_code == 200


def test_unknown_model_and_language_are_clear_400s(sv_server: Server) -> None:
    unknown = post(sv_server, model="gpt-4o-transcribe")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_model" and unknown.json()["error"]["param"] == "model"
    assert (
        "seaco-paraformer" in unknown.json()["error"]["message"] or "paraformer" in unknown.json()["error"]["message"]
    )
    french = post(sv_server, model="sensevoice", language="fr")
    assert french.status_code == 400 and french.json()["error"]["code"] == "unsupported_language"
    english_to_seaco = post(sv_server, model="seaco-paraformer", language="en")
    assert english_to_seaco.status_code == 400 and "sensevoice" in english_to_seaco.json()["error"]["message"]


def test_a_server_without_sensevoice_lists_one_model_and_refuses_it(server: Server) -> None:
    assert [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]] == ["seaco-paraformer"]
    refused = post(server, model="sensevoice")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_model"


#: FunASR's reference client has no `svs_lang` flag (FunASR's runtime takes the field from its HTML5 and C++
#: clients); this launcher runs the client unchanged and adds the field to its first message, the one JSON
#: object with `mode` and `chunk_size`.
SVS_LAUNCHER = """
import json, runpy, sys
_dumps = json.dumps
def dumps(obj, *args, **kwargs):
    if isinstance(obj, dict) and "mode" in obj and "chunk_size" in obj:
        obj = {**obj, "svs_lang": LANG}
    return _dumps(obj, *args, **kwargs)
LANG = sys.argv.pop(1)
json.dumps = dumps
client = sys.argv.pop(1)
sys.argv[0] = client
runpy.run_path(client, run_name="__main__")
"""


def reference_events(server: Server, tmp_path: Path, mode: str, svs_lang: str | None) -> list[dict]:
    """The answers FunASR's reference client logged (its events.jsonl) for UTTERANCE, with `svs_lang` or without."""
    from test_funasr_ws_live import reference_client

    client = reference_client(tmp_path)
    launcher = tmp_path / "svs_client.py"
    launcher.write_text(SVS_LAUNCHER, encoding="utf-8")
    host, port = server.url.removeprefix("http://").split(":")
    logs = tmp_path / f"logs-{mode}-{svs_lang}"
    command = [sys.executable, *([str(launcher), svs_lang] if svs_lang else []), str(client)]
    proc = subprocess.run(
        [*command, "--host", host, "--port", port, "--ssl", "0", "--mode", mode, "--audio_in", str(UTTERANCE)]
        + ["--send_without_sleep", "--log_dir", str(logs)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "connection closed normally" in proc.stdout, proc.stdout + proc.stderr
    return [json.loads(line) for path in logs.rglob("events.jsonl") for line in path.read_text().splitlines()]


def test_funasrs_reference_client_gets_sensevoice_finals_with_svs_lang(sv_server: Server, tmp_path: Path) -> None:
    def api(model: str) -> str:
        return post(sv_server, model=model).json()["text"]

    # offline: the whole file, the same text as the API's SenseVoice answer (same engine, VAD and written form)
    offline = reference_events(sv_server, tmp_path, "offline", "auto")
    assert [e["text"] for e in offline if e["text"]] == [api("sensevoice")] != [api("seaco-paraformer")]
    # 2pass: partials from the streaming Paraformer as always, finals from SenseVoice, never its raw tags
    with_svs = reference_events(sv_server, tmp_path, "2pass", "auto")
    without = reference_events(sv_server, tmp_path, "2pass", None)
    finals = [e["text"] for e in with_svs if e["mode"] == "2pass-offline" and e["text"]]
    seaco_finals = [e["text"] for e in without if e["mode"] == "2pass-offline" and e["text"]]
    assert finals and seaco_finals and finals != seaco_finals
    assert any(e["mode"] == "2pass-online" for e in with_svs)
    assert all("<|" not in e["text"] for e in with_svs)
