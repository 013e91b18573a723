"""Pieces the load benchmarks share: the audio set, a server under test, a resource sampler and the clients.

Every request goes through the paths users take: `gradio_client` for the UI endpoints, plain HTTP for /health
and /metrics. Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger(__name__)

#: Settings a caller's shell may carry that would change the server under test.
_STRIP_PREFIXES = ("GRADIO_", "MODEL", "API_KEYS", "WEBUI_", "WATCHDOG_", "CLEANUP_", "GPU_ALERT_", "SMTP_")
_STRIP_KEYS = {
    "ENV_FILE",
    "LOG_DIR",
    "TEMP_DIR",
    "OUTPUT_DIR",
    "JOBS_DIR",
    "HOST",
    "PORT",
    "PID_FILE",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "VAD_MODEL_DIR",
    "PUNC_MODEL_DIR",
    "ENABLE_PUNC",
    "QUEUE_MAX_SIZE",
    "DEVICE",
    "REPLICAS",
    "NCPU",
    "ENGINE_BACKEND",
}


# --------------------------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class AudioSet:
    """The inputs of the scenarios: long files, short utterances, format variants and bad files."""

    two_min: Path
    mp3_4m30: Path
    clip_10s: Path
    clip_30s: Path
    utterances: list[Path]
    formats: list[Path]
    bad: list[Path]
    expectations: dict[str, str]  # bad file name -> manifest "expect" column (error:..., text, ...)
    source: str


def build_audio_set(audio_dir: Path, work: Path, quick: bool = False) -> AudioSet:
    """Long files from `audio_dir/long` when present (the shared set), else assembled from its utterances.

    With `quick` the 4.5-min MP3 is neither built nor used (its place is taken by the 30 s clip)."""
    from bench.engine import build_inputs

    work.mkdir(parents=True, exist_ok=True)
    data = audio_dir / "data" if (audio_dir / "data" / "utterances").is_dir() else audio_dir  # "tests" -> tests/data
    inputs = build_inputs(data, work, quick=quick)
    expectations: dict[str, str] = {}
    for manifest in (data / "manifest.tsv", ROOT / "tests" / "data" / "manifest.tsv"):
        if manifest.exists():
            with open(manifest, encoding="utf-8") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    if row.get("kind") == "bad":
                        expectations.setdefault(Path(row["path"]).name, row.get("expect", ""))
    bad_dir = data / "bad" if (data / "bad").is_dir() else ROOT / "tests" / "data" / "bad"
    formats_dir = data / "formats" if (data / "formats").is_dir() else ROOT / "tests" / "data" / "formats"
    utterances = sorted((data / "utterances").glob("*.wav"))
    if not utterances:
        raise SystemExit(f"no utterances/*.wav under {data}")
    samples, rate = sf.read(inputs["2 min"], dtype="float32")
    clip_30s = work / "clip_30s.wav"
    sf.write(clip_30s, samples[: 30 * rate], rate, subtype="PCM_16")
    return AudioSet(
        two_min=inputs["2 min"],
        mp3_4m30=inputs.get("4.5 min MP3", clip_30s),
        clip_10s=inputs["10 s"],
        clip_30s=clip_30s,
        utterances=utterances,
        formats=sorted(p for p in formats_dir.iterdir() if p.is_file()),
        bad=sorted(p for p in bad_dir.iterdir() if p.is_file()),
        expectations=expectations,
        source=project_path(data),
    )


def project_path(path: Path) -> str:
    """`path` as the project sees it (`tests/data`, `../shared/audio`): committed reports must not carry the
    folders of the machine that ran them."""
    return os.path.relpath(path.resolve(), ROOT)


_durations: dict[str, float] = {}


def audio_seconds(path: Path) -> float:
    """Duration of a (good) input in seconds, decoded once with the service's own decoder."""
    key = str(path)
    if key not in _durations:
        from asr.audio import load_audio

        try:
            _durations[key] = load_audio(path).duration
        except Exception:  # a bad file: no audio to count
            _durations[key] = 0.0
    return _durations[key]


# --------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ModelFolders:
    asr: Path
    vad: Path
    punc: Path | None
    label: str


def resolve_models(model_dir: str | None, vad_dir: str | None, punc_dir: str | None, tiny: bool) -> ModelFolders:
    import testmodels

    vad = Path(vad_dir) if vad_dir else testmodels.fetch_vad()
    if model_dir:
        return ModelFolders(Path(model_dir), vad, Path(punc_dir) if punc_dir else None, f"`{model_dir}`")
    if tiny:
        asr, punc = testmodels.build_tiny()
        return ModelFolders(asr, vad, punc, "tiny random-weight test model (smoke run)")
    asr, punc = testmodels.build_full()
    return ModelFolders(asr, vad, punc, "full-size random-weight SeACo-Paraformer (247 M params) + CT-punc")


def server_env(models: ModelFolders, work: Path, device: str, backend: str = "torch", **extra: str) -> dict[str, str]:
    """The environment for a server under test: the caller's minus app/ops settings, plus ours."""
    env = {k: v for k, v in os.environ.items() if k not in _STRIP_KEYS and not k.startswith(_STRIP_PREFIXES)}
    env.update(
        ENV_FILE=str(work / "no.env"),
        MODEL_DIR=str(models.asr),
        VAD_MODEL_DIR=str(models.vad),
        PUNC_MODEL_DIR=str(models.punc or ""),
        ENABLE_PUNC="true" if models.punc else "false",
        TEMP_DIR=str(work / "uploads"),
        OUTPUT_DIR=str(work / "outputs"),
        LOG_DIR=str(work / "logs"),
        JOBS_DIR=str(work / "jobs"),
        DEVICE=device,
        ENGINE_BACKEND=backend,
        PYTHONUNBUFFERED="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    env.update(extra)
    return env


def health(url: str, timeout: float = 3.0) -> dict[str, Any] | None:
    """/health's JSON (whatever its status), or None when the server does not answer."""
    try:
        return httpx.get(url + "/health", timeout=timeout).json()
    except (httpx.HTTPError, ValueError):
        return None


def wait_healthy(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> float:
    """Seconds until /health says ok; raises TimeoutError (or RuntimeError when `alive()` turns false)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not alive():
            raise RuntimeError("the server exited while starting")
        body = health(url, timeout=2)
        if body and body.get("status") == "ok":
            return time.monotonic() - started
        time.sleep(0.25)
    raise TimeoutError(f"{url}/health did not say ok within {timeout:.0f} s")


@dataclass
class Server:
    """A server under test: one we started (`proc`) or one given by URL (`pid` may be unknown)."""

    url: str
    temp_dir: Path | None
    output_dir: Path | None
    pid_getter: Callable[[], int | None]
    proc: subprocess.Popen | None = None
    log: Path | None = None
    queue_max_size: int = 20
    model_concurrency: int = 2
    start_s: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.pid_getter()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log and self.log.exists() else ""


def start_app(
    models: ModelFolders,
    work: Path,
    *,
    device: str,
    backend: str,
    queue_max_size: int,
    model_concurrency: int,
    batch_max_requests: int = 0,
    timeout: float = 300,
) -> Server:
    """`python app.py` on a free loopback port, waited for until /health says ok (0: the server's auto value)."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    env = server_env(
        models,
        work,
        device,
        backend,
        QUEUE_MAX_SIZE=str(queue_max_size),
        MODEL_CONCURRENCY=str(model_concurrency),
        BATCH_MAX_REQUESTS=str(batch_max_requests),
    )
    log = work / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        f"http://127.0.0.1:{port}",
        work / "uploads",
        work / "outputs",
        lambda: proc.pid,
        proc,
        log,
        queue_max_size,
        model_concurrency,
    )
    logger.info("starting app.py on port %d (PID %d, log %s)", port, proc.pid, log)
    try:
        server.start_s = wait_healthy(server.url, timeout, alive=lambda: proc.poll() is None)
    except (TimeoutError, RuntimeError):
        stop_app(server)
        raise RuntimeError(f"the server did not become healthy:\n{server.log_tail()}") from None
    server.model_concurrency = int((health(server.url) or {}).get("queue", {}).get("concurrency") or model_concurrency)
    logger.info("server healthy after %.1f s (%d jobs at once)", server.start_s, server.model_concurrency)
    return server


def stop_app(server: Server) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pid_listening_on(port: int) -> int | None:
    """The PID of the process listening on a loopback port, when this user may see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return int(conn.pid)
    except (psutil.AccessDenied, PermissionError):
        return None
    return None


def attach(url: str, pid: int | None, temp_dir: str | None) -> Server:
    """A server someone else started (`--url`): its limits from /health, its PID from the port when visible."""
    body = health(url) or {}
    if body.get("status") != "ok":
        raise SystemExit(f"{url}/health does not say ok: {body or 'no answer'}")
    port = httpx.URL(url).port or 80
    found = pid or pid_listening_on(port)
    return Server(
        url.rstrip("/"),
        Path(temp_dir) if temp_dir else None,
        None,
        lambda: found,
        queue_max_size=int(body.get("queue", {}).get("max_size") or 20),
        model_concurrency=int(body.get("queue", {}).get("concurrency") or 2),
    )


# --------------------------------------------------------------------------------------------- sampler


def folder_size(folder: Path | None) -> tuple[float | None, int | None]:
    """(MB, number of files) under `folder`; (None, None) when there is no such folder."""
    if folder is None or not folder.exists():
        return None, None
    total = count = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
                count += 1
            except OSError:
                pass  # removed while walking
    return total / 2**20, count


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def gpu_memory_mb() -> float | None:
    from asr.gpu import gpu_info

    gpus = gpu_info()
    return sum(float(g["memory_used_mb"]) for g in gpus) if gpus else None


class Sampler:
    """Every `interval` s: the server's RSS, threads, open files, temp-dir size, GPU memory, queue depth."""

    def __init__(self, server: Server, t0: float, interval: float) -> None:
        self.server = server
        self.t0 = t0
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._client = httpx.Client(timeout=2.0)

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 2)}
        pid = self.server.pid
        row["pid"] = pid
        if pid:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    row["rss_mb"] = proc.memory_info().rss / 2**20
                    row["threads"] = proc.num_threads()
                    row["open_files"] = proc.num_fds()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        row["temp_mb"], row["temp_files"] = folder_size(self.server.temp_dir)
        row["gpu_mb"] = gpu_memory_mb()
        try:
            body = self._client.get(self.server.url + "/health").json()
            row["health"] = body.get("status")
            row["model_waiting"] = body.get("queue", {}).get("model_waiting")
            row["model_busy"] = int(bool(body.get("queue", {}).get("model_busy")))
            metrics = self._client.get(self.server.url + "/metrics").text
            row["queue_depth"] = _metric(metrics, "paraformer_queue_depth")
        except (httpx.HTTPError, ValueError):
            row["health"] = "down"
        return row

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.sample())
        self._client.close()


# --------------------------------------------------------------------------------------------- clients


@dataclass
class Outcome:
    """One request as the client saw it. Times are seconds since the scenario's start."""

    kind: str  # single | batch | live | sysinfo | bad | overflow | probe (A, alone) | blocker (overflow)
    name: str
    start: float
    latency_s: float
    status: str  # ok | failed | rejected (HTTP 503, queue full)
    error: str = ""
    audio_s: float = 0.0
    queue_wait_s: float | None = None  # in Gradio's queue (client-side, from the job's status updates)
    model_wait_s: float | None = None  # waiting for the engine's model lock (from the result's details)
    processing_s: float | None = None  # decode + model time (from the result's details)
    files_total: int = 0
    files_ok: int = 0
    retried: bool = False
    user: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_wait_s(self) -> float | None:
        if self.queue_wait_s is None and self.model_wait_s is None:
            return None
        return (self.queue_wait_s or 0.0) + (self.model_wait_s or 0.0)

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["total_wait_s"] = self.total_wait_s
        return row


def _details_number(details: str, row: int) -> float | None:
    """The number in row `row` (0 = audio duration, 1 = processing, 3 = wait) of the details table."""
    lines = [ln for ln in details.splitlines() if ln.startswith("|")][2:]
    if row >= len(lines):
        return None
    match = re.search(r"([0-9]+(?:\.[0-9]+)?)", lines[row].split("|")[2])
    return float(match.group(1)) if match else None


def new_client(url: str) -> Any:
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


class UserClient:
    """One simulated user: a gradio_client.Client and its calls, each returning an Outcome."""

    def __init__(self, url: str, t0: float, name: str, client: Any | None = None) -> None:
        self.url = url
        self.t0 = t0
        self.name = name
        self.client = client or new_client(url)

    def _run_job(self, kind: str, label: str, submit: Callable[[], Any], files: list[Path]) -> Outcome:
        from gradio_client.exceptions import AppError
        from gradio_client.utils import QueueError, Status

        audio_s = sum(audio_seconds(p) for p in files) if kind != "bad" else 0.0
        files_total = len(files) if kind == "batch" else 0
        started = time.monotonic()
        joined = processing = None
        outcome = Outcome(
            kind,
            label,
            round(started - self.t0, 3),
            0.0,
            "ok",
            audio_s=audio_s,
            user=self.name,
            files_total=files_total,
            extra={"files": [str(p) for p in files]},
        )
        try:
            job = submit()
            while not job.done():
                code = job.status().code
                now = time.monotonic()
                if joined is None and code in (Status.JOINING_QUEUE, Status.IN_QUEUE):
                    joined = now
                if processing is None and code in (Status.PROCESSING, Status.ITERATING, Status.PROGRESS):
                    processing = now
                time.sleep(0.05)
            result = job.result()
        except QueueError as exc:
            outcome.status, outcome.error = "rejected", str(exc)[:200]
            result = None
        except AppError as exc:
            outcome.status, outcome.error = "failed", str(exc)[:300]
            result = None
        except Exception as exc:  # connection refused/reset while the server is down, timeouts, ...
            outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
            outcome.extra["exception"] = type(exc).__name__
            result = None
        outcome.latency_s = time.monotonic() - started
        if processing is not None:
            outcome.queue_wait_s = (processing - joined) if joined is not None else 0.0
        if result is not None:
            self._read_result(outcome, result)
        return outcome

    @staticmethod
    def _read_result(outcome: Outcome, result: Any) -> None:
        if outcome.kind in ("single", "probe", "blocker", "bad", "overflow", "live"):
            details = result[2] if outcome.kind != "live" else result[1]
            outcome.model_wait_s = _details_number(details, 3)
            outcome.processing_s = _details_number(details, 1)
            outcome.extra["text_chars"] = len(result[0] or "")
        elif outcome.kind == "batch":
            rows = result[1].get("data", []) if isinstance(result[1], dict) else []
            outcome.files_ok = sum(1 for r in rows if str(r[-1]).startswith("✅"))
            outcome.extra["status"] = str(result[0])[:200]
            if outcome.files_ok < outcome.files_total:
                outcome.status = "failed"
                outcome.error = f"{outcome.files_total - outcome.files_ok} of {outcome.files_total} files failed"

    def single(self, path: Path, kind: str = "single") -> Outcome:
        from gradio_client import handle_file

        return self._run_job(
            kind, path.name, lambda: self.client.submit(handle_file(str(path)), "", 1, api_name="/transcribe"), [path]
        )

    def live(self, path: Path) -> Outcome:
        from gradio_client import handle_file

        return self._run_job(
            "live",
            path.name,
            lambda: self.client.submit(handle_file(str(path)), "", api_name="/transcribe_recording"),
            [path],
        )

    def batch(self, paths: list[Path], on_job: Callable[[Any], None] | None = None) -> Outcome:
        from gradio_client import handle_file

        def submit() -> Any:
            job = self.client.submit([handle_file(str(p)) for p in paths], "", 1, api_name="/transcribe_batch")
            if on_job:
                on_job(job)
            return job

        return self._run_job("batch", f"batch of {len(paths)}", submit, paths)

    def sysinfo(self) -> Outcome:
        started = time.monotonic()
        outcome = Outcome("sysinfo", "system info", round(started - self.t0, 3), 0.0, "ok", user=self.name)
        try:
            markdown, _raw = self.client.predict(api_name="/system_info")
            if not markdown:
                outcome.status, outcome.error = "failed", "empty system info"
        except Exception as exc:
            outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
        outcome.latency_s = time.monotonic() - started
        return outcome

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # best effort: the server may be gone
            logger.debug("client close failed", exc_info=True)


def partial_upload(url: str, path: str, declared: int, sent: int) -> str:
    """A client that disconnects mid-upload: a multipart POST that declares `declared` bytes, sends `sent`,
    then closes the socket. Returns what happened on the client side."""
    host_port = httpx.URL(url)
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="partial.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\n"
    ).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{host_port.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode()
    body = head + b"RIFF" + os.urandom(max(0, sent - len(head) - 4))
    with socket.create_connection(("127.0.0.1", host_port.port or 80), timeout=5) as sock:
        sock.sendall(request + body[:sent])
        time.sleep(0.2)
    return f"sent {sent} of {declared} bytes to {path}, then closed"
