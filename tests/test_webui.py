"""Web UI end to end: the Gradio endpoints on a live server with the tiny models, and the queue limit."""

from __future__ import annotations

import csv
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

from asr.audio import ffmpeg_binary
from conftest import DATA, Server, start_server, stop_server

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))
BAD = DATA / "bad" / "random_bytes.mp3"


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


def test_single_file(client: Client) -> None:
    text, confidence, details, table, files = client.predict(
        handle_file(str(DATA / "utterances" / "funasr_asr_example.wav")), "达摩院, 语音识别", 1, api_name="/transcribe"
    )
    assert text.strip()
    assert 0.0 <= confidence <= 1.0
    assert "音频时长" in details and "倍实时" in details and "达摩院" in details
    assert table["headers"] == ["开始", "结束", "文本"] and table["data"]
    assert float(table["data"][-1][1]) <= 5.6  # sentence ends lie inside the 5.55 s clip
    suffixes = sorted(Path(f).suffix for f in files)
    # ITN is on by default: the TXT is the written form, and `.spoken.txt` says it holds the text as spoken
    assert suffixes == [".srt", ".tsv", ".txt", ".txt", ".vtt"]
    assert any(f.endswith(".spoken.txt") for f in files)
    _, _, _, _, spoken_off = client.predict(
        handle_file(str(DATA / "utterances" / "funasr_asr_example.wav")), "", 1, False, 0, False, api_name="/transcribe"
    )
    assert sorted(Path(f).suffix for f in spoken_off) == [".srt", ".tsv", ".txt", ".vtt"]  # 数字规整 off
    words = next(Path(f) for f in files if f.endswith(".words.tsv")).read_text(encoding="utf-8").splitlines()
    assert words[0] == "start\tend\tword\tsentence" and len(words) > 5
    srt = next(Path(f) for f in files if f.endswith(".srt")).read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:0") and " --> " in srt


def test_single_file_with_speakers(client: Client) -> None:
    voices = [
        sf.read(DATA / "utterances" / n, dtype="float32")[0]
        for n in ("funasr_asr_example.wav", "firered_BAC009S0764W0121.wav")
    ]
    pause = np.zeros(12800, np.float32)
    text, _, details, table, files = client.predict(
        handle_file(str(_write_wav(np.concatenate([voices[0], pause, voices[1], pause, voices[0]]), "two.wav"))),
        "",
        1,
        True,
        2,
        api_name="/transcribe",
    )
    assert table["headers"] == ["开始", "结束", "说话人", "文本"]
    assert {row[2] for row in table["data"]} == {"说话人1", "说话人2"}
    assert all(line.startswith("说话人") for line in text.splitlines()) and "说话人数" in details
    txt = next(Path(f) for f in files if f.endswith(".txt")).read_text(encoding="utf-8")
    assert txt.startswith("说话人1：")


def _write_wav(audio: np.ndarray, name: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / name
    sf.write(path, audio, 16000)
    return path


def test_batch_csv_with_speakers(client: Client) -> None:
    status, table, files = client.predict(
        [handle_file(str(p)) for p in UTTERANCES[:2]], "", 1, True, 0, api_name="/transcribe_batch"
    )
    csv_file = next(f for f in files if f.endswith(".csv"))
    with open(csv_file, encoding="utf-8-sig") as handle:
        records = list(csv.DictReader(handle))
    assert [r["speakers"] for r in records] == ["1", "1"]  # short clips: one voice each
    assert all(r["text"].startswith("说话人1：") for r in records)
    assert all(row[2].startswith("说话人1：") for row in table["data"])


def test_single_file_video_and_batch_size(client: Client) -> None:
    text, *_ = client.predict(handle_file(str(DATA / "formats" / "clip_video.mp4")), "", 4, api_name="/transcribe")
    assert text.strip()


def test_single_file_bad_input_is_a_readable_error(client: Client) -> None:
    with pytest.raises(AppError, match="empty.wav：文件是空的"):
        client.predict(handle_file(str(DATA / "bad" / "empty.wav")), "", 1, api_name="/transcribe")
    with pytest.raises(AppError, match="不是可读取的音频或视频文件"):
        client.predict(handle_file(str(BAD)), "", 1, api_name="/transcribe")


def test_batch_with_a_corrupt_file(client: Client, server: Server) -> None:
    good = UTTERANCES[:3]
    paths = [good[0], BAD, *good[1:]]
    job = client.submit([handle_file(str(p)) for p in paths], "", 1, api_name="/transcribe_batch")
    updates = list(job)  # one update before the first file and one after each, then the downloads
    assert len(updates) >= len(paths) + 1
    status, table, files = job.result()
    rows = table["data"]
    assert [r[0] for r in rows] == [p.name for p in paths]
    for row in rows:
        if row[0] == BAD.name:
            assert row[4].startswith("❌") and "不是可读取的音频" in row[4]
        else:
            assert row[4].startswith("✅") and row[2].strip() and 0 <= float(row[3]) <= 1
    assert "3/4" not in status and "4/4" in status
    csv_file = next(f for f in files if f.endswith(".csv"))
    with open(csv_file, encoding="utf-8-sig") as handle:
        records = list(csv.DictReader(handle))
    assert [r["status"] for r in records] == ["ok", "failed", "ok", "ok"]
    assert any(f.endswith(".zip") for f in files)
    # Written to OUTPUT_DIR as each file finished (the server's outputs live next to its log).
    batch_dirs = sorted((server.log.parent / "outputs").glob("batch-*"))
    assert batch_dirs and len(list(batch_dirs[-1].glob("*.srt"))) == 3


def test_batch_file_limit(client: Client) -> None:
    with pytest.raises(AppError, match="一次最多 20 个文件，本次上传了 21 个"):  # BATCH_MAX_FILES=20, in Chinese
        client.predict([handle_file(str(UTTERANCES[0]))] * 21, "", 1, api_name="/transcribe_batch")


def test_batch_size_control_scales_funasr_batch_size_s(engine, tiny_settings, monkeypatch) -> None:
    """The tabs' batch-size value multiplies BATCH_SIZE_S (clamped to 1..BATCH_SIZE_MAX) on its way to FunASR."""
    from webui.batch import transcribe_batch
    from webui.common import BATCH_SIZE_MAX
    from webui.single import transcribe_file

    seen: list[int] = []
    generate = engine._model.generate

    def recording_generate(*args, **kwargs):
        seen.append(kwargs["batch_size_s"])
        return generate(*args, **kwargs)

    import secrets
    from types import SimpleNamespace

    from results.access import OWNER_COOKIE, ResultAccess

    monkeypatch.setattr(engine._model, "generate", recording_generate)
    access = ResultAccess.from_settings(tiny_settings)
    browser = SimpleNamespace(headers={"cookie": f"{OWNER_COOKIE}={secrets.token_urlsafe(32)}"})
    path = str(UTTERANCES[1])
    for value in (1, 4, None, 0, 100):
        transcribe_file(engine, tiny_settings, access, path, "", value, browser)
    list(transcribe_batch(engine, tiny_settings, access, [path, path], "", 3, browser))
    base = tiny_settings.batch_size_s
    assert seen == [base, 4 * base, base, base, BATCH_SIZE_MAX * base, 3 * base, 3 * base]


def test_recording_and_system_info(client: Client) -> None:
    text, details = client.predict(handle_file(str(UTTERANCES[1])), "", api_name="/transcribe_recording")
    assert text.strip() and "音频时长" in details
    table, data = client.predict(api_name="/system_info")
    assert data["model_state"] == "ready" and data["device"] == "cpu"
    assert data["cuda_available"] is False and data["gpus"] == []
    assert data["requests_served"] >= 1 and data["queue_max_size"] == 20
    assert "设备类型" in table and "tiny-seaco" in table


def _long_opus(folder: Path, seconds: int) -> Path:
    """Speech repeated to `seconds`, as a small Opus file (a fast upload that keeps the model busy)."""
    clips = [sf.read(p, dtype="float32")[0] for p in UTTERANCES]
    audio = np.concatenate([np.concatenate([c, np.zeros(6400, np.float32)]) for c in clips])
    audio = np.tile(audio, seconds * 16000 // audio.size + 1)[: seconds * 16000]
    wav, opus = folder / "long.wav", folder / "long.opus"
    sf.write(wav, audio, 16000)
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-i", str(wav), "-b:a", "24k", str(opus)], check=True)
    return opus


def test_queue_overflow_gets_503(tiny_models, tmp_path: Path) -> None:
    """With 1 request running and QUEUE_MAX_SIZE=2 waiting, further requests are refused (HTTP 503,
    gradio_client's QueueError) while the accepted ones all finish."""
    long_file = _long_opus(tmp_path, 240)
    srv = start_server(tiny_models, tmp_path, QUEUE_MAX_SIZE="2", MODEL_CONCURRENCY="1")
    try:
        client = Client(srv.url, verbose=False)
        upload = handle_file(str(long_file))

        def call(i: int) -> str:
            time.sleep(0.15 * i)  # staggered, but uploads may finish out of order under load
            try:
                client.predict(upload, "", 1, api_name="/transcribe")
                return "ok"
            except QueueError:
                return "full"

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(call, range(6)))
        # 1 running + 2 waiting are accepted and all finish; the others are refused (each accepted
        # request keeps the model busy for seconds, far longer than the 0.75 s it takes to send all six).
        assert outcomes.count("ok") == 3 and outcomes.count("full") == 3, outcomes
    finally:
        stop_server(srv)
