"""SenseVoice-Small against SeACo-Paraformer: throughput on one long file, and memory with each model loaded.

    python -m bench.sensevoice                                # full-size random weights, ../shared/audio's 10-min file
    python -m bench.sensevoice --audio ../shared/audio/long/long_10min.wav --backends torch,onnx

Each configuration runs in a child process of its own, so its memory is its own:
- `paraformer`: the service as it runs today (SeACo-Paraformer + FSMN-VAD + CT-punctuation): memory once loaded;
- `both`: the same with `ENABLE_SENSEVOICE=true`: memory once loaded, then the file once with each model, one
  after the other (SeACo first).
With `--backends torch,onnx` both models also run on ONNX Runtime, as `ENGINE_BACKEND=onnx` serves them: SeACo
from `asr.onnx.export`'s graphs, SenseVoice's encoder from `asr.onnx.sensevoice`'s (its CTC head and tags stay in
PyTorch). One run each, on the same machine minutes apart: compare within a run.
Writes bench/results/sensevoice-<time>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
DEFAULT_AUDIO = ROOT.parent / "shared" / "audio" / "long" / "long_10min.wav"


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def child(config: str, backend: str, audio: Path, models: Path) -> dict[str, Any]:
    """Load the engine as `config` says, then transcribe `audio` with each of its models; the figures."""
    from asr.engine import Engine
    from config.settings import Settings

    before = rss_mib()
    settings = Settings(
        _env_file=None,
        model_dir=models / "full-seaco",
        vad_model_dir=models / "fsmn-vad",
        punc_model_dir=models / "full-punc",
        enable_sensevoice=config == "both",
        sensevoice_model_dir=models / "full-sensevoice" if config == "both" else None,
        device="cpu",
        engine_backend=backend,
        itn=False,
        heap_trim=False,  # memory as loaded, not as handed back later
    )
    engine = Engine(settings.engine_config())
    started = time.perf_counter()
    engine.load()
    report: dict[str, Any] = {
        "config": config,
        "backend": engine.backend,
        "sensevoice_backend": engine.sensevoice_backend,
        "load_s": round(time.perf_counter() - started, 1),
        "rss_before_load_mib": round(before),
        "rss_loaded_mib": round(rss_mib()),
        "runs": {},
    }
    # Throughput from the `both` process only: the two models on one file, minutes apart, in one process.
    for model in engine.models if config == "both" else []:
        started = time.perf_counter()
        result = engine.transcribe(audio, model=model, hotwords="")
        seconds = time.perf_counter() - started
        report["runs"][model] = {
            "audio_s": round(result.duration, 1),
            "wall_s": round(seconds, 1),
            "x_realtime": round(result.duration / seconds, 1),
            "sentences": len(result.sentences),
            "rss_after_mib": round(rss_mib()),
        }
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    configs = [("paraformer", b) for b in args.backends] + [("both", b) for b in args.backends]
    reports = []
    for config, backend in configs:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.sensevoice",
                "--child",
                config,
                "--backend",
                backend,
                "--audio",
                str(args.audio),
                "--models-dir",
                str(args.models_dir),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"{config}/{backend} failed:\n{out.stderr[-3000:]}")
        reports.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{config}/{backend}: {reports[-1]}", file=sys.stderr)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "audio": str(args.audio),
        "command": " ".join(["python -m bench.sensevoice", *sys.argv[1:]]),
        "reports": reports,
    }


def markdown(summary: dict[str, Any]) -> str:
    rows = [
        "| loaded | backend (SeACo) | model run | audio | wall | × real time | RSS loaded | RSS after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["reports"]:
        if not r["runs"]:
            rows.append(f"| {r['config']} | {r['backend']} | (load only) | | | | {r['rss_loaded_mib']} MiB | |")
        for model, run_ in r["runs"].items():
            rows.append(
                f"| {r['config']} | {r['backend']} | {model} | {run_['audio_s']} s | {run_['wall_s']} s | "
                f"{run_['x_realtime']} | {r['rss_loaded_mib']} MiB | {run_['rss_after_mib']} MiB |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="the long file (default: the shared 10 min)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument(
        "--backends", type=lambda s: [b for b in s.split(",") if b], default=["torch"], help="torch and/or onnx"
    )
    parser.add_argument("--child", choices=("paraformer", "both"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.backend, args.audio, args.models_dir)))
        return 0
    import testmodels
    from testmodels.sensevoice import build_full_sensevoice

    testmodels.fetch_vad(args.models_dir)
    testmodels.build_full(args.models_dir)
    build_full_sensevoice(args.models_dir)
    summary = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"sensevoice-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(markdown(summary))
    print(f"\n{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
