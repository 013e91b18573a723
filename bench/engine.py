"""Engine benchmark: load time, RTF, peak RSS and the engine's cost over a bare `AutoModel.generate`.

    python -m bench.engine                               # full-size random-weight model, audio built from tests/data
    python -m bench.engine --audio-dir ../shared/audio   # the real long files (long/long_2min.wav, ...)
    python -m bench.engine --model-dir /path/to/real/model --quick
    python -m bench.engine --backends torch,onnx,onnx-int8   # one run, one child process per backend, one table

Runs in two phases so each figure is measured once, in one run:
1. the engine alone: model load time, then the 10-min file while RSS is sampled (peak RSS of the service);
2. a bare FunASR `AutoModel` on the same folders is loaded beside it, and each input goes through the bare
   `generate()` and then `engine.transcribe()` back to back, so the ratio compares runs seconds apart.
The engine's time includes decoding the file with ffmpeg; the bare call gets the already-decoded samples.

`--backend onnx` / `onnx-int8` measure the ONNX Runtime backend (export first: `python -m asr.onnx.export
--model-dir models/full-seaco --quantize` and `--model-dir models/full-punc`); its "bare" side is the same
ONNX pipeline (FunASR's generate() over the ONNX sessions) without the engine around it. `--backends`
runs each backend in its own child process, so load time and peak RSS are each backend's alone, and
writes one table with throughput relative to torch (the 4.5-min MP3 is left out there: it measures ffmpeg).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import testmodels  # noqa: E402
from asr.audio import ffmpeg_binary, load_audio  # noqa: E402
from asr.engine import Engine  # noqa: E402
from config.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class RssSampler:
    """Peak resident memory of this process, sampled every 50 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_inputs(audio_dir: Path, work: Path, quick: bool) -> dict[str, Path]:
    """10 s, 2 min and 10 min WAVs and a 4.5 min MP3: from --audio-dir when it has them, else assembled."""
    long_dir = audio_dir / "long"
    inputs: dict[str, Path] = {}
    if (long_dir / "long_2min.wav").exists():
        two_min = long_dir / "long_2min.wav"
        ten_min = long_dir / "long_10min.wav"
        mp3 = long_dir / "long_4m30.mp3"
    else:
        clips = [sf.read(p, dtype="float32")[0] for p in sorted((audio_dir / "utterances").glob("*.wav"))]
        if not clips:
            raise SystemExit(f"no utterances/*.wav under {audio_dir}")
        pause = np.zeros(6400, dtype=np.float32)
        joined = np.concatenate([x for c in clips for x in (c, pause)])
        reps = int(np.ceil(600 * 16000 / len(joined)))
        pool = np.tile(joined, reps)
        two_min, ten_min, mp3 = work / "long_2min.wav", work / "long_10min.wav", work / "long_4m30.mp3"
        sf.write(two_min, pool[: 120 * 16000], 16000, subtype="PCM_16")
        sf.write(ten_min, pool[: 600 * 16000], 16000, subtype="PCM_16")
        wav_270 = work / "long_4m30.wav"
        sf.write(wav_270, pool[: 270 * 16000], 16000, subtype="PCM_16")
        os.system(f'"{ffmpeg_binary()}" -loglevel error -y -i "{wav_270}" -b:a 128k "{mp3}"')
    ten_s = work / "clip_10s.wav"
    samples, rate = sf.read(two_min, dtype="float32")
    sf.write(ten_s, samples[: 10 * rate], rate, subtype="PCM_16")
    inputs["10 s"] = ten_s
    inputs["2 min"] = two_min
    if not quick:
        inputs["10 min"] = ten_min
        inputs["4.5 min MP3"] = mp3
    return inputs


def bare_model(engine: Engine) -> Any:
    from funasr import AutoModel

    spec = engine.spec
    if engine.backend == "onnx":
        from asr.onnx.backend import build_onnx_automodel

        return build_onnx_automodel(
            asr=spec.asr,
            vad=spec.vad,
            punc=spec.punc,
            files=engine._model.model.options.files,
            threads=engine._model.model.options.threads,
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
            ncpu=engine._model.kwargs["ncpu"],
        )
    kwargs: dict[str, Any] = dict(
        model=spec.asr,
        device=spec.device,
        disable_update=True,
        disable_pbar=True,
        disable_log=True,
        ncpu=engine._model.kwargs["ncpu"],
    )
    if spec.vad:
        kwargs["vad_model"] = spec.vad
    if spec.punc:
        kwargs["punc_model"] = spec.punc
    return AutoModel(**kwargs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.model_dir:
        model_dir, punc_dir = Path(args.model_dir), Path(args.punc_model_dir) if args.punc_model_dir else None
    else:
        model_dir, punc_dir = testmodels.build_full()
    vad_dir = Path(args.vad_model_dir) if args.vad_model_dir else testmodels.fetch_vad()
    backend = args.backend.split("-")[0]
    settings = Settings(
        _env_file=None,
        model_dir=model_dir,
        vad_model_dir=vad_dir,
        punc_model_dir=punc_dir,
        enable_punc=punc_dir is not None,
        device=args.device,
        engine_backend=backend,
        onnx_quantize=args.backend == "onnx-int8",
    )
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    inputs = build_inputs(Path(args.audio_dir), work, args.quick)
    if args.no_mp3:
        inputs.pop("4.5 min MP3", None)
    report: dict[str, Any] = {
        "benchmark": "engine",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": str(model_dir),
        "backend": args.backend,
        "inputs": {k: str(v) for k, v in inputs.items()},
    }

    # Phase 1: the engine alone.
    engine = Engine(settings.engine_config())
    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    engine.load()
    report["load_seconds"] = time.perf_counter() - started
    report["device"] = engine.spec.device
    if engine.backend != backend:
        raise SystemExit(f"asked for {args.backend}, the engine loaded {engine.backend} (exported ONNX files missing?)")
    report["rss_after_load_mb"] = psutil.Process().memory_info().rss / 2**20
    engine.transcribe(inputs["10 s"], hotwords="")  # warm-up
    longest = inputs["10 min"] if not args.quick else inputs["2 min"]
    with RssSampler() as sampler:
        engine.transcribe(longest, hotwords="")
    report["peak_rss_mb"] = sampler.peak / 2**20
    report["rss_before_load_mb"] = rss_before / 2**20
    print(f"load {report['load_seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB", flush=True)

    # Phase 2: bare AutoModel.generate vs engine.transcribe on each input, back to back.
    bare = bare_model(engine)
    # With ONNX, also time the ASR backbone's InferenceSession.run calls inside the engine: the rest is the
    # pipeline around them (features, VAD, punctuation, decoding the file).
    session_clock = [0.0]
    if engine.backend == "onnx":
        session = engine._model.model.backbone
        run_session = session.run

        def timed_run(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return run_session(*a, **k)
            finally:
                session_clock[0] += time.perf_counter() - t0

        session.run = timed_run
    rows = []
    for label, path in inputs.items():
        samples = load_audio(path, limits=engine.limits).samples
        bare_times, engine_times = [], []

        def time_bare() -> list:
            t0 = time.perf_counter()
            out = bare.generate(input=samples, sentence_timestamp=True, batch_size_s=settings.batch_size_s)  # noqa: B023
            bare_times.append(time.perf_counter() - t0)  # noqa: B023
            return out

        session_times: list[float] = []

        def time_engine() -> Any:
            session_clock[0] = 0.0
            t0 = time.perf_counter()
            out = engine.transcribe(path, hotwords="")  # noqa: B023
            engine_times.append(time.perf_counter() - t0)  # noqa: B023
            session_times.append(session_clock[0])  # noqa: B023
            return out

        # ABBA order, best of each: a noisy neighbour slows one run, not the comparison.
        repeats = args.repeat if len(samples) < 300 * 16000 else args.repeat_long
        for i in range(repeats):
            if i % 2 == 0:
                bare_result, result = time_bare(), time_engine()
            else:
                result, bare_result = time_engine(), time_bare()
        bare_s, engine_s = min(bare_times), min(engine_times)
        same_text = (bare_result[0]["text"] if bare_result else "") == result.text
        row = {
            "input": label,
            "duration_s": result.duration,
            "bare_s": bare_s,
            "engine_s": engine_s,
            "engine_model_s": result.model_time,
            "decode_s": result.decode_time,
            "rtf": engine_s / result.duration,
            "ratio_engine_to_bare": engine_s / bare_s,
            "decode_share": result.decode_time / engine_s,
            "same_text": same_text,
            "backend": args.backend,
            "text": result.text,
            "asr_session_s": session_times[engine_times.index(engine_s)] or None,
        }
        rows.append(row)
        print(
            f"{label:>12}: bare {bare_s:6.1f} s  engine {engine_s:6.1f} s  (decode {result.decode_time:.2f} s)  "
            f"rtf {row['rtf']:.3f}  ratio {row['ratio_engine_to_bare']:.3f}  same text {same_text}",
            flush=True,
        )
    report["rows"] = rows
    total_bare = sum(r["bare_s"] for r in rows)
    total_engine = sum(r["engine_s"] for r in rows)
    report["ratio_total"] = total_engine / total_bare
    mp3 = next((r for r in rows if "MP3" in r["input"]), None)
    report["mp3_decode_share"] = mp3["decode_share"] if mp3 else None
    report["max_rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Engine benchmark, {report['date']}, {report['machine']['cores']} cores, model `{report['model']}`, "
        f"backend {report.get('backend', 'torch')} on {report.get('device', 'cpu')}.",
        "",
        f"- model load: **{report['load_seconds']:.1f} s**; RSS after load {report['rss_after_load_mb']:.0f} MB; "
        f"peak RSS while transcribing the longest file: **{report['peak_rss_mb']:.0f} MB**",
        f"- engine time / bare `AutoModel.generate` time, all inputs: **{report['ratio_total']:.3f}** (target ≤ 1.05)",
    ]
    if report.get("mp3_decode_share") is not None:
        lines.append(
            f"- decoding the 4.5-min MP3: **{report['mp3_decode_share'] * 100:.2f}%** of its transcription "
            f"time (target ≤ 2%)"
        )
    lines += [
        "",
        "| input | audio s | bare generate s | engine s | of which decode s | RTF (engine) | engine / bare | same text |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['input']} | {r['duration_s']:.1f} | {r['bare_s']:.2f} | {r['engine_s']:.2f} | "
            f"{r['decode_s']:.2f} | {r['rtf']:.3f} | {r['ratio_engine_to_bare']:.3f} | {r['same_text']} |"
        )
    return "\n".join(lines) + "\n"


BACKEND_LABELS = {"torch": "torch", "onnx": "ONNX fp32", "onnx-int8": "ONNX int8"}


def run_backends(args: argparse.Namespace, backends: list[str]) -> dict[str, Any]:
    """Each backend in its own child process (clean load time and peak RSS), one after the other."""
    reports = []
    for backend in backends:
        out = Path(tempfile.mkdtemp(prefix="bench-backend-")) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.engine",
            "--backend",
            backend,
            "--json-out",
            str(out),
            "--no-mp3",
            "--audio-dir",
            args.audio_dir,
            "--device",
            args.device,
            "--repeat",
            str(args.repeat),
            "--repeat-long",
            str(args.repeat_long),
        ]
        for flag in ("model_dir", "vad_model_dir", "punc_model_dir"):
            if getattr(args, flag):
                cmd += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
        if args.quick:
            cmd.append("--quick")
        print(f"--- {backend}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        reports.append(json.loads(out.read_text(encoding="utf-8")))
    torch_report = next((r for r in reports if r["backend"] == "torch"), None)
    torch_texts = {row["input"]: row["text"] for row in torch_report["rows"]} if torch_report else {}
    for r in reports:
        audio = sum(row["duration_s"] for row in r["rows"])
        r["throughput"] = audio / sum(row["engine_s"] for row in r["rows"])  # audio seconds per second
        r["bare_throughput"] = audio / sum(row["bare_s"] for row in r["rows"])
        for row in r["rows"]:
            reference = torch_texts.get(row["input"])
            row["same_text_as_torch"] = row["text"] == reference if torch_texts else None
            row["agreement_with_torch"] = text_agreement(reference, row["text"]) if reference is not None else None
    if torch_report:
        for r in reports:
            r["speedup_vs_torch"] = r["throughput"] / torch_report["throughput"]
    return {
        "benchmark": "engine-backends",
        "date": reports[0]["date"],
        "machine": reports[0]["machine"],
        "model": reports[0]["model"],
        "reports": reports,
    }


def text_agreement(reference: str, text: str) -> float:
    """Share of characters (tokens and punctuation) in common, in order: 1.0 when the texts are equal."""
    import difflib

    if reference == text:
        return 1.0
    blocks = difflib.SequenceMatcher(None, reference, text, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / max(len(reference), len(text), 1)


def backends_markdown(combined: dict[str, Any]) -> str:
    reports = combined["reports"]
    labels = [row["input"] for row in reports[0]["rows"]]
    lines = [
        f"Engine benchmark by backend, {combined['date']}, {combined['machine']['cores']} cores, model "
        f"`{combined['model']}`; one child process per backend, run back to back; best of the runs per input.",
        "",
        "| backend | load s | peak RSS MB | "
        + " | ".join(f"RTF {label}" for label in labels)
        + " | audio s / s | vs torch | engine / bare | text = torch |",
        "|---|---|---|" + "---|" * len(labels) + "---|---|---|---|",
    ]
    for r in reports:
        rtfs = " | ".join(f"{row['rtf']:.3f}" for row in r["rows"])
        same = [row["same_text_as_torch"] for row in r["rows"]]
        agreement = min(row["agreement_with_torch"] for row in r["rows"])
        same_text = (
            "—"
            if r["backend"] == "torch"
            else "yes"
            if all(same)
            else f"{sum(same)}/{len(same)} inputs; ≥ {agreement:.1%} of characters"
        )
        lines.append(
            f"| {BACKEND_LABELS.get(r['backend'], r['backend'])} | {r['load_seconds']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {rtfs} | {r['throughput']:.2f} | {r.get('speedup_vs_torch', 1.0):.2f}x | "
            f"{r['ratio_total']:.3f} | {same_text} |"
        )
    lines += [
        "",
        "| backend | input | audio s | bare s | engine s | of which decode s | of which ASR session.run s "
        "| RTF | engine / bare |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        for row in r["rows"]:
            lines.append(
                f"| {BACKEND_LABELS.get(r['backend'], r['backend'])} | {row['input']} | {row['duration_s']:.1f} | "
                f"{row['bare_s']:.2f} | {row['engine_s']:.2f} | {row['decode_s']:.2f} | "
                f"{row['asr_session_s'] or 0:.2f} | {row['rtf']:.3f} | "
                f"{row['ratio_engine_to_bare']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--audio-dir",
        default=str(ROOT / "tests" / "data"),
        help="folder with long/long_2min.wav, long_10min.wav, long_4m30.mp3 (e.g. ../shared/audio); "
        "default: assemble them from tests/data/utterances",
    )
    parser.add_argument("--model-dir", help="a real SeACo-Paraformer folder (default: build the full-size test model)")
    parser.add_argument("--vad-model-dir", help="FSMN-VAD folder (default: models/fsmn-vad)")
    parser.add_argument(
        "--punc-model-dir", help="CT-punctuation folder (default: models/full-punc with the test model)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each side per input under 5 min, best one kept (default 2)"
    )
    parser.add_argument(
        "--repeat-long",
        type=int,
        default=1,
        help="runs of each side per input of 5 min or more (default 1; 2 = ABBA, best kept)",
    )
    parser.add_argument("--quick", action="store_true", help="only the 10 s and 2 min inputs")
    parser.add_argument(
        "--backend",
        default="torch",
        choices=sorted(BACKEND_LABELS),
        help="engine backend to measure (default torch); onnx needs `python -m asr.onnx.export` first",
    )
    parser.add_argument(
        "--backends", help="comma-separated backends, each in a child process, one table (e.g. torch,onnx,onnx-int8)"
    )
    parser.add_argument("--no-mp3", action="store_true", help="leave out the 4.5-min MP3 input")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)  # a child of --backends writes its report here
    args = parser.parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.backends:
        combined = run_backends(args, [b.strip() for b in args.backends.split(",") if b.strip()])
        save(f"engine-backends-{stamp}", combined, backends_markdown(combined))
        return 0
    report = run(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(to_markdown(report))
        return 0
    save(f"engine-{stamp}", report, to_markdown(report))
    return 0


def save(name: str, report: dict[str, Any], markdown: str, folder: Path = RESULTS) -> None:
    """Write <folder>/<name>.json and .md (default bench/results/), and print the Markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (folder / f"{name}.md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)


if __name__ == "__main__":
    sys.exit(main())
