"""What a hostile client tries against a live server (`python app.py`, tiny models, API_KEYS set), over real
sockets: messages over the size limit, a first message with no mode, leaving mid-work, secrets in URLs,
forged log lines in file names, hotwords and stream names. At the end the server's whole log is read: no key,
no forged line.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import DATA, UTTERANCE, Server, TinyModels, start_server, stop_server
from test_api_unit import metric

pytestmark = pytest.mark.server

KEY = "hostile-key-Q7v2"
FRAME_KB = 64
#: What a forged line would start with; the server's log must never have a line that begins so.
FORGED = "2026-12-01 22:00:00,000 ERROR fake:"
FORGERY = f"\n{FORGED} forged by the client\r\n"


@pytest.fixture(scope="module")
def server(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory):
    # Eight attackers at once: more than MAX_STREAMS=auto admits on a small CI box, and admission is not what
    # this module tests.
    srv = start_server(
        tiny_models,
        tmp_path_factory.mktemp("hostile"),
        API_KEYS=KEY,
        STREAM_MAX_FRAME_KB=str(FRAME_KB),
        MAX_STREAMS="16",
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def ws_url(server: Server, key: str | None = KEY) -> str:
    return server.url.replace("http://", "ws://") + (f"/?api_key={key}" if key else "/")


def error_and_close(ws) -> tuple[dict, int]:
    answer = json.loads(ws.recv(timeout=30))
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=30)
    return answer, ws.protocol.close_rcvd.code


def metrics(server: Server) -> str:
    return httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text


def pcm(path: Path = UTTERANCE) -> bytes:
    samples, _ = sf.read(path, dtype="int16")
    return samples.tobytes()


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("size", [FRAME_KB * 1024 + 1, 40 * 2**20])
def test_a_message_over_the_limit_is_the_json_error_whatever_its_size(server: Server, kind: str, size: int) -> None:
    """Over STREAM_MAX_FRAME_KB, from one byte to 40 MiB: the same JSON error and 1009, and the server never
    holds the message (its memory grows by far less than the message)."""
    process = psutil.Process(server.proc.pid)
    before = process.memory_info().rss
    with connect(ws_url(server), max_size=None, open_timeout=10) as ws:
        ws.send('{"mode": "2pass", "wav_format": "pcm", "is_speaking": true}')
        ws.send(b"\0" * size if kind == "binary" else '"' + "x" * (size - 2) + '"')
        answer, code = error_and_close(ws)
    assert answer["code"] == "frame_too_large" and answer["is_end"] is True, answer
    assert f"{FRAME_KB} KB (STREAM_MAX_FRAME_KB)" in answer["error"]
    assert code == 1009
    assert process.memory_info().rss - before < 16 * 2**20


def test_a_first_message_without_a_mode_is_2pass_as_in_funasrs_servers(server: Server) -> None:
    answers = []
    with connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"chunk_size": [5, 10, 5], "wav_name": "nomode", "is_speaking": True}))
        audio = pcm()
        for i in range(0, len(audio), 19200):
            ws.send(audio[i : i + 19200])
        ws.send(json.dumps({"is_speaking": False}))
        while not answers or not answers[-1].get("is_final"):
            answers.append(json.loads(ws.recv(timeout=60)))
    assert "error" not in answers[-1], answers[-1]
    assert {a["mode"] for a in answers} <= {"2pass-online", "2pass-offline"}
    assert answers[-1]["mode"] == "2pass-offline" and answers[-1]["text"]


def test_an_offline_client_that_leaves_stops_its_transcription(server: Server, tmp_path: Path) -> None:
    """180 s of audio sent whole, `is_speaking: false`, then the client leaves before the answer: the work stops
    and the stream counts as disconnected, not ok."""
    before = metrics(server)
    speech = np.frombuffer(pcm(DATA / "utterances" / "funasr_long.wav"), dtype="<i2")
    audio = np.resize(speech, 180 * 16000).tobytes()
    with connect(ws_url(server), open_timeout=10, max_size=None) as ws:
        ws.send(json.dumps({"mode": "offline", "wav_name": "leaver", "wav_format": "pcm", "is_speaking": True}))
        for i in range(0, len(audio), 60 * 1024):
            ws.send(audio[i : i + 60 * 1024])
        ws.send(json.dumps({"is_speaking": False}))
        time.sleep(0.3)  # the transcription has begun: the VAD alone takes longer than this on 180 s

    def streams(outcome: str, text: str) -> float:
        return metric(text, "paraformer_streams_total", outcome=outcome)

    deadline = time.time() + 30
    while streams("disconnected", after := metrics(server)) == streams("disconnected", before):
        assert time.time() < deadline, "the stream never ended"
        time.sleep(0.2)
    assert streams("disconnected", after) - streams("disconnected", before) == 1
    assert streams("ok", after) == streams("ok", before)
    assert "offline transcription of leaver stopped: the client went away" in server.log_text()


def test_forged_lines_and_keys_never_reach_the_log(server: Server) -> None:
    """Every bad input under a forging file name, hotwords and a stream name with line breaks, and the key in
    URLs (browsers send it so): the log then has neither the key nor a line the client wrote."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for path in sorted((DATA / "bad").iterdir()):
            answer = http.post(
                "/v1/audio/transcriptions",
                params={"api_key": KEY},
                headers=auth,
                files={"file": (path.name + FORGERY, path.read_bytes())},
                data={"hotwords": "达摩院" + FORGERY},
            )
            assert answer.status_code < 500, (path.name, answer.text)
        good = http.post(
            "/v1/audio/transcriptions",
            headers=auth,
            files={"file": ("good.wav" + FORGERY, UTTERANCE.read_bytes())},
        )
        assert good.status_code == 200, good.text
        assert http.get("/health", params={"api_key": KEY}).status_code == 200
        assert http.get("/gradio_api/file=" + quote(f"/etc/passwd{FORGERY}")).status_code == 404
    with connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"mode": "offline", "wav_name": "w" + FORGERY, "wav_format": "pcm", "is_speaking": True}))
        audio = pcm()
        for i in range(0, len(audio), 60 * 1024):
            ws.send(audio[i : i + 60 * 1024])
        ws.send(json.dumps({"is_speaking": False}))
        assert "error" not in json.loads(ws.recv(timeout=60))
    with connect(ws_url(server, quote("wrong-key" + FORGERY)), open_timeout=10) as ws:
        answer, _ = error_and_close(ws)
        assert answer["code"] == "invalid_api_key"
    time.sleep(0.5)  # the access lines of the last requests
    log = server.log_text()
    assert KEY not in log
    assert not [line for line in log.splitlines() if line.startswith(FORGED)]
    assert "\\n" + FORGED in log  # the names did reach the log, escaped
    assert re.search(r"WebSocket /\?api_key=\*\*\*", log), "uvicorn's access line for the stream"


def test_streams_from_many_threads_keep_the_server_serving(server: Server) -> None:
    """Oversized messages and leavers at once do not wedge the stream endpoint."""
    errors: list[BaseException] = []

    def oversize() -> None:
        try:
            with connect(ws_url(server), max_size=None, open_timeout=20) as ws:
                ws.send(b"\0" * (FRAME_KB * 1024 * 3))
                answer = json.loads(ws.recv(timeout=30))
                assert answer["code"] == "frame_too_large", answer
        except BaseException as exc:  # noqa: BLE001 (collected for the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=oversize) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"
