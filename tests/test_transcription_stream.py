"""`stream=true` on /v1/audio/transcriptions: OpenAI's server-sent events, one delta per speech segment in time
order (`asr.segments`, `api.transcription_stream`), each final, and a done text that is exactly the deltas joined."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from openai import OpenAI

from app import create_app
from asr.engine import Engine, Transcription
from asr.progress import segment_hook
from asr.segments import SpeechSegment, written_words
from conftest import DATA, UTTERANCE, Server, make_settings, service_settings
from test_api_unit import metric

ROUTE = "/v1/audio/transcriptions"


def same_result(a: Transcription, b: Transcription) -> bool:
    # Batched posteriors may differ from a lone call's in the last float bits (as in test_batching).
    return (a.text, a.sentences, a.duration) == (b.text, b.sentences, b.duration) and a.confidence == pytest.approx(
        b.confidence, rel=1e-5
    )


def vad_segments(vad_dir: Path, samples: np.ndarray) -> list[tuple[float, float]]:
    """The FSMN-VAD run on its own (an oracle for where the segments are)."""
    from funasr import AutoModel

    vad = AutoModel(model=str(vad_dir), device="cpu", disable_update=True, disable_pbar=True, disable_log=True)
    return [(s / 1000, e / 1000) for s, e in vad.generate(input=samples)[0]["value"]]


def words_of(text: str) -> str:
    """The recognised units of a text, without punctuation, spaces, <unk> or letter case."""
    return re.sub(r"[\s，。？！、；：,.?!;:]+", "", text.replace("<unk>", "")).casefold()


def sse_events(body: str) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


# ------------------------------------------------------------------------------------------ engine
def test_segments_come_in_time_order_each_right_after_its_decode(engine: Engine, tiny_models, long_wav: Path) -> None:
    plain = engine.transcribe(long_wav)
    calls: list[float] = []
    seen: list[tuple[int, SpeechSegment]] = []
    with segment_hook(calls.append):  # counts the model calls, independently of the reporting
        streamed = engine.transcribe(long_wav, on_segment=lambda s: seen.append((len(calls), s)))
    assert same_result(streamed, plain)
    segments = [s for _, s in seen]
    truth = vad_segments(tiny_models.vad, sf.read(long_wav, dtype="float32")[0])
    assert len(truth) > 5
    assert [t for s in segments for t in (s.start, s.end)] == pytest.approx([t for seg in truth for t in seg], abs=1e-6)
    assert [s.index for s in segments] == list(range(len(truth))) and {s.count for s in segments} == {len(truth)}
    # The k-th report comes right after the k-th model call, not once the file is done.
    assert [made for made, _ in seen] == list(range(1, len(truth) + 1))
    assert len(calls) == len(truth)
    # The reported words, in order, are the words of the final text; each segment is punctuated on its own.
    assert plain.words
    assert "".join(s.text for s in segments).replace(" ", "") == "".join(w.text for w in plain.words)
    assert all(words_of(s.written) == words_of(s.text) for s in segments)
    assert any(s.written != s.text for s in segments)


def test_a_streamed_and_a_plain_request_batched_together_get_their_alone_results(
    tiny_models, tmp_path, long_wav: Path, engine: Engine
) -> None:
    alone = engine.transcribe(long_wav)
    batching = Engine(make_settings(tiny_models, tmp_path, batch_max_requests=2).engine_config())
    batching.load()
    results: dict[str, Transcription] = {}
    reported: list[SpeechSegment] = []

    def run(kind: str) -> None:
        results[kind] = batching.transcribe(long_wav, on_segment=reported.append if kind == "streamed" else None)

    threads = [threading.Thread(target=run, args=(kind,)) for kind in ("streamed", "plain")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert batching.batcher.stats.largest_jobs == 2  # the two requests did share model calls
    assert same_result(results["streamed"], alone) and same_result(results["plain"], alone)
    assert [s.index for s in reported] == list(range(len(reported))) and reported


def test_written_words_join_chinese_and_space_latin() -> None:
    assert written_words("你 好 世 界") == "你好世界"
    assert written_words("打 开 wi fi 设 置 2 0 2 6") == "打开wi fi设置2 0 2 6"
    assert written_words("") == ""


# ------------------------------------------------------------------------------------------ live API
def test_openai_client_streams_deltas_then_the_non_streamed_text(server: Server, long_wav: Path) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="none")
    deltas, done = [], None
    with open(long_wav, "rb") as f:
        for event in client.audio.transcriptions.create(model="seaco-paraformer", file=f, stream=True):
            if event.type == "transcript.text.delta":
                assert done is None, "a delta after the done event"
                deltas.append(event)
            elif event.type == "transcript.text.done":
                done = event
    with open(long_wav, "rb") as f:
        plain = client.audio.transcriptions.create(
            model="seaco-paraformer", file=f, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert len(deltas) > 5
    starts = [d.start for d in deltas]
    assert starts == sorted(starts) and all(d.start < d.end <= 120.0 + 1e-3 for d in deltas)
    # A client that appends the deltas shows the final text exactly: punctuation, spaces, <unk>, letter case.
    assert done is not None and "".join(d.delta for d in deltas) == done.text
    assert any(p in done.text for p in "，。？、") and "<unk>" in done.text  # punctuated as it came
    # The same words as the non-streamed text; only the punctuation is decided per segment.
    assert words_of(done.text) == words_of(plain.text) == "".join(w.word for w in plain.words).casefold()


def test_stream_as_text_and_bad_requests(server: Server, tmp_path: Path) -> None:
    def post(path: Path = UTTERANCE, **data: str) -> httpx.Response:
        with open(path, "rb") as f:
            return httpx.post(server.url + ROUTE, files={"file": (path.name, f)}, data=data, timeout=60)

    streamed = post(stream="true", response_format="text")
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-accel-buffering"] == "no"
    events = sse_events(streamed.text)
    assert events[-1]["type"] == "transcript.text.done"
    assert events[-1]["text"] == "".join(e["delta"] for e in events[:-1])
    assert words_of(events[-1]["text"]) == words_of(post().json()["text"])
    assert events[-1]["usage"]["type"] == "duration"

    for data, param in [
        (dict(response_format="srt"), "stream"),
        (dict(diarize="true"), "stream"),
        (dict(stream="maybe"), "stream"),
    ]:
        answer = post(stream=data.pop("stream", "true"), **data)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    # Bad audio is an ordinary HTTP error, in the caller's language, before any event.
    empty = DATA / "bad" / "empty.wav"
    answer = post(empty, stream="true")
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] == "empty"
    # A job is followed by polling, not streamed.
    with open(UTTERANCE, "rb") as f:
        job = httpx.post(server.url + "/v1/jobs", files={"file": (UTTERANCE.name, f)}, data={"stream": "true"})
    assert job.status_code == 400 and job.json()["error"]["param"] == "stream"


def test_a_client_that_leaves_stops_the_transcription(server: Server, long_wav: Path, tmp_path: Path) -> None:
    audio = np.tile(sf.read(long_wav, dtype="float32")[0], 5)  # 10 minutes: seconds of work even for the tiny model
    path = tmp_path / "ten_minutes.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    with (
        open(path, "rb") as f,
        httpx.stream(
            "POST", server.url + ROUTE, files={"file": (path.name, f)}, data={"stream": "true"}, timeout=60
        ) as response,
    ):
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["type"] == "transcript.text.delta"
    deadline = time.time() + 30
    while "ten_minutes.wav stopped: the client went away" not in server.log_text() and time.time() < deadline:
        time.sleep(0.2)
    assert "ten_minutes.wav stopped: the client went away" in server.log_text()
    assert not re.search(r"transcribed ten_minutes\.wav", server.log_text())  # the file was not finished

    def queue_and_model() -> tuple[float, float]:
        metrics = httpx.get(server.url + "/metrics").text
        return metric(metrics, "paraformer_queue_depth"), metric(metrics, "paraformer_model_busy")

    # The log line comes when the stream's handler sees the client gone; the model gives the place back at its
    # next stop point, moments later.
    deadline = time.time() + 10
    while (state := queue_and_model()) != (0, 0) and time.time() < deadline:
        time.sleep(0.05)
    assert state == (0, 0), state


# ------------------------------------------------------------------------------------------ in-process
def test_a_failure_mid_stream_is_an_error_event_and_frees_the_place(engine: Engine, monkeypatch, tmp_path) -> None:
    def fails_after_one_segment(audio, *, hotwords=None, on_segment=None, **kwargs):
        on_segment(SpeechSegment(index=0, count=2, start=0.5, end=2.0, text="你好"))
        raise RuntimeError("the GPU fell off the bus")

    app = create_app(service_settings(engine, tmp_path), engine, load=False)
    try:
        monkeypatch.setattr(engine, "transcribe", fails_after_one_segment)
        with open(UTTERANCE, "rb") as f:
            answer = TestClient(app).post(ROUTE, files={"file": (UTTERANCE.name, f)}, data={"stream": "true"})
        events = sse_events(answer.text)
        assert [e["type"] for e in events] == ["transcript.text.delta", "error"]
        assert events[0] == {"type": "transcript.text.delta", "delta": "你好", "start": 0.5, "end": 2.0}
        assert events[1]["error"]["code"] == "internal_error" and "GPU" not in answer.text
        deadline = time.time() + 10  # the place is given back as the stream's generator closes
        while app.state.api.admission.api_in_flight and time.time() < deadline:
            time.sleep(0.02)
        assert app.state.api.admission.api_in_flight == 0
    finally:
        engine.remove_observer(app.state.api.metrics.observe_transcription)
