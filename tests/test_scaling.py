"""Scale-out: two replicas (run.sh REPLICAS=2, tiny models on CPU) behind nginx (ops/nginx, written by
`run.sh nginx-config --standalone` into a temp folder and run as this user on a free loopback port).

Under a load of API transcriptions through nginx: traffic reaches both replicas; a rolling `run.sh restart`
fails no request; a replica killed with SIGKILL fails no request sent after the kill was seen (nginx retries on
the other replica), the watchdog brings it back (`run.sh restart 1`) and traffic returns to it. A UI job through
nginx completes (session affinity), from gradio_client and from a browser (screenshot: docs/screenshots/).
Run with -s to see the transcripts (requests sent, failed, retried).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import SCREENSHOT_DIR, UTTERANCE, free_port, missing_tool, require_tool
from test_ops import PYTHON, ROOT, _alive, app_env, ops_env, run_sh, script

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
needs_nginx = pytest.mark.skipif(
    not NGINX, reason=missing_tool("nginx", "apt-get install nginx; the scaling tests run two replicas behind it")
)
pytestmark = pytest.mark.scaling
SHOTS = SCREENSHOT_DIR
TRANSCRIBE = "/v1/audio/transcriptions"


def two_free_ports() -> int:
    """A port P with P+1 free too (replica 0 and 1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def fake_nvidia_smi(tmp: Path, gpus: int) -> str:
    """A PATH with an `nvidia-smi -L` that lists `gpus` GPUs."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    lines = "".join(f'echo "GPU {i}: NVIDIA Fake (UUID: GPU-{i:08d})"\n' for i in range(gpus))
    (bin_dir / "nvidia-smi").write_text("#!/usr/bin/env bash\n" + lines)
    (bin_dir / "nvidia-smi").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


# --- without the app --------------------------------------------------------------------------------------


def _replicas(env: dict[str, str]) -> list[list[str]]:
    result = run_sh("replicas", env=env)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()[1:]]


def test_replicas_get_ports_files_and_one_gpu_each(tmp_path: Path) -> None:
    env = ops_env(tmp_path, HOST="127.0.0.1", PORT="7860", PATH=fake_nvidia_smi(tmp_path, 2))
    logs = tmp_path / "logs"
    one = _replicas(env)  # REPLICAS=1: today's names, no GPU assignment
    assert one == [
        ["0", "7860", "http://127.0.0.1:7860/health", "-", f"{logs}/app.pid", f"{logs}/app.log", f"{logs}/app.stopped"]
    ]
    three = _replicas({**env, "REPLICAS": "3"})
    assert [(r[0], r[1], r[3], Path(r[5]).name) for r in three] == [
        ("0", "7860", "0", "app.log"),
        ("1", "7861", "1", "app-1.log"),
        ("2", "7862", "0", "app-2.log"),
    ]
    flag = run_sh("--replicas", "2", "replicas", env={**env, "REPLICA_GPUS": "none"})
    assert [line.split("\t")[3] for line in flag.stdout.splitlines()[1:]] == ["-", "-"]
    named = _replicas({**env, "REPLICAS": "2", "REPLICA_GPUS": "2,3"})
    assert [r[3] for r in named] == ["2", "3"]
    assert run_sh("--replicas", "0", "status", env=env).returncode == 2
    status = run_sh("status", env={**env, "REPLICAS": "2"})
    assert status.returncode == 3 and "replica 1: not running" in status.stdout, status.stdout
    assert run_sh("restart", "5", env={**env, "REPLICAS": "2"}).returncode == 2

    # The GPU alert names the replica on the GPU that is full.
    alert = script(
        "gpu_alert.py",
        env={**env, "REPLICAS": "2", "GPU_ALERT_CONSECUTIVE": "1", "GPU_ALERT_FAKE_READING": "200/12288,12000/12288"},
    )
    assert alert.returncode == 0, alert.stdout + alert.stderr
    alerts = (logs / "alert.log").read_text()
    assert "ALERT GPU 1 (fake GPU, replica 1 on port 7861)" in alerts, alerts


@needs_nginx
def test_nginx_config_is_valid_and_the_committed_example_is_current(tmp_path: Path) -> None:
    env = ops_env(tmp_path, PORT="7860")
    env.pop("HOST", None)
    example = run_sh("--replicas", "2", "nginx-config", "--listen", "80", env=env)
    assert example.returncode == 0, example.stderr
    committed = (ROOT / "ops" / "nginx" / "paraformer-webui.conf").read_text()
    assert example.stdout == committed, (
        "regenerate: ./run.sh --replicas 2 nginx-config -o ops/nginx/paraformer-webui.conf"
    )
    assert "client_max_body_size 201m;" in committed  # MAX_UPLOAD_MB 200 + 1
    boxes = run_sh(
        "nginx-config",
        "--standalone",
        str(tmp_path / "ngx"),
        "--listen",
        "127.0.0.1:8080",
        env={**env, "NGINX_UPSTREAMS": "10.0.0.5:7860, 10.0.0.6:7860", "MAX_UPLOAD_MB": "50.5"},
    )
    assert boxes.returncode == 0, boxes.stderr
    site = (tmp_path / "ngx" / "paraformer-webui.conf").read_text()
    assert site.count("server 10.0.0.6:7860 max_fails=1") == 2 and "client_max_body_size 52m;" in site
    assert "location = /replica/1/health  { proxy_pass http://10.0.0.6:7860/health; }" in site
    check = subprocess.run(
        [
            NGINX,
            "-t",
            "-p",
            str(tmp_path / "ngx"),
            "-c",
            str(tmp_path / "ngx" / "nginx.conf"),
            "-g",
            f"pid {tmp_path}/ngx/nginx.pid;",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    bad = run_sh("nginx-config", env={**env, "NGINX_UPSTREAMS": "no-port"})
    assert bad.returncode == 1 and "HOST:PORT" in bad.stderr


# --- two replicas behind nginx ----------------------------------------------------------------------------


@dataclass
class Cluster:
    env: dict[str, str]
    logs: Path
    ports: tuple[int, int]
    url: str  # nginx
    access_log: Path

    def pid(self, replica: int) -> int:
        return int((self.logs / ("app.pid" if replica == 0 else f"app-{replica}.pid")).read_text().strip())

    def health(self, replica: int) -> dict:
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports[replica]}/health", timeout=3).json()
        except (httpx.HTTPError, ValueError):
            return {"status": "down"}

    def served(self, replica: int) -> int:
        """Transcriptions this replica's process has finished (API and UI), from its /health."""
        return int(self.health(replica).get("requests", {}).get("served", -1))

    def api_requests(self, replica: int) -> float:
        """The replica's /metrics counter of successful API transcriptions, read through nginx."""
        text = httpx.get(f"{self.url}/replica/{replica}/metrics", timeout=5).text
        for line in text.splitlines():
            if (
                line.startswith("paraformer_http_requests_total{")
                and f'route="{TRANSCRIBE}"' in line
                and 'outcome="ok"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def retried(self, since: int = 0) -> int:
        """Requests nginx sent to more than one replica ("upstream=A, B" in its access log), after byte `since`."""
        with open(self.access_log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return sum(1 for line in text.splitlines() if re.search(r"upstream=\S+, ", line))

    def log_size(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0


@pytest.fixture(scope="module")
def cluster(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not NGINX:
        pytest.skip(missing_tool("nginx", "apt-get install nginx"))
    tmp = tmp_path_factory.mktemp("scaling")
    port = two_free_ports()
    # A fake nvidia-smi with two GPUs: run.sh gives replica N CUDA_VISIBLE_DEVICES=N (the app runs on CPU anyway).
    env = app_env(tiny_models, tmp, PORT=str(port), REPLICAS="2", START_TIMEOUT="150", PATH=fake_nvidia_smi(tmp, 2))
    logs = Path(env["LOG_DIR"])
    nginx_dir, nginx_port = tmp / "nginx", free_port()
    nginx = None
    try:
        started = run_sh("start", env=env, timeout=200)
        assert started.returncode == 0, started.stdout + started.stderr
        config = run_sh("nginx-config", "--standalone", str(nginx_dir), "--listen", f"127.0.0.1:{nginx_port}", env=env)
        assert config.returncode == 0, config.stderr
        with open(tmp / "nginx.out", "wb") as out:
            nginx = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(nginx_dir),
                    "-c",
                    str(nginx_dir / "nginx.conf"),
                    "-g",
                    f"daemon off; pid {nginx_dir}/nginx.pid;",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{nginx_port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            assert nginx.poll() is None, (tmp / "nginx.out").read_text() + (nginx_dir / "error.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield Cluster(env, logs, (port, port + 1), url, nginx_dir / "access.log")
    finally:
        if nginx and nginx.poll() is None:
            nginx.terminate()  # SIGTERM to the master's PID: nginx's fast shutdown
            try:
                nginx.wait(timeout=20)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        run_sh("stop", env=env, timeout=120)


@dataclass
class Result:
    sent: float
    done: float
    status: int | None  # None: no HTTP answer (connection error, timeout)
    error: str = ""


@dataclass
class Load:
    """`workers` threads POSTing transcriptions to nginx back to back until stop()."""

    url: str
    workers: int = 3
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        self._audio = UTTERANCE.read_bytes()
        self._lock = threading.Lock()

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                sent = time.time()
                try:
                    r = client.post(
                        self.url + TRANSCRIBE,
                        files={"file": ("clip.wav", self._audio, "audio/wav")},
                        data={"response_format": "json"},
                    )
                    result = Result(sent, time.time(), r.status_code, "" if r.status_code == 200 else r.text[:200])
                except httpx.HTTPError as exc:
                    result = Result(sent, time.time(), None, repr(exc))
                with self._lock:
                    self.results.append(result)
                if result.status != 200:
                    time.sleep(0.2)  # a client backs off; and the failure count stays meaningful

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=90)

    def failed(self, since: float = 0.0) -> list[Result]:
        return [r for r in self.results if r.sent >= since and r.status != 200]

    def sent(self, since: float = 0.0) -> int:
        return sum(1 for r in self.results if r.sent >= since)


def wait_until(condition, timeout: float, what: str, step: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.server
@needs_nginx
def test_traffic_through_nginx_reaches_both_replicas(cluster: Cluster) -> None:
    status = run_sh("status", env=cluster.env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "replica 0: running" in status.stdout and "replica 1: running" in status.stdout
    assert "GPU 1, health ok" in status.stdout and "2 of 2 replicas healthy" in status.stdout
    environ = Path(f"/proc/{cluster.pid(1)}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=1" in environ and f"PORT={cluster.ports[1]}".encode() in environ

    health = httpx.get(cluster.url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    for replica in (0, 1):
        assert httpx.get(f"{cluster.url}/replica/{replica}/health", timeout=5).json()["status"] == "ok"
    before = [cluster.api_requests(0), cluster.api_requests(1)]
    with Load(cluster.url, workers=4) as load:
        wait_until(lambda: load.sent() >= 16, 60, "16 requests")
    after = [cluster.api_requests(0), cluster.api_requests(1)]
    print(
        f"\n[spread] {load.sent()} requests through nginx, {len(load.failed())} failed; "
        f"replica 0 +{after[0] - before[0]:.0f}, replica 1 +{after[1] - before[1]:.0f} (/metrics)"
    )
    assert not load.failed(), load.failed()[:3]
    assert after[0] > before[0] and after[1] > before[1], (before, after)


@pytest.mark.server
@needs_nginx
def test_ui_job_through_nginx_completes_with_session_affinity(cluster: Cluster, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    page = httpx.get(cluster.url + "/", timeout=10)
    assert page.status_code == 200 and "paraformer_replica=" in page.headers.get("set-cookie", "")
    served = [cluster.served(0), cluster.served(1)]
    client = Client(cluster.url, verbose=False)  # no cookies: pinned by its address
    text, confidence, details, table, files = client.predict(handle_file(str(UTTERANCE)), "", 1, api_name="/transcribe")
    assert (
        isinstance(text, str) and isinstance(confidence, float) and len(files) == 5
    )  # TXT, SRT, VTT, word TSV, the spoken TXT (ITN is on)
    moved = [cluster.served(i) - served[i] for i in (0, 1)]
    assert sorted(moved) == [0, 1], moved  # one job, on one replica (upload, join and status stream with it)

    chromium = require_tool("chromium", install="apt-get install chromium chromium-driver; for the screenshot")
    driver_bin = require_tool("chromedriver", install="apt-get install chromium-driver; for the screenshot")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1000",
        "--lang=zh-CN",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN"})  # the UI follows the browser
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_bin))

    def wait(condition, timeout: float = 60):
        return WebDriverWait(driver, timeout, poll_frequency=0.3).until(lambda d: condition(d))

    try:
        served = [cluster.served(0), cluster.served(1)]
        driver.get(cluster.url + "/")
        wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
        assert driver.get_cookie("paraformer_replica"), "nginx sets the affinity cookie"
        driver.find_element(By.CSS_SELECTOR, "#single-file input[type=file]").send_keys(str(UTTERANCE))
        wait(lambda d: UTTERANCE.stem in d.find_element(By.CSS_SELECTOR, "#single-file").text)
        driver.find_element(By.CSS_SELECTOR, "#single-start").click()
        wait(lambda d: d.find_element(By.CSS_SELECTOR, "#single-text textarea").get_attribute("value"))
        moved = [cluster.served(i) - served[i] for i in (0, 1)]
        assert sorted(moved) == [0, 1], moved
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / "nginx-proxy.png"))
        print(
            f"\n[ui] gradio_client and browser jobs through nginx completed; browser job on replica "
            f"{moved.index(1)}; screenshot {SHOTS / 'nginx-proxy.png'}"
        )
    finally:
        driver.quit()


@pytest.mark.server
@needs_nginx
def test_funasr_websocket_through_nginx(cluster: Cluster) -> None:
    """FunASR's clients connect to ws://HOST:PORT with no path: through nginx's `location = /` to a replica."""
    import asyncio
    import json

    import soundfile as sf
    import websockets

    audio = sf.read(UTTERANCE, dtype="int16")[0].tobytes()

    async def offline() -> list[dict]:
        async with websockets.connect(cluster.url.replace("http://", "ws://"), subprotocols=["binary"]) as ws:
            await ws.send(json.dumps({"mode": "offline", "wav_name": "nginx", "wav_format": "pcm", "audio_fs": 16000}))
            for i in range(0, len(audio), 19200):
                await ws.send(audio[i : i + 19200])
            await ws.send(json.dumps({"is_speaking": False}))
            return [json.loads(await ws.recv())]

    answer = asyncio.run(offline())[0]
    assert answer["mode"] == "offline" and answer["is_final"] and answer["text"], answer
    assert httpx.get(cluster.url + "/", timeout=10).status_code == 200  # the page still comes from the UI


@pytest.mark.server
@needs_nginx
def test_rolling_restart_under_load_fails_no_request(cluster: Cluster) -> None:
    pids = [cluster.pid(0), cluster.pid(1)]
    mark = cluster.log_size()
    with Load(cluster.url) as load:
        wait_until(lambda: load.sent() >= 6, 60, "the load to start")
        started = time.time()
        restart = run_sh("restart", env=cluster.env, timeout=400)
        took = time.time() - started
        after = load.sent()
        wait_until(lambda: load.sent() >= after + 3, 30, "requests after the restart")
    print(
        f"\n[rolling restart] {took:.0f} s; {load.sent()} requests sent, {len(load.failed())} failed, "
        f"{cluster.retried(mark)} retried by nginx on the other replica\n{restart.stdout.strip()}"
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert "restarting (1 of 2)" in restart.stdout and "restarting (2 of 2)" in restart.stdout
    new = [cluster.pid(0), cluster.pid(1)]
    assert new[0] != pids[0] and new[1] != pids[1]
    assert not load.failed(), [(r.status, r.error) for r in load.failed()[:5]]


@pytest.mark.server
@needs_nginx
def test_replica_killed_under_load_fails_nothing_and_the_watchdog_brings_it_back(cluster: Cluster) -> None:
    env = {**cluster.env, "WATCHDOG_TIMEOUT_S": "2"}
    watchdog = subprocess.Popen(
        [PYTHON, str(ROOT / "ops" / "watchdog.py"), "--loop", "--interval", "0.5"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim = cluster.pid(1)
    mark = cluster.log_size()
    t0 = time.time()
    try:
        with Load(cluster.url) as load:
            wait_until(lambda: load.sent() >= 6, 60, "the load to start")
            killed_at = time.time()
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: cluster.health(1)["status"] != "ok", 10, "the kill to show", step=0.05)
            detected_at = time.time()
            wait_until(
                lambda: (cluster.logs / "app-1.pid").exists()
                and cluster.pid(1) != victim
                and cluster.health(1)["status"] == "ok",
                150,
                "the watchdog to restart replica 1",
                step=0.3,
            )
            back_at = time.time()
            # The new process starts at 0: anything it has served came through nginx after it was back.
            wait_until(lambda: cluster.served(1) > 0, 60, "traffic to return to replica 1", step=0.3)
            returned_at = time.time()
            served_0_after = cluster.served(0)
        ops_log = (cluster.logs / "ops.log").read_text()
    finally:
        watchdog.terminate()
        watchdog.wait(timeout=60)
    failed_all, failed_after = load.failed(), load.failed(since=detected_at)
    in_flight = sum(1 for r in load.results if r.sent < killed_at < r.done)
    print(
        f"\n[kill -9 under load] replica 1 (PID {victim}) killed at +{killed_at - t0:.1f} s, "
        f"seen down at +{detected_at - t0:.1f} s, back (new PID {cluster.pid(1)}, by the watchdog) at "
        f"+{back_at - t0:.1f} s, serving again at +{returned_at - t0:.1f} s\n"
        f"  requests sent: {load.sent()} ({load.sent(since=detected_at)} after the kill was seen; "
        f"{in_flight} in flight at the kill)\n"
        f"  failed: {len(failed_all)} in all, {len(failed_after)} sent after the kill was seen\n"
        f"  retried by nginx on the other replica: {cluster.retried(mark)}\n"
        f"  replica 1 served {cluster.served(1)} since its restart; replica 0 {served_0_after} since the "
        f"rolling restart"
    )
    assert not _alive(victim)
    assert not failed_after, [(r.status, r.error) for r in failed_after[:5]]
    assert cluster.retried(mark) >= 1, "nginx retried the requests that met the dead replica"
    assert "replica 1: health check failed (3/3)" in ops_log, ops_log[-3000:]
    assert "restarting with" in ops_log and "restart 1`" in ops_log
    assert "replica 0: health check failed" not in ops_log, "only the failing replica is touched"
