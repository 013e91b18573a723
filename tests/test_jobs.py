"""Durable jobs: the API round trip, ownership, limits, cancel, recovery after a worker dies, and cleanup.

In-process tests run the real JobService (SQLite store, SqliteHuey, worker threads) on the session's tiny
engine; `test_kill_9_*` kills a real server process mid-batch and starts it again on the same JOBS_DIR.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app import create_app
from asr.engine import Engine
from config.settings import Settings
from conftest import DATA, ROOT, UTTERANCE, Server, TinyModels, service_settings, start_server, stop_server
from jobs import Job, JobError, JobFile, JobService
from jobs.service import Upload

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else "python3"


def job_settings(engine: Engine, tmp: Path, **overrides: object) -> Settings:
    return service_settings(engine, tmp, **{"job_lease_s": 3.0, **overrides})


@pytest.fixture
def client(engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(job_settings(engine, tmp_path), engine, load=False)
    try:
        with TestClient(app) as client:  # the lifespan starts (and stops) the job workers
            yield client
    finally:
        engine.remove_observer(app.state.api.metrics.observe_transcription)


def submit(client: TestClient, paths: list[Path], headers: dict | None = None, **data: str) -> httpx.Response:
    handles = [open(p, "rb") for p in paths]
    try:
        files = [("file", (p.name, h)) for p, h in zip(paths, handles, strict=True)]
        return client.post("/v1/jobs", files=files, data=data, headers=headers or {})
    finally:
        for h in handles:
            h.close()


def wait_finished(get, job_id: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = get(job_id)
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish: {body}")


@pytest.fixture
def transcribed(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Counter:
    """The names the engine was asked to transcribe while the test runs, counted at the engine's own door
    (evidence from outside the jobs package, whose runs and attempts records say the same of themselves)."""
    names: Counter = Counter()
    transcribe = engine.transcribe

    def counted(*args: object, **kwargs: object) -> object:
        names[kwargs.get("name")] += 1
        return transcribe(*args, **kwargs)

    monkeypatch.setattr(engine, "transcribe", counted)
    return names


# ------------------------------------------------------------------------------------ API
def test_job_results_equal_the_direct_call_in_every_format(client: TestClient, transcribed: Counter) -> None:
    files = UTTERANCES[:3]
    response = submit(client, files, response_format="srt", hotwords="达摩院")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running") and response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert len(job["id"]) == 36 and job["id"].startswith("job_")  # 128 random bits in hex
    done = wait_finished(lambda i: client.get(f"/v1/jobs/{i}").json(), job["id"])
    assert done["status"] == "done" and done["file_counts"]["done"] == 3
    assert done["progress"]["audio_seconds_done"] == pytest.approx(done["progress"]["audio_seconds_total"])
    assert [f["attempts"] for f in done["files"]] == [1, 1, 1]
    assert transcribed == Counter(p.name for p in files), transcribed  # each file once, by the engine's count
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        for index, path in enumerate(files):
            with open(path, "rb") as f:
                direct = client.post(
                    "/v1/audio/transcriptions",
                    files={"file": (path.name, f)},
                    data={"response_format": fmt, "hotwords": "达摩院"},
                )
            from_job = client.get(f"/v1/jobs/{job['id']}/result", params={"response_format": fmt, "file": index})
            assert from_job.status_code == 200, from_job.text
            if fmt == "verbose_json":  # the same but for the clock
                assert {**from_job.json(), "usage": None} == {**direct.json(), "usage": None}
            else:
                assert from_job.content == direct.content, (fmt, index)
    archive = client.get(f"/v1/jobs/{job['id']}/result")  # several files, the job's format (srt): a zip
    assert archive.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert names == [f"{i + 1:03d}_{p.stem}.srt" for i, p in enumerate(files)] + ["job.json"]


def test_a_bad_file_fails_alone_with_its_reason(client: TestClient) -> None:
    response = submit(client, [UTTERANCE, DATA / "bad" / "image_renamed.wav", DATA / "bad" / "empty.wav"])
    done = wait_finished(lambda i: client.get(f"/v1/jobs/{i}").json(), response.json()["id"])
    states = [(f["status"], bool(f["error"])) for f in done["files"]]
    assert done["status"] == "done" and states == [("done", False), ("failed", True), ("failed", True)]
    assert "image" in done["files"][1]["error"]
    only_bad = submit(client, [DATA / "bad" / "not_audio.wav"])
    failed = wait_finished(lambda i: client.get(f"/v1/jobs/{i}").json(), only_bad.json()["id"])
    assert failed["status"] == "failed" and "not_audio.wav" in failed["error"]
    result = client.get(f"/v1/jobs/{failed['id']}/result")
    assert result.status_code == 409 and "not_audio.wav" in result.json()["error"]["message"]


def test_each_key_sees_only_its_own_jobs(engine: Engine, tmp_path: Path) -> None:
    settings = job_settings(engine, tmp_path, api_keys=SecretStr("alice-key,bob-key"))
    app = create_app(settings, engine, load=False)
    alice, bob = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}
    try:
        with TestClient(app) as client:
            assert submit(client, [UTTERANCE]).status_code == 401
            job_id = submit(client, [UTTERANCE], headers=alice).json()["id"]
            wait_finished(lambda i: client.get(f"/v1/jobs/{i}", headers=alice).json(), job_id)
            assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["data"]] == [job_id]
            assert client.get("/v1/jobs", headers=bob).json()["data"] == []
            for method, path in (
                ("GET", f"/v1/jobs/{job_id}"),
                ("GET", f"/v1/jobs/{job_id}/result"),
                ("DELETE", f"/v1/jobs/{job_id}"),
            ):
                response = client.request(method, path, headers=bob)
                assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
            assert client.get(f"/v1/jobs/{job_id}/result", headers=alice).status_code == 200
            assert client.delete(f"/v1/jobs/{job_id}", headers=alice).json()["deleted"] is True
            assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 404
            assert not (settings.jobs_dir / "results" / job_id).exists()
    finally:
        engine.remove_observer(app.state.api.metrics.observe_transcription)


def test_limits_give_clear_errors(engine: Engine, tmp_path: Path) -> None:
    settings = job_settings(
        engine, tmp_path, job_max_files=2, job_max_queued=2, job_max_queued_per_key=1, api_keys=SecretStr("a,b,c")
    )
    app = create_app(settings, engine, load=False)
    client = TestClient(app)  # no lifespan: no workers, so jobs stay queued
    try:
        key = {"Authorization": "Bearer a"}
        too_many = submit(client, UTTERANCES[:3], headers=key)
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_files"
        none = client.post("/v1/jobs", data={"response_format": "srt"}, headers=key)
        assert none.status_code == 400 and none.json()["error"]["code"] == "missing_file"
        bad_format = submit(client, [UTTERANCE], headers=key, response_format="xml")
        assert bad_format.status_code == 400 and bad_format.json()["error"]["param"] == "response_format"
        assert submit(client, [UTTERANCE], headers=key).status_code == 202
        per_key = submit(client, [UTTERANCE], headers=key)
        assert per_key.status_code == 429 and per_key.json()["error"]["code"] == "too_many_jobs"
        assert submit(client, [UTTERANCE], headers={"Authorization": "Bearer b"}).status_code == 202
        full = submit(client, [UTTERANCE], headers={"Authorization": "Bearer c"})
        assert full.status_code == 503 and full.headers["retry-after"]
        assert list((settings.jobs_dir / "uploads").iterdir()).__len__() == 2  # refused jobs stored nothing
        not_done = client.get(
            f"/v1/jobs/{client.get('/v1/jobs', headers=key).json()['data'][0]['id']}/result", headers=key
        )
        assert not_done.status_code == 409 and not_done.json()["error"]["code"] == "job_not_finished"
    finally:
        engine.remove_observer(app.state.api.metrics.observe_transcription)


def test_metrics_count_jobs_by_state(client: TestClient) -> None:
    job_id = submit(client, [UTTERANCE]).json()["id"]
    wait_finished(lambda i: client.get(f"/v1/jobs/{i}").json(), job_id)
    text = client.get("/metrics").text
    assert 'paraformer_jobs{state="done"} 1.0' in text
    assert "paraformer_job_queue_wait_seconds_count 1.0" in text
    assert 'paraformer_job_duration_seconds_count{state="done"} 1.0' in text


# ------------------------------------------------------------------------------------ service
@pytest.fixture
def service(engine: Engine, tmp_path: Path) -> Iterator[JobService]:
    svc = JobService(job_settings(engine, tmp_path), engine)
    try:
        yield svc
    finally:
        svc.stop()


def test_cancel_stops_a_running_file_at_its_next_segment(service: JobService, long_wav: Path) -> None:
    # batch_size_s=1: one VAD segment per model call, so there are many segment boundaries to stop at.
    job = service.submit("", [Upload("long.wav", long_wav), Upload("next.wav", UTTERANCE)], batch_size_s=1)
    service.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        current = service.get(job.id, "")
        if current.files[0].done_s > 0:
            break
        time.sleep(0.005)
    cancelled = service.cancel(job.id, "")
    assert cancelled is not None and cancelled.cancel_requested
    final = service.get(job.id, "")
    while not final.finished and time.time() < deadline:
        time.sleep(0.02)
        final = service.get(job.id, "")
    assert final.state == "cancelled"
    assert [f.state for f in final.files] == ["cancelled", "cancelled"]
    assert 0 < final.files[0].done_s < final.files[0].duration_s, "stopped part-way through the long file"
    assert not (service.files.upload_path(job.id, 0)).exists(), "uploads go once nothing will run"


def test_job_size_and_length_limits_fail_the_file_alone(engine: Engine, tmp_path: Path, long_wav: Path) -> None:
    settings = job_settings(engine, tmp_path, job_max_upload_mb=1.0, job_max_audio_seconds=60.0)
    svc = JobService(settings, engine)
    job = svc.submit("", [Upload("big.wav", long_wav), Upload("ok.wav", UTTERANCE)])  # 3.8 MB, 120 s
    assert job.files[0].state == "failed" and "JOB_MAX_UPLOAD_MB" in job.files[0].error
    assert not svc.files.upload_path(job.id, 0).exists()
    svc = JobService(job_settings(engine, tmp_path, job_max_upload_mb=10.0, job_max_audio_seconds=60.0), engine)
    job = svc.submit("", [Upload("long.wav", long_wav), Upload("ok.wav", UTTERANCE)])
    svc.run_job(job.id)
    done = svc.get(job.id, "")
    assert done.state == "done" and [f.state for f in done.files] == ["failed", "done"]
    assert "longer than the limit of 60 s" in done.files[0].error


def test_callback_url_is_called_once_at_the_end_and_only_on_allowed_hosts(engine: Engine, tmp_path: Path) -> None:
    import http.server

    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    allowed = f"127.0.0.1:{hook.server_port}"
    try:
        svc = JobService(job_settings(engine, tmp_path, job_callback_hosts=f"example.org, {allowed}"), engine)
        for url, reason in (
            (f"http://10.0.0.1:{hook.server_port}/", "not one this server calls"),
            ("file:///etc/passwd", "http:// or https://"),
            (f"http://u:p@{allowed}/", "user name"),
        ):
            with pytest.raises(JobError, match=reason):
                svc.submit("", [Upload(UTTERANCE.name, UTTERANCE)], callback_url=url)
        job = svc.submit("", [Upload(UTTERANCE.name, UTTERANCE)], callback_url=f"http://{allowed}/done")
        svc.run_job(job.id)
        deadline = time.time() + 20
        while not (received and svc.get(job.id, "").callback) and time.time() < deadline:
            time.sleep(0.05)
        assert received == [
            {
                "id": job.id,
                "object": "transcription.job",
                "status": "done",
                "error": None,
                "file_counts": {"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 0},
                "finished_at": svc.get(job.id, "").finished_at,
            }
        ]
        assert svc.get(job.id, "").callback == "sent (204)"
        cancelled = svc.submit("", [Upload(UTTERANCE.name, UTTERANCE)], callback_url=f"http://{allowed}/done")
        svc.cancel(cancelled.id, "")
        svc.run_job(cancelled.id)  # a queue entry left behind: the job has ended, nothing more happens
        # Every callback the service sends runs on a thread it starts before returning (jobs.callbacks.send): once
        # those threads have ended, every callback there will be has arrived.
        while any(t.name.startswith("callback-") for t in threading.enumerate()) and time.time() < deadline:
            time.sleep(0.02)
        assert not any(t.name.startswith("callback-") for t in threading.enumerate())
        assert [r["status"] for r in received] == ["done", "cancelled"]
        closed = JobService(job_settings(engine, tmp_path / "closed"), engine)  # JOB_CALLBACK_HOSTS empty
        with pytest.raises(JobError, match="not enabled"):
            closed.submit("", [Upload(UTTERANCE.name, UTTERANCE)], callback_url=f"http://{allowed}/")
    finally:
        hook.shutdown()


def _dead_worker() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer runs
    return f"{socket.gethostname()}:{proc.pid}:deadbeef:Worker-1"


def test_a_job_held_by_a_dead_process_is_taken_up_once_without_redoing_finished_files(
    service: JobService, transcribed: Counter
) -> None:
    job = service.submit("", [Upload(p.name, p) for p in UTTERANCES[:3]])
    first = service.engine.transcribe(UTTERANCES[0])
    service.files.write_result(job.id, 0, first)
    transcribed.clear()

    def crashed_mid_job(j: Job) -> bool:  # as a kill -9 leaves it: file 0 done, file 1 running, lease still valid
        j.state, j.worker, j.lease_until, j.runs, j.started_at = "running", _dead_worker(), time.time() + 600, 1, 1.0
        j.files[0].state, j.files[0].attempts, j.files[0].done_s, j.files[0].duration_s = "done", 1, 4.2, 4.2
        j.files[1].state, j.files[1].attempts, j.files[1].done_s = "running", 1, 1.0
        return True

    service.store.update(job.id, crashed_mid_job)
    served = service.engine.requests_served
    assert service.recover() == 1  # the holder's pid is gone: queued again
    assert service.recover() == 0  # and only once
    service.start()
    final = wait_finished(lambda i: {"status": service.get(i, "").state}, job.id)
    done = service.get(job.id, "")
    assert final["status"] == "done" and done.runs == 2
    assert [f.attempts for f in done.files] == [1, 2, 1]
    assert service.engine.requests_served - served == 2, "file 0 was not transcribed again"
    assert transcribed == Counter(p.name for p in UTTERANCES[1:3]), transcribed


def test_a_live_lease_on_another_box_is_respected_until_it_lapses(service: JobService) -> None:
    job = service.submit("", [Upload(UTTERANCE.name, UTTERANCE)])

    lease_until = time.time() + 2

    def elsewhere(j: Job) -> bool:
        j.state, j.worker, j.lease_until = "running", "other-box:1:cafe:Worker-1", lease_until
        return True

    service.store.update(job.id, elsewhere)
    assert service.recover() == 0
    service.run_job(job.id)
    assert service.get(job.id, "").state == "running" and service.get(job.id, "").runs == 0
    # Recovery, tried over and over: nothing until the lease lapses, then the job, once (within 10 s of the lapse).
    while not (taken := service.recover()):
        assert time.time() < lease_until + 10, "a lapsed lease was never taken over"
        time.sleep(0.05)
    assert time.time() >= lease_until, "taken over while its lease still ran"
    assert taken == 1 and service.get(job.id, "").state == "queued" and service.recover() == 0


def test_job_records_round_trip() -> None:
    job = Job(
        id="job_" + "0" * 32,
        owner="o",
        files=[JobFile(name="a.wav", duration_s=10.0, done_s=4.0)],
        state="running",
        run_started_at=time.time() - 2,
        run_done_s=0.0,
    )
    assert Job.from_doc(json.loads(json.dumps(job.to_doc()))) == job
    assert job.total_s == 10.0 and job.eta_s() == pytest.approx(3.0, rel=0.1)  # 4 s of audio in 2 s: 6 s left


# ------------------------------------------------------------------------------------ cleanup
def test_cleanup_removes_finished_jobs_after_the_retention(service: JobService, tmp_path: Path) -> None:
    old = service.submit("", [Upload(UTTERANCE.name, UTTERANCE)])
    new = service.submit("", [Upload(UTTERANCE.name, UTTERANCE)])
    running = service.submit("", [Upload(UTTERANCE.name, UTTERANCE)])
    service.files.write_result(old.id, 0, service.engine.transcribe(UTTERANCE))

    def finished(hours_ago: float):
        def change(j: Job) -> bool:
            j.state, j.finished_at = "done", time.time() - hours_ago * 3600
            return True

        return change

    service.store.update(old.id, finished(30))
    service.store.update(new.id, finished(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB", "TEMP_DIR", "LOG_DIR"))}
    env.update(
        ENV_FILE=str(tmp_path / "no.env"),
        JOBS_DIR=str(service.settings.jobs_dir),
        JOB_RETENTION_H="24",
        TEMP_DIR=str(tmp_path / "uploads"),
        LOG_DIR=str(tmp_path / "logs"),
    )
    result = subprocess.run(
        [PYTHON, str(ROOT / "ops" / "cleanup.py")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert service.store.get(old.id) is None and not (service.settings.jobs_dir / "results" / old.id).exists()
    assert service.store.get(new.id) is not None and service.store.get(running.id) is not None
    assert "1 finished job(s)" in result.stdout


# ------------------------------------------------------------------------------------ docs/jobs.md
@pytest.mark.server
def test_readme_job_session_works_as_written(server: Server, tmp_path: Path) -> None:
    section = (ROOT / "docs" / "jobs.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", section, re.S)[0]
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the session uses project-relative paths
    script = "set -euo pipefail\n" + block.replace("localhost:7860", server.url.removeprefix("http://"))
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("done ")
    path = DATA / "utterances" / "funasr_long.wav"
    with open(path, "rb") as f:
        direct = httpx.post(
            server.url + "/v1/audio/transcriptions",
            files={"file": (path.name, f)},
            data={"response_format": "srt"},
            timeout=60,
        )
    assert (tmp_path / "job.srt").read_text() == direct.text and direct.text.strip()


# ------------------------------------------------------------------------------------ kill -9
@pytest.mark.server
def test_kill_9_mid_batch_resumes_after_restart_without_redoing_finished_files(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    # 6 files of 30 s: long enough to catch the batch part-way, short enough for a fast test.
    clips = [sf.read(p, dtype="float32")[0] for p in UTTERANCES[:6]]
    audio = np.concatenate([np.concatenate([c, np.zeros(6400, np.float32)]) for c in clips * 5])[: 30 * 16000]
    paths = []
    for i in range(6):
        path = tmp_path / f"call-{i}.wav"
        sf.write(path, np.roll(audio, i * 16000), 16000, subtype="PCM_16")
        paths.append(path)
    server = start_server(tiny_models, tmp_path, JOB_LEASE_S="60")
    http = httpx.Client(timeout=60)  # keeps the owner cookie: the job is this client's
    try:
        handles = [open(p, "rb") for p in paths]
        files = [("file", (p.name, h)) for p, h in zip(paths, handles, strict=True)]
        response = http.post(server.url + "/v1/jobs", files=files, data={"response_format": "text"})
        for h in handles:
            h.close()
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.time() + 120
        while time.time() < deadline:
            job = http.get(f"{server.url}/v1/jobs/{job_id}").json()
            if job["file_counts"]["done"] >= 2:
                break
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        done_before = [i for i, f in enumerate(job["files"]) if f["status"] == "done"]
        assert 2 <= len(done_before) < 6, job
        first_log = server.log_text()
        server = start_server(tiny_models, tmp_path, JOB_LEASE_S="60")  # same JOBS_DIR, new process
        final = wait_finished(lambda i: http.get(f"{server.url}/v1/jobs/{i}").json(), job_id, 180)
        second_log = server.log_text()
    finally:
        http.close()
        stop_server(server)
    assert final["status"] == "done" and final["file_counts"]["done"] == 6 and final["runs"] == 2
    attempts = [f["attempts"] for f in final["files"]]
    assert all(attempts[i] == 1 for i in done_before), attempts  # finished files were not transcribed again
    assert sum(attempts) <= 7, attempts  # at most the one file that was running when killed ran twice
    # ... and by the engine's own log line for each transcription that finished (outside the jobs package): over
    # both processes, every file once. The one killed mid-file never finished in the first.
    finished = Counter(re.findall(r"transcribed (call-\d\.wav):", first_log + second_log))
    assert finished == Counter(p.name for p in paths), finished
    print(f"\nkill -9 after {len(done_before)}/6 files; attempts per file after restart: {attempts}")


def test_server_paths_and_urls_only_where_an_admin_allows_them(engine: Engine, tmp_path: Path) -> None:
    import http.server
    import shutil

    shared = tmp_path / "recordings"
    shared.mkdir()
    shutil.copy(UTTERANCE, shared / "call.wav")
    (tmp_path / "secret.wav").write_bytes(UTTERANCE.read_bytes())
    (shared / "escape.wav").symlink_to(tmp_path / "secret.wav")
    audio = UTTERANCE.read_bytes()

    class Files(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/moved.wav":
                self.send_response(302)
                self.send_header("Location", "http://example.org/x.wav")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(audio)))
            self.end_headers()
            self.wfile.write(audio)

        def log_message(self, *args: object) -> None:
            pass

    files = http.server.HTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{files.server_port}"
    closed = create_app(job_settings(engine, tmp_path / "closed"), engine, load=False)
    opened = create_app(
        job_settings(engine, tmp_path / "open", job_allowed_dirs=str(shared), job_url_hosts=host), engine, load=False
    )
    try:
        with TestClient(closed) as client:
            for data, param, says in [
                ({"path": str(shared / "call.wav")}, "path", "JOB_ALLOWED_DIRS is empty"),
                ({"url": f"http://{host}/a.wav"}, "url", "JOB_URL_HOSTS is empty"),
            ]:
                error = client.post("/v1/jobs", data=data).json()["error"]
                assert (error["param"], says in error["message"]) == (param, True), error
        with TestClient(opened) as client:
            for data, code in [
                ({"path": str(tmp_path / "secret.wav")}, "path_not_allowed"),
                ({"path": str(shared / "escape.wav")}, "path_not_allowed"),  # a link out of it
                ({"path": str(shared / ".." / "secret.wav")}, "path_not_allowed"),
                ({"path": str(shared / "none.wav")}, "path_not_found"),
                ({"url": "http://example.org/a.wav"}, "url_not_allowed"),
                ({"url": f"http://{host}/moved.wav"}, "url_failed"),
            ]:  # redirects not followed
                response = client.post("/v1/jobs", data=data)
                assert (response.status_code, response.json()["error"]["code"]) == (400, code), data
            direct = client.post("/v1/audio/transcriptions", files={"file": ("call.wav", audio)}).json()["text"]
            response = client.post("/v1/jobs", data={"path": str(shared / "call.wav"), "url": f"http://{host}/b.wav"})
            assert response.status_code == 202, response.text
            job = wait_finished(lambda i: client.get(f"/v1/jobs/{i}").json(), response.json()["id"])
            assert [f["status"] for f in job["files"]] == ["done", "done"]
            for index in (0, 1):
                assert client.get(f"/v1/jobs/{job['id']}/result", params={"file": index}).json()["text"] == direct
            assert not list((tmp_path / "open" / "jobs" / "downloads").glob("*"))  # the download was moved in
    finally:
        files.shutdown()
        for app in (closed, opened):
            engine.remove_observer(app.state.api.metrics.observe_transcription)
