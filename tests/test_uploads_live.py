"""Uploads belong to their sender on a live server whose operator set Gradio's own GRADIO_TEMP_DIR (not TEMP_DIR),
over raw HTTP: gradio_client would upload local files again and hide the path another browser could reuse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import UTTERANCE, Server, TinyModels, start_server, stop_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def moved(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("gradio-temp")
    gradio_dir = tmp / "gradio-elsewhere"  # not TEMP_DIR (tmp/uploads)
    server = start_server(tiny_models, tmp, GRADIO_TEMP_DIR=str(gradio_dir))
    try:
        yield server, gradio_dir
    finally:
        stop_server(server)


def _browser(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    assert client.get("/").status_code == 200  # the first page load sets the owner cookie
    return client


def _call(client: httpx.Client, api: str, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/<api>, then read its events: (the last event's name, its data)."""
    started = client.post(f"/gradio_api/call/{api}", json={"data": data})
    if started.status_code != 200:
        return "refused", started.text
    event_id = started.json()["event_id"]
    name, payload = "", ""
    with client.stream("GET", f"/gradio_api/call/{api}/{event_id}") as events:
        for line in events.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                payload = line.split(":", 1)[1].strip()
                if name in ("complete", "error"):
                    break
    return name, payload


def test_an_upload_in_gradio_temp_dir_is_its_senders_only(moved: tuple[Server, Path]) -> None:
    server, gradio_dir = moved
    alice, bob = _browser(server.url), _browser(server.url)
    with open(UTTERANCE, "rb") as f:
        uploaded = alice.post("/gradio_api/upload", files={"files": (UTTERANCE.name, f, "audio/wav")})
    assert uploaded.status_code == 200, uploaded.text
    path = uploaded.json()[0]
    assert Path(path).resolve().is_relative_to(gradio_dir.resolve()), path  # where the operator sent uploads
    assert "overrides TEMP_DIR" in server.log_text()

    assert alice.get(f"/gradio_api/file={path}").status_code == 200
    stranger = httpx.Client(base_url=server.url, timeout=60)  # no cookie at all
    for client in (bob, stranger):
        assert client.get(f"/gradio_api/file={path}").status_code != 200
        assert client.get(f"/gradio_api/file/{path}").status_code != 200

    file = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": UTTERANCE.name}
    calls = {
        "transcribe": [file, "", 1, False, 0, True, "paraformer", False],
        "transcribe_batch": [[file], "", 1, False, 0, True, "paraformer", False],
        "transcribe_recording": [file, ""],
    }
    for api, data in calls.items():
        event, payload = _call(bob, api, data)
        assert event in ("error", "refused"), (api, event, payload)
        assert "欢迎" not in payload and "Welcome" not in payload
    event, payload = _call(alice, "transcribe", calls["transcribe"])  # the sender's own upload works
    assert event == "complete", payload
    assert json.loads(payload)[0]
