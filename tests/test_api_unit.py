"""The API in-process: admission, keys, error mapping and metrics, on a TestClient over create_app()."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api import Admission
from api.auth import APIKeys
from api.errors import GENERIC_500, APIError, from_asr_error
from app import create_app
from asr.engine import Engine
from asr.errors import FileTooLargeError, HotwordError, ModelNotReadyError, NotAudioError
from config.settings import Settings
from conftest import DATA, UTTERANCE, make_settings, service_settings

ROUTE = "/v1/audio/transcriptions"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0.0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


@pytest.fixture
def client(tiny_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    app = create_app(tiny_settings, engine, load=False)
    try:
        yield TestClient(app)
    finally:
        engine.remove_observer(app.state.api.metrics.observe_transcription)


def post(client: TestClient, path: Path = UTTERANCE, **data: str):
    with open(path, "rb") as f:
        return client.post(ROUTE, files={"file": (path.name, f)}, data=data)


# ------------------------------------------------------------------------------------ admission
def test_admission_counts_api_and_ui_against_one_limit() -> None:
    ui_waiting = 0
    admission = Admission(3, ui_waiting=lambda: ui_waiting)
    assert admission.try_enter() and admission.try_enter()
    assert admission.depth == 2 and not admission.full()
    ui_waiting = 1
    assert admission.full() and not admission.try_enter()  # 2 API + 1 UI = 3
    admission.leave()
    assert admission.try_enter()  # a place came free
    assert admission.api_in_flight == 2


def test_admission_refuses_ui_jobs_when_the_api_fills_the_limit() -> None:
    """attach_gradio on a real queued gr.Blocks: the UI queue length counts, and its push is refused when full."""
    with gr.Blocks() as blocks:
        gr.Button().click(lambda: None)
    blocks.queue(max_size=2)
    admission = Admission(2)
    admission.attach_gradio(blocks)
    assert admission.depth == 0  # len() of the (empty) Gradio queue is read
    assert admission.try_enter() and admission.try_enter() and not admission.try_enter()
    ok, message, state = asyncio.run(blocks._queue.push(None, None, None))
    assert (ok, state) == (False, "queue_full") and "busy" in message


# ------------------------------------------------------------------------------------ keys and errors
def test_api_keys() -> None:
    APIKeys(None).check(None)  # keys off: anything goes
    keys = APIKeys(SecretStr(" k1 , k2 "))
    keys.check("Bearer k1")
    keys.check("bearer k2")
    for header in (None, "", "Bearer", "Basic k1", "Bearer k3", "Bearer k1,k2"):
        with pytest.raises(APIError) as err:
            keys.check(header)
        assert err.value.status == 401


@pytest.mark.parametrize(
    "error, status, code",
    [
        (FileTooLargeError("big.wav", size_mb="300.0", limit_mb="200"), 413, "too_large"),
        (NotAudioError("x.wav"), 400, "not_audio"),
        (HotwordError(reason="too_many", count=30, limit=20), 400, "bad_hotwords"),
        (ModelNotReadyError(reason="loading"), 503, "model_not_ready"),
    ],
)
def test_engine_errors_map_to_http(error: Exception, status: int, code: str) -> None:
    mapped = from_asr_error(error)
    assert (mapped.status, mapped.code) == (status, code)
    assert mapped.body()["error"]["message"].lower() == str(error).lower()
    chinese = from_asr_error(error, "zh").body()["error"]["message"]
    assert chinese != mapped.message and re.search(r"[\u4e00-\u9fff]", chinese)


def test_bad_requests_get_400_in_openai_shape(client: TestClient) -> None:
    cases = [
        (post(client, DATA / "bad" / "image_renamed.wav"), "file", "not_audio"),
        (post(client, response_format="xml"), "response_format", "invalid_value"),
        (post(client, language="en"), "language", "unsupported_language"),
        (post(client, **{"timestamp_granularities[]": "word"}), "timestamp_granularities", "unsupported_value"),
        (
            post(client, **{"timestamp_granularities[]": "char", "response_format": "verbose_json"}),
            "timestamp_granularities",
            "invalid_value",
        ),
        (post(client, diarize="true"), "diarize", "speakers_unavailable"),  # this server runs without ENABLE_SPK
        (post(client, hotwords="这是一个远远超过二十个字符限制的非常长的热词用来测试错误"), "hotwords", "bad_hotwords"),
        (client.post(ROUTE, data={"model": "x"}), "file", "missing_file"),
    ]
    for response, param, code in cases:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
        assert error["message"]


def test_prompt_is_used_as_hotwords_when_hotwords_is_absent(client: TestClient, engine: Engine) -> None:
    seen: list[list[str]] = []

    def observer(result, error) -> None:
        seen.append(result.hotwords if result else [])

    engine.add_observer(observer)
    try:
        assert post(client, prompt="达摩院 语音识别").status_code == 200
        assert post(client, prompt="达摩院", hotwords="科哥").status_code == 200
        assert post(client, prompt="达摩院", hotwords="").status_code == 200
    finally:
        engine.remove_observer(observer)
    assert seen == [["达摩院", "语音识别"], ["科哥"], []]


def test_unexpected_errors_give_a_generic_500(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail /srv/x")

    monkeypatch.setattr(engine, "transcribe", broken)
    response = post(client)
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": GENERIC_500,
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
    assert "secret" not in response.text


def test_503_while_loading_and_when_full(tiny_models, tmp_path: Path, engine: Engine) -> None:
    loading_settings = make_settings(tiny_models, tmp_path)
    loading = Engine(loading_settings.engine_config())  # never loaded
    response = post(TestClient(create_app(loading_settings, loading, load=False)))
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "model_not_ready"

    app = create_app(service_settings(engine, tmp_path), engine, load=False)
    admission = app.state.api.admission
    while admission.try_enter():  # the service is full
        pass
    response = post(TestClient(app))
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == "server_busy"
    admission.leave()
    assert post(TestClient(app)).status_code == 200
    engine.remove_observer(app.state.api.metrics.observe_transcription)


def test_413_for_an_upload_over_max_upload_mb(tiny_models, tmp_path: Path) -> None:
    small = make_settings(tiny_models, tmp_path, max_upload_mb=0.1)  # 100 kB; the utterance is 177 kB
    limited = Engine(
        small.engine_config()
    )  # not loaded: the size is checked first, from Content-Length, before the body is read
    response = post(TestClient(create_app(small, limited, load=False)))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large" and "limit of 0.1 MB" in response.json()["error"]["message"]


# ------------------------------------------------------------------------------------ metrics
def test_metrics_count_ui_transcriptions_through_the_engine(client: TestClient, engine: Engine) -> None:
    before = client.get("/metrics").text
    engine.transcribe(UTTERANCE)  # what a UI tab does: no HTTP route involved
    after = client.get("/metrics").text
    assert (
        metric(after, "paraformer_transcriptions_total", outcome="ok")
        == metric(before, "paraformer_transcriptions_total", outcome="ok") + 1
    )
    assert metric(after, "paraformer_http_requests_total", route=ROUTE, outcome="ok") == metric(
        before, "paraformer_http_requests_total", route=ROUTE, outcome="ok"
    )
    assert metric(after, "paraformer_model_loaded") == 1.0
    assert metric(after, "paraformer_queue_max_size") == Settings(_env_file=None).queue_max_size
