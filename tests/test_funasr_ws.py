"""FunASR's WebSocket protocol (api.funasr_ws) in-process: every mode, several utterances per connection, and
every bad message, on a TestClient over create_app() with the tiny models."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app import create_app
from asr.engine import Engine
from asr.errors import ASRError
from conftest import DATA, UTTERANCE, make_settings
from messages import message
from test_api_unit import metric

KEY = "stream-key"
SHORT = DATA / "utterances" / "firered_BAC009S0764W0121.wav"  # 2 s


@pytest.fixture(scope="module")
def app(engine: Engine, tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = make_settings(
        tiny_models,
        tmp_path_factory.mktemp("ws"),
        api_keys=KEY,
        max_streams=2,
        stream_idle_timeout_s=1.5,
        stream_max_frame_kb=64,
    )
    application = create_app(settings, engine, load=False)
    try:
        yield application
    finally:
        engine.remove_observer(application.state.api.metrics.observe_transcription)


@pytest.fixture
def client(app: Any) -> TestClient:
    return TestClient(app)


def connect(client: TestClient, key: str | None = KEY, header: bool = False):
    path = f"/?api_key={key}" if key and not header else "/"
    headers = {"Authorization": f"Bearer {key}"} if key and header else {}
    return client.websocket_connect(path, subprotocols=["binary"], headers=headers)


def pcm(path=UTTERANCE) -> tuple[bytes, int]:
    samples, rate = sf.read(path, dtype="int16")
    return samples.tobytes(), rate


def send_utterance(ws: Any, config: dict, audio: bytes, frame: int = 19200) -> list[dict]:
    """Send one utterance as FunASR's client does; returns the answers up to the one with is_final."""
    ws.send_text(json.dumps({"is_speaking": True, **config}, ensure_ascii=False))
    for i in range(0, len(audio), frame):
        ws.send_bytes(audio[i : i + frame])
    ws.send_text(json.dumps({"is_speaking": False, "is_end": True}))
    answers = []
    while not answers or not answers[-1].get("is_final"):
        answers.append(ws.receive_json())
        assert "error" not in answers[-1], answers[-1]
    return answers


def expect_error(ws: Any, code: str, close_code: int) -> dict:
    answer = ws.receive_json()
    assert answer["code"] == code and answer["error"] and answer["is_end"] and answer["is_final"] is False, answer
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    assert closed.value.code == close_code
    return answer


# ------------------------------------------------------------------------------------ modes
def test_the_ui_and_the_stream_share_the_port(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    with connect(client) as ws:
        audio, rate = pcm(SHORT)
        answers = send_utterance(ws, {"mode": "offline", "wav_name": "short", "audio_fs": rate}, audio)
    assert answers[-1]["mode"] == "offline" and answers[-1]["wav_name"] == "short"


def test_offline_text_is_engine_transcribe_of_the_file(client: TestClient, engine: Engine, bare) -> None:
    audio, rate = pcm()
    hotwords = json.dumps({"达摩院": 20, "语音识别": 30}, ensure_ascii=False)
    with connect(client, header=True) as ws:
        answers = send_utterance(
            ws,
            {
                "mode": "offline",
                "wav_name": "demo",
                "wav_format": "pcm",
                "audio_fs": rate,
                "hotwords": hotwords,
                "itn": True,
            },
            audio,
        )
    assert len(answers) == 1
    answer = answers[0]
    expected = engine.transcribe(UTTERANCE, hotwords=["达摩院", "语音识别"])
    assert answer["text"] == expected.text != ""
    assert answer["is_final"] is True and answer["is_end"] is True
    # The times are FunASR's own: its pipeline (VAD, SeACo, punctuation) run bare on the same file gives each word's
    # [start, end] in ms (`timestamp`) and its sentences (`sentence_info`), which FunASR's C++ runtime sends as
    # `stamp_sents`: text_seg its words, punc the closing mark.
    funasr = bare.generate(
        input=sf.read(UTTERANCE, dtype="float32")[0], hotword="达摩院 语音识别", sentence_timestamp=True
    )
    reference = funasr[0]
    assert json.loads(answer["timestamp"]) == reference["timestamp"] != []
    sents, info = answer["stamp_sents"], reference["sentence_info"]
    assert [[s["start"], s["end"]] for s in sents] == [[s["start"], s["end"]] for s in info]
    assert [s["ts_list"] for s in sents] == [s["timestamp"] for s in info]
    assert [s["text_seg"].replace(" ", "") + s["punc"] for s in sents] == [s["text"].replace(" ", "") for s in info]


@pytest.fixture(scope="module")
def bare(tiny_models, engine: Engine):
    """FunASR's AutoModel on the engine's folders, without the engine (tests/test_engine.py's)."""
    from test_engine import bare_automodel

    return bare_automodel(tiny_models, engine._model.kwargs["ncpu"])


def test_offline_takes_any_container_and_8k_pcm(client: TestClient, engine: Engine) -> None:
    mp3 = (DATA / "formats" / "clip.mp3").read_bytes()
    samples_8k, rate_8k = sf.read(DATA / "formats" / "clip_8k.wav", dtype="int16")
    with connect(client) as ws:
        from_mp3 = send_utterance(ws, {"mode": "offline", "wav_name": "mp3", "wav_format": "mp3"}, mp3)[-1]
        from_8k = send_utterance(
            ws, {"mode": "offline", "wav_name": "8k", "wav_format": "pcm", "audio_fs": rate_8k}, samples_8k.tobytes()
        )[-1]
    assert from_mp3["text"] == engine.transcribe(DATA / "formats" / "clip.mp3").text
    assert rate_8k == 8000 and from_8k["text"] == engine.transcribe(samples_8k, sample_rate=8000).text


def test_several_utterances_and_modes_on_one_connection(client: TestClient, engine: Engine) -> None:
    audio, rate = pcm(SHORT)
    with connect(client) as ws:
        online = send_utterance(
            ws,
            {"mode": "online", "wav_name": "a", "chunk_size": [5, 10, 5], "chunk_interval": 10, "audio_fs": rate},
            audio,
            frame=1920,
        )
        two_pass = send_utterance(
            ws,
            {
                "mode": "2pass",
                "wav_name": "b",
                "chunk_size": "5,10,5",
                "encoder_chunk_look_back": 4,
                "decoder_chunk_look_back": 0,
                "hotwords": "达摩院",
            },
            audio,
            frame=1920,
        )
        again = send_utterance(ws, {"mode": "2pass", "wav_name": "c"}, audio, frame=1920)  # settings carry over
        offline = send_utterance(ws, {"mode": "offline", "wav_name": "d"}, audio)
    assert {a["mode"] for a in online} == {"online"} and [a["is_final"] for a in online].count(True) == 1
    assert "".join(a["text"] for a in online)
    assert {a["mode"] for a in two_pass} <= {"2pass-online", "2pass-offline"}
    assert any(a["mode"] == "2pass-online" and a["text"] for a in two_pass)
    finals = [a for a in two_pass if a["mode"] == "2pass-offline"]
    assert finals and finals[-1]["is_final"] and all(a["wav_name"] == "b" for a in two_pass)
    # The 2pass final text is the engine's on the segment the VAD cut (same hotwords).
    segment = [s for s in finals if s["text"]][0]
    begin, end = segment["stamp_sents"][0]["start"], segment["stamp_sents"][-1]["end"]
    assert 0 <= begin < end <= segment["end_ms"] <= len(audio) / 2 / rate * 1000 + 1
    partial_ends = [a["end_ms"] for a in two_pass if a["mode"] == "2pass-online"]
    assert partial_ends == sorted(partial_ends) and all(e % 600 == 0 for e in partial_ends)
    assert [(a["mode"], a["text"]) for a in again] == [(a["mode"], a["text"]) for a in two_pass]
    assert offline[-1]["text"] == engine.transcribe(SHORT, hotwords=["达摩院"]).text  # hotwords carried over


def test_2pass_sentence_times_count_from_the_utterance_start(client: TestClient) -> None:
    clip, rate = sf.read(SHORT, dtype="int16")
    pause = np.zeros(int(2.5 * rate), dtype=np.int16)
    audio = np.concatenate([clip, pause, clip, pause]).tobytes()
    with connect(client) as ws:
        answers = send_utterance(ws, {"mode": "2pass", "wav_name": "two"}, audio, frame=6400)
    finals = [a for a in answers if a["mode"] == "2pass-offline" and a["text"]]
    assert len(finals) == 2, finals
    first, second = finals
    assert second["stamp_sents"][0]["start"] >= first["end_ms"] >= first["stamp_sents"][-1]["end"]
    assert second["stamp_sents"][0]["start"] >= (clip.size + pause.size) / rate * 1000 - 500
    assert second["stamp_sents"][-1]["end"] <= second["end_ms"]


#: The cumulative counters a stream moves, by name: the module's app is shared, so tests compare differences.
COUNTERS = {
    "ok": ("paraformer_streams_total", {"outcome": "ok"}),
    "disconnected": ("paraformer_streams_total", {"outcome": "disconnected"}),
    "audio_2pass": ("paraformer_stream_audio_seconds_total", {"mode": "2pass"}),
    "partials": ("paraformer_stream_partial_latency_seconds_count", {}),
    "finals": ("paraformer_stream_final_latency_seconds_count", {}),
}


def counters(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return {key: metric(text, name, **labels) for key, (name, labels) in COUNTERS.items()}


def counted_since(client: TestClient, before: dict[str, float], want: dict[str, float]) -> dict[str, float]:
    """How far the counters in `want` moved since `before`, once they moved that far (within 5 s): a stream's
    outcome is counted when the server has seen the close, a latency just after its answer went out."""
    deadline = time.monotonic() + 5
    while True:
        now = counters(client)
        moved = {key: round(now[key] - before[key], 3) for key in want}
        if moved == want or time.monotonic() > deadline:
            return moved
        time.sleep(0.05)


def test_metrics_and_health_count_streams(client: TestClient) -> None:
    audio, rate = pcm(SHORT)
    before = counters(client)
    with connect(client) as ws:
        answers = send_utterance(ws, {"mode": "2pass", "wav_name": "m"}, audio, frame=1920)
    want = {
        "ok": 1,
        "disconnected": 0,
        "audio_2pass": round(len(audio) / 2 / rate, 3),
        "partials": len([a for a in answers if a["mode"] == "2pass-online" and a["text"]]),
        "finals": len([a for a in answers if a["mode"] == "2pass-offline"]),
    }
    assert want["partials"] >= 1 and want["finals"] >= 1, answers
    assert counted_since(client, before, want) == want
    text = client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert metric(text, "paraformer_streams_open") == 0
    assert metric(text, "paraformer_streams_max") == 2
    health = client.get("/health").json()
    assert health["streams"]["open"] == 0 and health["streams"]["max"] == 2


# ------------------------------------------------------------------------------------ faults
BAD_FIRST_MESSAGES = [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_json"),
    ('{"is_speaking": false}', "missing_mode"),
    ('{"mode": "3pass"}', "bad_mode"),
    ('{"mode": "2pass", "audio_fs": 96000}', "bad_audio_fs"),
    ('{"mode": "online", "audio_fs": "fast"}', "bad_audio_fs"),
    ('{"mode": "2pass", "wav_format": "mp3"}', "bad_wav_format"),
    ('{"mode": "online", "chunk_size": "a,b"}', "bad_chunk_size"),
    ('{"mode": "online", "chunk_size": [5, 0, 5]}', "bad_chunk_size"),
    # The hostile probe's: each number of the first message is bounded (one such message once took 14 GB)
    ('{"mode": "online", "chunk_size": [0, 10, 20000], "wav_format": "pcm", "is_speaking": true}', "bad_chunk_size"),
    ('{"mode": "online", "chunk_size": [5, 10, 100000]}', "bad_chunk_size"),
    ('{"mode": "online", "chunk_size": [21, 10, 5]}', "bad_chunk_size"),
    ('{"mode": "online", "chunk_size": [5, 51, 5]}', "bad_chunk_size"),
    ('{"mode": "online", "chunk_size": [-1, 10, 5]}', "bad_chunk_size"),
    ('{"mode": "online", "chunk_size": [5, 1e400, 5]}', "bad_json"),
    ('{"mode": "online", "audio_fs": 1e400}', "bad_json"),
    ('{"mode": "online", "audio_fs": Infinity}', "bad_json"),
    ('{"mode": "online", "audio_fs": NaN}', "bad_json"),
    ('{"mode": "online", "audio_fs": 1e300}', "bad_audio_fs"),
    ('{"mode": "online", "encoder_chunk_look_back": 17}', "bad_encoder_chunk_look_back"),
    ('{"mode": "online", "decoder_chunk_look_back": 99999999}', "bad_decoder_chunk_look_back"),
    ('{"mode": "online", "chunk_interval": 0}', "bad_chunk_interval"),
    ('{"mode": "online", "chunk_interval": 100000}', "bad_chunk_interval"),
    ('{"mode": "offline", "itn": "yes"}', "bad_itn"),
    ("[" * 60000, "bad_json"),  # under the test server's 64 KB frame limit, so the parser sees it
    ('{"mode": "offline", "hotwords": "{not json"}', "bad_hotwords"),
    ('{"mode": "offline", "hotwords": 7}', "bad_hotwords"),
    ('{"mode": "offline", "is_speaking": "no"}', "bad_message"),
]


@pytest.mark.parametrize(
    ("first", "code"), BAD_FIRST_MESSAGES, ids=[f"{c}-{i}" for i, (_, c) in enumerate(BAD_FIRST_MESSAGES)]
)
def test_a_bad_first_message_gets_an_error_and_a_close(client: TestClient, first: str, code: str) -> None:
    with connect(client) as ws:
        ws.send_text(first)
        expect_error(ws, code, 1008)


def test_other_faults_close_with_their_own_code(client: TestClient) -> None:
    with connect(client) as ws:  # audio before any configuration
        ws.send_bytes(b"\0" * 1920)
        expect_error(ws, "missing_mode", 1008)
    with connect(client) as ws:  # too many hotwords (MAX_HOTWORDS=100)
        words = {f"词{i}": 10 for i in range(150)}
        ws.send_text(json.dumps({"mode": "offline", "hotwords": json.dumps(words, ensure_ascii=False)}))
        expect_error(ws, "bad_hotwords", 1008)
    with connect(client) as ws:  # a frame over STREAM_MAX_FRAME_KB=64
        ws.send_text('{"mode": "2pass"}')
        ws.send_bytes(b"\0" * 100 * 1024)
        expect_error(ws, "frame_too_large", 1009)
    with connect(client) as ws:  # mode changed mid-utterance
        ws.send_text('{"mode": "2pass"}')
        ws.send_text('{"mode": "offline"}')
        expect_error(ws, "bad_message", 1008)
    with connect(client) as ws:  # idle (STREAM_IDLE_TIMEOUT_S=1.5)
        ws.send_text('{"mode": "2pass"}')
        expect_error(ws, "idle_timeout", 1001)


def test_keys_are_required_when_set(client: TestClient) -> None:
    with connect(client, key=None) as ws:
        assert "Bearer" in expect_error(ws, "missing_api_key", 1008)["error"]
    with connect(client, key="wrong") as ws:
        expect_error(ws, "invalid_api_key", 1008)
    with connect(client, key=KEY, header=True) as ws:
        audio, rate = pcm(SHORT)
        assert send_utterance(ws, {"mode": "offline"}, audio)[-1]["is_final"]


def test_streams_beyond_max_streams_are_refused(client: TestClient, app: Any) -> None:
    with connect(client) as first, connect(client) as second:
        first.send_text('{"mode": "offline"}')
        second.send_text('{"mode": "offline"}')
        with connect(client) as third:
            assert "MAX_STREAMS" in expect_error(third, "too_many_streams", 1013)["error"]
        assert app.state.api.streams.open == 2
    with connect(client) as again:  # a place came free
        audio, rate = pcm(SHORT)
        assert send_utterance(again, {"mode": "offline"}, audio)[-1]["is_final"]
    assert app.state.api.streams.open == 0


def test_a_client_that_vanishes_mid_utterance_frees_its_stream(client: TestClient, app: Any) -> None:
    audio, _ = pcm(SHORT)
    before = counters(client)
    with connect(client) as ws:
        ws.send_text('{"mode": "2pass"}')
        ws.send_bytes(audio[:19200])
        ws.close()
        # Leaving the block cancels the app's task (TestClient): first let the server see the close.
        deadline = time.monotonic() + 10
        while app.state.api.streams.open and time.monotonic() < deadline:
            time.sleep(0.02)
    assert app.state.api.streams.open == 0
    assert counted_since(client, before, {"disconnected": 1, "ok": 0}) == {"disconnected": 1, "ok": 0}
    with connect(client) as ws:  # the service still serves the next stream
        send_utterance(ws, {"mode": "offline"}, audio)
    assert app.state.api.streams.open == 0


def test_pcm_frames_may_split_a_sample(client: TestClient) -> None:
    audio, rate = pcm(SHORT)
    with connect(client) as ws:
        whole = send_utterance(ws, {"mode": "online"}, audio, frame=1920)
        odd = send_utterance(ws, {"mode": "online"}, audio, frame=1921)
    assert "".join(a["text"] for a in odd) == "".join(a["text"] for a in whole)


def test_engine_not_ready_refuses_streams(tiny_models, tmp_path) -> None:
    settings = make_settings(tiny_models, tmp_path)
    engine = Engine(settings.engine_config())  # never loaded: still loading, as far as a client can tell
    application = create_app(settings, engine, load=False)
    with TestClient(application).websocket_connect("/") as ws:
        answer = expect_error(ws, "model_not_ready", 1013)
    assert answer["error"] == "the model is still loading; try again shortly"
    with TestClient(application).websocket_connect("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"}) as ws:
        answer = expect_error(ws, "model_not_ready", 1013)
    assert answer["error"] == "模型仍在加载，请稍后再试"


def test_a_failed_load_is_the_catalogues_sentence_not_the_servers_folders(tiny_models, tmp_path) -> None:
    missing = tmp_path / "secret-models" / "seaco"
    settings = make_settings(tiny_models, tmp_path, model_dir=missing)
    engine = Engine(settings.engine_config())
    with pytest.raises(ASRError):
        engine.load()
    assert engine.state == "error" and "secret-models" in (engine.load_error or "")  # the operator's text
    application = create_app(settings, engine, load=False)
    for headers, expected in (
        ({}, message("model_not_ready.failed", "en")),
        ({"Accept-Language": "zh"}, message("model_not_ready.failed", "zh")),
    ):
        with TestClient(application).websocket_connect("/", headers=headers) as ws:
            answer = expect_error(ws, "model_not_ready", 1013)
        assert answer["error"] == expected, answer


def test_max_streams_zero_turns_the_endpoint_off(tiny_models, tmp_path, engine: Engine) -> None:
    settings = make_settings(tiny_models, tmp_path, max_streams=0)
    application = create_app(settings, engine, load=False)
    try:
        with pytest.raises(WebSocketDisconnect), TestClient(application).websocket_connect("/") as ws:
            ws.receive_text()
    finally:
        engine.remove_observer(application.state.api.metrics.observe_transcription)


def test_max_streams_auto_follows_the_cores_and_says_so(tiny_models, tmp_path, engine: Engine) -> None:
    from asr.stream_capacity import GPU_STREAMS, STREAMS_PER_CORE, default_max_streams

    settings = make_settings(tiny_models, tmp_path, max_streams="auto", ncpu=3)
    application = create_app(settings, engine, load=False)
    try:
        streams = TestClient(application).get("/health").json()["streams"]
    finally:
        engine.remove_observer(application.state.api.metrics.observe_transcription)
    assert streams["max"] == 3 * STREAMS_PER_CORE and streams["max_from"] == "auto", streams
    assert streams["streams_per_core"] == STREAMS_PER_CORE
    # NCPU unset: the machine's cores; a GPU has its own figure; a set number is taken as it is.
    assert default_max_streams("cpu") == STREAMS_PER_CORE * (os.cpu_count() or 1)
    assert default_max_streams("cuda:0", ncpu=3) == GPU_STREAMS
    explicit = make_settings(tiny_models, tmp_path / "set", max_streams="5")
    application = create_app(explicit, engine, load=False)
    try:
        streams = TestClient(application).get("/health").json()["streams"]
    finally:
        engine.remove_observer(application.state.api.metrics.observe_transcription)
    assert (streams["max"], streams["max_from"]) == (5, "MAX_STREAMS")


def test_silence_gives_one_empty_final(client: TestClient) -> None:
    silence = np.zeros(16000, dtype=np.int16).tobytes()
    with connect(client) as ws:
        answers = send_utterance(ws, {"mode": "2pass"}, silence, frame=1920)
        offline = send_utterance(ws, {"mode": "offline"}, b"")
    assert answers[-1]["mode"] == "2pass-offline" and answers[-1]["text"] == "" and answers[-1]["is_end"]
    assert offline == [{"mode": "offline", "wav_name": "microphone", "text": "", "is_final": True, "is_end": True}]


def test_a_sentence_waiting_for_the_engine_holds_up_no_partials(client: TestClient, monkeypatch) -> None:
    """2pass finals go through the engine on a task of their own: while one waits (here 2 s), the partials after it
    keep coming, and the finals still arrive in order with the utterance's last answer last."""
    import time as clock

    from asr.streaming import StreamSession

    final = StreamSession.final

    def slow_final(self, closed):
        clock.sleep(2.0)
        return final(self, closed)

    monkeypatch.setattr(StreamSession, "final", slow_final)
    clip, rate = sf.read(SHORT, dtype="int16")
    pause = np.zeros(int(2.5 * rate), dtype=np.int16)
    audio = np.concatenate([clip, pause, clip, pause, clip]).tobytes()
    received: list[tuple[float, dict]] = []
    with connect(client) as ws:
        ws.send_text(json.dumps({"is_speaking": True, "mode": "2pass", "wav_name": "slow"}))
        for i in range(0, len(audio), 6400):
            ws.send_bytes(audio[i : i + 6400])
            clock.sleep(0.05)
        ws.send_text(json.dumps({"is_speaking": False}))
        while not received or not received[-1][1].get("is_final"):
            received.append((clock.perf_counter(), ws.receive_json()))
    answers = [a for _, a in received]
    finals = [a for a in answers if a["mode"] == "2pass-offline"]
    assert len([f for f in finals if f["text"]]) == 3 and finals[-1] is answers[-1]
    assert [f["end_ms"] for f in finals] == sorted(f["end_ms"] for f in finals)
    # Partials of the audio after the first sentence came while that sentence's final was still being made.
    first_final = answers.index(next(f for f in finals if f["text"]))
    assert [a for a in answers[:first_final] if a["mode"] == "2pass-online" and a["end_ms"] > finals[0]["end_ms"]]
