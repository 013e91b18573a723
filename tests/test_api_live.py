"""The API against live servers (`python app.py` with the tiny models): curl as in docs/api.md, the official
`openai` client, /metrics around a burst, subtitles on a long file, and a secured server for 401/413/503."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from openai import OpenAI

from conftest import DATA, ROOT, UTTERANCE, Server, TinyModels, start_server, stop_server, wait_for_health
from test_api_unit import metric

ROUTE = "/v1/audio/transcriptions"
KEY = "key1"  # docs/api.md's example key
SECURED_ENV = dict(API_KEYS=f"{KEY},second-key-Zq9", WEBUI_AUTH="admin:s3cret", QUEUE_MAX_SIZE="1", MAX_UPLOAD_MB="8")


@pytest.fixture(scope="module")
def secured(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API keys, a UI login, an admission limit of 1 and an 8 MB upload limit."""
    srv = start_server(tiny_models, tmp_path_factory.mktemp("secured"), **SECURED_ENV)
    try:
        yield srv
    finally:
        stop_server(srv)


def transcribe(url: str, path: Path = UTTERANCE, key: str | None = None, **data: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with open(path, "rb") as f:
        return httpx.post(url + ROUTE, files={"file": (path.name, f)}, data=data, headers=headers, timeout=120)


def parse_srt(srt: str) -> list[tuple[float, float, str]]:
    def seconds(stamp: str) -> float:
        h, m, rest = stamp.split(":")
        s, ms = rest.split(",")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    cues = []
    for block in srt.strip().split("\n\n"):
        number, times, text = block.split("\n", 2)
        start, end = times.split(" --> ")
        assert int(number) == len(cues) + 1
        cues.append((seconds(start), seconds(end), text))
    return cues


# ------------------------------------------------------------------------------------ open server
def test_openai_client_transcribes_mandarin_with_hotwords_to_srt(server: Server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["seaco-paraformer"]
    with open(UTTERANCE, "rb") as audio:
        srt = client.audio.transcriptions.create(
            model="seaco-paraformer", file=audio, response_format="srt", extra_body={"hotwords": "达摩院,语音识别"}
        )
    print(srt)  # shown with pytest -s; the tiny random model's text is gibberish
    cues = parse_srt(srt)
    duration = sf.info(UTTERANCE).duration
    assert cues and all(0 <= start <= end <= duration + 0.01 and text.strip() for start, end, text in cues)

    with open(UTTERANCE, "rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["segment"],
            language="zh",
            extra_body={"hotwords": "达摩院,语音识别"},
        )
    assert verbose.duration == pytest.approx(duration, abs=0.01) and verbose.text
    assert [(s.start, s.end) for s in verbose.segments] == [(c[0], c[1]) for c in cues]
    assert 0.0 <= verbose.model_extra["confidence"] <= 1.0
    with open(UTTERANCE, "rb") as audio:
        text = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="text", prompt="达摩院 语音识别"
        )  # the prompt's words as hotwords
    assert text.strip() == verbose.text


def test_openai_client_gets_words_and_speakers_on_a_long_file(server: Server, long_wav: Path) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with open(long_wav, "rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            extra_body={"diarize": True},
        )
    duration = sf.info(long_wav).duration
    assert verbose.segments and verbose.words and verbose.model_extra["speakers"] >= 1
    assert all(isinstance(s.model_extra["speaker"], int) and s.model_extra["speaker"] >= 1 for s in verbose.segments)
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts) and all(0 <= w.start <= w.end <= duration for w in verbose.words)
    nested = [w for s in verbose.segments for w in s.model_extra["words"]]
    assert [(w["word"], w["start"], w["end"]) for w in nested] == [(w.word, w.start, w.end) for w in verbose.words]
    for segment in verbose.segments:
        assert all(segment.start <= w["start"] <= w["end"] <= segment.end for w in segment.model_extra["words"])
    # funasr-server's spelling and a speaker count; words only when only words are asked for (as with OpenAI).
    response = transcribe(
        server.url,
        long_wav,
        spk="true",
        num_speakers="2",
        response_format="verbose_json",
        **{"timestamp_granularities[]": "word"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "segments" not in body and body["words"] and body["speakers"] == 2
    srt = transcribe(server.url, UTTERANCE, diarize="true", response_format="srt").text
    assert all(text.startswith("说话人") for _, _, text in parse_srt(srt))
    vtt = transcribe(server.url, UTTERANCE, diarize="true", response_format="vtt").text
    assert "<v 说话人1>" in vtt


def test_speaker_and_word_requests_fail_clearly(server: Server) -> None:
    for data, param in [
        (dict(diarize="maybe"), "diarize"),
        (dict(num_speakers="two"), "num_speakers"),
        (dict(num_speakers="99"), "num_speakers"),
        ({"timestamp_granularities[]": "word", "response_format": "json"}, "timestamp_granularities"),
    ]:
        response = transcribe(server.url, **data)
        assert response.status_code == 400, (data, response.text)
        assert response.json()["error"]["param"] == param


def run_readme_blocks(url: str, tmp_path: Path, *, keyed: bool, doc: str = "docs/api.md") -> list[str]:
    """Run `doc`'s API bash blocks (those using $API_KEY, or the others) as written, on `url`."""
    section = (ROOT / doc).read_text()
    blocks = [
        b
        for b in re.findall(r"```bash\n(.*?)```", section, re.S)
        # the container quickstart (docker build/run) is run as written by tests/test_container.py
        if ("$API_KEY" in b) == keyed and "localhost:7860/v1/" in b and "docker " not in b
    ]
    assert blocks
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the examples use project-relative paths
    outputs = []
    for block in blocks:
        script = "set -euo pipefail\n" + block.replace("localhost:7860", url.removeprefix("http://"))
        result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{block}\n{result.stdout}\n{result.stderr}"
        assert '"error"' not in result.stdout, result.stdout
        outputs.append(result.stdout)
    return outputs


def test_readme_curl_examples_work_as_written(server: Server, tmp_path: Path) -> None:
    output, streamed = run_readme_blocks(server.url, tmp_path, keyed=False)
    assert '{"text":' in output and '"segments":' in output and '"seaco-paraformer"' in output
    events = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1) and len(events) > 1
    assert events[-1]["type"] == "transcript.text.done" and events[-1]["text"]
    cues = parse_srt((tmp_path / "example.srt").read_text())
    assert cues


def test_readme_tour_example_works_as_written(server: Server, tmp_path: Path) -> None:
    [output] = run_readme_blocks(server.url, tmp_path, keyed=False, doc="README.md")
    assert output.startswith('{"text":')


def test_metrics_move_by_the_burst(server: Server) -> None:
    duration = sf.info(UTTERANCE).duration
    before = httpx.get(server.url + "/metrics").text
    with ThreadPoolExecutor(3) as pool:  # 3 at once, within the default limit of 20
        oks = list(pool.map(lambda fmt: transcribe(server.url, response_format=fmt), ["json", "srt", "vtt"]))
    assert [r.status_code for r in oks] == [200, 200, 200]
    assert transcribe(server.url, DATA / "bad" / "not_audio.wav").status_code == 400
    assert transcribe(server.url, response_format="xml").status_code == 400
    after = httpx.get(server.url + "/metrics").text
    print(
        "before:\n"
        + "\n".join(
            line
            for line in before.splitlines()
            if line.startswith("paraformer_") and "_created" not in line and "_bucket" not in line
        )
    )
    print(
        "after:\n"
        + "\n".join(
            line
            for line in after.splitlines()
            if line.startswith("paraformer_") and "_created" not in line and "_bucket" not in line
        )
    )

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("paraformer_http_requests_total", route=ROUTE, outcome="ok") == 3
    assert delta("paraformer_http_requests_total", route=ROUTE, outcome="bad_request") == 2
    assert delta("paraformer_http_request_duration_seconds_count", route=ROUTE) == 5
    assert delta("paraformer_transcriptions_total", outcome="ok") == 3
    assert delta("paraformer_transcriptions_total", outcome="not_audio") == 1  # xml never reached the engine
    assert delta("paraformer_audio_duration_seconds_count") == 3
    assert delta("paraformer_audio_duration_seconds_sum") == pytest.approx(3 * duration, abs=0.01)
    assert delta("paraformer_real_time_factor_count") == 3
    assert delta("paraformer_http_requests_total", route="/metrics", outcome="ok") == 1  # the first scrape
    assert metric(after, "paraformer_queue_depth") == 0 and metric(after, "paraformer_model_loaded") == 1


def test_long_file_subtitle_cues_fall_in_vad_segments(server: Server, long_wav: Path) -> None:
    from funasr import AutoModel

    srt = transcribe(server.url, long_wav, response_format="srt").text
    cues = parse_srt(srt)
    duration = sf.info(long_wav).duration
    vad = AutoModel(model=str(ROOT / "models" / "fsmn-vad"), disable_update=True, disable_pbar=True, disable_log=True)
    samples, _ = sf.read(long_wav, dtype="float32")  # the samples the engine decodes, so the same segments
    segments = [(a / 1000, b / 1000) for a, b in vad.generate(input=samples)[0]["value"]]
    assert len(cues) > 50 and len(segments) > 5
    assert cues[-1][1] > 100  # the timestamps reach the end of the 2-minute file, not restart per segment
    previous_end = 0.0
    for start, end, _ in cues:
        assert 0 <= start <= end <= duration
        assert start >= previous_end - 1e-6  # ordered, not overlapping
        previous_end = end
        # Each cue boundary lies in (or at the edge of) a VAD segment: no cue starts or ends in a pause. A cue may
        # span a short pause, since sentences are cut at punctuation. 30 ms: FunASR timestamps are on a frame grid.
        for boundary in (start, end):
            assert any(a - 0.03 <= boundary <= b + 0.03 for a, b in segments), (start, end, boundary)


# ------------------------------------------------------------------------------------ secured server
def test_api_keys_guard_v1_and_metrics_not_health(secured: Server, tmp_path: Path) -> None:
    for path in ("/v1/models", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer wrong-key-Xy7"}, {"Authorization": f"Basic {KEY}"}):
            response = httpx.get(secured.url + path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
        assert httpx.get(secured.url + path, headers={"Authorization": "Bearer second-key-Zq9"}).status_code == 200
    assert transcribe(secured.url).status_code == 401
    assert transcribe(secured.url, key=KEY).status_code == 200
    assert httpx.get(secured.url + "/health").status_code == 200
    client = OpenAI(base_url=secured.url + "/v1", api_key="wrong-key-Xy7", max_retries=0)
    with pytest.raises(Exception) as err:
        client.models.list()
    assert getattr(err.value, "status_code", None) == 401
    run_readme_blocks(secured.url, tmp_path, keyed=True)  # docs/api.md's key examples
    log = secured.log_text()
    assert KEY not in log.replace(f"{KEY}:", "") and "second-key-Zq9" not in log and "wrong-key-Xy7" not in log


def test_webui_login(secured: Server) -> None:
    assert httpx.get(secured.url + "/config").status_code == 401
    with httpx.Client(base_url=secured.url) as ui:
        assert ui.post("/login", data={"username": "admin", "password": "nope"}).status_code == 400
        assert ui.post("/login", data={"username": "admin", "password": "s3cret"}).status_code == 200
        assert ui.get("/config").status_code == 200


def test_413_for_uploads_over_max_upload_mb(secured: Server, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 9 * 2**20)  # 9 MB > MAX_UPLOAD_MB=8
    response = transcribe(secured.url, big, key=KEY)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_503_when_full_while_health_keeps_answering(secured: Server, long_wav: Path) -> None:
    """QUEUE_MAX_SIZE=1: while one long file is in flight, more requests get 503 + Retry-After at once."""
    results: list[httpx.Response] = []
    # (status code or error, model busy, seconds) per /health call, judged here in the test's thread
    health: list[tuple[int | str, bool, float]] = []
    stop = threading.Event()

    def poll_health() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = httpx.get(secured.url + "/health", timeout=10)
                outcome: int | str = response.status_code
                busy = bool(response.json()["queue"]["model_busy"])
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                outcome, busy = repr(exc), False
            health.append((outcome, busy, time.perf_counter() - started))

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: transcribe(secured.url, long_wav, key=KEY), range(6)))
    finally:
        stop.set()
        poller.join()
    codes = sorted(r.status_code for r in results)
    health_times = [seconds for *_, seconds in health]
    print("status codes:", codes, "health calls", len(health), "max", max(health_times, default=0))
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    for response in results:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["error"]["code"] == "server_busy"
    failed = [h for h in health if h[0] != 200]
    assert health and not failed, f"{len(failed)} of {len(health)} /health calls failed, first: {failed[:3]}"
    assert sum(busy for _, busy, _ in health) >= 3, health[:10]  # polled while the model was working
    assert max(health_times) < 2.0, health_times  # the event loop was never blocked
    wait_for_health(secured)
