"""The load scenarios A, B, C, overflow and soak (`bench.load` runs them; faults are in `bench.faults`).

Each takes the run's `Context` and a running `Server` and returns its result record: outcomes, resource
samples, a summary beside the baseline, and the targets it was held to.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.harness import AudioSet, ModelFolders, Outcome, Sampler, Server, UserClient, health, new_client  # noqa: E402

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
UTTERANCE_POOL = 12  # utterances used by B, the soak and faults (bounds the baseline's work)


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


# --------------------------------------------------------------------------------------------- helpers


def closed_loop(
    server: Server,
    t0: float,
    users: list[str],
    quotas: list[int],
    interval: float,
    request: Callable[[UserClient, str, int], Outcome],
    deadline: float,
) -> list[Outcome]:
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
                    logger.warning("%s: %s %s %s: %s", name, outcome.kind, outcome.name, outcome.status, outcome.error)
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


def new_result(
    ctx: Context,
    scenario: str,
    title: str,
    setup: str,
    outcomes: list[Outcome],
    sampler: Sampler,
    kinds: tuple[str, ...] = ("single", "batch", "live"),
    ratios: bool = True,
) -> dict[str, Any]:
    """The scenario's record; `ratios=False` where a ratio to the baseline means nothing (overflow, faults)."""
    rows = [o.to_dict() for o in outcomes]
    return {
        "scenario": scenario,
        "title": title,
        "setup": setup,
        "params": ctx.params[scenario],
        "outcomes": rows,
        "samples": sampler.samples,
        "summary": report.summarize(
            [r for r in rows if r["kind"] not in ("probe", "blocker")],
            sampler.samples,
            ctx.baseline if ratios else None,
            kinds,
        ),
        "targets": [],
        "notes": [],
        "extra_rows": [],
        "events": [],
    }


def deadline_for(ctx: Context) -> float:
    return time.monotonic() + ctx.args.deadline_minutes * 60


def zero_failed(result: dict[str, Any], label: str) -> dict[str, Any]:
    s = result["summary"]
    return target(
        f"0 failed requests in {label}",
        f"{s['failed']} failed, {s['rejected']} rejected of {s['requests']}",
        s["failed"] == 0 and s["rejected"] == 0,
    )


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
        outcomes = closed_loop(
            server,
            t0,
            [f"client{i + 1}" for i in range(users)],
            split(requests, users),
            interval,
            lambda c, _n, _i: c.single(ctx.long_file),
            deadline_for(ctx),
        )
    result = new_result(
        ctx,
        "A",
        f"A: {users} clients, {ctx.long_label}, {requests} requests",
        f"{users} clients, each sending the {ctx.long_label}, waiting for its answer, then pausing "
        f"{interval:g} s; {requests} requests (after {ctx.args.probe_runs} alone, the fastest kept for "
        f"the overhead ratio)",
        [*probes, *outcomes],
        sampler,
    )
    s = result["summary"]
    result["targets"].append(zero_failed(result, "A"))
    bare = (ctx.baseline or {}).get("files", {}).get(str(ctx.long_file))
    if bare and probe.status == "ok":
        ratio = probe.latency_s / bare["generate_s"]
        result["probe"] = {
            "latency_s": probe.latency_s,
            "bare_generate_s": bare["generate_s"],
            "ratio": ratio,
            "processing_s": probe.processing_s,
        }
        result["extra_rows"].append(
            (
                f"one {ctx.long_label} request alone: latency / bare generate",
                f"{probe.latency_s:.2f} s / {bare['generate_s']:.2f} s = {ratio:.3f} (server "
                f"side: decode + model {report._s(probe.processing_s, 2)})",
            )
        )
        result["targets"].append(
            target(
                f"service latency / bare engine time, one {ctx.long_label} request ≤ 1.10",
                f"{ratio:.3f}",
                ratio <= 1.10,
            )
        )
    if s.get("throughput_ratio") is not None:
        result["targets"].append(
            target(
                f"throughput with {users} clients ≥ 1.3× the sequential baseline",
                f"{s['throughput_ratio']:.2f}×",
                s["throughput_ratio"] >= 1.3,
            )
        )
    batching = (health(server.url) or {}).get("batching") or {}
    if batching.get("max_requests", 1) > 1:
        result["extra_rows"].append(
            (
                "cross-request batching (server totals)",
                f"up to {batching['max_requests']} requests per call; {batching['jobs']} "
                f"segment calls ran as {batching['calls']} model calls "
                f"({batching['jobs_per_call']:.2f} per call, largest {batching['largest_jobs']})",
            )
        )
        result["notes"].append(
            "Cross-request batching is on: the running requests' segments share model calls "
            "(each request's text is what it gets alone)."
        )
    else:
        result["notes"].append(
            "Cross-request batching is off (BATCH_MAX_REQUESTS=1, the CPU default): one request's "
            "segment per model call, so concurrent requests queue and throughput stays ~1×."
        )
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
    result = new_result(
        ctx,
        "B",
        f"B: 6 mixed users, {requests} requests",
        f"6 users: one sending batches of 5 utterances, 2 sending single files (utterances and "
        f"13 formats), 1 sending a recording to the live tab's endpoint, 2 polling system info; "
        f"{requests} requests ({'/'.join(map(str, quotas))} per user), {interval:g} s pause "
        f"between a user's requests",
        outcomes,
        sampler,
        kinds=("single", "batch", "live"),
    )
    result["targets"].append(zero_failed(result, "B"))
    every = report.stats([o.latency_s for o in outcomes if o.status == "ok"])
    result["extra_rows"].append(
        ("latency mean over every request (polls too)", f"{every['mean']:.2f} s" if every["mean"] is not None else "–")
    )
    return result


def scenario_c(ctx: Context, server: Server) -> dict[str, Any]:
    requests, users, interval = int(ctx.p("C", "requests")), int(ctx.p("C", "concurrency")), ctx.p("C", "interval")
    t0 = time.monotonic()
    with Sampler(server, t0, ctx.args.sample_interval) as sampler:
        outcomes = closed_loop(
            server,
            t0,
            [f"client{i + 1}" for i in range(users)],
            split(requests, users),
            interval,
            lambda c, _n, _i: c.single(ctx.mp3_file),
            deadline_for(ctx),
        )
    result = new_result(
        ctx,
        "C",
        f"C: {users} concurrent {ctx.mp3_label}s, {requests} requests",
        f"{users} clients, each sending the {ctx.mp3_label} back to back ({interval:g} s pause); {requests} requests",
        outcomes,
        sampler,
    )
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
            thread = threading.Thread(
                target=lambda c=client: blockers.append(c.single(ctx.audio.two_min, kind="blocker"))
            )
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
    result = new_result(
        ctx,
        "overflow",
        f"Overflow: queue max {queue_max}, {burst} at once",
        f"{running} jobs of the 2-min WAV hold the {running} running slots; then {burst} short jobs "
        f"(queue max {queue_max} + {extra}) are sent at once",
        [*blockers, *outcomes],
        sampler,
        kinds=("overflow",),
        ratios=False,
    )
    result["events"] = events
    ok_accepted = sum(1 for o in accepted if o.status == "ok")
    blockers_ok = sum(1 for o in blockers if o.status == "ok")
    reject_latency = report.stats([o.latency_s for o in rejected])
    result["extra_rows"] += [
        ("accepted of the burst (all finished ok)", f"{len(accepted)} ({ok_accepted} ok)"),
        (
            "refused with HTTP 503 (queue full)",
            f"{len(rejected)}, answered in {report._s(reject_latency['max'], 2)} at most",
        ),
        ("long jobs in the running slots", f"{len(blockers)} ({blockers_ok} ok)"),
    ]
    result["targets"] += [
        target(
            f"every request beyond {queue_max} waiting gets 503",
            f"{len(rejected)} of {extra} refused",
            len(rejected) == extra,
        ),
        target(
            f"none of the first {queue_max} fails",
            f"{len(accepted)} accepted, {ok_accepted} ok",
            len(accepted) == queue_max and ok_accepted == queue_max and blockers_ok == len(blockers),
        ),
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
    result = new_result(
        ctx,
        "soak",
        f"Soak: {minutes:g} minutes",
        f"{minutes:g} minutes of the reference's hourly cycle back to back (2 single files, then "
        f"a batch of 3 utterances) and a system-info poll every {poll_interval:g} s; server "
        f"sampled every {ctx.args.sample_interval:g} s",
        outcomes,
        sampler,
    )
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
            growth[key] = {
                "after_warmup": first,
                "end": last,
                "growth": last - first,
                "growth_pct": 100 * (last - first) / first if first else None,
                "per_1000_requests": (last - first) / n_after * 1000 if n_after else None,
            }
    temps = [s["temp_mb"] for s in samples if s.get("temp_mb") is not None]
    growth["temp_mb_max"] = max(temps) if temps else None
    growth["temp_mb_end"] = temps[-1] if temps else None
    result["growth"] = growth
    rss = growth.get("rss_mb")
    rows = result["extra_rows"]
    rows.append(("batch jobs done", f"{batches_ok}/{len(batches)}"))
    if rss:
        rows.append(
            (
                "RSS after warm-up → end",
                f"{rss['after_warmup']:,.0f} → {rss['end']:,.0f} MB "
                f"({rss['growth_pct']:+.2f}%, {rss['per_1000_requests']:+.1f} MB per 1000 requests)",
            )
        )
        for key, label in (
            ("open_files", "open files"),
            ("threads", "threads"),
            ("temp_files", "files in the temp dir"),
        ):
            g = growth.get(key)
            if g is None:
                continue
            rows.append(
                (
                    f"{label} after warm-up → end",
                    f"{g['after_warmup']:.0f} → {g['end']:.0f} ({g['per_1000_requests']:+.1f} per 1000 requests)",
                )
            )
    rows.append(
        (
            "temp dir size max / end",
            f"{report._s(growth['temp_mb_max'], 1, ' MB')} / {report._s(growth['temp_mb_end'], 1, ' MB')}",
        )
    )
    gpu = [s["gpu_mb"] for s in samples if s.get("gpu_mb") is not None]
    if gpu:
        rows.append(("GPU memory start → end", f"{gpu[0]:,.0f} → {gpu[-1]:,.0f} MB"))
    downs = sum(1 for s in samples if s.get("health") != "ok")
    rows.append(
        (
            "availability (/health ok in samples)",
            f"{100 * (len(samples) - downs) / max(len(samples), 1):.1f}% of {len(samples)}",
        )
    )
    result["targets"].append(zero_failed(result, "the soak"))
    result["targets"].append(
        target("every batch job done", f"{batches_ok}/{len(batches)}", batches_ok == len(batches) and len(batches) > 0)
    )
    if rss:
        result["targets"].append(
            target("RSS growth after warm-up ≤ 3%", f"{rss['growth_pct']:+.2f}%", rss["growth_pct"] <= 3.0)
        )
    temp = growth.get("temp_mb")
    if temp and temp.get("per_1000_requests") is not None:
        result["targets"].append(
            target(
                "temp dir size bounded: after warm-up it grows by ≤ 5 MB per 1000 requests",
                f"{temp['after_warmup']:.1f} → {temp['end']:.1f} MB "
                f"({temp['per_1000_requests']:+.2f} MB per 1000 requests), max "
                f"{growth['temp_mb_max']:.1f} MB",
                temp["per_1000_requests"] <= 5.0,
            )
        )
    result["notes"].append(
        f"Warm-up: the first {ctx.args.warmup_share:.0%} of the run; growth compares the mean of "
        "the first and last tenth of the samples after it. Single-file results (TXT/SRT/VTT) "
        "are written under the temp dir by design, and Gradio keeps each distinct upload there "
        "(the soak resends the same files, so uploads are reused); ops/cleanup.py removes old "
        "ones."
    )
    return result
