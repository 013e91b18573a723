"""A verification as a job, end to end in-process (the tiny models): a hotword list, recordings and a manifest
with a bad row go in; the job transcribes each file without and with the list; the report's numbers equal a
recomputation from its stored texts, and the texts equal the engine's own for each setting."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app import create_app
from asr.engine import Engine
from conftest import DATA, TinyModels, make_settings
from test_verification import dp_counts, dp_recall
from verification import normalise

CLIPS = ["funasr_asr_example.wav", "firered_BAC009S0764W0121.wav", "firered_IT0011W0001.wav"]
REFERENCES = ["欢迎大家来体验达摩院推出的语音识别模型", "甚至出现交易几乎停滞的情况", "换一首歌"]
WORDS = ["达摩院", "语音识别"]


@pytest.fixture
def client(engine: Engine, tiny_models: TinyModels, tmp_path) -> Iterator[TestClient]:
    application = create_app(make_settings(tiny_models, tmp_path), engine, load=False)
    try:
        with TestClient(application) as test_client:
            yield test_client
    finally:
        engine.remove_observer(application.state.api.metrics.observe_transcription)


def wait_done(client: TestClient, job_id: str) -> dict:
    deadline = time.time() + 120
    while (view := client.get(f"/v1/verifications/{job_id}").json())["status"] not in ("done", "failed", "cancelled"):
        assert time.time() < deadline, view
        time.sleep(0.2)
    return view


def test_a_verification_job_compares_without_and_with_a_list(client: TestClient, engine: Engine) -> None:
    assert client.post("/v1/hotword-lists", json={"name": "演示", "words": WORDS}).status_code == 201
    manifest = "path\ttext\n" + "".join(f"{name}\t{ref}\n" for name, ref in zip(CLIPS, REFERENCES, strict=True))
    manifest += "missing.wav\t不存在的文件\n"
    files = [("file", (name, (DATA / "utterances" / name).read_bytes())) for name in CLIPS]
    answer = client.post(
        "/v1/verifications",
        files=[*files, ("manifest", ("manifest.tsv", manifest.encode()))],
        data={"hotword_list": "演示"},
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    view = wait_done(client, job_id)
    assert view["status"] == "done" and view["report"]["summary"]["scored"] == 3
    assert view["report"]["summary"]["files"] == 4 and view["report"]["summary"]["failed"] == 1

    report = client.get(f"/v1/verifications/{job_id}/report").json()
    rows = {row["file"]: row for row in report["files"]}
    assert rows["missing.wav"]["problems"][0]["code"].startswith("bad_manifest_row")
    total = {"a": [0, 0], "b": [0, 0]}
    for name, reference in zip(CLIPS, REFERENCES, strict=True):
        row = rows[name]
        path = DATA / "utterances" / name
        # the stored texts are the engine's own for each setting
        assert row["a"]["hypothesis"] == engine.transcribe(path, hotwords="", itn=False).text
        assert row["b"]["hypothesis"] == engine.transcribe(path, hotwords=",".join(WORDS), itn=False).text
        for side in ("a", "b"):
            ref, hyp = normalise(reference), normalise(row[side]["hypothesis"])
            s, d, i = dp_counts(ref, hyp)  # the test's own dynamic programme, not the package's alignment
            # the edit count is the same for every minimum alignment (S/D/I may split differently)
            assert row[side]["edits"] == s + d + i
            assert row[side]["cer"] == pytest.approx((s + d + i) / len(ref))
            total[side][0] += s + d + i
            total[side][1] += len(ref)
            for word in WORDS:
                occurrences, recalled, false_alarms = dp_recall(ref, hyp, word)
                counts = row[side]["hotwords"][normalise(word)]
                assert counts["occurrences"] == occurrences == ref.count(word)
                assert counts["false_alarms"] == false_alarms
                assert counts["recalled"] <= min(occurrences, hyp.count(word))
    for side in ("a", "b"):
        assert report["summary"][side]["cer"] == pytest.approx(total[side][0] / total[side][1])
    assert [row["word"] for row in report["hotword_stats"]] == WORDS

    as_job = client.get(f"/v1/jobs/{job_id}")
    assert as_job.json()["kind"] == "verification"
    assert client.get(f"/v1/jobs/{job_id}/result").json()["summary"] == report["summary"]
    per_file = list(csv.reader(io.StringIO(client.get(f"/v1/verifications/{job_id}/report?format=csv").text)))
    assert len(per_file) == 1 + 4
    per_word = client.get(f"/v1/verifications/{job_id}/report", params={"format": "hotwords.csv"})
    assert per_word.headers["content-disposition"].endswith('.hotwords.csv"')
    html = client.get(f"/v1/verifications/{job_id}/report?format=html", headers={"Accept-Language": "zh"}).text
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "达摩院" in html


def test_bad_requests_are_clear(client: TestClient) -> None:
    clip = ("file", ("a.wav", (DATA / "utterances" / CLIPS[0]).read_bytes()))
    no_manifest = client.post("/v1/verifications", files=[clip], data={"hotwords": "达摩院"})
    assert no_manifest.status_code == 400 and no_manifest.json()["error"]["code"] == "missing_manifest"
    unusable = client.post(
        "/v1/verifications",
        files=[clip, ("manifest", ("m.tsv", "nothere.wav\t你好\n".encode()))],
        data={"hotwords": "达摩院"},
        headers={"Accept-Language": "zh"},
    )
    assert unusable.status_code == 400 and unusable.json()["error"]["code"] == "bad_manifest"
    no_words = client.post("/v1/verifications", files=[clip, ("manifest", ("m.tsv", "a.wav\t你好\n".encode()))])
    assert no_words.status_code == 400 and no_words.json()["error"]["code"] == "missing_hotwords"
    unknown = client.post(
        "/v1/verifications",
        files=[clip, ("manifest", ("m.tsv", "a.wav\t你好\n".encode()))],
        data={"hotword_list": "nobody"},
    )
    assert unknown.status_code == 404
    # a plain job is not a verification
    job = client.post("/v1/jobs", files=[clip]).json()
    assert client.get(f"/v1/verifications/{job['id']}").status_code == 404
    assert json.loads(client.get("/v1/verifications/job_" + "0" * 32).text)["error"]["code"] == "job_not_found"
