"""What the idle heap trim costs a stream of short requests, and what it gives back after long ones.

    python -m bench.heap_trim --audio-dir ../shared/audio                 # full-size random-weight torch model
    python -m bench.heap_trim --audio-dir ../shared/audio --rounds 3 --long-requests 30

Three engines, each in a child process of its own, the same model and threads, on the same clips:
- `quiet`: today's trim, once the engine has been idle for HEAP_TRIM_QUIET_S (3 s);
- `interval`: the trim as it was before, whenever the last request left, at most every 10 s;
- `off`: HEAP_TRIM=false.
Phase 1 (short clips): the children take turns, a round of every utterance of 2-8 s from the manifest each, for
`--rounds` rounds, so each ratio compares runs seconds apart on the same machine. Each prints its audio seconds
per second of wall time. Phase 2 (memory): each child transcribes the 2-minute file `--long-requests` times,
then idles `--settle` s, and reports its RSS after loading and after the requests.
Writes bench/results/heap_trim-<stamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("quiet", "interval", "off")


def child(variant: str, model_dir: str, punc_dir: str, vad_dir: str, threads: int) -> None:
    """One engine answering commands on stdin: `short PATH...`, `long PATH N SETTLE`, `quit`."""
    import psutil

    from asr.config import EngineConfig
    from asr.engine import Engine
    from asr.heap import HeapTrimmer

    config = EngineConfig(
        model_dir=Path(model_dir),
        punc_model_dir=Path(punc_dir),
        vad_model_dir=Path(vad_dir),
        device="cpu",
        ncpu=threads,
        engine_backend="torch",
        heap_trim=variant != "off",
    )
    engine = Engine(config)
    if variant == "interval":
        engine.heap = _IntervalTrimmer(HeapTrimmer)
    engine.load()
    time.sleep(1.0)
    me = psutil.Process()
    answer({"loaded_rss_mb": me.memory_info().rss / 2**20})
    for line in sys.stdin:
        command, *args = line.split("\t")
        args = [a.strip() for a in args]
        if command == "short":
            started, audio = time.perf_counter(), 0.0
            for path in args:
                audio += engine.transcribe(path).duration
            wall = time.perf_counter() - started
            answer({"audio_s": audio, "wall_s": wall, "trims": engine.heap.trims})
        elif command == "long":
            path, count, settle = args[0], int(args[1]), float(args[2])
            for _ in range(count):
                engine.transcribe(path)
            time.sleep(settle)
            answer({"rss_mb": me.memory_info().rss / 2**20, "trims": engine.heap.trims})
        else:
            return


#: FunASR prints to stdout: a child's answers are the lines that start with this.
ANSWER = "ANSWER "


def answer(values: dict[str, Any]) -> None:
    print(ANSWER + json.dumps(values), flush=True)


def read_answer(proc: subprocess.Popen) -> dict[str, Any]:
    for line in proc.stdout:
        if line.startswith(ANSWER):
            return json.loads(line[len(ANSWER) :])
    raise RuntimeError(f"a child ended without answering (exit {proc.wait()})")


def _IntervalTrimmer(base: type) -> Any:  # noqa: N802 (a class made from the one under test)
    class IntervalTrimmer(base):
        """The trim before the quiet period: whenever the last request left, at most every 10 s."""

        def __init__(self) -> None:
            super().__init__()
            self._last = float("-inf")

        def leave(self) -> None:
            with self._condition:
                self._active -= 1
                last_out = self._active == 0
            if last_out and time.monotonic() - self._last >= 10.0 and self.request():
                self._last = time.monotonic()

    return IntervalTrimmer()


def short_clips(audio_dir: Path) -> list[str]:
    with open(audio_dir / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        str(audio_dir / r["path"])
        for r in rows
        if r["kind"] == "utterance" and 2.0 <= float(r["duration_s"] or 0) <= 8.0
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio-dir", type=Path, default=ROOT.parent / "shared" / "audio")
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "full-seaco"))
    parser.add_argument("--punc-model-dir", default=str(ROOT / "models" / "full-punc"))
    parser.add_argument("--vad-model-dir", default=str(ROOT / "models" / "fsmn-vad"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--long-requests", type=int, default=30)
    parser.add_argument("--long-file", default="long/long_2min.wav")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the memory is read")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.model_dir, args.punc_model_dir, args.vad_model_dir, args.threads)
        return 0

    clips = short_clips(args.audio_dir)
    if not clips:
        parser.error(f"no utterances of 2-8 s in {args.audio_dir / 'manifest.tsv'}")
    children = {}
    for variant in VARIANTS:
        children[variant] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.heap_trim",
                "--child",
                variant,
                "--model-dir",
                args.model_dir,
                "--punc-model-dir",
                args.punc_model_dir,
                "--vad-model-dir",
                args.vad_model_dir,
                "--threads",
                str(args.threads),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    report: dict[str, Any] = {v: {"rounds": []} for v in VARIANTS}
    for variant, proc in children.items():
        report[variant].update(read_answer(proc))

    def ask(variant: str, line: str) -> dict[str, Any]:
        proc = children[variant]
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return read_answer(proc)

    ask_all = "\t".join(["short", *clips])
    for variant in VARIANTS:  # a warm-up round each, not counted
        ask(variant, ask_all)
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))  # neither goes first every time
        for variant in order:
            report[variant]["rounds"].append(ask(variant, ask_all))
    for variant in VARIANTS:
        rounds = report[variant]["rounds"]
        report[variant]["audio_s_per_s"] = sum(x["audio_s"] for x in rounds) / sum(x["wall_s"] for x in rounds)
    for variant in VARIANTS:
        report[variant].update(
            ask(variant, f"long\t{args.audio_dir / args.long_file}\t{args.long_requests}\t{args.settle}")
        )
    for proc in children.values():
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(timeout=60)

    off = report["off"]["audio_s_per_s"]
    lines = [
        f"short clips: {len(clips)} utterances x {args.rounds} rounds, torch, {args.threads} threads",
        "",
        "| trim | audio s per s | vs off | RSS loaded MB | RSS after long requests MB | trims |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        v = report[variant]
        lines.append(
            f"| {variant} | {v['audio_s_per_s']:.2f} | {v['audio_s_per_s'] / off:.3f} | "
            f"{v['loaded_rss_mb']:.0f} | {v['rss_mb']:.0f} | {v['trims']} |"
        )
    text = "\n".join(lines)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"heap_trim-{stamp}.json").write_text(
        json.dumps(
            {"args": vars(args) | {"audio_dir": str(args.audio_dir)}, "clips": clips, **report}, indent=2, default=str
        )
    )
    (out / f"heap_trim-{stamp}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
