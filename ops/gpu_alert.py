#!/usr/bin/env python3
"""GPU memory alert: read GPU memory through NVML (asr/gpu.py); when the used memory is above GPU_ALERT_THRESHOLD on
GPU_ALERT_CONSECUTIVE (3) checks in a row, append an alert to LOG_DIR/alert.log and, when SMTP_HOST and SMTP_TO
are set, send it by email.

    python ops/gpu_alert.py            # one check (cron, every 15 minutes); the count is kept in a state file
    python ops/gpu_alert.py --loop     # check every GPU_ALERT_INTERVAL_S seconds (default 900)

GPU_ALERT_THRESHOLD: "11.5GB" (default; GB here means GiB, 1024^3 bytes, as nvidia-smi counts), "11776MB" or
"95%" of the card. One alert per episode: the next one comes after the memory has gone back under the threshold
(which is logged too). No GPU or no NVIDIA driver: says so and exits 0. With several replicas, each GPU's
lines name the replicas run.sh put on it (`run.sh replicas`: replica N gets CUDA_VISIBLE_DEVICES=its GPU).

Test seam: GPU_ALERT_FAKE_READING replaces NVML: "USED/TOTAL" in MiB per GPU, comma-separated
("11800/12288,300/12288"), or "none" for a machine without a GPU.
Exit status: 0 done (also: no GPU, alert sent), 1 the alert could not be emailed.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import smtplib
import socket
import ssl
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ops.common import (  # noqa: E402
    list_replicas,
    read_settings,
    read_state,
    run_loop,
    setup_logging,
    write_state,
)
from ops.settings import OpsSettings  # noqa: E402
from service_log import SafeFormatter  # noqa: E402

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    used: int  # bytes
    total: int  # bytes


class NoGpu(Exception):
    """No NVIDIA GPU or driver on this machine."""


def read_gpus() -> list[GpuMemory]:
    """Memory of every GPU, through NVML (asr.gpu), or GPU_ALERT_FAKE_READING in tests."""
    fake = os.environ.get("GPU_ALERT_FAKE_READING")
    if fake is not None:
        if fake.strip().lower() in ("", "none"):
            raise NoGpu("no GPU (GPU_ALERT_FAKE_READING=none)")
        gpus = []
        for index, item in enumerate(fake.split(",")):
            try:
                used, total = (float(x) for x in item.split("/"))
            except ValueError:
                raise SystemExit(f"GPU_ALERT_FAKE_READING: expected USED/TOTAL in MiB, got {item!r}") from None
            gpus.append(GpuMemory(index, "fake GPU", int(used * MIB), int(total * MIB)))
        return gpus
    from asr.gpu import gpu_info  # the shared NVML reader; [] when NVML raises (no GPU, no driver)

    gpus = [
        GpuMemory(g["index"], g["name"], int(g["memory_used_mb"] * MIB), int(g["memory_total_mb"] * MIB))
        for g in gpu_info()
    ]
    if not gpus:
        raise NoGpu("no NVIDIA GPU found (NVML is unavailable or reports no device)")
    return gpus


def parse_threshold(text: str) -> tuple[float, bool]:
    """("11.5GB" | "11776MB" | "95%") -> (value, is_percent); the value is in bytes unless a percentage."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(%|gib|gb|g|mib|mb|m)?\s*", text.lower())
    if not match:
        raise SystemExit(f"GPU_ALERT_THRESHOLD must look like 11.5GB, 11776MB or 95%, got {text!r}")
    value, unit = float(match[1]), match[2] or "gb"
    if unit == "%":
        return value, True
    return value * (MIB if unit.startswith("m") else GIB), False


def over_threshold(gpu: GpuMemory, threshold: float, percent: bool) -> bool:
    return (100.0 * gpu.used / gpu.total if gpu.total else 0.0) > threshold if percent else gpu.used > threshold


def describe(gpu: GpuMemory) -> str:
    pct = 100.0 * gpu.used / gpu.total if gpu.total else 0.0
    return f"GPU {gpu.index} ({gpu.name}): {gpu.used / GIB:.2f} GiB of {gpu.total / GIB:.2f} GiB used ({pct:.0f}%)"


def send_email(settings: OpsSettings, subject: str, body: str) -> None:
    host, port, timeout = settings.smtp_host.strip(), settings.smtp_port, settings.smtp_timeout_s
    security = settings.smtp_security  # auto: SSL on 465, else STARTTLS when offered
    user = settings.smtp_user.strip()
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.smtp_from.strip() or user or f"paraformer-webui@{socket.getfqdn()}"
    message["To"] = ", ".join(a.strip() for a in settings.smtp_to.split(",") if a.strip())
    message.set_content(body)
    context = ssl.create_default_context()
    if security == "ssl" or (security == "auto" and port == 465):
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        smtp.ehlo()
        if security == "starttls" or (security == "auto" and port != 465 and smtp.has_extn("starttls")):
            smtp.starttls(context=context)
            smtp.ehlo()
        if user:
            smtp.login(user, password)
        smtp.send_message(message)


class GpuAlert:
    def __init__(self, settings: OpsSettings, threshold: str, consecutive: int, logger: logging.Logger) -> None:
        self.settings = settings
        self.threshold_text = threshold
        self.threshold, self.percent = parse_threshold(threshold)
        self.consecutive = consecutive
        self.logger = logger
        self.state_file = settings.log_dir / "gpu_alert.state"
        self.alert_log = logging.getLogger("gpu_alert.alerts")
        self.alert_log.handlers.clear()
        handler = logging.FileHandler(settings.log_dir / "alert.log", encoding="utf-8")
        handler.setFormatter(SafeFormatter())
        self.alert_log.addHandler(handler)
        self.alert_log.setLevel(logging.INFO)  # also propagates to ops.log through the parent logger

    def check(self) -> int:
        try:
            gpus = read_gpus()
        except NoGpu as exc:
            self.logger.info("no GPU to check: %s", exc)
            return 0
        state = read_state(self.state_file)
        users = self.replicas_by_gpu()
        result = 0
        for gpu in gpus:
            gpu = GpuMemory(gpu.index, gpu.name + users.get(str(gpu.index), ""), gpu.used, gpu.total)
            key = str(gpu.index)
            count = int(state.get(key, 0))
            if not over_threshold(gpu, self.threshold, self.percent):
                if count >= self.consecutive:
                    self.alert_log.warning("RECOVERED %s, under the threshold %s", describe(gpu), self.threshold_text)
                else:
                    self.logger.info("%s: under the threshold %s", describe(gpu), self.threshold_text)
                state[key] = 0
                continue
            count += 1
            state[key] = count
            self.logger.info(
                "%s: above the threshold %s (%d check(s) in a row; alert at %d)",
                describe(gpu),
                self.threshold_text,
                count,
                self.consecutive,
            )
            if count == self.consecutive:
                result = max(result, self.alert(gpu))
        write_state(self.state_file, state)
        return result

    def replicas_by_gpu(self) -> dict[str, str]:
        """GPU id -> ", replica 1 on port 7861" for the replicas run.sh gives a GPU (none: {})."""
        try:
            replicas = list_replicas()
        except Exception as exc:  # the alert matters more than the label
            self.logger.warning("cannot list the replicas (%s); GPUs are not labelled with them", exc)
            return {}
        users: dict[str, list[str]] = {}
        for replica in replicas:
            if replica.gpu is not None:
                users.setdefault(replica.gpu, []).append(f"replica {replica.index} on port {replica.port}")
        return {gpu: ", " + " and ".join(names) for gpu, names in users.items()}

    def alert(self, gpu: GpuMemory) -> int:
        text = f"{describe(gpu)}, above the threshold {self.threshold_text} on {self.consecutive} consecutive checks"
        self.alert_log.error("ALERT %s", text)
        recipients = self.settings.smtp_to.strip()
        if not (self.settings.smtp_host.strip() and recipients):
            return 0
        host = socket.gethostname()
        try:
            send_email(
                self.settings,
                f"[paraformer-webui] GPU memory alert on {host}",
                f"{text}\n\nHost: {host}\nSee {self.settings.log_dir / 'alert.log'} and nvidia-smi.\n",
            )
        except (OSError, smtplib.SMTPException) as exc:
            self.alert_log.error("could not email the alert to %s: %s", recipients, exc)
            return 1
        self.logger.info("alert emailed to %s", recipients)
        return 0


def main(argv: list[str] | None = None) -> int:
    settings = read_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threshold",
        default=settings.gpu_alert_threshold,
        help="used memory above this alerts: 11.5GB, 11776MB or 95%% (GPU_ALERT_THRESHOLD)",
    )
    parser.add_argument(
        "--consecutive",
        type=int,
        default=settings.gpu_alert_consecutive,
        help="checks in a row above the threshold before an alert (GPU_ALERT_CONSECUTIVE, 3)",
    )
    parser.add_argument("--loop", action="store_true", help="check every GPU_ALERT_INTERVAL_S s (default 900)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log to LOG_DIR/ops.log only (cron)")
    args = parser.parse_args(argv)
    if args.consecutive < 1:
        parser.error("--consecutive must be >= 1")
    logger = setup_logging("gpu_alert", settings.log_dir, verbose=not args.quiet)
    checker = GpuAlert(settings, args.threshold, args.consecutive, logger)
    if args.loop:
        return run_loop(checker.check, settings.gpu_alert_interval_s, logger)
    return checker.check()


if __name__ == "__main__":
    sys.exit(main())
