"""Load, soak and fault benchmarks of the running service, beside the reference deployment's results.

    python -m bench.load A                      # 5 clients, a 2-min WAV every 3 s each, 50 requests
    python -m bench.load B                      # 6 mixed users: batch of 5, 2 single, 1 live, 2 system-info polls
    python -m bench.load C                      # 3 concurrent 4.5-min MP3s, 30 requests
    python -m bench.load overflow               # 2 long jobs running, then QUEUE_MAX_SIZE + 5 at once: 503 beyond
    python -m bench.load soak --minutes 30      # 2 single files + a batch of 3, back to back; resources sampled
    python -m bench.load faults                 # kill -9 under load (run.sh + watchdog), bad files, cut uploads
    python -m bench.load all --requests A=10,B=30,C=3 --minutes 10     # everything, scaled to a CPU

By default it builds the full-size random-weight model (models/full-seaco, same compute as the real one) and
starts `python app.py` on a free 127.0.0.1 port (faults: through ./run.sh with a temporary ENV_FILE, and
ops/watchdog.py --loop); `--url` uses a running server instead, `--model-dir` a real model, `--tiny` the tiny
test model (smoke runs). Audio: assembled from tests/data (default) or `--audio-dir ../shared/audio`.
Before the server starts, the same files go through a bare `funasr.AutoModel.generate` loop in a separate
process (bench/baseline.py), so each service figure gets a ratio to it.

Requests go where users' go: gradio_client for the UI endpoints (/transcribe, /transcribe_batch,
/transcribe_recording, /system_info), HTTP for /health and /metrics. Clients are closed loops: each sends a
request, waits for its answer, pauses `--interval` s, and sends the next, until `--requests` were sent.
Each run writes bench/results/<scenario>-<stamp>.json, a PNG per scenario and a Markdown report;
`python -m bench.report FILE.json... --out report.md` makes one report from several runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.harness import (AudioSet, ModelFolders, Outcome, Sampler, Server, UserClient, attach,  # noqa: E402
                           build_audio_set, free_port, health, new_client, partial_upload, resolve_models,
                           server_env, start_app, stop_app, wait_healthy)

logger = logging.getLogger(__name__)

SCENARIOS = ("A", "B", "C", "overflow", "soak", "faults")
DEFAULTS: dict[str, dict[str, float]] = {
    "A": {"requests": 50, "concurrency": 5, "interval": 3.0},
    "B": {"requests": 60, "concurrency": 6, "interval": 3.0},
    "C": {"requests": 30, "concurrency": 3, "interval": 0.0},
    "overflow": {"requests": 5, "concurrency": 0, "interval": 0.0},  # requests: how many beyond the queue limit
    "soak": {"requests": 0, "concurrency": 1, "interval": 5.0},  # interval: between system-info polls
    "faults": {"requests": 8, "concurrency": 2, "interval": 0.5},  # requests: per client in each phase
}
RESULTS = ROOT / "bench" / "results"
UTTERANCE_POOL = 12  # utterances used by B, the soak and faults (bounds the baseline's work)


def per_scenario(value: str | None, option: str) -> dict[str, float]:
    """`--requests 10` (every scenario) or `--requests A=10,C=3` (those named)."""
    if not value:
        return {}
    if "=" not in value:
        return {name: float(value) for name in SCENARIOS}
    parsed = {}
    for part in value.split(","):
        name, _, number = part.partition("=")
        if name.strip() not in SCENARIOS:
            raise SystemExit(f"{option}: unknown scenario {name!r} (one of {', '.join(SCENARIOS)})")
        parsed[name.strip()] = float(number)
    return parsed


@dataclass
class Context:
    args: argparse.Namespace
    audio: AudioSet
    models: ModelFolders | None
    work: Path
    params: dict[str, dict[str, float]]
    server: Server | None = None
    baseline: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def p(self, scenario: str, key: str) -> float:
        return self.params[scenario][key]

    @property
    def long_file(self) -> Path:
        """A's file: the 2-min WAV (the 30 s clip with --quick)."""
        return self.audio.clip_30s if self.args.quick else self.audio.two_min

    @property
    def mp3_file(self) -> Path:
        """C's file: the 4.5-min MP3 (the 30 s clip with --quick)."""
        return self.audio.clip_30s if self.args.quick else self.audio.mp3_4m30

    @property
    def long_label(self) -> str:
        return "30 s clip" if self.args.quick else "2-min WAV"

    @property
    def mp3_label(self) -> str:
        return "30 s clip" if self.args.quick else "4.5-min MP3"

    def utterances(self) -> list[Path]:
        return self.audio.utterances[:UTTERANCE_POOL]

    def single_pool(self) -> list[Path]:
        """Short files for the single-file users: the utterances and the format variants, interleaved."""
        pool: list[Path] = []
        for a, b in itertools.zip_longest(self.utterances(), self.audio.formats):
            pool += [p for p in (a, b) if p is not None]
        return pool


def files_for(ctx: Context, scenarios: list[str]) -> list[Path]:
    """Every good file the chosen scenarios transcribe (the baseline's inputs)."""
    files: list[Path] = []
    if "A" in scenarios:
        files.append(ctx.long_file)
    if "C" in scenarios:
        files.append(ctx.mp3_file)
    if {"B", "soak"} & set(scenarios):
        files += ctx.single_pool()
    return list(dict.fromkeys(files))


def run_baseline(ctx: Context, files: list[Path]) -> dict[str, Any] | None:
    if not files or ctx.models is None:
        return None
    out = ctx.work / "baseline.json"
    m = ctx.models
    cmd = [sys.executable, "-m", "bench.baseline", "--model-dir", str(m.asr), "--vad-model-dir", str(m.vad),
           "--punc-model-dir", str(m.punc or ""), "--device", ctx.args.device, "--out", str(out),
           *[str(f) for f in files]]
    logger.info("baseline: bare AutoModel.generate over %d files (separate process)", len(files))
    started = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=3600)
    logger.info("baseline done in %.0f s", time.monotonic() - started)
    return json.loads(out.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- helpers

def closed_loop(server: Server, t0: float, users: list[str], quotas: list[int], interval: float,
                request: Callable[[UserClient, str, int], Outcome], deadline: float) -> list[Outcome]:
    """One thread per user; each sends its quota of requests one after another, `interval` s apart."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def user(name: str, quota: int) -> None:
        client = UserClient(server.url, t0, name)
        try:
            for i in range(quota):
                if time.monotonic() > deadline:
                    logger.warning("%s: deadline reached after %d requests", name, i)
                    break
                outcome = request(client, name, i)
                with lock:
                    outcomes.append(outcome)
                if outcome.status != "ok":
                    logger.warning("%s: %s %s %s: %s", name, outcome.kind, outcome.name, outcome.status,
                                   outcome.error)
                if interval and i + 1 < quota:
                    time.sleep(interval)
        finally:
            client.close()

    threads = [threading.Thread(target=user, args=(n, q), name=n) for n, q in zip(users, quotas, strict=True)]
    for i, thread in enumerate(threads):
        thread.start()
        time.sleep(0.2 if i + 1 < len(threads) else 0)  # users arrive a moment apart, as people do
    for thread in threads:
        thread.join()
    return sorted(outcomes, key=lambda o: o.start)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def target(text: str, measured: str, met: bool) -> dict[str, Any]:
    return {"target": text, "measured": measured, "met": bool(met)}


def new_result(ctx: Context, scenario: str, title: str, setup: str, outcomes: list[Outcome],
               sampler: Sampler, kinds: tuple[str, ...] = ("single", "batch", "live"),
               ratios: bool = True) -> dict[str, Any]:
    """The scenario's record; `ratios=False` where a ratio to the baseline means nothing (overflow, faults)."""
    rows = [o.to_dict() for o in outcomes]
    return {"scenario": scenario, "title": title, "setup": setup, "params": ctx.params[scenario],
            "outcomes": rows, "samples": sampler.samples,
            "summary": report.summarize([r for r in rows if r["kind"] not in ("probe", "blocker")], sampler.samples,
                                        ctx.baseline if ratios else None, kinds),
            "targets": [], "notes": [], "extra_rows": [], "events": []}


def deadline_for(ctx: Context) -> float:
    return time.monotonic() + ctx.args.deadline_minutes * 60


def zero_failed(result: dict[str, Any], label: str) -> dict[str, Any]:
    s = result["summary"]
    return target(f"0 failed requests in {label}", f"{s['failed']} failed, {s['rejected']} rejected of "
                  f"{s['requests']}", s["failed"] == 0 and s["rejected"] == 0)


# --------------------------------------------------------------------------------------------- scenarios

def scenario_a(ctx: Context, server: Server) -> dict[str, Any]:
    requests, users, interval = int(ctx.p("A", "requests")), int(ctx.p("A", "concurrency")), ctx.p("A", "interval")
    t0 = time.monotonic()
    with Sampler(server, t0, ctx.args.sample_interval) as sampler:
        probe_client = UserClient(server.url, t0, "probe")
        probes = [probe_client.single(ctx.long_file, kind="probe") for _ in range(ctx.args.probe_runs)]
        probe_client.close()
        ok_probes = [p for p in probes if p.status == "ok"]
        probe = min(ok_probes, key=lambda p: p.latency_s) if ok_probes else probes[0]  # alone: the overhead
        time.sleep(1.0)
        outcomes = closed_loop(server, t0, [f"client{i + 1}" for i in range(users)], split(requests, users), interval,
                               lambda c, _n, _i: c.single(ctx.long_file), deadline_for(ctx))
    result = new_result(ctx, "A", f"A: {users} clients, {ctx.long_label}, {requests} requests",
                        f"{users} clients, each sending the {ctx.long_label}, waiting for its answer, then pausing "
                        f"{interval:g} s; {requests} requests (after {ctx.args.probe_runs} alone, the fastest kept for "
                        f"the overhead ratio)",
                        [*probes, *outcomes], sampler)
    s = result["summary"]
    result["targets"].append(zero_failed(result, "A"))
    bare = (ctx.baseline or {}).get("files", {}).get(str(ctx.long_file))
    if bare and probe.status == "ok":
        ratio = probe.latency_s / bare["generate_s"]
        result["probe"] = {"latency_s": probe.latency_s, "bare_generate_s": bare["generate_s"], "ratio": ratio,
                           "processing_s": probe.processing_s}
        result["extra_rows"].append((f"one {ctx.long_label} request alone: latency / bare generate",
                                     f"{probe.latency_s:.2f} s / {bare['generate_s']:.2f} s = {ratio:.3f} (server "
                                     f"side: decode + model {report._s(probe.processing_s, 2)})"))
        result["targets"].append(target(f"service latency / bare engine time, one {ctx.long_label} request ≤ 1.10",
                                        f"{ratio:.3f}", ratio <= 1.10))
    if s.get("throughput_ratio") is not None:
        result["targets"].append(target(f"throughput with {users} clients ≥ 1.3× the sequential baseline",
                                        f"{s['throughput_ratio']:.2f}×", s["throughput_ratio"] >= 1.3))
    batching = (health(server.url) or {}).get("batching") or {}
    if batching.get("max_requests", 1) > 1:
        result["extra_rows"].append(("cross-request batching (server totals)",
                                     f"up to {batching['max_requests']} requests per call; {batching['jobs']} "
                                     f"segment calls ran as {batching['calls']} model calls "
                                     f"({batching['jobs_per_call']:.2f} per call, largest {batching['largest_jobs']})"))
        result["notes"].append("Cross-request batching is on: the running requests' segments share model calls "
                               "(each request's text is what it gets alone).")
    else:
        result["notes"].append("Cross-request batching is off (BATCH_MAX_REQUESTS=1, the CPU default): one request's "
                               "segment per model call, so concurrent requests queue and throughput stays ~1×.")
    return result


def scenario_b(ctx: Context, server: Server) -> dict[str, Any]:
    requests, interval = int(ctx.p("B", "requests")), ctx.p("B", "interval")
    kinds = ["batch", "single", "single", "live", "sysinfo", "sysinfo"]
    names = ["batch", "single1", "single2", "live", "poll1", "poll2"]
    quotas = split(requests, len(kinds))
    singles, utterances = ctx.single_pool(), ctx.utterances()

    def request(client: UserClient, name: str, i: int) -> Outcome:
        kind = kinds[names.index(name)]
        if kind == "batch":
            start = (i * 5) % len(utterances)
            return client.batch([utterances[(start + k) % len(utterances)] for k in range(5)])
        if kind == "single":
            offset = 0 if name == "single1" else len(singles) // 2
            return client.single(singles[(offset + i) % len(singles)])
        if kind == "live":
            return client.live(utterances[(i + 3) % len(utterances)])
        return client.sysinfo()

    t0 = time.monotonic()
    with Sampler(server, t0, ctx.args.sample_interval) as sampler:
        outcomes = closed_loop(server, t0, names, quotas, interval, request, deadline_for(ctx))
    result = new_result(ctx, "B", f"B: 6 mixed users, {requests} requests",
                        f"6 users: one sending batches of 5 utterances, 2 sending single files (utterances and "
                        f"13 formats), 1 sending a recording to the live tab's endpoint, 2 polling system info; "
                        f"{requests} requests ({'/'.join(map(str, quotas))} per user), {interval:g} s pause "
                        f"between a user's requests", outcomes, sampler, kinds=("single", "batch", "live"))
    result["targets"].append(zero_failed(result, "B"))
    every = report.stats([o.latency_s for o in outcomes if o.status == "ok"])
    result["extra_rows"].append(("latency mean over every request (polls too)", f"{every['mean']:.2f} s"
                                 if every["mean"] is not None else "–"))
    return result


def scenario_c(ctx: Context, server: Server) -> dict[str, Any]:
    requests, users, interval = int(ctx.p("C", "requests")), int(ctx.p("C", "concurrency")), ctx.p("C", "interval")
    t0 = time.monotonic()
    with Sampler(server, t0, ctx.args.sample_interval) as sampler:
        outcomes = closed_loop(server, t0, [f"client{i + 1}" for i in range(users)], split(requests, users), interval,
                               lambda c, _n, _i: c.single(ctx.mp3_file), deadline_for(ctx))
    result = new_result(ctx, "C", f"C: {users} concurrent {ctx.mp3_label}s, {requests} requests",
                        f"{users} clients, each sending the {ctx.mp3_label} back to back ({interval:g} s pause); "
                        f"{requests} requests", outcomes, sampler)
    result["targets"].append(zero_failed(result, "C"))
    return result


def scenario_overflow(ctx: Context, server: Server) -> dict[str, Any]:
    """`model_concurrency` long jobs take the running slots; then queue_max + extra short jobs arrive at once."""
    extra = int(ctx.p("overflow", "requests"))
    queue_max, running = server.queue_max_size, server.model_concurrency
    burst = queue_max + extra
    t0 = time.monotonic()
    events = []
    with Sampler(server, t0, ctx.args.sample_interval) as sampler:
        blockers: list[Outcome] = []
        blocker_threads = []
        blocker_clients = [UserClient(server.url, t0, f"blocker{i + 1}") for i in range(running)]
        for client in blocker_clients:
            thread = threading.Thread(target=lambda c=client: blockers.append(c.single(ctx.audio.two_min,
                                                                                       kind="blocker")))
            thread.start()
            blocker_threads.append(thread)
        # Both running slots taken: the model busy, nothing waiting in Gradio's queue yet.
        wait_until = time.monotonic() + 120
        while time.monotonic() < wait_until:
            body = health(server.url) or {}
            if body.get("queue", {}).get("model_busy") and (body["queue"].get("model_waiting", 0) >= running - 1):
                break
            time.sleep(0.1)
        events.append({"t": time.monotonic() - t0, "label": f"burst of {burst}"})
        shared = UserClient(server.url, t0, "burst", client=new_client(server.url))
        start_gate = threading.Barrier(burst)
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        short = ctx.utterances()[0]

        def one() -> None:
            start_gate.wait()
            outcome = shared.single(short, kind="overflow")
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=one) for _ in range(burst)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for thread in blocker_threads:
            thread.join()
        shared.close()
        for client in blocker_clients:
            client.close()
    accepted = [o for o in outcomes if o.status != "rejected"]
    rejected = [o for o in outcomes if o.status == "rejected"]
    result = new_result(ctx, "overflow", f"Overflow: queue max {queue_max}, {burst} at once",
                        f"{running} jobs of the 2-min WAV hold the {running} running slots; then {burst} short jobs "
                        f"(queue max {queue_max} + {extra}) are sent at once", [*blockers, *outcomes], sampler,
                        kinds=("overflow",), ratios=False)
    result["events"] = events
    ok_accepted = sum(1 for o in accepted if o.status == "ok")
    blockers_ok = sum(1 for o in blockers if o.status == "ok")
    reject_latency = report.stats([o.latency_s for o in rejected])
    result["extra_rows"] += [
        ("accepted of the burst (all finished ok)", f"{len(accepted)} ({ok_accepted} ok)"),
        ("refused with HTTP 503 (queue full)", f"{len(rejected)}, answered in "
                                                f"{report._s(reject_latency['max'], 2)} at most"),
        ("long jobs in the running slots", f"{len(blockers)} ({blockers_ok} ok)"),
    ]
    result["targets"] += [
        target(f"every request beyond {queue_max} waiting gets 503", f"{len(rejected)} of {extra} refused",
               len(rejected) == extra),
        target(f"none of the first {queue_max} fails", f"{len(accepted)} accepted, {ok_accepted} ok",
               len(accepted) == queue_max and ok_accepted == queue_max and blockers_ok == len(blockers)),
    ]
    return result


def scenario_soak(ctx: Context, server: Server) -> dict[str, Any]:
    minutes = ctx.args.minutes
    poll_interval = ctx.p("soak", "interval")
    singles, utterances = ctx.single_pool(), ctx.utterances()
    t0 = time.monotonic()
    end = t0 + minutes * 60
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def cycle_user() -> None:
        client = UserClient(server.url, t0, "cycle")
        try:
            for cycle in itertools.count():
                if time.monotonic() >= end:
                    break
                for k in range(2):
                    out = client.single(singles[(2 * cycle + k) % len(singles)])
                    with lock:
                        outcomes.append(out)
                files = [utterances[(3 * cycle + k) % len(utterances)] for k in range(3)]
                out = client.batch(files)
                with lock:
                    outcomes.append(out)
        finally:
            client.close()

    def poller() -> None:
        client = UserClient(server.url, t0, "poll")
        try:
            while time.monotonic() < end:
                out = client.sysinfo()
                with lock:
                    outcomes.append(out)
                time.sleep(poll_interval)
        finally:
            client.close()

    with Sampler(server, t0, ctx.args.sample_interval) as sampler:
        threads = [threading.Thread(target=cycle_user, name="cycle"), threading.Thread(target=poller, name="poll")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    outcomes.sort(key=lambda o: o.start)
    result = new_result(ctx, "soak", f"Soak: {minutes:g} minutes",
                        f"{minutes:g} minutes of the reference's hourly cycle back to back (2 single files, then "
                        f"a batch of 3 utterances) and a system-info poll every {poll_interval:g} s; server "
                        f"sampled every {ctx.args.sample_interval:g} s", outcomes, sampler)
    samples = sampler.samples
    warm_t = minutes * 60 * ctx.args.warmup_share
    after = [s for s in samples if s["t"] >= warm_t and s.get("rss_mb")]
    batches = [o for o in outcomes if o.kind == "batch"]
    batches_ok = sum(1 for o in batches if o.status == "ok")
    n_after = sum(1 for o in outcomes if o.start >= warm_t)
    growth: dict[str, Any] = {"warmup_s": warm_t, "requests_after_warmup": n_after}
    if len(after) >= 4:
        k = max(2, len(after) // 10)
        for key in ("rss_mb", "open_files", "threads", "temp_mb", "temp_files"):
            values = [s.get(key) for s in after]
            if any(v is None for v in values):
                continue
            first, last = sum(values[:k]) / k, sum(values[-k:]) / k
            growth[key] = {"after_warmup": first, "end": last, "growth": last - first,
                           "growth_pct": 100 * (last - first) / first if first else None,
                           "per_1000_requests": (last - first) / n_after * 1000 if n_after else None}
    temps = [s["temp_mb"] for s in samples if s.get("temp_mb") is not None]
    growth["temp_mb_max"] = max(temps) if temps else None
    growth["temp_mb_end"] = temps[-1] if temps else None
    result["growth"] = growth
    rss = growth.get("rss_mb")
    rows = result["extra_rows"]
    rows.append(("batch jobs done", f"{batches_ok}/{len(batches)}"))
    if rss:
        rows.append(("RSS after warm-up → end", f"{rss['after_warmup']:,.0f} → {rss['end']:,.0f} MB "
                     f"({rss['growth_pct']:+.2f}%, {rss['per_1000_requests']:+.1f} MB per 1000 requests)"))
        for key, label in (("open_files", "open files"), ("threads", "threads"),
                           ("temp_files", "files in the temp dir")):
            g = growth.get(key)
            if g is None:
                continue
            rows.append((f"{label} after warm-up → end", f"{g['after_warmup']:.0f} → {g['end']:.0f} "
                         f"({g['per_1000_requests']:+.1f} per 1000 requests)"))
    rows.append(("temp dir size max / end", f"{report._s(growth['temp_mb_max'], 1, ' MB')} / "
                                            f"{report._s(growth['temp_mb_end'], 1, ' MB')}"))
    gpu = [s["gpu_mb"] for s in samples if s.get("gpu_mb") is not None]
    if gpu:
        rows.append(("GPU memory start → end", f"{gpu[0]:,.0f} → {gpu[-1]:,.0f} MB"))
    downs = sum(1 for s in samples if s.get("health") != "ok")
    rows.append(("availability (/health ok in samples)", f"{100 * (len(samples) - downs) / max(len(samples), 1):.1f}%"
                 f" of {len(samples)}"))
    result["targets"].append(zero_failed(result, "the soak"))
    result["targets"].append(target("every batch job done", f"{batches_ok}/{len(batches)}",
                                    batches_ok == len(batches) and len(batches) > 0))
    if rss:
        result["targets"].append(target("RSS growth after warm-up ≤ 3%", f"{rss['growth_pct']:+.2f}%",
                                        rss["growth_pct"] <= 3.0))
    temp = growth.get("temp_mb")
    if temp and temp.get("per_1000_requests") is not None:
        result["targets"].append(target("temp dir size bounded: after warm-up it grows by ≤ 5 MB per 1000 requests",
                                        f"{temp['after_warmup']:.1f} → {temp['end']:.1f} MB "
                                        f"({temp['per_1000_requests']:+.2f} MB per 1000 requests), max "
                                        f"{growth['temp_mb_max']:.1f} MB", temp["per_1000_requests"] <= 5.0))
    result["notes"].append(f"Warm-up: the first {ctx.args.warmup_share:.0%} of the run; growth compares the mean of "
                           "the first and last tenth of the samples after it. Single-file results (TXT/SRT/VTT) "
                           "are written under the temp dir by design, and Gradio keeps each distinct upload there "
                           "(the soak resends the same files, so uploads are reused); ops/cleanup.py removes old "
                           "ones.")
    return result


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
    keys = ("MODEL_DIR", "VAD_MODEL_DIR", "PUNC_MODEL_DIR", "ENABLE_PUNC", "TEMP_DIR", "OUTPUT_DIR", "LOG_DIR",
            "DEVICE", "ENGINE_BACKEND")
    env_file = work / "bench.env"
    lines = [f"{k}={settings[k]}" for k in keys] + [f"HOST=127.0.0.1", f"PORT={port}", "START_TIMEOUT=300",
                                                    f"QUEUE_MAX_SIZE={ctx.args.queue_max_size}"]
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in settings.items() if k not in keys}
    env["ENV_FILE"] = str(env_file)
    log_dir = work / "logs"
    server = Server(f"http://127.0.0.1:{port}", work / "uploads", work / "outputs", lambda: _pid_file(log_dir),
                    queue_max_size=ctx.args.queue_max_size)
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "run.sh"), "start"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=360)
    handle = RunShServer(server, env, log_dir)
    if done.returncode != 0:
        stop_run_sh(handle)
        raise RuntimeError(f"run.sh start failed ({done.returncode}): {done.stdout}{done.stderr}")
    server.start_s = time.monotonic() - started
    handle.watchdog = subprocess.Popen(
        [sys.executable, str(ROOT / "ops" / "watchdog.py"), "--loop", "--interval", str(ctx.args.watchdog_interval),
         "--failures", "2", "--timeout", "2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logger.info("run.sh started the app (PID %s) in %.1f s; watchdog loop PID %d", server.pid, server.start_s,
                handle.watchdog.pid)
    return handle


def stop_run_sh(handle: RunShServer) -> None:
    if handle.watchdog is not None and handle.watchdog.poll() is None:
        handle.watchdog.terminate()
        try:
            handle.watchdog.wait(timeout=60)  # it finishes its current round first
        except subprocess.TimeoutExpired:
            handle.watchdog.kill()
            handle.watchdog.wait()
    subprocess.run([str(ROOT / "run.sh"), "stop"], cwd=ROOT, env=handle.env, capture_output=True, text=True,
                   timeout=120)


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
            wrong = [f"{o.name} ({o.status}: {o.error[:60]})" for o in bad_results
                     if not _expectation_met(ctx.audio.expectations.get(o.name, ""), o)]
            healthy = (health(server.url) or {}).get("status") == "ok" and server.pid == pid_before
            rows.append(("bad-file burst: good requests ok", f"{good_ok}/{len(good_phase)}"))
            rows.append(("bad-file burst: bad files answered as the manifest expects",
                         f"{len(bad_results) - len(wrong)}/{len(bad_results)}" + (f" (not: {'; '.join(wrong)})"
                                                                                  if wrong else "")))
            targets.append(target("bad files mixed into good traffic: every good one succeeds, the server stays "
                                  "up", f"{good_ok}/{len(good_phase)} good ok, same PID and healthy: {healthy}",
                                  good_ok == len(good_phase) and healthy))

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
            left = [p for p in _temp_files(server.temp_dir) - files_before
                    if p.parent == server.temp_dir and p.exists() and p.stat().st_size > 0]
            left_mb = sum(p.stat().st_size for p in left) / 2**20
            healthy = (health(server.url) or {}).get("status") == "ok" and server.pid == pid_before
            rows.append(("uploads cut mid-body (half to /gradio_api/upload, half to /v1/audio/transcriptions)",
                         f"{len(cut)}; then /health ok and same PID: {healthy}; next request: {after_cut.status}; "
                         f"temp dir {report._s(temp_before, 2, ' MB')} → {report._s(temp_after, 2, ' MB')}"))
            rows.append(("cut uploads: partial files left in the temp dir", f"{len(left)} ({left_mb:.2f} MB)"))
            if left:
                result_notes.append(f"Gradio leaves the partial body of an upload cut mid-way in TEMP_DIR ({len(left)} "
                                    f"files here, named tmp*); they are not served or reused, and ops/cleanup.py "
                                    f"removes them once older than CLEANUP_MAX_AGE_H.")
            targets.append(target("a client that disconnects mid-upload leaves the server healthy",
                                  f"healthy: {healthy}, next request {after_cut.status}",
                                  healthy and after_cut.status == "ok"))

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
            rows.append(("kill -9: back to healthy (new PID) after", report._s(recovery, 1) if recovery is not None
                         else f"not within {ctx.args.recovery_timeout:.0f} s"))
            batch_lost = [o for o in batch_out if o.status != "ok"]
            rows.append(("kill -9: requests lost (in flight at the kill) / retried ok",
                         f"{len(lost) + len(batch_lost)} ({len(lost)} single, {len(batch_lost)} batch) / "
                         f"{retried_ok} of {len(retried)}"))
            rows.append(("kill -9: batch files finished before the kill / rows in results.csv on disk",
                         f"{seen_done} / {on_disk}"))
            targets.append(target("after kill -9: back to healthy within 30 s",
                                  report._s(recovery, 1) if recovery is not None else "never", recovery is not None
                                  and recovery <= 30))
            targets.append(target("no finished batch result lost", f"{seen_done} finished, {on_disk} on disk",
                                  on_disk >= seen_done))
            targets.append(target("every request lost to the kill succeeds when retried",
                                  f"{retried_ok}/{len(retried)}", retried_ok == len(retried)))
    finally:
        stop_run_sh(handle)
    outcomes.sort(key=lambda o: o.start)
    result = new_result(ctx, "faults", "Faults: bad files, cut uploads, kill -9",
                        f"app via ./run.sh start (temporary ENV_FILE) and ops/watchdog.py --loop --interval "
                        f"{ctx.args.watchdog_interval:g} --failures 2; 2 clients × {per_client} good requests "
                        f"with all {len(ctx.audio.bad)} files of bad/ sent at once in the middle; "
                        f"{ctx.args.disconnects} uploads cut mid-body; then 2 retrying clients and a batch of "
                        f"{ctx.args.fault_batch_files} with kill -9 once 2 batch files are done",
                        outcomes, sampler, kinds=("single", "batch"), ratios=False)
    result["summary"]["failed_expected"] = sum(1 for o in outcomes if o.kind == "bad" and o.status == "failed")
    result["extra_rows"], result["targets"], result["events"] = rows, targets, events
    result["notes"] += result_notes
    result["notes"].append("The failed count includes the bad files the service refuses by design and the requests "
                           "in flight at the kill; see the targets for what must hold.")
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


# --------------------------------------------------------------------------------------------- main

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    try:
        from asr.gpu import gpu_info

        gpus = [g["name"] for g in gpu_info()]
    except Exception:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM" + (f", GPU {', '.join(gpus)}" if gpus else ", no GPU")
            + f", Python {platform.python_version()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="+", choices=[*SCENARIOS, "all"], help="one or more, or all")
    parser.add_argument("--url", help="a running server (http://127.0.0.1:PORT) instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: its PID, for the RSS/threads/files samples")
    parser.add_argument("--server-temp-dir", help="with --url: its TEMP_DIR, for the temp-dir size samples")
    parser.add_argument("--audio-dir", default=str(ROOT / "tests"),
                        help="tests (default: tests/data, long files assembled from its utterances) or a folder "
                             "like ../shared/audio with long/, utterances/, formats/, bad/")
    parser.add_argument("--model-dir", help="a real SeACo-Paraformer folder (default: the full-size test model)")
    parser.add_argument("--vad-model-dir", help="FSMN-VAD folder (default: models/fsmn-vad)")
    parser.add_argument("--punc-model-dir", help="CT-punctuation folder (with --model-dir; none: no punctuation)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model: a smoke run")
    parser.add_argument("--quick", action="store_true", help="a 30 s clip instead of the 2-min WAV (A, overflow) "
                                                             "and the 4.5-min MP3 (C): a smoke run")
    parser.add_argument("--device", default="auto", help="DEVICE for the server and the baseline (default auto)")
    parser.add_argument("--engine-backend", default="torch", choices=["torch", "onnx", "auto"],
                        help="ENGINE_BACKEND of the server we start (default torch: the same compute as the bare "
                             "AutoModel baseline, so the ratios measure the service; auto picks ONNX Runtime on CPU "
                             "when the model folder has an export)")
    parser.add_argument("--requests", help="requests per scenario: N, or A=10,B=30,C=3 (defaults: the reference's "
                                           "A=50, B=60, C=30; overflow: how many beyond the queue limit, 5)")
    parser.add_argument("--concurrency", help="clients: N or A=5,C=3 (defaults A=5, C=3; B has 6 fixed users)")
    parser.add_argument("--interval", help="seconds a client pauses between requests: N or A=3,B=3 "
                                           "(defaults A=3, B=3, C=0; soak: between system-info polls, 5)")
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    parser.add_argument("--warmup-share", type=float, default=0.2, help="soak: share of the run that is warm-up")
    parser.add_argument("--sample-interval", type=float, default=2.0, help="seconds between server samples")
    parser.add_argument("--queue-max-size", type=int, default=20, help="QUEUE_MAX_SIZE of the server we start")
    parser.add_argument("--model-concurrency", type=int, default=0,
                        help="MODEL_CONCURRENCY of the server we start (default 0: the server's auto)")
    parser.add_argument("--batch-max-requests", type=int, default=0,
                        help="BATCH_MAX_REQUESTS of the server we start (default 0: auto, off on CPU)")
    parser.add_argument("--disconnects", type=int, default=6, help="faults: uploads cut mid-body")
    parser.add_argument("--fault-batch-files", type=int, default=8, help="faults: files in the batch that is cut")
    parser.add_argument("--watchdog-interval", type=float, default=1.0, help="faults: watchdog check interval")
    parser.add_argument("--recovery-timeout", type=float, default=180.0, help="faults: longest wait for a restart")
    parser.add_argument("--probe-runs", type=int, default=2,
                        help="A: requests sent alone before the load, the fastest one against the baseline")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare AutoModel baseline")
    parser.add_argument("--deadline-minutes", type=float, default=120.0, help="stop sending after this long")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where JSON, PNG and Markdown go")
    parser.add_argument("--docs-images", help="also save the PNGs as DIR/bench-<scenario>.png and write a Markdown "
                                              "variant linking them (for docs/benchmarks.md)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary work folder (server logs, "
                                                                 "uploads, batch outputs); kept anyway on failure")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    for noisy in ("httpx", "httpcore", "gradio_client", "urllib3", "matplotlib", "funasr", "modelscope", "jieba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scenarios = list(SCENARIOS) if "all" in args.scenario else [s for s in SCENARIOS if s in args.scenario]
    run_name = "all" if "all" in args.scenario else "-".join(scenarios)
    if args.url and "faults" in scenarios:
        if scenarios == ["faults"]:
            raise SystemExit("faults starts its own server through run.sh (it kills it); drop --url")
        scenarios.remove("faults")
        logger.warning("faults skipped with --url: it starts (and kills) its own server")
    overrides = {k: per_scenario(getattr(args, k), f"--{k}") for k in ("requests", "concurrency", "interval")}
    params = {name: {k: overrides[k].get(name, v) for k, v in DEFAULTS[name].items()} for name in SCENARIOS}
    params["soak"]["minutes"] = args.minutes

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    audio_dir = Path(args.audio_dir)
    audio = build_audio_set(audio_dir if audio_dir.is_absolute() else Path.cwd() / audio_dir, work / "audio",
                            quick=args.quick)
    models = None if (args.url and args.no_baseline) else resolve_models(args.model_dir, args.vad_model_dir,
                                                                         args.punc_model_dir, args.tiny)
    ctx = Context(args, audio, models, work, params)
    if not args.no_baseline:
        ctx.baseline = run_baseline(ctx, files_for(ctx, scenarios))

    run = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "model": models.label if models else f"the server at {args.url}", "device": args.device,
           "audio": audio.source, "baseline": ctx.baseline, "server_start_s": None,
           "command": " ".join(["python -m bench.load", *(argv if argv is not None else sys.argv[1:])])}
    folder, stamp = Path(args.results_dir), datetime.now().strftime("%Y%m%d-%H%M%S")
    results: list[dict[str, Any]] = []
    errors: list[str] = []

    def record(name: str, runner: Callable[[], dict[str, Any]]) -> None:
        logger.info("scenario %s ...", name)
        try:
            result = runner()
        except Exception as exc:  # the other scenarios still run and are reported
            logger.exception("scenario %s failed", name)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return
        results.append(result)
        save_json(run, result, folder, stamp)  # at once: a later crash keeps what is done
        logger.info("scenario %s: %d requests, %d failed, %d rejected", name, result["summary"]["requests"],
                    result["summary"]["failed"], result["summary"]["rejected"])

    server_scenarios = [s for s in scenarios if s != "faults"]
    runners: dict[str, Callable[[Context, Server], dict[str, Any]]] = {
        "A": scenario_a, "B": scenario_b, "C": scenario_c, "overflow": scenario_overflow, "soak": scenario_soak}
    if server_scenarios:
        if args.url:
            server = attach(args.url, args.server_pid, args.server_temp_dir)
        else:
            assert models is not None
            server = start_app(models, work / "server", device=args.device, backend=args.engine_backend,
                               queue_max_size=args.queue_max_size,
                               model_concurrency=args.model_concurrency,
                               batch_max_requests=args.batch_max_requests)
            run["server_start_s"] = server.start_s
        body = health(server.url) or {}
        run["backend"] = body.get("backend")
        run["device"] = body.get("device") or args.device  # what the server runs on, not what was asked
        try:
            warm = UserClient(server.url, time.monotonic(), "warm-up")
            warm_out = warm.single(audio.clip_10s)
            warm.close()
            logger.info("warm-up request: %s in %.1f s", warm_out.status, warm_out.latency_s)
            for name in server_scenarios:
                record(name, lambda n=name: runners[n](ctx, server))
        finally:
            if server.proc is not None:
                stop_app(server)
    if "faults" in scenarios:
        record("faults", lambda: faults(ctx))

    write_outputs(run, results, folder, stamp, run_name, args.docs_images)
    failed = bool(errors) or any(r["summary"]["failed"] or r["summary"]["rejected"] for r in results
                                 if r["scenario"] in ("A", "B", "C", "soak"))
    failed = failed or any(not t["met"] for r in results if r["scenario"] == "overflow" for t in r["targets"])
    for error in errors:
        print(f"scenario failed to run: {error}")
    if failed or args.keep_work:
        print(f"work folder (server logs, uploads, outputs) kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def save_json(run: dict[str, Any], result: dict[str, Any], folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['scenario']}-{stamp}.json"
    path.write_text(json.dumps({"run": run, **result}, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def write_outputs(run: dict[str, Any], results: list[dict[str, Any]], folder: Path, stamp: str, name: str,
                  docs_images: str | None) -> Path:
    """JSON and PNG per scenario, and one Markdown report of the run (a variant linking docs/ PNGs on request)."""
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    docs: dict[str, str] = {}
    for result in results:
        save_json(run, result, folder, stamp)
        images[result["scenario"]] = report.plot(result, folder / f"{result['scenario']}-{stamp}.png").name
        if docs_images:
            docs[result["scenario"]] = report.plot(result, Path(docs_images) / f"bench-{result['scenario']}.png").name
    markdown = report.run_markdown(run, results, images)
    md_path = folder / f"{name}-{stamp}.md"
    md_path.write_text(markdown, encoding="utf-8")
    if docs_images:
        (folder / f"{name}-{stamp}-docs.md").write_text(report.run_markdown(run, results, docs), encoding="utf-8")
    print()
    print(markdown)
    print(f"report: {md_path}")
    return md_path


if __name__ == "__main__":
    sys.exit(main())
