"""Operations: run.sh, the watchdog, temp cleanup, GPU memory alerts, logrotate and install-cron.

Every test runs the real scripts in subprocesses against temporary folders (LOG_DIR, TEMP_DIR, a missing
ENV_FILE so a developer's .env is not read, a free port); the run.sh tests start the app with the tiny models.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import TinyModels, free_port, missing_tool

pytestmark = pytest.mark.ops
LOGROTATE = shutil.which("logrotate") or next((p for p in ("/usr/sbin/logrotate",) if os.path.exists(p)), None)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else "python3"

# Settings a developer's shell might carry that would change what the scripts do.
_OPS_PREFIXES = (
    "WATCHDOG_",
    "CLEANUP_",
    "GPU_ALERT_",
    "SMTP_",
    "GRADIO_",
    "MODEL",
    "API_KEYS",
    "WEBUI_",
    "JOB_",
    "JOBS_",
    "REPLICA",
    "NGINX_",
    "OUTPUT_",
)
_OPS_KEYS = {
    "ENV_FILE",
    "LOG_DIR",
    "TEMP_DIR",
    "JOBS_DIR",
    "HOST",
    "PORT",
    "PID_FILE",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "ROLLING_PAUSE_S",
    "MAX_UPLOAD_MB",
    "VAD_MODEL_DIR",
    "PUNC_MODEL_DIR",
}


def ops_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment minus ops/app settings, with a missing ENV_FILE (so a developer's .env is not read)."""
    env = {k: v for k, v in os.environ.items() if k not in _OPS_KEYS and not k.startswith(_OPS_PREFIXES)}
    env.update(
        ENV_FILE=str(tmp / "no.env"), LOG_DIR=str(tmp / "logs"), JOBS_DIR=str(tmp / "jobs"), PYTHONUNBUFFERED="1"
    )
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def script(name: str, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run([PYTHON, str(ROOT / "ops" / name), *args], env, timeout)


def run_sh(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run([str(ROOT / "run.sh"), *args], env, timeout)


@dataclass
class Mailbox:
    messages: list[dict[str, object]] = field(default_factory=list)


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, QUIT (no STARTTLS, no AUTH)."""

    def handle(self) -> None:
        mailbox: Mailbox = self.server.mailbox  # type: ignore[attr-defined]
        self._say("220 fake-smtp ready")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self._say("250-fake-smtp\r\n250 8BITMIME")
            elif verb == "HELO":
                self._say("250 fake-smtp")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip(), []
                self._say("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip())
                self._say("250 OK")
            elif verb == "DATA":
                self._say("354 end with <CRLF>.<CRLF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    data.append(chunk)
                mailbox.messages.append(
                    {"from": sender, "to": recipients, "data": b"".join(data).decode("utf-8", "replace")}
                )
                self._say("250 queued")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            elif verb in ("RSET", "NOOP"):
                self._say("250 OK")
            else:
                self._say("502 not implemented")

    def _say(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")


@contextmanager
def fake_smtp_server() -> Iterator[tuple[int, Mailbox]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.mailbox = Mailbox()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.mailbox  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


# --- temp cleanup -------------------------------------------------------------------------------------------

HOUR = 3600


def _file(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_cleanup_removes_only_old_files_inside_the_temp_dir(tmp_path: Path) -> None:
    temp = tmp_path / "uploads"
    outside = _file(tmp_path / "outside" / "precious.wav", 10, 5 * HOUR)
    old_top = _file(temp / "old.wav", 100, 2 * HOUR)
    old_a = _file(temp / "abc123" / "a.wav", 1000, 3 * HOUR)  # its folder becomes empty: removed
    old_b = _file(temp / "def456" / "b.wav", 2000, 2 * HOUR)
    fresh = _file(temp / "def456" / "c.wav", 50, 10 * 60)  # keeps def456 alive
    fresh_top = _file(temp / "new.wav", 50, 0)
    recently_read = _file(temp / "ghi789" / "read.wav", 70, 3 * HOUR)
    os.utime(recently_read, (time.time() - 60, time.time() - 3 * HOUR))  # read a minute ago
    (temp / "link-dir").symlink_to(outside.parent, target_is_directory=True)  # must not be followed
    (temp / "link-file").symlink_to(outside)
    for link in (temp / "link-dir", temp / "link-file"):
        os.utime(link, (time.time() - 5 * HOUR,) * 2, follow_symlinks=False)
    env = ops_env(tmp_path, TEMP_DIR=str(temp), OUTPUT_DIR=str(tmp_path / "outputs"))

    dry = script("cleanup.py", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert old_a.exists() and "would remove" in dry.stdout

    result = script("cleanup.py", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not old_top.exists() and not old_a.exists() and not old_b.exists()
    assert not (temp / "abc123").exists(), "an emptied subfolder is removed"
    assert fresh.exists() and fresh_top.exists() and recently_read.exists()
    assert not (temp / "link-dir").is_symlink() and not (temp / "link-file").is_symlink()
    assert outside.exists() and outside.read_bytes() == b"x" * 10, "nothing outside TEMP_DIR is touched"
    assert temp.is_dir()
    log = (tmp_path / "logs" / "ops.log").read_text()
    assert f"removed {old_a} (1000 bytes" in log
    assert "removed empty folder" in log and "3100 bytes" in log  # 100 + 1000 + 2000 freed
    assert str(fresh) not in log


def test_cleanup_refuses_a_dangerous_temp_dir(tmp_path: Path) -> None:
    result = script("cleanup.py", env=ops_env(tmp_path, TEMP_DIR="/", OUTPUT_DIR=str(tmp_path / "outputs")))
    assert result.returncode != 0 and "refusing" in result.stderr
    result = script("cleanup.py", env=ops_env(tmp_path, TEMP_DIR=str(tmp_path / "uploads"), OUTPUT_DIR=str(ROOT)))
    assert result.returncode != 0 and "refusing" in result.stderr and "OUTPUT_DIR" in result.stderr


def test_cleanup_removes_results_past_their_retention(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    outside = _file(tmp_path / "outside" / "precious.txt", 10, 500 * HOUR)
    old = "batch-20250101-000000-" + "a" * 32
    _file(out / old / "001_a.txt", 100, 200 * HOUR)
    _file(out / old / "results.csv", 50, 169 * HOUR)
    (out / old / "link.txt").symlink_to(outside)  # removed as a link, its target stays
    running = "batch-20250102-000000-" + "b" * 32  # an old start, but a file written a minute ago
    _file(out / running / "001_a.txt", 100, 300 * HOUR)
    _file(out / running / "results.csv", 60, 60)
    fresh = "single-20250103-000000-" + "c" * 32
    _file(out / fresh / "a.srt", 70, 167 * HOUR)
    stray = _file(out / "old-note.txt", 5, 400 * HOUR)
    for entry in (out / old, out / old / "link.txt", out / running, out / fresh):  # made just now by the test
        when = time.time() - 170 * HOUR
        os.utime(entry, (when, when), follow_symlinks=False)
    env = ops_env(tmp_path, TEMP_DIR=str(tmp_path / "uploads"), OUTPUT_DIR=str(out))

    kept_forever = script("cleanup.py", env={**env, "OUTPUT_RETENTION_H": "0"})
    assert kept_forever.returncode == 0 and (out / old).is_dir() and stray.exists()
    dry = script("cleanup.py", "--dry-run", env=env)
    assert dry.returncode == 0 and (out / old).is_dir()
    assert "would remove result batch-20250101-000000-aaaaaa…" in dry.stdout

    result = script("cleanup.py", env=env)  # OUTPUT_RETENTION_H: the default, 168 h
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (out / old).exists() and not stray.exists()
    assert (out / running / "001_a.txt").exists() and (out / fresh / "a.srt").exists()
    assert outside.read_bytes() == b"x" * 10 and out.is_dir()
    log = (tmp_path / "logs" / "ops.log").read_text()
    assert "removed result batch-20250101-000000-aaaaaa… (3 file(s), 150 bytes" in log
    assert "a" * 32 not in log, "the random part of a result's name stays out of the log"

    shorter = script("cleanup.py", "--retention-hours", "100", env=env)
    assert shorter.returncode == 0 and (out / running).is_dir() and not (out / fresh).exists()


# --- GPU memory alert ---------------------------------------------------------------------------------------


def test_gpu_alert_on_the_third_consecutive_high_reading_and_emails_it(tmp_path: Path) -> None:
    alert_log = tmp_path / "logs" / "alert.log"
    with fake_smtp_server() as (port, mailbox):
        env = ops_env(
            tmp_path,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(port),
            SMTP_TO="ops@example.com, b@example.com",
            SMTP_FROM="asr@example.com",
        )
        high = {**env, "GPU_ALERT_FAKE_READING": "11800/12288,200/12288"}  # GPU 0: 11.5 GiB + 24 MiB
        for attempt in (1, 2):
            result = script("gpu_alert.py", env=high)
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"({attempt} check(s) in a row" in result.stdout
            assert not alert_log.exists() or "ALERT" not in alert_log.read_text(), f"alerted after {attempt}"
        assert mailbox.messages == []
        result = script("gpu_alert.py", env=high)
        assert result.returncode == 0, result.stdout + result.stderr
        alerts = [line for line in alert_log.read_text().splitlines() if "ALERT" in line]
        assert len(alerts) == 1 and "GPU 0" in alerts[0] and "3 consecutive" in alerts[0]
        assert len(mailbox.messages) == 1
        mail = mailbox.messages[0]
        assert mail["to"] == ["<ops@example.com>", "<b@example.com>"]
        assert "GPU memory alert" in str(mail["data"]) and "GPU 0" in str(mail["data"])
        # still high: no second alert in the same episode; back under: a recovery line
        script("gpu_alert.py", env=high)
        assert alert_log.read_text().count("ALERT") == 1 and len(mailbox.messages) == 1
        script("gpu_alert.py", env={**env, "GPU_ALERT_FAKE_READING": "1000/12288,200/12288"})
        assert "RECOVERED GPU 0" in alert_log.read_text()


def test_gpu_alert_counts_only_consecutive_readings_and_takes_a_percentage(tmp_path: Path) -> None:
    env = ops_env(tmp_path, GPU_ALERT_THRESHOLD="90%")
    alert_log = tmp_path / "logs" / "alert.log"
    for reading in ("23000/24576", "23000/24576", "1000/24576", "23000/24576", "23000/24576"):  # 94%, reset
        assert script("gpu_alert.py", env={**env, "GPU_ALERT_FAKE_READING": reading}).returncode == 0
    assert not alert_log.exists() or "ALERT" not in alert_log.read_text()
    assert script("gpu_alert.py", env={**env, "GPU_ALERT_FAKE_READING": "23000/24576"}).returncode == 0
    assert "ALERT" in alert_log.read_text()


def test_gpu_alert_email_failure_is_logged_and_exit_1(tmp_path: Path) -> None:
    env = ops_env(
        tmp_path,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(free_port()),
        SMTP_TO="ops@example.com",
        GPU_ALERT_CONSECUTIVE="1",
        GPU_ALERT_FAKE_READING="12000/12288",
    )
    result = script("gpu_alert.py", env=env)
    assert result.returncode == 1
    assert "could not email the alert" in (tmp_path / "logs" / "alert.log").read_text()


def test_gpu_alert_without_a_gpu_says_so_and_exits_0(tmp_path: Path) -> None:
    result = script("gpu_alert.py", env=ops_env(tmp_path, GPU_ALERT_FAKE_READING="none"))
    assert result.returncode == 0 and "no GPU" in result.stdout
    try:  # the real NVML path, on a machine without an NVIDIA driver
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        result = script("gpu_alert.py", env=ops_env(tmp_path))
        assert result.returncode == 0 and "no GPU" in result.stdout, result.stdout + result.stderr


# --- logrotate ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not LOGROTATE, reason=missing_tool("logrotate", "apt-get install logrotate"))
def test_logrotate_config_rotates_compresses_and_keeps_the_writer_working(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    config = (ROOT / "logrotate.conf").read_text()
    assert "/opt/paraformer-webui/logs/*.log" in config
    test_config = tmp_path / "logrotate.conf"
    test_config.write_text(config.replace("/opt/paraformer-webui/logs", str(logs)))
    (logs / "ops.log").write_text("ops line\n")
    with open(logs / "app.log", "a") as writer:  # like the app's stdout appended by run.sh (>>)
        writer.write("before rotation\n" * 100)
        writer.flush()
        result = subprocess.run(
            [LOGROTATE, "-f", "-s", str(tmp_path / "state"), str(test_config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        writer.write("after rotation\n")
        writer.flush()
    stamp = time.strftime("%Y%m%d")
    rotated = logs / f"app.log-{stamp}.gz"
    assert rotated.exists(), sorted(p.name for p in logs.iterdir())
    assert gzip.decompress(rotated.read_bytes()).decode() == "before rotation\n" * 100
    assert (logs / f"ops.log-{stamp}.gz").exists()
    # copytruncate: same file, truncated, and the open writer's next line lands at its (new) start
    assert (logs / "app.log").read_text() == "after rotation\n"


# --- install-cron -------------------------------------------------------------------------------------------


def test_install_cron_writes_one_marked_block_and_keeps_other_entries(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "crontab"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'f="$FAKE_CRONTAB"\n'
        'case "$1" in\n'
        '  -l) [[ -f "$f" ]] || { echo "no crontab for $(id -un)" >&2; exit 1; }; cat "$f" ;;\n'
        '  -) cat > "$f" ;;\n'
        '  *) cat "$1" > "$f" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    tab = tmp_path / "crontab.txt"
    env = ops_env(tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CRONTAB=str(tab))

    first = run_sh("install-cron", env=env)  # no crontab yet
    assert first.returncode == 0, first.stderr
    tab.write_text("MAILTO=me@example.com\n0 3 * * * /usr/bin/backup\n\n" + tab.read_text())
    for _ in range(2):
        again = run_sh("install-cron", env=env)
        assert again.returncode == 0, again.stderr
    text = tab.read_text()
    assert text.count(">>> paraformer-webui") == 1 and text.count("<<< paraformer-webui") == 1
    assert "MAILTO=me@example.com" in text and "0 3 * * * /usr/bin/backup" in text
    entries = [line for line in text.splitlines() if line and not line.startswith(("#", "MAILTO", "0 3"))]
    assert len(entries) == 4, entries
    assert any(e.startswith("* * * * * ") and "ops/watchdog.py" in e for e in entries)
    assert any(e.startswith("0 */2 * * * ") and "ops/cleanup.py" in e for e in entries)
    assert any(e.startswith("*/15 * * * * ") and "ops/gpu_alert.py" in e for e in entries)
    assert any(e.startswith("@reboot ") and "run.sh start" in e for e in entries)
    assert all(f"cd {ROOT}" in e for e in entries)

    removed = run_sh("install-cron", "--remove", env=env)
    assert removed.returncode == 0
    assert tab.read_text() == "MAILTO=me@example.com\n0 3 * * * /usr/bin/backup\n"


# --- watchdog (no app) --------------------------------------------------------------------------------------


def test_watchdog_counts_failures_across_runs_then_restarts(tmp_path: Path) -> None:
    marker = tmp_path / "restarted"
    env = ops_env(
        tmp_path,
        HOST="127.0.0.1",
        PORT=str(free_port()),
        WATCHDOG_TIMEOUT_S="1",
        WATCHDOG_RESTART_CMD=f"echo restarting; touch {marker}",
    )
    for attempt in (1, 2):
        result = script("watchdog.py", env=env)
        assert result.returncode == 1 and f"({attempt}/3)" in result.stdout
        assert not marker.exists()
    result = script("watchdog.py", env=env)
    assert result.returncode == 0 and marker.exists(), result.stdout + result.stderr
    log = (tmp_path / "logs" / "ops.log").read_text()
    assert "3 consecutive failures: restarting" in log and "restart: restarting" in log
    # the count starts again after a restart; after `run.sh stop` the watchdog leaves the app alone
    assert "(1/3)" in script("watchdog.py", env=env).stdout
    (tmp_path / "logs" / "app.stopped").touch()
    result = script("watchdog.py", "--failures", "1", env=env)
    assert result.returncode == 0 and "stopped with ./run.sh stop" in result.stdout


# --- run.sh without the app ---------------------------------------------------------------------------------


def test_run_sh_usage_and_exit_codes(tmp_path: Path) -> None:
    env = ops_env(tmp_path, PORT=str(free_port()), HOST="127.0.0.1")
    helped = run_sh("--help", env=env)
    assert helped.returncode == 0 and "start" in helped.stdout and "Exit status" in helped.stdout
    assert run_sh(env=env).returncode == 2
    unknown = run_sh("frobnicate", env=env)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
    status = run_sh("status", env=env)
    assert status.returncode == 3 and "not running" in status.stdout
    stop = run_sh("stop", env=env)
    assert stop.returncode == 0 and "not running" in stop.stdout


def test_run_sh_start_refuses_a_busy_port_and_an_unusable_log_dir(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_sh("start", env=ops_env(tmp_path, HOST="127.0.0.1", PORT=str(port)))
    assert result.returncode == 1 and f"port {port}" in result.stderr and "in use" in result.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = run_sh(
        "start", env=ops_env(tmp_path, HOST="127.0.0.1", PORT=str(free_port()), LOG_DIR=str(not_a_dir / "logs"))
    )
    assert result.returncode == 1 and "log dir" in result.stderr


def test_run_sh_reads_env_file_but_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "test.env"
    port = free_port()
    # A key set twice takes its last value, as in the app's settings (docs/operations.md: append to .env to override).
    env_file.write_text(
        f"# comment\nexport HOST='127.0.0.1'  \nPORT={port}  # inline comment\nLOG_DIR=\n"
        'LOG_DIR="' + str(tmp_path / "from-file") + '"\nX=$(touch pwned)\n'
    )
    env = ops_env(tmp_path, ENV_FILE=str(env_file))
    env.pop("LOG_DIR")
    status = run_sh("status", env=env)
    assert status.returncode == 3
    assert run_sh("stop", env=env).returncode == 0
    assert (tmp_path / "from-file" / "app.stopped").exists()
    assert not (ROOT / "pwned").exists()
    env["LOG_DIR"] = str(tmp_path / "from-env")
    assert run_sh("stop", env=env).returncode == 0
    assert (tmp_path / "from-env" / "app.stopped").exists()


# --- run.sh on a GPU machine (a fake nvidia-smi) -------------------------------------------------------------


def fake_nvidia_smi(
    tmp: Path, driver_cuda: str = "12.8", gpus: tuple[str, ...] = ("NVIDIA GeForce RTX 3060",), fails: bool = False
) -> str:
    """A PATH whose nvidia-smi lists `gpus` (-L) and prints a banner with the driver's CUDA version."""
    bin_dir = tmp / "gpu-bin"
    bin_dir.mkdir(exist_ok=True)
    listing = "".join(f'  echo "GPU {i}: {name} (UUID: GPU-{i:08d})"\n' for i, name in enumerate(gpus))
    body = (
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9\n'
        if fails
        else f'if [[ "${{1:-}}" == -L ]]; then\n{listing}  exit 0\nfi\n'
        f'echo "| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: {driver_cuda}     |"\n'
    )
    (bin_dir / "nvidia-smi").write_text("#!/usr/bin/env bash\n" + body)
    (bin_dir / "nvidia-smi").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


# A stand-in for torch: its version is a state file (e.g. 2.13.0+cpu) that the fake pip below changes; a +cpu
# build is CPU-only, any other sees one GPU, unless FAKE_TORCH_NO_GPU gives why CUDA fails to initialise.
FAKE_TORCH = """
import os
import types
from pathlib import Path

_state = Path(os.environ["FAKE_TORCH"])
if not _state.exists():
    raise ImportError("No module named 'torch'", name="torch")
__version__ = _state.read_text().strip()
_reason = os.environ.get("FAKE_TORCH_NO_GPU")
version = types.SimpleNamespace(cuda=None if __version__.endswith("+cpu") else "12.8")


def _available():
    return version.cuda is not None and not _reason


def _init():
    if version.cuda is None:
        raise AssertionError("Torch not compiled with CUDA enabled")
    if _reason:
        raise RuntimeError(_reason)


cuda = types.SimpleNamespace(is_available=_available, device_count=lambda: 1 if _available() else 0,
                             get_device_name=lambda i: "NVIDIA GeForce RTX 3060", init=_init)
"""

# A stand-in for the venv's python during `run.sh install`: `-m ops.*` runs the real ops code with the fake torch
# first on the path; anything else (pip, the test-model builder) is logged, and pip's torch install and uninstall
# change the fake torch's state file.
_FAKE_PYTHON = r"""#!/usr/bin/env bash
state="$FAKE_TORCH"
if [[ "$1" == -m && "$2" == ops.* ]]; then
  PYTHONPATH="$FAKE_TORCH_PATH" exec "$REAL_PYTHON" "$@"
fi
echo "$*" >> "$FAKE_LOG"
case "$*" in
  "-m pip install -q torch=="*) version="${5#torch==}"; all="$*"; url="${all##*--index-url }"
                                [[ "$url" == "$all" ]] || version+="+${url##*/}"   # PyPI's build has no tag
                                echo "$version" > "$state" ;;
  "-m pip uninstall -y -q torch") rm -f "$state" ;;
  "-m pip show torchaudio") exit 1 ;;
esac
exit 0
"""


def fake_torch(tmp: Path, version: str | None) -> dict[str, str]:
    """The environment that makes `import torch` the stand-in above, at `version` (None: not installed)."""
    (tmp / "fake-torch" / "torch").mkdir(parents=True, exist_ok=True)
    (tmp / "fake-torch" / "torch" / "__init__.py").write_text(FAKE_TORCH)
    state = tmp / "torch-version"
    if version:
        state.write_text(version + "\n")
    else:
        state.unlink(missing_ok=True)
    return {"FAKE_TORCH": str(state), "FAKE_TORCH_PATH": str(tmp / "fake-torch")}


def _fake_venv(tmp: Path, torch: str | None) -> dict[str, str]:
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(_FAKE_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    return {"VENV": str(venv), "REAL_PYTHON": PYTHON, "FAKE_LOG": str(tmp / "pip.log"), **fake_torch(tmp, torch)}


def test_install_on_a_gpu_machine_installs_the_cuda_build_for_its_driver(tmp_path: Path) -> None:
    env = ops_env(tmp_path, PATH=fake_nvidia_smi(tmp_path, "12.8"), **_fake_venv(tmp_path, "2.13.0+cpu"))
    env.pop("TORCH_INDEX_URL", None)
    result = run_sh("install", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    pip = (tmp_path / "pip.log").read_text().splitlines()
    assert "-m pip uninstall -y -q torch" in pip, "the CPU build is replaced (pip takes it as ==2.13.0)"
    assert "-m pip install -q -r requirements-dev.txt" not in pip, "install is the runtime set"
    assert "-m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" in pip
    assert pip.index("-m pip install -q -r requirements.txt") > pip.index(
        "-m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
    )
    assert "NVIDIA GPU found: NVIDIA GeForce RTX 3060 (the driver runs CUDA 12.8)" in result.stdout
    assert "torch 2.13.0+cu128 (CUDA 12.8) uses it" in result.stdout
    assert (tmp_path / "no.env").exists(), "the settings file goes where ENV_FILE says"

    # An older driver gets the oldest build of its CUDA major; one older than every build stops with the fix.
    (tmp_path / "pip.log").unlink()
    older = run_sh("install", env={**env, "PATH": fake_nvidia_smi(tmp_path, "12.4")})
    assert older.returncode == 0 and "whl/cu126" in (tmp_path / "pip.log").read_text()
    too_old = run_sh("install", env={**env, "PATH": fake_nvidia_smi(tmp_path, "11.8")})
    assert too_old.returncode == 1 and "upgrade the driver" in too_old.stderr
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in too_old.stderr


def test_install_keeps_a_chosen_cpu_build_with_a_warning_and_stops_on_a_gpu_torch_cannot_use(tmp_path: Path) -> None:
    env = ops_env(
        tmp_path,
        PATH=fake_nvidia_smi(tmp_path),
        **_fake_venv(tmp_path, None),
        TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu",
    )
    chosen = run_sh("install", env=env)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert "torch 2.13.0+cpu is a CPU-only build" in chosen.stdout
    assert "warning: keeping the torch build" in chosen.stderr
    assert (
        "-m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
        in (tmp_path / "pip.log").read_text()
    )
    # No CUDA version readable from the driver: pip's default build, then the check decides.
    (tmp_path / "pip.log").unlink()
    env.pop("TORCH_INDEX_URL")
    unknown = run_sh("install", env={**env, "PATH": fake_nvidia_smi(tmp_path, "")})
    assert unknown.returncode == 0, unknown.stdout + unknown.stderr  # PyPI's build: the fake says it sees the GPU
    assert "-m pip install -q torch==2.13.0\n" in (tmp_path / "pip.log").read_text() + "\n"


def test_install_without_a_gpu_is_unchanged(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a real nvidia-smi")
    env = ops_env(tmp_path, **_fake_venv(tmp_path, None))
    env.pop("TORCH_INDEX_URL", None)
    result = run_sh("install", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    pip = (tmp_path / "pip.log").read_text().splitlines()
    assert "-m pip install -q torch==2.13.0" in pip and not any("uninstall" in line for line in pip)
    assert "NVIDIA" not in result.stdout


def test_check_gpu_names_the_torch_to_install(tmp_path: Path) -> None:
    """The real venv (a CPU-only torch here) on a machine whose nvidia-smi lists a GPU."""
    result = run_sh("check-gpu", env=ops_env(tmp_path, PATH=fake_nvidia_smi(tmp_path, "13.0")))
    assert result.returncode == 1
    assert "NVIDIA GPU: NVIDIA GeForce RTX 3060; the driver runs CUDA 13.0" in result.stdout
    assert "CPU-only build" in result.stdout
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 ./run.sh install" in result.stdout
    broken = run_sh("check-gpu", env=ops_env(tmp_path, PATH=fake_nvidia_smi(tmp_path, fails=True)))
    assert broken.returncode == 1 and "nvidia-smi is installed but fails" in broken.stdout
    if not shutil.which("nvidia-smi"):
        none = run_sh("check-gpu", env=ops_env(tmp_path))
        assert none.returncode == 0 and "no NVIDIA GPU" in none.stdout


# --- run.sh with the app ------------------------------------------------------------------------------------


def app_env(models: TinyModels, tmp: Path, **extra: str) -> dict[str, str]:
    """ops_env plus what the app needs: the tiny models, temp folders, loopback on a free port."""
    env = ops_env(
        tmp,
        MODEL_DIR=str(models.asr),
        VAD_MODEL_DIR=str(models.vad),
        PUNC_MODEL_DIR=str(models.punc),
        ONLINE_MODEL_DIR=str(models.online or ""),
        TEMP_DIR=str(tmp / "uploads"),
        OUTPUT_DIR=str(tmp / "outputs"),
        DEVICE="cpu",
        NCPU="1",
        HOST="127.0.0.1",
        PORT=str(free_port()),
        START_TIMEOUT="120",
    )
    env.update(extra)
    return env


def _health(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
            return json.loads(response.read())["status"]
    except Exception:
        return "down"


def _pid(logs: Path) -> int:
    return int((logs / "app.pid").read_text().strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.server
def test_run_sh_start_watchdog_restart_after_kill_9_and_stop(tiny_models, tmp_path: Path) -> None:
    env = app_env(tiny_models, tmp_path)
    port, logs = int(env["PORT"]), Path(env["LOG_DIR"])
    watchdog = None
    try:
        started = run_sh("start", env=env, timeout=150)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{port}/" in started.stdout
        assert _health(port) == "ok"
        first_pid = _pid(logs)

        again = run_sh("start", env=env)
        assert again.returncode == 1 and "already running" in again.stderr
        assert _pid(logs) == first_pid

        status = run_sh("status", env=env)
        assert status.returncode == 0 and f"PID {first_pid}" in status.stdout and "health ok" in status.stdout
        assert "device cpu" in status.stdout and "warning" not in status.stderr
        # The same app seen on a machine whose nvidia-smi lists a GPU: it runs on the CPU, so status warns.
        on_gpu_box = run_sh("status", env={**env, "PATH": fake_nvidia_smi(tmp_path)})
        assert on_gpu_box.returncode == 0, on_gpu_box.stderr
        assert (
            "warning: nvidia-smi lists NVIDIA GeForce RTX 3060 but the model runs on cpu: see ./run.sh check-gpu"
        ) in on_gpu_box.stderr

        os.kill(first_pid, signal.SIGKILL)
        deadline = time.time() + 10
        while _alive(first_pid) and time.time() < deadline:
            time.sleep(0.1)
        assert run_sh("status", env=env).returncode == 3

        watchdog = subprocess.Popen(
            [PYTHON, str(ROOT / "ops" / "watchdog.py"), "--loop", "--interval", "0.5", "--timeout", "2"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 150
        while time.time() < deadline:
            if (logs / "app.pid").exists() and _pid(logs) != first_pid and _health(port) == "ok":
                break
            time.sleep(0.5)
        ops_log = (logs / "ops.log").read_text()
        assert _health(port) == "ok", ops_log
        second_pid = _pid(logs)
        assert second_pid != first_pid and _alive(second_pid)
        watchdog.terminate()
        watchdog.wait(timeout=30)  # the loop finishes its current round first
        ops_log = (logs / "ops.log").read_text()
        assert "health check failed (3/3)" in ops_log and "restarting with" in ops_log, ops_log
        assert f"started (PID {second_pid})" in ops_log and "restart done" in ops_log

        status = run_sh("status", env=env)
        assert status.returncode == 0 and f"PID {second_pid}" in status.stdout and "health ok" in status.stdout

        stopped = run_sh("stop", env=env, timeout=60)
        assert stopped.returncode == 0 and f"stopped (PID {second_pid})" in stopped.stdout
        assert not _alive(second_pid) and not (logs / "app.pid").exists()
        assert run_sh("status", env=env).returncode == 3
        assert "starting app.py" in (logs / "app.log").read_text()
    finally:
        if watchdog and watchdog.poll() is None:
            watchdog.kill()
            watchdog.wait()
        run_sh("stop", env=env, timeout=60)


@pytest.mark.server
def test_run_sh_start_fails_clearly_when_the_model_cannot_load(tiny_models, tmp_path: Path) -> None:
    env = app_env(tiny_models, tmp_path, MODEL_DIR=str(tmp_path / "no-such-model"))
    logs = Path(env["LOG_DIR"])
    try:
        result = run_sh("start", env=env, timeout=150)
        assert result.returncode == 1
        assert "failed to load" in result.stderr and "last lines of" in result.stderr, result.stderr
        assert "no-such-model" in result.stderr
        assert not (logs / "app.pid").exists()
    finally:
        run_sh("stop", env=env, timeout=60)


@pytest.mark.server
def test_run_sh_start_timeout_says_so_and_stop_still_works(tiny_models, tmp_path: Path) -> None:
    env = app_env(tiny_models, tmp_path, START_TIMEOUT="1")
    logs = Path(env["LOG_DIR"])
    try:
        result = run_sh("start", env=env, timeout=60)
        assert result.returncode == 1 and "not healthy after 1s" in result.stderr, result.stderr
        pid = _pid(logs)
        assert _alive(pid)
        stopped = run_sh("stop", env=env, timeout=60)
        assert stopped.returncode == 0 and f"stopped (PID {pid})" in stopped.stdout
        assert not _alive(pid)
    finally:
        run_sh("stop", env=env, timeout=60)
