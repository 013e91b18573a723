"""Two users of one live server (real HTTP, the app started as `python app.py`): A runs a single file and a batch;
B, holding every file URL and path A's page showed (results and A's own upload), gets 404 for each of them, by
every route, and cannot feed A's upload to the model; A still gets them, also from a new client that only keeps
A's cookie (a page reload)."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file

from conftest import DATA, UTTERANCE, Server
from results import OWNER_COOKIE
from results.store import RESULT_ID_BYTES

pytestmark = pytest.mark.server

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))
RESULT_NAME = re.compile(r"(?:single|batch)-\d{8}-\d{6}-[0-9a-f]{%d}" % (RESULT_ID_BYTES * 2))  # noqa: UP031


def _files(value: Any) -> list[dict]:
    """The FileData dicts in an endpoint's answer (what the page renders as download links)."""
    if isinstance(value, dict) and "path" in value and "url" in value:
        return [value]
    if isinstance(value, (list, tuple)):
        return [f for item in value for f in _files(item)]
    return []


def _routes(server: Server, file: dict) -> list[str]:
    """Every way to ask for one file: the URL the page links, and Gradio's file route in both spellings."""
    return [file["url"], f"{server.url}/gradio_api/file={file['path']}", f"{server.url}/gradio_api/file/{file['path']}"]


def _upload(http: httpx.Client, server: Server) -> str:
    """Upload the test clip as the page does; the answer is the server path the page then shows."""
    with open(UTTERANCE, "rb") as audio:
        got = http.post(f"{server.url}/gradio_api/upload", files={"files": (UTTERANCE.name, audio)})
    assert got.status_code == 200, got.text
    return got.json()[0]


def _call(http: httpx.Client, server: Server, api_name: str, data: list) -> str:
    """One event over Gradio's plain HTTP API (POST, then read the event stream); returns the stream's text."""
    event = http.post(f"{server.url}/gradio_api/call/{api_name}", json={"data": data}).json()["event_id"]
    return http.get(f"{server.url}/gradio_api/call/{api_name}/{event}", timeout=60).text


def test_a_users_results_are_only_theirs(server: Server) -> None:
    a = Client(server.url, verbose=False, download_files=False)
    a_cookie = a.cookies[OWNER_COOKIE]
    with httpx.Client(cookies={OWNER_COOKIE: a_cookie}, timeout=30) as a_http:
        a_upload = _upload(a_http, server)
        assert "event: complete" in _call(
            a_http,
            server,
            "transcribe",
            [{"path": a_upload, "meta": {"_type": "gradio.FileData"}}, "", 1, False, 0, True, "paraformer", False],
        )

    single = a.predict(handle_file(str(UTTERANCE)), "", 1, api_name="/transcribe")
    job = a.submit([handle_file(str(p)) for p in UTTERANCES[:2]], "", 1, api_name="/transcribe_batch")
    batch_status, batch_table, batch_files = job.result()
    history_table, history_files = a.predict(api_name="/batch_history")
    shown = _files(single) + _files(batch_files) + _files(history_files)
    uploaded = {"path": a_upload, "url": f"{server.url}/gradio_api/file={a_upload}"}
    names = {p["path"].rsplit("/", 1)[1] for p in shown}
    assert {".txt", ".srt", ".vtt"} <= {n[n.rfind(".") :] for n in names} and "results.csv" in names
    assert any(n.endswith(".zip") for n in names)
    folders = {p["path"].rsplit("/", 2)[1] for p in shown}
    assert len(folders) == 2 and all(RESULT_NAME.fullmatch(f) for f in folders)  # the single file's and the batch's
    assert not RESULT_NAME.search(batch_status), "the status message names no folder"
    assert len(history_table["data"]) >= 1 and history_table["data"][0][1] == 2

    with httpx.Client(cookies={OWNER_COOKIE: a_cookie}, timeout=30) as a_http:
        originals = {}
        for file in [*shown, uploaded]:
            for url in _routes(server, file):
                got = a_http.get(url)
                assert got.status_code == 200, url
                originals[file["path"]] = got.content
    csv_bytes = next(v for k, v in originals.items() if k.endswith("results.csv"))
    rows = list(csv.DictReader(io.StringIO(csv_bytes.decode("utf-8-sig"))))
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[0]["text"].strip()

    # B: a fresh browser session (its own cookie), with every URL and path A was shown.
    b = Client(server.url, verbose=False, download_files=False)
    assert b.cookies[OWNER_COOKIE] != a_cookie
    with httpx.Client(cookies=b.cookies, timeout=30) as b_http, httpx.Client(timeout=30) as anonymous:
        for file in [*shown, uploaded]:
            for url in _routes(server, file):
                assert b_http.get(url).status_code == 404, url
                assert anonymous.get(url).status_code == 404, url
            folder = file["path"].rsplit("/", 1)[0]
            assert b_http.get(f"{server.url}/gradio_api/file={folder}").status_code in (403, 404)  # no listing
        # A's upload path, given to the model as B's input: refused as if B had uploaded nothing.
        a_file = {"path": a_upload, "meta": {"_type": "gradio.FileData"}}
        refused = _call(b_http, server, "transcribe", [a_file, "", 1, False, 0, True, "paraformer", False])
        assert "event: error" in refused and "event: complete" not in refused
        assert "event: error" in _call(
            b_http, server, "transcribe_batch", [[a_file], "", 1, False, 0, True, "paraformer", False]
        )
        assert "event: error" in _call(b_http, server, "transcribe_recording", [a_file, ""])
        assert b_http.get(f"{server.url}/v1/results").json()["data"] == []
        for path in ("/", "/config", "/gradio_api/info"):
            page = b_http.get(server.url + path).text
            assert not any(folder in page for folder in folders), path
    b_table, b_files = b.predict(api_name="/batch_history")
    assert b_table["data"] == [] and not b_files

    # A again after a reload: a new client that only kept A's cookie finds the batch and can download it.
    reloaded = Client(server.url, verbose=False, httpx_kwargs={"cookies": {OWNER_COOKIE: a_cookie}})
    assert reloaded.cookies[OWNER_COOKIE] == a_cookie
    table, downloads = reloaded.predict(api_name="/batch_history")
    assert table["data"] == history_table["data"]
    zips = [p for p in downloads if p.endswith(".zip")]
    assert zips, downloads
    with zipfile.ZipFile(zips[0]) as archive:
        names = archive.namelist()
        assert sum(n.endswith(".txt") and not n.endswith(".spoken.txt") for n in names) == 2 and "results.csv" in names
        assert sum(n.endswith(".spoken.txt") for n in names) == 2  # ITN is on: the spoken text beside each
    with httpx.Client(cookies={OWNER_COOKIE: a_cookie}, timeout=30) as a_http:
        assert OWNER_COOKIE not in a_http.get(server.url + "/").headers.get("set-cookie", "")
        listed = a_http.get(f"{server.url}/v1/results").json()["data"]
        assert folders < {r["id"] for r in listed} and len(listed) == 3  # and the single file sent by _call
        for file in [*shown, uploaded]:
            assert a_http.get(file["url"]).content == originals[file["path"]]
