"""Jobs across replicas on the distributed backend (JOBS_BACKEND=redis: Redis records + RedisHuey).

Two app processes share one redis-server (started here on a free port, from Debian's package: skipped when
it is not installed, as .ci/run installs it) and one JOBS_DIR. 100 jobs of mixed files must each be done
exactly once, by both replicas between them; a replica killed mid-job must see its job finish on the other.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from conftest import DATA, Server, TinyModels, free_port, missing_tool, start_server, stop_server
from jobs.store import RedisJobStore
from test_api_unit import metric

REDIS = shutil.which("redis-server")
pytestmark = [pytest.mark.server, pytest.mark.redis]
MIXED = [
    DATA / "utterances" / "funasr_asr_example.wav",
    DATA / "formats" / "clip.mp3",
    DATA / "formats" / "clip.ogg",
    DATA / "bad" / "not_audio.wav",
    DATA / "utterances" / "funasr_mid.wav",
]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if not REDIS:
        pytest.skip(missing_tool("redis-server", "apt-get install redis-server"))
    port = free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        deadline = time.time() + 20
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


#: One client, one owner cookie, for both replicas (a cookie is per host, whatever the port).
HTTP = httpx.Client(timeout=60)


def post_job(url: str, paths: list[Path], **data: str) -> str:
    handles = [open(p, "rb") for p in paths]
    try:
        files = [("file", (p.name, h)) for p, h in zip(paths, handles, strict=True)]
        response = HTTP.post(url + "/v1/jobs", files=files, data=data)
    finally:
        for h in handles:
            h.close()
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_all(url: str, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline, final = time.time() + timeout, {}
    while time.time() < deadline and len(final) < len(ids):
        for job_id in ids:
            if job_id not in final:
                body = HTTP.get(f"{url}/v1/jobs/{job_id}").json()
                if body["status"] in ("done", "failed", "cancelled"):
                    final[job_id] = body
        time.sleep(0.2)
    assert len(final) == len(ids), f"{len(ids) - len(final)} job(s) never finished"
    return final


def transcriptions(server: Server) -> float:
    """The replica's engine's successful transcriptions (/metrics; its observer counts every call that returned)."""
    return metric(HTTP.get(server.url + "/metrics").text, "paraformer_transcriptions_total", outcome="ok")


def test_two_replicas_share_the_work_and_take_over_a_killed_one(
    tiny_models: TinyModels, tmp_path: Path, redis_url: str
) -> None:
    env = dict(
        JOBS_BACKEND="redis",
        JOBS_REDIS_URL=redis_url,
        JOB_LEASE_S="30",
        JOB_MAX_QUEUED="200",
        JOB_MAX_QUEUED_PER_KEY="0",
    )
    started = time.time()
    with ThreadPoolExecutor(2) as pool:  # both start at once: each takes a while on a busy CPU
        a, b = pool.map(lambda _: start_server(tiny_models, tmp_path, **env), range(2))
    store = RedisJobStore(redis_url)
    try:
        # 100 jobs of 1-3 mixed files (one of them not audio), sent to both replicas in turn.
        ids = [post_job((a, b)[i % 2].url, [MIXED[(i + k) % len(MIXED)] for k in range(1 + i % 3)]) for i in range(100)]
        submitted = time.time()
        final = wait_all(a.url, ids, 300)
        print(
            f"\n2 replicas up in {submitted - started:.0f} s (100 jobs submitted); all finished "
            f"{time.time() - submitted:.0f} s later"
        )
        records = [store.get(job_id) for job_id in ids]
        # Ran once, by the engines' own count (the service's metrics, outside the jobs package): each replica's
        # transcriptions add up to the files done, no more.
        transcribed = sum(transcriptions(r) for r in (a, b))
        done_files = sum(f["status"] == "done" for body in final.values() for f in body["files"])
        assert transcribed == done_files, (transcribed, done_files)
        assert all(r is not None and r.runs == 1 and len(r.claimed_by) == 1 for r in records), "each ran once"
        assert all(f.attempts == 1 for r in records for f in r.files), "each file ran once"
        by_replica = Counter(r.claimed_by[0] for r in records)
        assert len(by_replica) == 2, f"both replicas worked: {by_replica}"
        print(
            f"jobs per replica: {sorted(by_replica.values())}; runs per job: {Counter(r.runs for r in records)}; "
            f"file attempts: {Counter(f.attempts for r in records for f in r.files)}"
        )
        assert {body["status"] for body in final.values()} <= {"done", "failed"}
        bad = [f for body in final.values() for f in body["files"] if f["name"] == "not_audio.wav"]
        assert bad and all(f["status"] == "failed" and f["error"] for f in bad)

        # A long job; the replica that claims it is killed mid-file: the other takes it over (the holder's pid is
        # gone) and finishes it, without redoing a file that was finished.
        clip = sf.read(MIXED[0], dtype="float32")[0]
        long = tmp_path / "long.wav"
        sf.write(long, np.tile(np.concatenate([clip, np.zeros(6400, np.float32)]), 20), 16000, subtype="PCM_16")
        job_id = post_job(a.url, [long, long, long])
        deadline = time.time() + 120
        record = store.get(job_id)
        while time.time() < deadline and not (record.state == "running" and record.files[0].state == "done"):
            time.sleep(0.02)
            record = store.get(job_id)
        holder_pid = int(record.claimed_by[0].split(":")[1])
        holder, other = (a, b) if holder_pid == a.proc.pid else (b, a)
        before = transcriptions(other)
        os.kill(holder.proc.pid, signal.SIGKILL)
        holder.proc.wait()
        [body] = wait_all(other.url, [job_id], 120).values()
        record = store.get(job_id)
        assert body["status"] == "done" and record.runs == 2 and len(set(record.claimed_by)) == 2
        assert record.files[0].attempts == 1
        # The other replica's engine transcribed the two files left, not the finished first one.
        assert transcriptions(other) - before == 2
        print(
            f"killed the holder after file 1 of 3; attempts per file: {[f.attempts for f in record.files]}, "
            f"claims: {len(record.claimed_by)}"
        )
    finally:
        store.close()
        stop_server(a)
        stop_server(b)
