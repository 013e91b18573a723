"""Shared helpers for the ops scripts: settings, the replica list, logging, state files.

The ops scripts run beside the app, not inside it: they read the settings through the app's own Settings class
(ops/settings.py: the environment, then `ENV_FILE`, then the defaults), talk to the app through `run.sh` and
`/health`, and write to `LOG_DIR`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.settings import OpsSettings, SettingsError, env_file, load_settings
from service_log import SafeFormatter

ROOT = Path(__file__).resolve().parent.parent


def read_settings() -> OpsSettings:
    """The settings (ops/settings.py), or exit naming the bad key: from cron, the message lands in cron.log."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


@dataclass(frozen=True)
class Replica:
    """One app process as `run.sh replicas` lists it (replica 0 is the single-instance app: app.log, app.pid)."""

    index: int
    port: int
    health_url: str
    gpu: str | None  # the CUDA_VISIBLE_DEVICES run.sh gives it; None when it assigns none
    pid_file: Path
    log_file: Path
    stopped_file: Path

    @property
    def suffix(self) -> str:
        """ "" for replica 0, "-N" for replica N: the suffix of its file names (app-1.log, watchdog-1.state)."""
        return f"-{self.index}" if self.index else ""


def list_replicas() -> list[Replica]:
    """The replicas, from `run.sh replicas`: run.sh alone decides ports, file names and GPUs."""
    env = {**os.environ, "ENV_FILE": str(env_file())}
    proc = subprocess.run(
        [str(ROOT / "run.sh"), "replicas"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"run.sh replicas failed (exit {proc.returncode}): {proc.stderr.strip()}")
    replicas = []
    for line in proc.stdout.splitlines()[1:]:  # the first line is the header
        index, port, url, gpu, pid_file, log_file, stopped = line.split("\t")
        replicas.append(
            Replica(
                int(index), int(port), url, None if gpu == "-" else gpu, Path(pid_file), Path(log_file), Path(stopped)
            )
        )
    return replicas


def setup_logging(name: str, log_dir: Path, *, verbose: bool = True) -> logging.Logger:
    """Log to `log_dir/ops.log` (always) and to stdout (for a person at a shell; cron discards it)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = SafeFormatter()
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    file_handler = logging.FileHandler(log_dir / "ops.log", encoding="utf-8")
    file_handler.setFormatter(formatter)
    logger.addHandler(file_handler)
    if verbose:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(formatter)
        logger.addHandler(console)
    logger.propagate = False
    return logger


def read_state(path: Path) -> dict[str, Any]:
    """A small JSON state file; missing or unreadable means a fresh state."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_loop(step: Callable[[], int], interval_s: float, logger: logging.Logger) -> int:
    """Call `step` every `interval_s` seconds until SIGTERM/SIGINT (for systemd or a shell without cron)."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        logger.info("received signal %d, stopping the loop", signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("loop mode: every %.1f s", interval_s)
    while not stopping:
        started = time.monotonic()
        try:
            step()
        except Exception:  # one bad round must not end the loop
            logger.exception("check failed")
        while not stopping and time.monotonic() - started < interval_s:
            time.sleep(min(0.2, interval_s))
    return 0
