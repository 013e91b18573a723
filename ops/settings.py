"""The settings of run.sh and the ops scripts: the app's Settings plus the operations keys, read the same way.

One reader: pydantic-settings reads the environment, then `ENV_FILE` (default `.env`), then the defaults, for the
app and for operations alike. `run.sh` does not parse `.env` itself: it evals what

    python -m ops.settings --shell [--lenient]

prints, shell assignments quoted with shlex.quote (a value such as `$(cmd)` stays text; nothing is executed).
`--lenient` (run.sh stop, status, logs, replicas) turns a bad value into a warning and uses its default, so a typo
in `.env` never keeps a running app from being stopped; start and the ops scripts refuse a bad value.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from config.settings import PROJECT_ROOT, Settings

ROOT = PROJECT_ROOT
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OpsSettings(Settings):
    """The app's settings and the keys only run.sh and ops/ read (the "operations" blocks of .env.example)."""

    # An empty value means "the default", as it always did for run.sh and ops/ (PORT= is not a port).
    model_config = SettingsConfigDict(env_ignore_empty=True)  # merged with the app's (env file, extra="ignore")

    # --- run.sh ---
    pid_file: Path | None = Field(
        None, description="PID file of replica 0; empty: LOG_DIR/app.pid (replica N: app-N.pid beside it)."
    )
    start_timeout: int = Field(180, ge=0, description="Seconds ./run.sh start waits for /health to say ok.")
    stop_timeout: int = Field(20, ge=0, description="Seconds ./run.sh stop waits after SIGTERM before SIGKILL.")
    replicas: int = Field(1, ge=1, description="App processes on this box (./run.sh --replicas N overrides).")
    replica_gpus: str = Field(
        "",
        description="GPU ids spread over the replicas, round robin; empty: with several "
        "replicas every GPU nvidia-smi lists; none: leave CUDA_VISIBLE_DEVICES alone.",
    )
    rolling_pause_s: int = Field(10, ge=0, description="Seconds between two replicas of a rolling restart.")
    nginx_listen: str = Field("80", description="Where the nginx of ./run.sh nginx-config listens.")
    nginx_upstreams: str = Field("", description="HOST:PORT,... the nginx config sends to; empty: this box's replicas.")

    # --- watchdog (ops/watchdog.py) ---
    watchdog_failures: int = Field(3, ge=1, description="Failed /health checks in a row before a restart.")
    watchdog_interval_s: float = Field(60.0, gt=0, description="Seconds between checks in --loop mode.")
    watchdog_timeout_s: float = Field(10.0, gt=0, description="Seconds /health gets to answer.")
    watchdog_loading_grace_s: float = Field(
        600.0, ge=0, description='"loading" is not a failure during this many seconds of uptime.'
    )
    watchdog_restart_cmd: str = Field("", description="Restart command ({replica}: its index); empty: run.sh restart.")

    # --- cleanup (ops/cleanup.py; it also reads TEMP_DIR, OUTPUT_DIR, OUTPUT_RETENTION_H, JOB_RETENTION_H) ---
    cleanup_max_age_h: float = Field(1.0, ge=0, description="Temp files not accessed for this many hours go.")
    cleanup_interval_s: float = Field(7200.0, gt=0, description="Seconds between runs in --loop mode.")

    # --- GPU memory alert (ops/gpu_alert.py) ---
    gpu_alert_threshold: str = Field("11.5GB", description="Used memory above this alerts: 11.5GB, 11776MB or 95%.")
    gpu_alert_consecutive: int = Field(3, ge=1, description="Checks in a row above the threshold before an alert.")
    gpu_alert_interval_s: float = Field(900.0, gt=0, description="Seconds between checks in --loop mode.")
    smtp_host: str = Field("", description="Mail server for the alert; empty: no email.")
    smtp_port: int = Field(587, ge=1, le=65535, description="Its port.")
    smtp_security: Literal["auto", "starttls", "ssl", "none"] = Field(
        "auto", description="auto (SSL on 465, else STARTTLS when offered), starttls, ssl or none."
    )
    smtp_user: str = Field("", description="Login; empty: no login.")
    smtp_password: SecretStr | None = Field(None, description="Password for SMTP_USER.")
    smtp_from: str = Field("", description="Sender; empty: SMTP_USER or paraformer-webui@this host.")
    smtp_to: str = Field("", description="Comma-separated recipients; empty: no email.")
    smtp_timeout_s: float = Field(20.0, gt=0, description="Seconds the mail server gets.")

    @field_validator("smtp_security", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("pid_file")
    @classmethod
    def _pid_file_in_project(cls, value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else ROOT / value

    @property
    def base_pid_file(self) -> Path:
        return self.pid_file or self.log_dir / "app.pid"

    @property
    def check_host(self) -> str:
        """Where /health is asked: an app listening on every address is asked on loopback."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host


class SettingsError(Exception):
    """A settings file that cannot be read or holds a bad value; the message names the key and where it came from."""


def env_file() -> Path:
    """ENV_FILE (default .env); a relative path is relative to the project folder, as for the app."""
    path = Path(os.environ.get("ENV_FILE") or ROOT / ".env").expanduser()
    return path if path.is_absolute() else ROOT / path


def _problems(exc: ValidationError, path: Path) -> tuple[set[str], list[str]]:
    names, lines = set(), []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        names.add(name)
        key = name.upper()
        where = "the environment" if key in os.environ else str(path)
        field = OpsSettings.model_fields.get(name)
        secret = field is not None and "SecretStr" in str(field.annotation)  # a secret's value is never shown
        shown = "" if secret or "input" not in error else f", got {error['input']!r}"
        lines.append(f"{key} (from {where}): {error['msg']}{shown}")
    return names, lines


def load_settings(*, lenient: bool = False, **overrides: Any) -> OpsSettings:
    """The settings; a bad value raises SettingsError, or with `lenient` is warned about on stderr and defaulted."""
    path = env_file()
    if path.exists() and not os.access(path, os.R_OK):
        raise SettingsError(f"cannot read {path}")
    try:
        return OpsSettings(_env_file=path, **overrides)
    except ValidationError as exc:
        names, lines = _problems(exc, path)
        if not lenient:
            raise SettingsError("bad settings: " + "; ".join(lines)) from None
    for line in lines:
        print(f"warning: {line}; using the default", file=sys.stderr)
    defaults = {
        name: OpsSettings.model_fields[name].get_default(call_default_factory=True)
        for name in names
        if name in OpsSettings.model_fields
    }
    return OpsSettings(_env_file=path, **{**defaults, **overrides})


def file_environment(path: Path) -> dict[str, str]:
    """The settings file's KEY=VALUE pairs that the environment does not set, parsed as pydantic-settings parses
    them (python-dotenv): the app's process gets them too, as systemd's EnvironmentFile would give them."""
    if not path.is_file():
        return {}
    pairs = {}
    for key, value in dotenv_values(path, encoding="utf-8").items():
        if value is None or key in os.environ:
            continue
        if not _NAME.fullmatch(key):
            print(f"warning: {path}: ignoring {key!r}: not a variable name", file=sys.stderr)
            continue
        pairs[key] = value
    return pairs


def replica_gpus(settings: OpsSettings) -> list[str]:
    """The GPU ids replicas are spread over: REPLICA_GPUS; with several replicas and none named, every GPU
    nvidia-smi lists; otherwise none (CUDA_VISIBLE_DEVICES is left as it is)."""
    named = settings.replica_gpus.replace(" ", "")
    if named == "none":
        return []
    if named:
        return [gpu for gpu in named.split(",") if gpu]
    if settings.replicas > 1:
        from ops.cuda import nvidia_facts

        return [str(index) for index, _ in nvidia_facts().gpus]
    return []


def shell_assignments(settings: OpsSettings) -> str:
    """What run.sh needs, as bash assignments: every value quoted, arrays for lists."""
    path = env_file()
    values = {
        "ENV_FILE": str(path),
        "HOST": settings.host,
        "PORT": str(settings.port),
        "CHECK_HOST": settings.check_host,
        "REPLICAS": str(settings.replicas),
        "LOG_DIR": str(settings.log_dir),
        "BASE_PID_FILE": str(settings.base_pid_file),
        "START_TIMEOUT": str(settings.start_timeout),
        "STOP_TIMEOUT": str(settings.stop_timeout),
        "ROLLING_PAUSE_S": str(settings.rolling_pause_s),
        # Only whether access is protected, never the secrets themselves.
        "ACCESS_PROTECTED": "1" if settings.api_keys or settings.webui_auth else "0",
    }
    lines = [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    lines.append("GPUS=(" + " ".join(shlex.quote(gpu) for gpu in replica_gpus(settings)) + ")")
    app_env = [f"{key}={value}" for key, value in file_environment(path).items()]
    lines.append("APP_ENV=(" + " ".join(shlex.quote(pair) for pair in app_env) + ")")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shell", action="store_true", help="print run.sh's settings as bash assignments")
    parser.add_argument("--lenient", action="store_true", help="warn about a bad value and use its default")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(lenient=args.lenient)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.shell:
        sys.stdout.write(shell_assignments(settings))
    else:
        for name in OpsSettings.model_fields:
            value = getattr(settings, name)
            print(f"{name.upper()}={'********' if isinstance(value, SecretStr) else '' if value is None else value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
