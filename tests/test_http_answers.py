"""HTTP answers in-process (TestClient over create_app, tiny models): "not ready" in the catalogue's words and never
the load error, the caller's language by Accept-Language q-values, 401 in Chinese, file URLs with a NUL byte,
model names instead of server paths, an admin's listings, and the UI tables' headers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from asr.engine import Engine
from asr.errors import message, preferred_language
from conftest import UTTERANCE, make_settings, service_settings
from results import Owner, ResultStore

FAILED_EN = "The model failed to load, so nothing can be transcribed now (the reason is in the server's log)"
FAILED_ZH = "模型加载失败，暂时无法识别（原因已记录在服务器日志中）"


@pytest.fixture(scope="module")
def broken(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """An engine whose model folder is missing: its load error names a server folder."""
    tmp = tmp_path_factory.mktemp("broken")
    engine = Engine(make_settings(tiny_models, tmp, model_dir=tmp / "srv-secret" / "paraformer-folder").engine_config())
    with pytest.raises(Exception):  # noqa: B017
        engine.load()
    assert engine.state == "error" and "srv-secret" in engine.load_error
    return engine


def _upload(client: TestClient, route: str, **headers: str):
    with open(UTTERANCE, "rb") as f:
        return client.post(route, files={"file": (UTTERANCE.name, f)}, headers=headers)


@pytest.mark.parametrize("route", ["/v1/audio/transcriptions", "/v1/jobs"])
def test_not_ready_answers_are_the_catalogues_never_the_load_error(broken: Engine, route: str, tmp_path) -> None:
    client = TestClient(create_app(service_settings(broken, tmp_path), broken, load=False))
    for lang, expected in (("en", FAILED_EN), ("zh-CN,zh;q=0.9", FAILED_ZH)):
        response = _upload(client, route, **{"Accept-Language": lang})
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        assert response.json()["error"] == {
            "message": expected,
            "type": "server_error",
            "param": None,
            "code": "model_not_ready",
        }
    health = client.get("/health").json()
    assert health["detail"] == message("model_not_ready.failed") and "srv-secret" not in str(health)
    assert health["model"] == "paraformer-folder"


@pytest.mark.parametrize(
    "header, default, expected",
    [
        ("en;q=0.1,zh;q=0.9", "en", "zh"),
        ("zh;q=0.1, en-US;q=0.8", "zh", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "en", "zh"),
        ("fr-FR,fr;q=0.9", "zh", "zh"),
        ("fr-FR,fr;q=0.9", "en", "en"),
        ("en;q=0, zh;q=0.5", "en", "zh"),
        ("zh;q=abc,en", "zh", "en"),
        ("en, zh", "zh", "en"),
        ("", "en", "en"),
        ("*", "zh", "zh"),
    ],
)
def test_accept_language_q_values(header: str, default: str, expected: str) -> None:
    assert preferred_language(header, default) == expected


def test_401_in_the_callers_language(tiny_models, engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tiny_models, tmp_path, api_keys="k1")
    client = TestClient(create_app(settings, engine, load=False))
    for headers, code in (({}, "missing_api_key"), ({"Authorization": "Bearer wrong"}, "invalid_api_key")):
        zh = client.get("/v1/models", headers={**headers, "Accept-Language": "en;q=0.1,zh;q=0.9"})
        en = client.get("/v1/models", headers={**headers, "Accept-Language": "en-US"})
        assert zh.status_code == en.status_code == 401
        assert zh.json()["error"]["code"] == en.json()["error"]["code"] == code
        assert zh.json()["error"]["message"] == message(code, "zh") + "。"
        assert en.json()["error"]["message"] == message(code, "en")[:1].upper() + message(code, "en")[1:] + "."


def test_a_nul_byte_in_a_file_url_is_a_quiet_404(
    tiny_settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(create_app(tiny_settings, engine, load=False), raise_server_exceptions=False)
    caplog.set_level(logging.DEBUG)
    for url in (
        "/gradio_api/file=/etc/passwd%00.wav",
        "/gradio_api/file=%00",
        "/gradio_api/file/%00/x",
        f"/gradio_api/file={tiny_settings.output_dir}/x%00/a.txt",
    ):
        assert client.get(url).status_code in (400, 404), url
    assert [r for r in caplog.records if r.levelno > logging.DEBUG and "null" in r.getMessage().lower()] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_health_and_system_info_name_models_without_server_paths(tiny_models, engine: Engine, tmp_path: Path) -> None:
    from webui.sysinfo import info_markdown, system_info

    settings = make_settings(tiny_models, tmp_path, admin_api_keys="root-key")
    client = TestClient(create_app(settings, engine, load=False))
    folder = str(Path(engine.spec.asr).parent)
    public = client.get("/health").json()
    assert public["model"] == Path(engine.spec.asr).name and folder not in str(public)
    assert "model_paths" not in public
    admin = client.get("/health", headers={"Authorization": "Bearer root-key"}).json()
    assert admin["model_paths"]["asr"] == engine.spec.asr
    data = system_info(engine, settings)
    assert data["model"] == Path(engine.spec.asr).name and folder not in info_markdown(data, "en")
    assert folder not in str(data)


def test_an_admin_lists_its_own_jobs_and_results(tiny_models, engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tiny_models, tmp_path, api_keys="user-key", admin_api_keys="root-key")
    client = TestClient(create_app(settings, engine, load=False))  # no lifespan: the jobs stay queued
    user, root = {"Authorization": "Bearer user-key"}, {"Authorization": "Bearer root-key"}
    job = _upload(client, "/v1/jobs", **user).json()
    ResultStore(settings.output_dir).create("job", Owner.api_key("user-key"))
    assert client.get("/v1/jobs", headers=root).json()["data"] == []
    assert client.get("/v1/results", headers=root).json()["data"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=root).status_code == 200  # by id: any job
    assert [j["id"] for j in client.get("/v1/jobs", headers=user).json()["data"]] == [job["id"]]
    assert len(client.get("/v1/results", headers=user).json()["data"]) == 1


def test_the_ui_tables_load_with_headers_in_the_browsers_language(tiny_settings, engine: Engine) -> None:
    """A Dataframe's headers are fixed when the page is built (Chinese); the page's load event sends them in the
    browser's language, before any result."""
    from types import SimpleNamespace

    from webui import build_ui

    blocks = build_ui(engine, tiny_settings)
    tables = {c._id: c for c in blocks.blocks.values() if c.elem_id in ("single-sentences", "batch-table")}
    assert len(tables) == 2
    loads = [fn for fn in blocks.fns.values() if {o._id for o in fn.outputs} == set(tables)]
    assert len(loads) == 1
    english = loads[0].fn(SimpleNamespace(headers={"accept-language": "zh;q=0.2, en-GB;q=0.8"}))
    chinese = loads[0].fn(SimpleNamespace(headers={"accept-language": "zh-CN"}))
    by_id = dict(zip([o._id for o in loads[0].outputs], range(2), strict=False))
    sentences = by_id[next(i for i, c in tables.items() if c.elem_id == "single-sentences")]
    assert english[sentences] == {"headers": ["Start", "End", "Text"], "data": []}
    assert chinese[sentences]["headers"] == ["开始", "结束", "文本"]
