"""Hotword lists (热词库): the file formats, ownership over real HTTP (two keys and an admin), lists named by the
API, a job and a WebSocket stream reaching the model, parallel creation against the limit, and a change made
through one replica used by the other's next request (Redis)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app import create_app
from asr.engine import Engine
from conftest import UTTERANCE, Server, TinyModels, make_settings, start_server, stop_server
from hotword_lists import FormatError, HotwordListService, ListLimits, Word
from hotword_lists.records import parse_csv, parse_file, parse_text, to_csv, to_text
from hotword_lists.store import SQLiteListStore
from results import Owner
from test_jobs_redis import redis_url  # noqa: F401 (the fixture)

KEY_A, KEY_B, ADMIN = "lists-key-a", "lists-key-b", "lists-admin"


# ------------------------------------------------------------------------------------------ formats
def test_funasrs_word_weight_file_and_csv_read_back_what_they_wrote() -> None:
    words = parse_text("\ufeff阿里巴巴 20\n达摩院\n\n# a comment\n语音识别 1.5\n达摩院 30\n")
    assert words == [Word("阿里巴巴", 20.0), Word("达摩院"), Word("语音识别", 1.5)]  # the first 达摩院 wins
    assert parse_text(to_text(words)) == words
    assert to_csv(words) == "word,weight\n阿里巴巴,20\n达摩院,\n语音识别,1.5\n"
    assert parse_csv(to_csv(words)) == words
    assert parse_csv("热词,权重\n科哥,10\nParaformer\n") == [Word("科哥", 10.0), Word("Paraformer")]
    assert parse_file("x.csv", b"a,1\n") == [Word("a", 1.0)]


@pytest.mark.parametrize(
    ("text", "reason", "line"),
    [("好 1 2\n", "one_word_per_line", 1), ("a\nb high\nc\n", "bad_weight", 2), ("词 1e5x\n", "bad_weight", 1)],
)
def test_a_bad_line_is_named(text: str, reason: str, line: int) -> None:
    with pytest.raises(FormatError) as caught:
        parse_text(text)
    assert (caught.value.reason, caught.value.line) == (reason, line)


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        parse_file("x.txt", "热词".encode("gbk"))
    assert caught.value.reason == "not_utf8"


def test_parallel_creation_never_overshoots_the_limit(tmp_path) -> None:
    service = HotwordListService(SQLiteListStore(tmp_path / "lists.db"), ListLimits(max_lists_per_owner=3))
    owner = Owner.api_key("k")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait()
        try:
            service.create(owner, f"list-{i}", [Word("词")])
            outcomes.append("created")
        except Exception as exc:  # noqa: BLE001 (counted below)
            outcomes.append(getattr(exc, "code", type(exc).__name__))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 3 + ["hotword_list_limit"] * 5
    assert len(service.visible(owner)) == 3


# ------------------------------------------------------------------------------------------ over HTTP
@pytest.fixture(scope="module")
def server(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tiny_models,
        tmp_path_factory.mktemp("lists"),
        API_KEYS=f"{KEY_A},{KEY_B},{ADMIN}",
        ADMIN_API_KEYS=ADMIN,
        DEFAULT_HOTWORDS="魔搭",
        HOTWORD_LIST_MAX_WORDS="5",
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def as_(key: str, server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def transcribe(client: httpx.Client, **data: Any) -> httpx.Response:
    return client.post(
        "/v1/audio/transcriptions",
        files={"file": UTTERANCE.open("rb")},
        data={"response_format": "verbose_json", **data},
    )


@pytest.mark.server
def test_owners_see_their_own_lists_and_everyone_the_shared_ones(server: Server) -> None:
    a, b, admin = as_(KEY_A, server), as_(KEY_B, server), as_(ADMIN, server)
    made = a.post("/v1/hotword-lists", json={"name": "产品", "words": ["达摩院", {"word": "语音识别", "weight": 20}]})
    assert made.status_code == 201, made.text
    mine = made.json()
    assert mine["words"] == [{"word": "达摩院", "weight": None}, {"word": "语音识别", "weight": 20.0}]
    assert not mine["shared"] and made.headers["location"] == f"/v1/hotword-lists/{mine['id']}"
    path = f"/v1/hotword-lists/{mine['id']}"

    # B: every route answers 404, as for a list that does not exist, and B cannot name it
    assert b.get(path).status_code == 404
    assert b.get(path + "/export").status_code == 404
    assert b.put(path, json={"words": ["x"]}).status_code == 404
    assert b.delete(path).status_code == 404
    assert transcribe(b, hotword_list=mine["id"]).status_code == 404
    assert transcribe(b, hotword_list="产品").json()["error"]["code"] == "hotword_list_not_found"
    assert "产品" not in [item["name"] for item in b.get("/v1/hotword-lists").json()["data"]]
    # A: it is there, and it biases A's requests, before the request's own words
    used = transcribe(a, hotword_list="产品", hotwords="阿里巴巴")
    assert used.status_code == 200, used.text
    assert used.json()["hotwords"] == ["达摩院", "语音识别", "阿里巴巴"]

    # shared: only an admin key makes or changes one; everyone sees and uses it
    assert a.post("/v1/hotword-lists", json={"name": "全员", "words": ["科哥"], "shared": True}).status_code == 403
    shared = admin.post("/v1/hotword-lists", json={"name": "全员", "words": ["科哥"], "shared": True}).json()
    assert shared["shared"]
    for client in (a, b):
        assert shared["id"] in [item["id"] for item in client.get("/v1/hotword-lists").json()["data"]]
        assert transcribe(client, hotword_list="全员").json()["hotwords"] == ["科哥"]
    assert b.put(f"/v1/hotword-lists/{shared['id']}", json={"words": ["y"]}).status_code == 403
    assert b.delete(f"/v1/hotword-lists/{shared['id']}").status_code == 403
    # several lists, by id and by name, in one field or repeated
    both = transcribe(a, hotword_list=f"{mine['id']},全员").json()["hotwords"]
    assert both == ["达摩院", "语音识别", "科哥"]
    # the service's DEFAULT_HOTWORDS is the shared list "default": what a request without hotwords gets
    default = next(i for i in a.get("/v1/hotword-lists").json()["data"] if i["name"] == "default")
    assert default["shared"] and [w["word"] for w in default["words"]] == ["魔搭"]
    assert transcribe(a).json()["hotwords"] == ["魔搭"]
    assert admin.put(f"/v1/hotword-lists/{default['id']}", json={"words": ["新默认"]}).status_code == 200
    assert transcribe(b).json()["hotwords"] == ["新默认"]  # changed while the service runs
    assert transcribe(b, hotwords="").json()["hotwords"] == []  # an empty field still means none

    assert a.delete(path).status_code == 204
    assert a.get(path).status_code == 404


@pytest.mark.server
def test_import_export_limits_and_errors_in_the_callers_language(server: Server) -> None:
    a = as_(KEY_A, server)
    imported = a.post("/v1/hotword-lists", files={"file": ("客服.txt", "退款 20\n投诉\n会员卡 5\n".encode())}, data={})
    assert imported.status_code == 201, imported.text
    item = imported.json()
    assert item["name"] == "客服" and [w["word"] for w in item["words"]] == ["退款", "投诉", "会员卡"]
    path = f"/v1/hotword-lists/{item['id']}"
    assert a.get(path + "/export").text == "退款 20\n投诉\n会员卡 5\n"
    assert a.get(path + "/export", params={"format": "csv"}).text == "word,weight\n退款,20\n投诉,\n会员卡,5\n"
    replaced = a.put(path, files={"file": ("new.csv", "word,weight\n发票,3\n".encode())}, data={"name": "客服2"})
    assert replaced.status_code == 200 and replaced.json()["name"] == "客服2"
    assert [w["word"] for w in replaced.json()["words"]] == ["发票"]

    zh = {"Accept-Language": "zh-CN,zh;q=0.9"}
    cases = [
        ({"name": "客服2", "words": ["a"]}, 409, "hotword_list_exists", "已有名为“客服2”的热词库"),
        ({"name": "长", "words": list("一二三四五六")}, 400, "bad_hotword_list", "每个热词库最多 5 个"),
        ({"name": "空格", "words": ["two words"]}, 400, "bad_hotword_list", "含有空格或逗号"),
        ({"name": "", "words": ["a"]}, 400, "bad_hotword_list", "需要一个名称"),
        ({"name": "权重", "words": [{"word": "a", "weight": "high"}]}, 400, "bad_hotword_list", "权重应是数字"),
    ]
    for body, status, code, words in cases:
        answer = a.post("/v1/hotword-lists", json=body, headers=zh)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["code"] == code and words in answer.json()["error"]["message"], answer.text
    bad_file = a.post("/v1/hotword-lists", files={"file": ("x.txt", b"a b c\n")}, data={"name": "x"}, headers=zh)
    assert bad_file.status_code == 400 and "第 1 行" in bad_file.json()["error"]["message"]
    assert a.get("/v1/hotword-lists/hl-000000000000000000000000", headers=zh).json()["error"]["message"] == (
        "找不到热词库“hl-000000000000000000000000”。"
    )


# ------------------------------------------------------------------------------------------ to the model
@pytest.fixture
def app_client(engine: Engine, tiny_models: TinyModels, tmp_path) -> Iterator[TestClient]:
    application = create_app(make_settings(tiny_models, tmp_path), engine, load=False)
    try:
        with TestClient(application) as client:
            yield client
    finally:
        engine.remove_observer(application.state.api.metrics.observe_transcription)


@pytest.fixture
def bias_calls(engine: Engine, monkeypatch) -> list[list[list[int]]]:
    """Token ids of each hotword the SeACo bias decoder is given, per call."""
    model = engine._model.model
    seen: list[list[list[int]]] = []
    original = model._hotword_representation

    def spy(hotword_pad, hotword_lengths):
        seen.append([row[: int(n)].tolist() for row, n in zip(hotword_pad, hotword_lengths, strict=False)])
        return original(hotword_pad, hotword_lengths)

    monkeypatch.setattr(model, "_hotword_representation", spy)
    return seen


def test_a_named_list_reaches_the_model_from_the_api_a_job_and_a_stream(
    app_client: TestClient, engine: Engine, bias_calls: list
) -> None:
    tokenizer, sos = engine._model.kwargs["tokenizer"], engine._model.model.sos
    expected = [tokenizer.tokens2ids(list("达摩院")), tokenizer.tokens2ids(list("语音识别")), [sos]]
    made = app_client.post("/v1/hotword-lists", json={"name": "演示", "words": ["达摩院", "语音识别"]})
    assert made.status_code == 201, made.text

    plain = app_client.post("/v1/audio/transcriptions", files={"file": UTTERANCE.open("rb")}, data={"hotwords": ""})
    assert bias_calls == []  # no hotwords: the bias decoder is not consulted
    api = app_client.post(
        "/v1/audio/transcriptions",
        files={"file": UTTERANCE.open("rb")},
        data={"hotword_list": "演示", "response_format": "verbose_json"},
    )
    assert api.status_code == 200 and bias_calls and all(call == expected for call in bias_calls)
    assert api.json()["text"] != plain.json()["text"]  # the tiny model's text moves with the bias

    bias_calls.clear()
    job = app_client.post("/v1/jobs", files={"file": UTTERANCE.open("rb")}, data={"hotword_list": "演示"}).json()
    deadline = time.time() + 60
    while app_client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("done", "failed", "cancelled"):
        assert time.time() < deadline
        time.sleep(0.2)
    assert bias_calls and all(call == expected for call in bias_calls)

    bias_calls.clear()
    with app_client.websocket_connect("/", subprotocols=["binary"]) as ws:
        first = {"mode": "offline", "wav_name": "w", "wav_format": "wav", "hotword_list": "演示", "is_speaking": True}
        ws.send_text(json.dumps(first))
        ws.send_bytes(UTTERANCE.read_bytes()[44:])
        ws.send_text(json.dumps({"is_speaking": False}))
        answer = ws.receive_json()
    assert "error" not in answer and bias_calls and all(call == expected for call in bias_calls)
    with app_client.websocket_connect("/", subprotocols=["binary"]) as ws:
        ws.send_text(json.dumps({"mode": "offline", "hotword_list": "nobody's", "is_speaking": True}))
        ws.send_bytes(b"\0" * 3200)
        ws.send_text(json.dumps({"is_speaking": False}))
        assert ws.receive_json()["code"] == "hotword_list_not_found"


# ------------------------------------------------------------------------------------------ replicas
@pytest.mark.server
@pytest.mark.redis
def test_a_change_through_one_replica_is_the_others_next_request(
    tiny_models: TinyModels,
    tmp_path,
    redis_url: str,  # noqa: F811 (the fixture)
) -> None:
    common = {"JOBS_BACKEND": "redis", "JOBS_REDIS_URL": redis_url, "API_KEYS": KEY_A}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = start_server(tiny_models, tmp_path / "one", **common)
    two = start_server(tiny_models, tmp_path / "two", **common)
    try:
        first, second = as_(KEY_A, one), as_(KEY_A, two)
        made = first.post("/v1/hotword-lists", json={"name": "共享", "words": ["达摩院"]}).json()
        assert transcribe(second, hotword_list="共享").json()["hotwords"] == ["达摩院"]
        assert first.put(f"/v1/hotword-lists/{made['id']}", json={"words": ["语音识别"]}).status_code == 200
        assert transcribe(second, hotword_list="共享").json()["hotwords"] == ["语音识别"]
        assert first.delete(f"/v1/hotword-lists/{made['id']}").status_code == 204
        assert transcribe(second, hotword_list="共享").status_code == 404
    finally:
        stop_server(one)
        stop_server(two)
