"""Result storage and ownership in-process: unguessable names, owner records, the owner cookie and the 404 guard in
front of Gradio's file route, and `/v1/results` (no model needed: the engine is never loaded)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from asr.engine import Engine
from config.settings import PROJECT_ROOT, Settings
from results import (
    OWNER_COOKIE,
    RESULT_ID_BITS,
    Owner,
    ResultNotFound,
    ResultStore,
    is_result_id,
    new_result_id,
    owner_cookie,
)
from results.access import UploadOwners, file_route_target

ALICE = Owner.session("a" * 43)
BOB = Owner.session("b" * 43)
ADMIN = Owner.api_key("root-key", admin=True)


# ------------------------------------------------------------------------------------------ names
def test_result_names_carry_at_least_128_random_bits() -> None:
    assert RESULT_ID_BITS >= 128
    ids = [new_result_id("batch") for _ in range(4000)]
    assert all(is_result_id(i) for i in ids)
    tokens = [i.rsplit("-", 1)[1] for i in ids]
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in tokens)  # 32 hex digits = 128 bits
    assert len(set(tokens)) == len(tokens)
    # Every one of the 128 bits is a coin toss: set in ~half the names (sd 0.8 %; 40-60 % cannot flake), so
    # no part of the token is a counter, a clock or a constant.
    values = [int(t, 16) for t in tokens]
    for bit in range(RESULT_ID_BITS):
        share = sum((v >> bit) & 1 for v in values) / len(values)
        assert 0.4 < share < 0.6, (bit, share)


def test_docs_state_the_entropy() -> None:
    security = (PROJECT_ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert f"{RESULT_ID_BITS} random bits" in security


# ------------------------------------------------------------------------------------------ store
def test_only_the_owner_and_an_admin_get_a_result(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "out")
    result = store.create("batch", ALICE, total=2)
    (result.folder / "results.csv").write_text("file\n", encoding="utf-8")
    (result.folder / "half.csv.tmp").write_text("partial", encoding="utf-8")
    (result.folder / "link.txt").symlink_to(tmp_path)  # a link out of the folder is never served

    assert store.get(result.id, ALICE).info == {"total": 2}
    assert store.file(result.id, "results.csv", ADMIN).read_text(encoding="utf-8") == "file\n"
    assert [p.name for p in store.get(result.id, ALICE).files()] == ["results.csv"]
    for reader, rid, name in [
        (BOB, result.id, "results.csv"),
        (ALICE, result.id, ".result.json"),
        (ALICE, result.id, "half.csv.tmp"),
        (ALICE, result.id, "link.txt"),
        (ALICE, result.id, "../" + result.id + "/results.csv"),
        (ALICE, result.id, "missing.txt"),
        (ALICE, result.id[:-1] + ("1" if result.id.endswith("0") else "0"), "results.csv"),
        (ALICE, "..", "results.csv"),
        (ALICE, "batch-x", "results.csv"),
    ]:
        with pytest.raises(ResultNotFound):
            store.file(rid, name, reader)
    with pytest.raises(ResultNotFound):
        store.get(result.id, BOB)
    assert ".result.json" in {p.name for p in result.folder.iterdir()}
    assert "a" * 43 not in (result.folder / ".result.json").read_text()  # the token itself is never stored


def test_list_shows_only_the_readers_results(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "out")
    mine = [store.create("batch", ALICE), store.create("single", ALICE)]
    theirs = store.create("batch", BOB)
    (tmp_path / "out" / "batch-20250101-000000-abc123").mkdir()  # a folder without a record: nobody's
    assert {r.id for r in store.list(ALICE)} == {r.id for r in mine}
    assert [r.id for r in store.list(ALICE, kind="batch")] == [mine[0].id]
    assert [r.id for r in store.list(BOB)] == [theirs.id]
    assert len(store.list(ADMIN)) == 3
    updated = store.update_info(mine[0], finished=True)
    assert store.get(mine[0].id, ALICE).info == updated.info == {"finished": True}


def test_locate_sees_through_dot_dot_and_links(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "out")
    result = store.create("single", ALICE)
    (tmp_path / "alias").symlink_to(tmp_path / "out")
    assert store.locate(result.folder / "a.txt") == (result.id, "a.txt")
    assert store.locate(tmp_path / "elsewhere" / ".." / "out" / result.id / "a.txt") == (result.id, "a.txt")
    assert store.locate(tmp_path / "alias" / result.id / "a.txt") == (result.id, "a.txt")
    assert store.locate(tmp_path / "out") == ("", "")
    assert store.locate(tmp_path / "outside.txt") is None


def test_file_route_spellings() -> None:
    assert file_route_target("/gradio_api/file=/srv/out/x/a.txt") == "/srv/out/x/a.txt"
    assert file_route_target("/gradio_api/file/outputs/x/a.txt") == "outputs/x/a.txt"
    assert file_route_target("/prefix/gradio_api/file=outputs/x") == "outputs/x"
    assert file_route_target("/gradio_api/queue/data") is None


# ------------------------------------------------------------------------------------------ over HTTP
@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        output_dir=tmp_path / "outputs",
        temp_dir=tmp_path / "uploads",
        log_dir=tmp_path / "logs",
        api_keys="user-key",
        admin_api_keys="root-key",
    )


@pytest.fixture
def http(app_settings: Settings) -> Iterator[TestClient]:
    app = create_app(app_settings, Engine(app_settings.engine_config()), load=False)
    with TestClient(app) as client:
        yield client


def _browser(http: TestClient) -> tuple[TestClient, Owner]:
    """A fresh browser: its first page load sets the owner cookie."""
    client = TestClient(http.app)
    page = client.get("/")
    assert page.status_code == 200
    token = client.cookies[OWNER_COOKIE]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)  # 256 bits
    header = page.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Max-Age=" in header
    return client, Owner.session(token)


def test_owner_cookie_is_issued_once_and_kept(http: TestClient) -> None:
    client, _ = _browser(http)
    again = client.get("/")
    assert OWNER_COOKIE not in again.headers.get("set-cookie", "")
    forged = TestClient(http.app, cookies={OWNER_COOKIE: "short"})  # not a token we issue: replaced
    assert OWNER_COOKIE in forged.get("/health").headers["set-cookie"]


def test_gradio_file_route_serves_results_to_their_owner_only(
    http: TestClient, app_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app_settings.output_dir.parent)  # Gradio reads relative paths from the working directory
    alice, alice_owner = _browser(http)
    bob, _ = _browser(http)
    store = ResultStore(app_settings.output_dir)
    result = store.create("batch", alice_owner)
    path = result.folder / "results.csv"
    path.write_text("file,text\na.wav,你好\n", encoding="utf-8")
    relative = path.relative_to(app_settings.output_dir.parent)
    # %2E%2E: the client would fold a literal "..", the server decodes this one into it.
    spellings = [
        f"/gradio_api/file={path}",
        f"/gradio_api/file/{path}",
        f"/gradio_api/file={relative}",
        f"/gradio_api/file={result.folder}/%2E%2E/{result.id}/results.csv",
    ]

    for url in spellings:
        got = alice.get(url)
        assert got.status_code == 200, url
        assert "你好" in got.text and got.headers["cache-control"] == "private, no-store"
        assert bob.get(url).status_code == 404, url
        assert TestClient(http.app).get(url).status_code == 404, url  # no cookie at all
    # A name that does not exist answers exactly like one that is not yours.
    missing = bob.get(f"/gradio_api/file={result.folder}/nothing.csv")
    assert missing.status_code == 404 and missing.text == bob.get(spellings[0]).text
    assert bob.get(f"/gradio_api/file={app_settings.output_dir}").status_code == 404  # no listing
    assert bob.get(f"/gradio_api/file={result.folder}/.result.json").status_code == 404
    assert alice.get(f"/gradio_api/file={result.folder}/.result.json").status_code == 404
    # Keys: an API key is its own owner; an admin key reads everything.
    assert bob.get(spellings[0], headers={"Authorization": "Bearer user-key"}).status_code == 404
    assert bob.get(spellings[0], headers={"Authorization": "Bearer root-key"}).status_code == 200


def test_v1_results_lists_and_serves_only_the_callers_own(http: TestClient, app_settings: Settings) -> None:
    store = ResultStore(app_settings.output_dir)
    by_key = store.create("job", Owner.api_key("user-key"))
    (by_key.folder / "a.srt").write_text("1\n", encoding="utf-8")
    by_browser = store.create("batch", ALICE)
    user, root = {"Authorization": "Bearer user-key"}, {"Authorization": "Bearer root-key"}

    assert http.get("/v1/results").status_code == 401  # API_KEYS is set
    listed = http.get("/v1/results", headers=user).json()["data"]
    assert [r["id"] for r in listed] == [by_key.id] and "owner" not in listed[0]
    assert listed[0]["files"] == [{"name": "a.srt", "bytes": 2, "url": f"/v1/results/{by_key.id}/a.srt"}]
    assert http.get(listed[0]["files"][0]["url"], headers=user).text == "1\n"
    # An admin lists its own results, as GET /v1/jobs lists its own jobs, and reads anyone's by id.
    assert http.get("/v1/results", headers=root).json()["data"] == []
    by_admin = store.create("job", Owner.api_key("root-key", admin=True))
    assert [r["id"] for r in http.get("/v1/results", headers=root).json()["data"]] == [by_admin.id]
    assert http.get(f"/v1/results/{by_key.id}/a.srt", headers=root).status_code == 200
    other = http.get(f"/v1/results/{by_browser.id}/results.csv", headers=user)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_uploads_are_their_senders(tmp_path: Path) -> None:
    uploads = UploadOwners(tmp_path / "uploads")
    mine = tmp_path / "uploads" / ("f" * 64) / "call.wav"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"RIFF")
    gradio_own = tmp_path / "uploads" / ("e" * 64) / "cached.png"  # something Gradio put there by itself
    gradio_own.parent.mkdir()
    gradio_own.write_bytes(b"png")
    uploads.record(mine, ALICE)
    uploads.record(tmp_path / "elsewhere.wav", ALICE)  # outside the upload folder: ignored
    assert not (tmp_path / (".owner-" + ALICE.id.replace(":", "-"))).exists()

    assert uploads.allows(mine, ALICE) and uploads.allows(mine, ADMIN)
    assert not uploads.allows(mine, BOB) and not uploads.allows(mine, None)
    marks = [p for p in mine.parent.iterdir() if p.name.startswith(".owner-")]
    assert len(marks) == 1 and not uploads.allows(marks[0], ALICE)  # a mark is nobody's download
    uploads.record(mine, BOB)  # Bob sent the same content: Gradio stored it in the same place
    assert uploads.allows(mine, BOB)
    assert uploads.allows(gradio_own, BOB) and uploads.allows(tmp_path / "other.wav", BOB)


def test_owner_cookie_is_found_among_odd_cookies() -> None:
    token = "T" * 43
    # A JSON-valued cookie of another app on this host (http.cookies gives up on the whole header for it).
    assert owner_cookie({"cookie": f'prefs={{"k":1}}; {OWNER_COOKIE}={token}; x=a b'}) == token
    assert owner_cookie({"cookie": f"{OWNER_COOKIE}=bad; {OWNER_COOKIE}={token}"}) == token  # a replaced one
    assert owner_cookie({"cookie": f"{OWNER_COOKIE}={token[:-1]}"}) is None
