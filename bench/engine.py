"""Engine benchmark: load time, RTF, peak RSS and the engine's cost over a bare `AutoModel.generate`.

    python -m bench.engine                               # full-size random-weight model, audio built from tests/data
    python -m bench.engine --audio-dir ../shared/audio   # the real long files (long/long_2min.wav, ...)
    python -m bench.engine --model-dir /path/to/real/model --quick

Runs in two phases so each figure is measured once, in one run:
1. the engine alone: model load time, then the 10-min file while RSS is sampled (peak RSS of the service);
2. a bare FunASR `AutoModel` on the same folders is loaded beside it, and each input goes through the bare
   `generate()` and then `engine.transcribe()` back to back, so the ratio compares runs seconds apart.
The engine's time includes decoding the file with ffmpeg; the bare call gets the already-decoded samples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr import testmodels  # noqa: E402
from asr.audio import ffmpeg_binary, load_audio  # noqa: E402
from asr.engine import Engine  # noqa: E402
from asr.settings import Settings  # noqa: E402

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
    kwargs: dict[str, Any] = dict(model=spec.asr, device=spec.device, disable_update=True, disable_pbar=True,
                                  disable_log=True, ncpu=engine._model.kwargs["ncpu"])
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
    settings = Settings(_env_file=None, model_dir=model_dir, vad_model_dir=vad_dir, punc_model_dir=punc_dir,
                        enable_punc=punc_dir is not None, device=args.device)
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    inputs = build_inputs(Path(args.audio_dir), work, args.quick)
    report: dict[str, Any] = {
        "benchmark": "engine",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "model": str(model_dir),
        "inputs": {k: str(v) for k, v in inputs.items()},
    }

    # Phase 1: the engine alone.
    engine = Engine(settings)
    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    engine.load()
    report["load_seconds"] = time.perf_counter() - started
    report["rss_after_load_mb"] = psutil.Process().memory_info().rss / 2**20
    engine.transcribe(inputs["10 s"], hotwords="")  # warm-up
    longest = list(inputs.values())[-2] if not args.quick else inputs["2 min"]
    with RssSampler() as sampler:
        engine.transcribe(longest, hotwords="")
    report["peak_rss_mb"] = sampler.peak / 2**20
    report["rss_before_load_mb"] = rss_before / 2**20
    print(f"load {report['load_seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB", flush=True)

    # Phase 2: bare AutoModel.generate vs engine.transcribe on each input, back to back.
    bare = bare_model(engine)
    rows = []
    for label, path in inputs.items():
        samples = load_audio(path, limits=engine.limits).samples
        bare_times, engine_times = [], []

        def time_bare() -> list:
            t0 = time.perf_counter()
            out = bare.generate(input=samples, sentence_timestamp=True, batch_size_s=settings.batch_size_s)
            bare_times.append(time.perf_counter() - t0)
            return out

        def time_engine() -> Any:
            t0 = time.perf_counter()
            out = engine.transcribe(path, hotwords="")
            engine_times.append(time.perf_counter() - t0)
            return out

        # ABBA order, best of each: a noisy neighbour slows one run, not the comparison.
        repeats = args.repeat if len(samples) < 300 * 16000 else 1
        for i in range(repeats):
            if i % 2 == 0:
                bare_result, result = time_bare(), time_engine()
            else:
                result, bare_result = time_engine(), time_bare()
        bare_s, engine_s = min(bare_times), min(engine_times)
        same_text = (bare_result[0]["text"] if bare_result else "") == result.text
        row = {
            "input": label, "duration_s": result.duration, "bare_s": bare_s, "engine_s": engine_s,
            "engine_model_s": result.model_time, "decode_s": result.decode_time,
            "rtf": engine_s / result.duration, "ratio_engine_to_bare": engine_s / bare_s,
            "decode_share": result.decode_time / engine_s, "same_text": same_text,
        }
        rows.append(row)
        print(f"{label:>12}: bare {bare_s:6.1f} s  engine {engine_s:6.1f} s  (decode {result.decode_time:.2f} s)  "
              f"rtf {row['rtf']:.3f}  ratio {row['ratio_engine_to_bare']:.3f}  same text {same_text}", flush=True)
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
        f"Engine benchmark, {report['date']}, {report['machine']['cores']} cores, model `{report['model']}`.",
        "",
        f"- model load: **{report['load_seconds']:.1f} s**; RSS after load {report['rss_after_load_mb']:.0f} MB; "
        f"peak RSS while transcribing the longest file: **{report['peak_rss_mb']:.0f} MB**",
        f"- engine time / bare `AutoModel.generate` time, all inputs: **{report['ratio_total']:.3f}** (target ≤ 1.05)",
    ]
    if report.get("mp3_decode_share") is not None:
        lines.append(f"- decoding the 4.5-min MP3: **{report['mp3_decode_share'] * 100:.2f}%** of its transcription "
                     f"time (target ≤ 2%)")
    lines += [
        "",
        "| input | audio s | bare generate s | engine s | of which decode s | RTF (engine) | engine / bare | same text |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['input']} | {r['duration_s']:.1f} | {r['bare_s']:.2f} | {r['engine_s']:.2f} | "
                     f"{r['decode_s']:.2f} | {r['rtf']:.3f} | {r['ratio_engine_to_bare']:.3f} | {r['same_text']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-dir", default=str(ROOT / "tests" / "data"),
                        help="folder with long/long_2min.wav, long_10min.wav, long_4m30.mp3 (e.g. ../shared/audio); "
                             "default: assemble them from tests/data/utterances")
    parser.add_argument("--model-dir", help="a real SeACo-Paraformer folder (default: build the full-size test model)")
    parser.add_argument("--vad-model-dir", help="FSMN-VAD folder (default: models/fsmn-vad)")
    parser.add_argument("--punc-model-dir", help="CT-punctuation folder (default: models/full-punc with the test model)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each side per input under 5 min, best one kept (default 2)")
    parser.add_argument("--quick", action="store_true", help="only the 10 s and 2 min inputs")
    args = parser.parse_args(argv)
    report = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"engine-{stamp}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    markdown = to_markdown(report)
    (RESULTS / f"engine-{stamp}.md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
