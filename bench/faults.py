"""The faults scenario of `bench.load`: bad files mixed into good traffic, uploads cut mid-body, and `kill -9`
under load with the app started by `run.sh` and restarted by `ops/watchdog.py --loop`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.harness import (
    Outcome,
    Sampler,
    Server,
    UserClient,
    free_port,
    health,
    new_client,  # noqa: E402
    partial_upload,
    server_env,
    wait_healthy,
)
from bench.scenarios import Context, new_result, target  # noqa: E402

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- faults


@dataclass
class RunShServer:
    server: Server
    env: dict[str, str]
    log_dir: Path
    watchdog: subprocess.Popen | None = None


def _pid_file(log_dir: Path) -> int | None:
    try:
        return int((log_dir / "app.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def start_run_sh(ctx: Context, work: Path) -> RunShServer:
    """`./run.sh start` with a temporary ENV_FILE holding this server's settings, then the watchdog loop."""
    assert ctx.models is not None
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    settings = server_env(ctx.models, work, ctx.args.device, ctx.args.engine_backend)
    keys = (
        "MODEL_DIR",
        "VAD_MODEL_DIR",
        "PUNC_MODEL_DIR",
        "ENABLE_PUNC",
        "TEMP_DIR",
        "OUTPUT_DIR",
        "LOG_DIR",
        "DEVICE",
        "ENGINE_BACKEND",
    )
    env_file = work / "bench.env"
    lines = [f"{k}={settings[k]}" for k in keys] + [
        "HOST=127.0.0.1",
        f"PORT={port}",
        "START_TIMEOUT=300",
        f"QUEUE_MAX_SIZE={ctx.args.queue_max_size}",
    ]
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in settings.items() if k not in keys}
    env["ENV_FILE"] = str(env_file)
    log_dir = work / "logs"
    server = Server(
        f"http://127.0.0.1:{port}",
        work / "uploads",
        work / "outputs",
        lambda: _pid_file(log_dir),
        queue_max_size=ctx.args.queue_max_size,
    )
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / "run.sh"), "start"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=360
    )
    handle = RunShServer(server, env, log_dir)
    if done.returncode != 0:
        stop_run_sh(handle)
        raise RuntimeError(f"run.sh start failed ({done.returncode}): {done.stdout}{done.stderr}")
    server.start_s = time.monotonic() - started
    handle.watchdog = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "ops" / "watchdog.py"),
            "--loop",
            "--interval",
            str(ctx.args.watchdog_interval),
            "--failures",
            "2",
            "--timeout",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    logger.info(
        "run.sh started the app (PID %s) in %.1f s; watchdog loop PID %d",
        server.pid,
        server.start_s,
        handle.watchdog.pid,
    )
    return handle


def stop_run_sh(handle: RunShServer) -> None:
    if handle.watchdog is not None and handle.watchdog.poll() is None:
        handle.watchdog.terminate()
        try:
            handle.watchdog.wait(timeout=60)  # it finishes its current round first
        except subprocess.TimeoutExpired:
            handle.watchdog.kill()
            handle.watchdog.wait()
    subprocess.run(
        [str(ROOT / "run.sh"), "stop"], cwd=ROOT, env=handle.env, capture_output=True, text=True, timeout=120
    )


def _expectation_met(expect: str, outcome: Outcome) -> bool:
    """The manifest's `expect` for a bad file against what the service answered (never a crash or a 503)."""
    if outcome.status == "rejected" or "exception" in outcome.extra:  # refused, or no proper answer at all
        return False
    if expect.startswith("error:"):
        return outcome.status == "failed"
    if expect == "text":
        return outcome.status == "ok"
    return outcome.status in ("ok", "failed")  # text-or-error, error-or-empty, empty-text, ok (any text)


def faults(ctx: Context) -> dict[str, Any]:
    handle = start_run_sh(ctx, ctx.work / "faults")
    server = handle.server
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    events: list[dict[str, Any]] = []
    rows: list[tuple[str, str]] = []
    targets: list[dict[str, Any]] = []
    result_notes: list[str] = []
    lock = threading.Lock()
    per_client = int(ctx.p("faults", "requests"))
    good = ctx.utterances()
    try:
        with Sampler(server, t0, ctx.args.sample_interval) as sampler:
            # 1. A burst of bad files in the middle of good traffic.
            pid_before = server.pid
            burst_at = threading.Event()

            def good_user(name: str) -> None:
                client = UserClient(server.url, t0, name)
                try:
                    for i in range(per_client):
                        out = client.single(good[i % len(good)])
                        with lock:
                            outcomes.append(out)
                        if i == 1:
                            burst_at.set()
                        time.sleep(ctx.p("faults", "interval"))
                finally:
                    client.close()

            users = [threading.Thread(target=good_user, args=(f"good{i + 1}",)) for i in range(2)]
            for thread in users:
                thread.start()
            burst_at.wait(timeout=300)
            events.append({"t": time.monotonic() - t0, "label": "bad files"})
            bad_client = UserClient(server.url, t0, "bad", client=new_client(server.url))
            bad_results: list[Outcome] = []

            def bad_one(path: Path) -> None:
                out = bad_client.single(path, kind="bad")
                with lock:
                    bad_results.append(out)

            bad_threads = [threading.Thread(target=bad_one, args=(p,)) for p in ctx.audio.bad]
            for thread in bad_threads:
                thread.start()
            for thread in bad_threads + users:
                thread.join()
            bad_client.close()
            outcomes += bad_results
            good_phase = [o for o in outcomes if o.kind == "single"]
            good_ok = sum(1 for o in good_phase if o.status == "ok")
            wrong = [
                f"{o.name} ({o.status}: {o.error[:60]})"
                for o in bad_results
                if not _expectation_met(ctx.audio.expectations.get(o.name, ""), o)
            ]
            healthy = (health(server.url) or {}).get("status") == "ok" and server.pid == pid_before
            rows.append(("bad-file burst: good requests ok", f"{good_ok}/{len(good_phase)}"))
            rows.append(
                (
                    "bad-file burst: bad files answered as the manifest expects",
                    f"{len(bad_results) - len(wrong)}/{len(bad_results)}"
                    + (f" (not: {'; '.join(wrong)})" if wrong else ""),
                )
            )
            targets.append(
                target(
                    "bad files mixed into good traffic: every good one succeeds, the server stays up",
                    f"{good_ok}/{len(good_phase)} good ok, same PID and healthy: {healthy}",
                    good_ok == len(good_phase) and healthy,
                )
            )

            # 2. Clients that disconnect mid-upload.
            temp_before = sampler.sample().get("temp_mb")
            files_before = _temp_files(server.temp_dir)
            events.append({"t": time.monotonic() - t0, "label": "cut uploads"})
            cut = []
            for i in range(ctx.args.disconnects):
                path = "/gradio_api/upload" if i % 2 == 0 else "/v1/audio/transcriptions"
                try:
                    cut.append(partial_upload(server.url, path, declared=4 * 2**20, sent=256 * 1024))
                except OSError as exc:
                    cut.append(f"{path}: {exc}")
            time.sleep(2.0)
            probe_client = UserClient(server.url, t0, "after-cut")
            after_cut = probe_client.single(good[0])
            probe_client.close()
            outcomes.append(after_cut)
            temp_after = sampler.sample().get("temp_mb")
            left = [
                p
                for p in _temp_files(server.temp_dir) - files_before
                if p.parent == server.temp_dir and p.exists() and p.stat().st_size > 0
            ]
            left_mb = sum(p.stat().st_size for p in left) / 2**20
            healthy = (health(server.url) or {}).get("status") == "ok" and server.pid == pid_before
            rows.append(
                (
                    "uploads cut mid-body (half to /gradio_api/upload, half to /v1/audio/transcriptions)",
                    f"{len(cut)}; then /health ok and same PID: {healthy}; next request: {after_cut.status}; "
                    f"temp dir {report._s(temp_before, 2, ' MB')} → {report._s(temp_after, 2, ' MB')}",
                )
            )
            rows.append(("cut uploads: partial files left in the temp dir", f"{len(left)} ({left_mb:.2f} MB)"))
            if left:
                result_notes.append(
                    f"Gradio leaves the partial body of an upload cut mid-way in TEMP_DIR ({len(left)} "
                    f"files here, named tmp*); they are not served or reused, and ops/cleanup.py "
                    f"removes them once older than CLEANUP_MAX_AGE_H."
                )
            targets.append(
                target(
                    "a client that disconnects mid-upload leaves the server healthy",
                    f"healthy: {healthy}, next request {after_cut.status}",
                    healthy and after_cut.status == "ok",
                )
            )

            # 3. kill -9 under load; the watchdog restarts the app; clients retry once.
            killed = threading.Event()
            kill_time: list[float] = []
            lost: list[Outcome] = []
            retried: list[Outcome] = []
            batch_job: list[Any] = []

            def retrying_user(name: str) -> None:
                client = UserClient(server.url, t0, name)
                try:
                    for i in range(per_client):
                        out = client.single(good[(i + 5) % len(good)])
                        with lock:
                            outcomes.append(out)
                        if out.status != "ok" and killed.is_set():
                            with lock:
                                lost.append(out)
                            try:
                                wait_healthy(server.url, ctx.args.recovery_timeout)
                            except TimeoutError:
                                logger.error("%s: server not back within %.0f s", name, ctx.args.recovery_timeout)
                                break
                            client.close()
                            client = UserClient(server.url, t0, name)
                            again = client.single(good[(i + 5) % len(good)])
                            again.retried = True
                            with lock:
                                outcomes.append(again)
                                retried.append(again)
                        time.sleep(ctx.p("faults", "interval"))
                finally:
                    client.close()

            batch_files = [good[k % len(good)] for k in range(ctx.args.fault_batch_files)]
            batch_out: list[Outcome] = []

            def batch_user() -> None:
                client = UserClient(server.url, t0, "batch")
                try:
                    batch_out.append(client.batch(batch_files, on_job=batch_job.append))
                finally:
                    client.close()

            load = [threading.Thread(target=retrying_user, args=(f"retry{i + 1}",)) for i in range(2)]
            load.append(threading.Thread(target=batch_user))
            for thread in load:
                thread.start()
            seen_done = _wait_batch_progress(batch_job, want=2, timeout=300)
            victim = server.pid
            if victim is None:
                raise RuntimeError("no app PID to kill")
            with lock:
                os.kill(victim, signal.SIGKILL)
                killed.set()
            kill_time.append(time.monotonic())
            events.append({"t": kill_time[0] - t0, "label": "kill -9"})
            logger.info("killed the app (PID %d) with %d batch files done", victim, seen_done)
            recovery = _wait_new_healthy(server, victim, ctx.args.recovery_timeout)
            if recovery is not None:
                events.append({"t": kill_time[0] - t0 + recovery, "label": "healthy again"})
            for thread in load:
                thread.join()
            outcomes += batch_out
            on_disk = _batch_rows_on_disk(server.output_dir)
            # The batch that was cut: run it again once the server is back.
            if recovery is not None:
                client = UserClient(server.url, t0, "batch-retry")
                again = client.batch(batch_files)
                client.close()
                again.retried = True
                outcomes.append(again)
                retried.append(again)
            retried_ok = sum(1 for o in retried if o.status == "ok")
            rows.append(
                (
                    "kill -9: back to healthy (new PID) after",
                    report._s(recovery, 1) if recovery is not None else f"not within {ctx.args.recovery_timeout:.0f} s",
                )
            )
            batch_lost = [o for o in batch_out if o.status != "ok"]
            rows.append(
                (
                    "kill -9: requests lost (in flight at the kill) / retried ok",
                    f"{len(lost) + len(batch_lost)} ({len(lost)} single, {len(batch_lost)} batch) / "
                    f"{retried_ok} of {len(retried)}",
                )
            )
            rows.append(
                (
                    "kill -9: batch files finished before the kill / rows in results.csv on disk",
                    f"{seen_done} / {on_disk}",
                )
            )
            targets.append(
                target(
                    "after kill -9: back to healthy within 30 s",
                    report._s(recovery, 1) if recovery is not None else "never",
                    recovery is not None and recovery <= 30,
                )
            )
            targets.append(
                target(
                    "no finished batch result lost", f"{seen_done} finished, {on_disk} on disk", on_disk >= seen_done
                )
            )
            targets.append(
                target(
                    "every request lost to the kill succeeds when retried",
                    f"{retried_ok}/{len(retried)}",
                    retried_ok == len(retried),
                )
            )
    finally:
        stop_run_sh(handle)
    outcomes.sort(key=lambda o: o.start)
    result = new_result(
        ctx,
        "faults",
        "Faults: bad files, cut uploads, kill -9",
        f"app via ./run.sh start (temporary ENV_FILE) and ops/watchdog.py --loop --interval "
        f"{ctx.args.watchdog_interval:g} --failures 2; 2 clients × {per_client} good requests "
        f"with all {len(ctx.audio.bad)} files of bad/ sent at once in the middle; "
        f"{ctx.args.disconnects} uploads cut mid-body; then 2 retrying clients and a batch of "
        f"{ctx.args.fault_batch_files} with kill -9 once 2 batch files are done",
        outcomes,
        sampler,
        kinds=("single", "batch"),
        ratios=False,
    )
    result["summary"]["failed_expected"] = sum(1 for o in outcomes if o.kind == "bad" and o.status == "failed")
    result["extra_rows"], result["targets"], result["events"] = rows, targets, events
    result["notes"] += result_notes
    result["notes"].append(
        "The failed count includes the bad files the service refuses by design and the requests "
        "in flight at the kill; see the targets for what must hold."
    )
    return result


def _temp_files(folder: Path | None) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder and folder.exists() else set()


def _wait_batch_progress(batch_job: list[Any], want: int, timeout: float) -> int:
    """Files the batch reported done (from its streamed table), once at least `want` are, or at the timeout."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        if batch_job:
            try:
                updates = batch_job[0].outputs()
            except Exception:
                updates = []
            if updates:
                table = updates[-1][1]
                rows = table.get("data", []) if isinstance(table, dict) else []
                done = sum(1 for r in rows if str(r[-1]).startswith(("✅", "❌")) or "失败" in str(r[-1]))
                if done >= want:
                    return done
        time.sleep(0.1)
    return done


def _wait_new_healthy(server: Server, old_pid: int, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        body = health(server.url, timeout=1.0)
        pid = server.pid
        if body and body.get("status") == "ok" and pid and pid != old_pid:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def _batch_rows_on_disk(output_dir: Path | None) -> int:
    """Rows in results.csv of the newest batch folder (the one that was cut)."""
    if output_dir is None or not output_dir.exists():
        return 0
    folders = sorted(output_dir.glob("batch-*"), key=lambda p: p.stat().st_mtime)
    if not folders:
        return 0
    csv_path = folders[-1] / "results.csv"
    if not csv_path.exists():
        return 0
    with open(csv_path, encoding="utf-8-sig") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)
