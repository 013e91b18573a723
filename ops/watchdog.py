#!/usr/bin/env python3
"""Watchdog: check /health; after N consecutive failures, restart the app through `run.sh restart`.

    python ops/watchdog.py               # one check (cron, every minute); the failure count is kept in a state file
    python ops/watchdog.py --loop        # check every WATCHDOG_INTERVAL_S seconds (systemd, no cron)

A check fails when /health does not answer 200 {"status": "ok"} within WATCHDOG_TIMEOUT_S. "loading" is not a
failure during the first WATCHDOG_LOADING_GRACE_S seconds of the app's uptime (the first start downloads the model).
A full disk (/health's `storage` says "low" or "full") is not a failed check, since a restart frees no space: each
check logs a WARNING that says so, until the space is back.
After `./run.sh stop` (the file LOG_DIR/app.stopped exists) the watchdog does nothing until the next `start`.
With several replicas (REPLICAS, see `run.sh replicas`) each one is checked on its own port, with its own
failure count (LOG_DIR/watchdog-N.state) and stop marker (app-N.stopped), and only the failing one is
restarted: `run.sh restart N` (or WATCHDOG_RESTART_CMD with {replica} replaced by N).
Everything it does goes to LOG_DIR/ops.log. Exit status: 0 healthy or nothing to do, 1 failed check, 2 restart failed.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ops.common import (  # noqa: E402
    ROOT,
    Replica,
    list_replicas,
    read_settings,
    read_state,
    run_loop,
    setup_logging,
    write_state,
)
from ops.health import NoAnswer, read_health  # noqa: E402
from ops.settings import OpsSettings  # noqa: E402


def check_health(url: str, timeout: float, loading_grace_s: float) -> tuple[bool, str]:
    """(healthy, what was seen)."""
    try:
        code, body = read_health(url, timeout)
    except NoAnswer as exc:
        return False, str(exc)
    status = body.get("status", "unknown")
    if code == 200 and status == "ok":
        storage = body.get("storage") if isinstance(body.get("storage"), dict) else {}
        if storage.get("status") in ("low", "full"):  # a restart frees no space: warn, never restart for it
            return True, (
                f"ok, but storage {storage['status']}: {storage.get('detail', '')} (free MB: {storage.get('free_mb')})"
            )
        return True, "ok"
    if status == "loading" and float(body.get("uptime_s") or 0) < loading_grace_s:
        return True, f"loading (uptime {body.get('uptime_s')} s, within the {loading_grace_s:.0f} s grace)"
    detail = f": {body['detail']}" if body.get("detail") else ""
    return False, f"HTTP {code}, status {status}{detail}"


class Watchdog:
    def __init__(self, settings: OpsSettings, failures: int, timeout: float, logger: logging.Logger) -> None:
        self.failures = failures
        self.timeout = timeout
        self.logger = logger
        self.log_dir = settings.log_dir
        self.restart_cmd = settings.watchdog_restart_cmd.strip()
        self.loading_grace_s = settings.watchdog_loading_grace_s

    def check(self) -> int:
        """Check every replica; the worst result wins (0 healthy, 1 a failed check, 2 a restart failed)."""
        try:
            replicas = list_replicas()
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
            self.logger.error("cannot list the replicas: %s", exc)
            return 1
        return max(self.check_replica(r, several=len(replicas) > 1) for r in replicas)

    def check_replica(self, replica: Replica, *, several: bool) -> int:
        name = f"replica {replica.index}: " if several or replica.index else ""
        state_file = self.log_dir / f"watchdog{replica.suffix}.state"
        if replica.stopped_file.exists():
            self.logger.info("%sthe app was stopped with ./run.sh stop; not checking (./run.sh start re-enables)", name)
            write_state(state_file, {"failures": 0})
            return 0
        healthy, seen = check_health(replica.health_url, self.timeout, self.loading_grace_s)
        state = read_state(state_file)
        if healthy:
            if seen.startswith("ok, but storage"):
                self.logger.warning("%s%s", name, seen)
            if state.get("failures"):
                self.logger.info("%shealthy again (%s) after %d failed check(s)", name, seen, state["failures"])
            write_state(state_file, {"failures": 0, "last_ok": time.time()})
            return 0
        count = int(state.get("failures", 0)) + 1
        self.logger.warning("%shealth check failed (%d/%d): %s", name, count, self.failures, seen)
        if count < self.failures:
            write_state(state_file, {**state, "failures": count})
            return 1
        write_state(state_file, {"failures": 0, "last_restart": time.time()})
        return self.restart(replica, count, name, several=several)

    def command_for(self, replica: Replica, *, several: bool) -> str:
        """WATCHDOG_RESTART_CMD ({replica} replaced by the index), else `run.sh restart [N]`: only this replica."""
        if self.restart_cmd:
            return self.restart_cmd.replace("{replica}", str(replica.index))
        run_sh = ROOT / "run.sh"
        return f"{run_sh} restart {replica.index}" if several or replica.index else f"{run_sh} restart"

    def restart(self, replica: Replica, count: int, name: str = "", *, several: bool = False) -> int:
        command = self.command_for(replica, several=several)
        self.logger.warning("%s%d consecutive failures: restarting with `%s`", name, count, command)
        started = time.monotonic()
        proc = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
        output = (proc.stdout + proc.stderr).strip()
        for line in output.splitlines()[-40:]:
            self.logger.info("%s  restart: %s", name, line)
        took = time.monotonic() - started
        if proc.returncode != 0:
            self.logger.error("%srestart failed (exit %d after %.0f s)", name, proc.returncode, took)
            return 2
        self.logger.info("%srestart done in %.0f s", name, took)
        return 0


def main(argv: list[str] | None = None) -> int:
    settings = read_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", action="store_true", help="check forever instead of once")
    parser.add_argument(
        "--interval",
        type=float,
        default=settings.watchdog_interval_s,
        help="seconds between checks in --loop mode (WATCHDOG_INTERVAL_S, default 60)",
    )
    parser.add_argument(
        "--failures",
        type=int,
        default=settings.watchdog_failures,
        help="consecutive failed checks before a restart (WATCHDOG_FAILURES, default 3)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=settings.watchdog_timeout_s,
        help="seconds /health gets to answer (WATCHDOG_TIMEOUT_S, default 10)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log to LOG_DIR/ops.log only (cron)")
    args = parser.parse_args(argv)
    if args.failures < 1 or args.interval <= 0:
        parser.error("--failures must be >= 1 and --interval > 0")

    logger = setup_logging("watchdog", settings.log_dir, verbose=not args.quiet)
    # One watchdog at a time: a cron run must not start while the previous one is still restarting the app.
    lock = open(settings.log_dir / "watchdog.lock", "w")  # noqa: SIM115 (held for the life of the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("another watchdog is running (%s is locked); nothing to do", lock.name)
        return 0
    watchdog = Watchdog(settings, args.failures, args.timeout, logger)
    if args.loop:
        return run_loop(watchdog.check, args.interval, logger)
    return watchdog.check()


if __name__ == "__main__":
    sys.exit(main())
