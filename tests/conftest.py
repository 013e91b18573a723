"""Shared fixtures: the tiny random-weight models, a loaded engine, and a live server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

# Selenium Manager (the browser tests' driver lookup) sends usage statistics unless told not to.
os.environ.setdefault("SE_AVOID_STATS", "true")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))

#: FAKE_CUDA=1: torch and NVML report a GPU torch can use (tests/fake_cuda/sitecustomize.py), here and in every
#: Python the tests start, so a machine without one runs the device tests as a GPU box with a CUDA torch would.
FAKE_CUDA = os.environ.get("FAKE_CUDA") == "1"
if FAKE_CUDA:
    _FAKE = Path(__file__).resolve().parent / "fake_cuda"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(_FAKE), os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, str(_FAKE))
    import sitecustomize  # noqa: E402, F401  (installs the fake on import)

import testmodels  # noqa: E402
from asr.engine import Engine  # noqa: E402
from config.settings import Settings  # noqa: E402

#: Browser tests save their screenshots here; `SCREENSHOT_DIR=docs/screenshots ./run.sh test -m browser`
#: refreshes the docs' copies (a plain test run leaves docs/ alone).
SCREENSHOT_DIR = Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "paraformer-screenshots")
if not SCREENSHOT_DIR.is_absolute():
    SCREENSHOT_DIR = ROOT / SCREENSHOT_DIR

UTTERANCE = DATA / "utterances" / "funasr_asr_example.wav"  # 欢迎大家来体验达摩院推出的语音识别模型


#: Every skip for something CI installs (.ci/run: Chromium, nginx, redis-server, logrotate, the container tools;
#: ../shared's FunASR programs) says this first; under CI=true such a skip fails instead (the hooks below), so a
#: broken install step cannot hide behind a green run.
MISSING_TOOL = "missing tool: "


def missing_tool(name: str, install: str) -> str:
    """The skip reason for a tool CI installs: `missing tool: NAME (INSTALL)`."""
    return f"{MISSING_TOOL}{name} ({install})"


def require_tool(*names: str, install: str) -> str:
    """The path of the first of `names` on PATH (or in /usr/sbin, where Debian puts nginx); skips saying which
    tool is missing and how to install it otherwise."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
        if found:
            return found
    pytest.skip(missing_tool("/".join(names), install))


def require_file(path: Path, what: str) -> Path:
    """A file the suite uses from outside the repository (../shared): skips, in the same words, where it is absent."""
    if not path.exists():
        pytest.skip(missing_tool(what, f"not found at {path}"))
    return path


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")


def _fail_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and os.environ.get("CI") == "true" and MISSING_TOOL in _skip_reason(report):
        reason = _skip_reason(report).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"CI=true and a test skipped for a tool CI installs: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    _fail_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    report = yield  # a module that skips itself (pytest.skip(allow_module_level=True)) reports here
    _fail_in_ci(report)
    return report


@dataclass(frozen=True)
class TinyModels:
    asr: Path
    vad: Path
    punc: Path
    spk: Path  # CAM++ (speakers)
    sparse: Path  # the ASR model whose predictor emits no token for short segments
    online: Path | None = None  # the streaming Paraformer (online/2pass WebSocket streams)
    numerals: Path | None = None  # the ASR model that says numerals only (ITN end to end)


@pytest.fixture(scope="session")
def tiny_models() -> TinyModels:
    # Importing FunASR's AutoModel runs `warnings.filterwarnings("ignore")` (funasr/utils/export_utils.py): in
    # the test that first imported it, every warning filter, the thread-exception error included, went quiet.
    # Imported here under catch_warnings, that filter is undone on the spot, and later imports are no-ops.
    with warnings.catch_warnings():
        import funasr  # noqa: F401
    vad = testmodels.fetch_vad()
    asr, punc = testmodels.build_tiny()
    return TinyModels(
        asr,
        vad,
        punc,
        testmodels.build_tiny_campplus(),
        testmodels.build_tiny_sparse(),
        testmodels.build_tiny_online(),
        testmodels.build_tiny_numerals(),
    )


@pytest.fixture(scope="session")
def tiny_sensevoice(tiny_models: TinyModels) -> Path:
    """The tiny random-weight SenseVoice-Small folder (testmodels.sensevoice), beside the other tiny models."""
    from testmodels.sensevoice import build_tiny_sensevoice

    return build_tiny_sensevoice(tiny_models.vad.parent)


@pytest.fixture(scope="module")
def sv_server(tiny_models: TinyModels, tiny_sensevoice: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A live server (`python app.py`) that runs SenseVoice beside SeACo-Paraformer, one per test module."""
    srv = start_server(
        tiny_models,
        tmp_path_factory.mktemp("sv-server"),
        ENABLE_SENSEVOICE="true",
        SENSEVOICE_MODEL_DIR=str(tiny_sensevoice),
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def make_settings(models: TinyModels, tmp: Path, **overrides) -> Settings:
    values = dict(
        model_dir=models.asr,
        vad_model_dir=models.vad,
        punc_model_dir=models.punc,
        online_model_dir=models.online,
        temp_dir=tmp / "uploads",
        output_dir=tmp / "outputs",
        log_dir=tmp / "logs",
        jobs_dir=tmp / "jobs",
        device="cpu",
        # ITN off: in-process engines' text is compared with bare FunASR's (the spoken form) all over the suite.
        # ITN's own tests ask for it (itn=True), and the live servers run with the setting's default (on).
        itn=False,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


def service_settings(engine: Engine, tmp: Path, **overrides) -> Settings:
    """Service settings around an engine made elsewhere: its own configuration, folders under `tmp`, then `overrides`."""  # noqa: E501
    values = dict(
        vars(engine.config),
        temp_dir=tmp / "uploads",
        output_dir=tmp / "outputs",
        log_dir=tmp / "logs",
        jobs_dir=tmp / "jobs",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def tiny_settings(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tiny_models, tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="session")
def engine(tiny_settings: Settings) -> Engine:
    eng = Engine(tiny_settings.engine_config())
    eng.load()
    return eng


@pytest.fixture(scope="session")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-minute 16 kHz WAV: the permitted test utterances joined with 0.4 s pauses, repeated."""
    clips = [sf.read(p, dtype="float32")[0] for p in sorted((DATA / "utterances").glob("*.wav"))]
    pause = np.zeros(int(0.4 * 16000), dtype=np.float32)
    pieces, total = [], 0
    while total < 120 * 16000:
        for clip in clips:
            pieces += [clip, pause]
            total += len(clip) + len(pause)
    audio = np.concatenate(pieces)[: 120 * 16000]
    path = tmp_path_factory.mktemp("long") / "long_2min.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def server_env(models: TinyModels, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("GRADIO_", "MODEL", "ONLINE_MODEL", "API_KEYS", "WEBUI_", "MAX_STREAMS", "STREAM_", "JOB_", "JOBS_")
        )
    }
    env.update(
        ENV_FILE=str(tmp / "no.env"),
        MODEL_DIR=str(models.asr),
        VAD_MODEL_DIR=str(models.vad),
        PUNC_MODEL_DIR=str(models.punc),
        SPK_MODEL_DIR=str(models.spk),
        ONLINE_MODEL_DIR=str(models.online or ""),
        TEMP_DIR=str(tmp / "uploads"),
        OUTPUT_DIR=str(tmp / "outputs"),
        LOG_DIR=str(tmp / "logs"),
        JOBS_DIR=str(tmp / "jobs"),
        DEVICE="cpu",
        NCPU="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_server(models: TinyModels, tmp: Path, *, wait_ok: bool = True, timeout: float = 120, **extra: str) -> Server:
    """Run `python app.py` on a free loopback port; with `wait_ok`, wait until /health says ok."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    env = server_env(models, tmp, **extra)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    if wait_ok:
        wait_for_health(server, timeout=timeout)
    return server


def wait_for_health(server: Server, *, want: str = "ok", timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_text()[-3000:]}")
        try:
            body = httpx.get(server.url + "/health", timeout=2).json()
            if body.get("status") == want:
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"/health never said {want}:\n{server.log_text()[-3000:]}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def server(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One live app with the tiny models (speakers on), shared by the end-to-end tests that do not change its state."""
    srv = start_server(tiny_models, tmp_path_factory.mktemp("server"), ENABLE_SPK="true")
    try:
        yield srv
    finally:
        stop_server(srv)
