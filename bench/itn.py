"""What ITN (asr.itn) costs: its time as a share of a transcription's, the RSS its grammars add, their load time.

    python -m bench.itn --audio-dir ../shared/audio                   # full-size random-weight models (default)
    python -m bench.itn --audio-dir ../shared/audio --model-dir models/tiny-seaco --punc-dir models/tiny-punc

One process, one run: the engine loads with ITN off (its RSS read after), then the grammars load (RSS and time
read again), then the 10-minute file is transcribed with itn=False, `--repeat` times, and each result is put
through `Engine.written_form`, which is what `transcribe(itn=True)` runs after the model. Random weights say
random characters, few of them numerals, so the same sentences are also timed with numerals in them (each
sentence's first characters replaced by a date and a percentage): a real meeting's share lies between the two.
Targets: ITN ≤ 1 % of the transcription's time; first-request latency added ≤ 0.5 s (the grammars load at
startup, so the first request pays only its own ITN). Writes bench/results/itn-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NUMERALS = "二零二六年十二月一日百分之五十"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.itn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio-dir", type=Path, required=True, help="../shared/audio (its long/long_10min.wav)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "full-seaco")
    parser.add_argument("--punc-dir", type=Path, default=ROOT / "models" / "full-punc")
    parser.add_argument("--vad-dir", type=Path, default=ROOT / "models" / "fsmn-vad")
    parser.add_argument("--repeat", type=int, default=1, help="transcriptions of the file (default 1)")
    args = parser.parse_args(argv)

    import psutil

    from asr.config import EngineConfig
    from asr.engine import Engine, Sentence

    audio = args.audio_dir / "long" / "long_10min.wav"
    me = psutil.Process()
    engine = Engine(
        EngineConfig(
            model_dir=args.model_dir,
            punc_model_dir=args.punc_dir,
            vad_model_dir=args.vad_dir,
            device="cpu",
            engine_backend="torch",
            itn=False,
        )
    )
    engine.load()
    rss_before = me.memory_info().rss / 2**20
    started = time.perf_counter()
    engine.itn.load()
    load_s = time.perf_counter() - started
    rss_after = me.memory_info().rss / 2**20

    runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = engine.transcribe(audio, itn=False)
        transcribe_s = time.perf_counter() - started
        started = time.perf_counter()
        written = engine.written_form(result)
        itn_s = time.perf_counter() - started
        # The same sentences with numerals in them (the words keep the model's times).
        numbered = []
        for s in result.sentences:
            words = [replace(w, text=NUMERALS[i]) if i < len(NUMERALS) else w for i, w in enumerate(s.words)]
            text = "".join(w.text for w in words) or s.text
            numbered.append(Sentence(text, s.start, s.end, words=words))
        numbered_result = replace(result, sentences=numbered, text="".join(s.text for s in numbered))
        started = time.perf_counter()
        numbered_written = engine.written_form(numbered_result)
        numbered_s = time.perf_counter() - started
        runs.append(
            {
                "audio_s": round(result.duration, 1),
                "sentences": len(result.sentences),
                "transcribe_s": round(transcribe_s, 2),
                "itn_s": round(itn_s, 4),
                "itn_share_pct": round(100 * itn_s / transcribe_s, 3),
                "tokens_rewritten": sum(a.text != b.text for a, b in zip(result.words, written.words, strict=False)),
                "itn_with_numerals_s": round(numbered_s, 4),
                "itn_with_numerals_share_pct": round(100 * numbered_s / transcribe_s, 3),
                "numerals_rewritten": sum(
                    s.text != n.text for s, n in zip(numbered, numbered_written.sentences, strict=True)
                ),
            }
        )
    report = {
        "model": args.model_dir.name,
        "file": audio.name,
        "grammar_load_s": round(load_s, 3),
        "rss_before_mb": round(rss_before, 1),
        "rss_added_mb": round(rss_after - rss_before, 1),
        "runs": runs,
    }
    out = ROOT / "bench" / "results" / f"itn-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(report, ensure_ascii=False, indent=2))
    worst = max(r["itn_with_numerals_share_pct"] for r in runs)
    print(
        f"\nITN: {worst:.2f} % of the transcription's time with numerals in every sentence (target ≤ 1 %); "
        f"grammars {report['rss_added_mb']:.0f} MB, loaded in {load_s:.2f} s at startup (first-request latency "
        f"added: the request's own ITN, {runs[0]['itn_with_numerals_s']:.2f} s at most; target ≤ 0.5 s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
