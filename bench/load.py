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
This module is the runner (options, the server, the baseline, the outputs); the scenarios are in
bench/scenarios.py (A, B, C, overflow, soak) and bench/faults.py (faults).
Each run writes bench/results/<scenario>-<stamp>.json, a PNG per scenario and a Markdown report;
`python -m bench.report FILE.json... --out report.md` makes one report from several runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.faults import faults  # noqa: E402
from bench.harness import (
    Server,
    UserClient,
    attach,
    build_audio_set,
    health,
    resolve_models,
    start_app,  # noqa: E402
    stop_app,
)
from bench.scenarios import (
    DEFAULTS,
    SCENARIOS,
    Context,
    scenario_a,
    scenario_b,
    scenario_c,  # noqa: E402
    scenario_overflow,
    scenario_soak,
)

logger = logging.getLogger(__name__)

RESULTS = ROOT / "bench" / "results"


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
    cmd = [
        sys.executable,
        "-m",
        "bench.baseline",
        "--model-dir",
        str(m.asr),
        "--vad-model-dir",
        str(m.vad),
        "--punc-model-dir",
        str(m.punc or ""),
        "--device",
        ctx.args.device,
        "--out",
        str(out),
        *[str(f) for f in files],
    ]
    logger.info("baseline: bare AutoModel.generate over %d files (separate process)", len(files))
    started = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=3600)
    logger.info("baseline done in %.0f s", time.monotonic() - started)
    return json.loads(out.read_text(encoding="utf-8"))


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
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM"
        + (f", GPU {', '.join(gpus)}" if gpus else ", no GPU")
        + f", Python {platform.python_version()}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", nargs="+", choices=[*SCENARIOS, "all"], help="one or more, or all")
    parser.add_argument("--url", help="a running server (http://127.0.0.1:PORT) instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: its PID, for the RSS/threads/files samples")
    parser.add_argument("--server-temp-dir", help="with --url: its TEMP_DIR, for the temp-dir size samples")
    parser.add_argument(
        "--audio-dir",
        default=str(ROOT / "tests"),
        help="tests (default: tests/data, long files assembled from its utterances) or a folder "
        "like ../shared/audio with long/, utterances/, formats/, bad/",
    )
    parser.add_argument("--model-dir", help="a real SeACo-Paraformer folder (default: the full-size test model)")
    parser.add_argument("--vad-model-dir", help="FSMN-VAD folder (default: models/fsmn-vad)")
    parser.add_argument("--punc-model-dir", help="CT-punctuation folder (with --model-dir; none: no punctuation)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model: a smoke run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 30 s clip instead of the 2-min WAV (A, overflow) and the 4.5-min MP3 (C): a smoke run",
    )
    parser.add_argument("--device", default="auto", help="DEVICE for the server and the baseline (default auto)")
    parser.add_argument(
        "--engine-backend",
        default="torch",
        choices=["torch", "onnx", "auto"],
        help="ENGINE_BACKEND of the server we start (default torch: the same compute as the bare "
        "AutoModel baseline, so the ratios measure the service; auto picks ONNX Runtime on CPU "
        "when the model folder has an export)",
    )
    parser.add_argument(
        "--requests",
        help="requests per scenario: N, or A=10,B=30,C=3 (defaults: the reference's "
        "A=50, B=60, C=30; overflow: how many beyond the queue limit, 5)",
    )
    parser.add_argument("--concurrency", help="clients: N or A=5,C=3 (defaults A=5, C=3; B has 6 fixed users)")
    parser.add_argument(
        "--interval",
        help="seconds a client pauses between requests: N or A=3,B=3 "
        "(defaults A=3, B=3, C=0; soak: between system-info polls, 5)",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    parser.add_argument("--warmup-share", type=float, default=0.2, help="soak: share of the run that is warm-up")
    parser.add_argument("--sample-interval", type=float, default=2.0, help="seconds between server samples")
    parser.add_argument("--queue-max-size", type=int, default=20, help="QUEUE_MAX_SIZE of the server we start")
    parser.add_argument(
        "--model-concurrency",
        type=int,
        default=0,
        help="MODEL_CONCURRENCY of the server we start (default 0: the server's auto)",
    )
    parser.add_argument(
        "--batch-max-requests",
        type=int,
        default=0,
        help="BATCH_MAX_REQUESTS of the server we start (default 0: auto, off on CPU)",
    )
    parser.add_argument("--disconnects", type=int, default=6, help="faults: uploads cut mid-body")
    parser.add_argument("--fault-batch-files", type=int, default=8, help="faults: files in the batch that is cut")
    parser.add_argument("--watchdog-interval", type=float, default=1.0, help="faults: watchdog check interval")
    parser.add_argument("--recovery-timeout", type=float, default=180.0, help="faults: longest wait for a restart")
    parser.add_argument(
        "--probe-runs",
        type=int,
        default=2,
        help="A: requests sent alone before the load, the fastest one against the baseline",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare AutoModel baseline")
    parser.add_argument("--deadline-minutes", type=float, default=120.0, help="stop sending after this long")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where JSON, PNG and Markdown go")
    parser.add_argument(
        "--docs-images",
        help="also save the PNGs as DIR/bench-<scenario>.png and write a Markdown "
        "variant linking them (for docs/benchmarks.md)",
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the temporary work folder (server logs, uploads, batch outputs); kept anyway on failure",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
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
    audio = build_audio_set(
        audio_dir if audio_dir.is_absolute() else Path.cwd() / audio_dir, work / "audio", quick=args.quick
    )
    models = (
        None
        if (args.url and args.no_baseline)
        else resolve_models(args.model_dir, args.vad_model_dir, args.punc_model_dir, args.tiny)
    )
    ctx = Context(args, audio, models, work, params)
    if not args.no_baseline:
        ctx.baseline = run_baseline(ctx, files_for(ctx, scenarios))

    run = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": models.label if models else f"the server at {args.url}",
        "device": args.device,
        "audio": audio.source,
        "baseline": ctx.baseline,
        "server_start_s": None,
        "command": " ".join(["python -m bench.load", *(argv if argv is not None else sys.argv[1:])]),
    }
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
        logger.info(
            "scenario %s: %d requests, %d failed, %d rejected",
            name,
            result["summary"]["requests"],
            result["summary"]["failed"],
            result["summary"]["rejected"],
        )

    server_scenarios = [s for s in scenarios if s != "faults"]
    runners: dict[str, Callable[[Context, Server], dict[str, Any]]] = {
        "A": scenario_a,
        "B": scenario_b,
        "C": scenario_c,
        "overflow": scenario_overflow,
        "soak": scenario_soak,
    }
    if server_scenarios:
        if args.url:
            server = attach(args.url, args.server_pid, args.server_temp_dir)
        else:
            assert models is not None
            server = start_app(
                models,
                work / "server",
                device=args.device,
                backend=args.engine_backend,
                queue_max_size=args.queue_max_size,
                model_concurrency=args.model_concurrency,
                batch_max_requests=args.batch_max_requests,
            )
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
    failed = bool(errors) or any(
        r["summary"]["failed"] or r["summary"]["rejected"] for r in results if r["scenario"] in ("A", "B", "C", "soak")
    )
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


def write_outputs(
    run: dict[str, Any], results: list[dict[str, Any]], folder: Path, stamp: str, name: str, docs_images: str | None
) -> Path:
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
