"""What a verification costs: two passes plus scoring, against one plain pass over the same files, in one run.

    python -m bench.verification                                  # 50 files of ../shared/audio, full-size models
    python -m bench.verification --files 10
    python -m bench.verification --model-dir models/tiny-seaco --punc-dir models/tiny-punc   # a quick check
    python -m bench.verification --audio-dir /my/clips --hotwords 达摩院,语音识别

Files: the rows of `--manifest` (default ../shared/audio/manifest.tsv) that have a reference and last at most
`--max-duration` seconds, or every audio file of `--audio-dir` (references from a manifest.tsv there, if any,
else empty), taken in order and repeated when there are fewer than `--files`. Hotwords: `--hotwords`, else every
word of hotwords.tsv beside the manifest.

One engine, one warm-up transcription (not counted), then: the plain pass (each file with the hotword list, as a
user would send it), `verification.verify` with setting A = no hotwords and B = the list, timed per part (pass
A, pass B, scoring and the report, the CSV/JSON/HTML rendering), and the plain pass again. The ratio is the
verification over the mean of the two plain passes (before and after, so a drift in the machine's speed
cancels), in wall time and in CPU time (this process and its ffmpeg children: the steadier figure where other
work shares the CPUs). Target: verification ≤ 2.1 × the plain pass. Writes bench/results/verification-<stamp>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from asr.config import EngineConfig  # noqa: E402
from asr.engine import Engine  # noqa: E402
from verification import ManifestItem, items_from_pairs, read_manifest, verify  # noqa: E402

SHARED_AUDIO = ROOT.parent / "shared" / "audio"
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".webm", ".wma", ".mp4", ".mkv"}
TARGET_RATIO = 2.1


class Clock:
    """Wall time and CPU time (this process's threads and its finished children: ffmpeg decodes in one) summed
    over the blocks it timed. CPU time is the steadier figure on a machine shared with other work."""

    def __init__(self, wall: float = 0.0, cpu: float = 0.0):
        self.wall, self.cpu = wall, cpu

    @contextmanager
    def running(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), _cpu()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += _cpu() - cpu

    def minus(self, *others: Clock) -> Clock:
        return Clock(self.wall - sum(o.wall for o in others), self.cpu - sum(o.cpu for o in others))

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3)}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def pick_items(args: argparse.Namespace) -> list[ManifestItem]:
    if args.audio_dir:
        folder = Path(args.audio_dir)
        references = {}
        if (folder / "manifest.tsv").exists():
            references = {item.name: item.reference for item in read_manifest(folder / "manifest.tsv")}
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        names = [str(p.relative_to(folder)) for p in files]
        items = items_from_pairs([(p, references.get(n, "")) for p, n in zip(files, names, strict=True)], names=names)
    else:
        durations = {}
        with Path(args.manifest).open(encoding="utf-8-sig") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                durations[row["path"]] = float(row.get("duration_s") or 0)
        items = [
            item
            for item in read_manifest(Path(args.manifest))
            if item.usable and item.reference and 0 < durations.get(item.name, 0) <= args.max_duration
        ]
    usable = [item for item in items if item.usable]
    if not usable:
        raise SystemExit("no usable files")
    return [usable[k % len(usable)] for k in range(args.files)]


def pick_hotwords(args: argparse.Namespace) -> list[str]:
    if args.hotwords:
        return [w.strip() for w in args.hotwords.split(",") if w.strip()]
    listed = Path(args.manifest).parent / "hotwords.tsv"
    if not listed.exists():
        return []
    with listed.open(encoding="utf-8-sig") as f:
        words = [w.strip() for row in csv.DictReader(f, delimiter="\t") for w in row["hotwords"].split(",")]
    return list(dict.fromkeys(w for w in words if w))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.verification",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--files", type=int, default=50, help="files to verify (default 50)")
    parser.add_argument("--manifest", default=str(SHARED_AUDIO / "manifest.tsv"), help="a path<TAB>text manifest")
    parser.add_argument("--audio-dir", help="every audio file of this folder instead of the manifest's rows")
    parser.add_argument("--max-duration", type=float, default=30.0, help="manifest rows up to this long, s (30)")
    parser.add_argument("--hotwords", help="comma-separated (default: hotwords.tsv beside the manifest)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "full-seaco")
    parser.add_argument("--punc-dir", type=Path, default=ROOT / "models" / "full-punc")
    parser.add_argument("--vad-dir", type=Path, default=ROOT / "models" / "fsmn-vad")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    args = parser.parse_args(argv)

    items = pick_items(args)
    hotwords = pick_hotwords(args)
    engine = Engine(
        EngineConfig(
            model_dir=args.model_dir,
            punc_model_dir=args.punc_dir,
            vad_model_dir=args.vad_dir,
            device=args.device,
            engine_backend="torch",
            itn=False,
        )
    )
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    engine.transcribe(str(items[0].path), hotwords=hotwords)  # warm-up, not counted

    def plain_pass() -> None:
        for item in items:
            engine.transcribe(str(item.path), hotwords=hotwords)

    spent = {"a": Clock(), "b": Clock()}

    def timed(side: str, words: list[str]):
        def transcribe(path: str) -> str:
            with spent[side].running():
                return engine.transcribe(path, hotwords=words).text

        return transcribe

    def verification() -> None:
        report = verify(
            items, timed("a", []), timed("b", hotwords), hotwords, label_a="no hotwords", label_b="hotwords"
        )
        with render.running():
            rendered.extend([report.to_json(), report.files_csv(), report.hotwords_csv(), report.to_html("zh")])
        reports.append(report)

    render, rendered, reports = Clock(), [], []
    plain_1, verify_clock, plain_2 = Clock(), Clock(), Clock()
    with plain_1.running():
        plain_pass()
    with verify_clock.running():
        verification()
    with plain_2.running():
        plain_pass()
    report = reports[0]
    plain_wall = (plain_1.wall + plain_2.wall) / 2
    plain_cpu = (plain_1.cpu + plain_2.cpu) / 2
    scoring = verify_clock.minus(spent["a"], spent["b"], render)

    summary = report.to_dict()["summary"]
    result = {
        "model": args.model_dir.name,
        "device": args.device,
        "files": len(items),
        "distinct_files": len({item.path for item in items}),
        "hotwords": len(hotwords),
        "load_s": round(load_s, 2),
        "plain_pass_1": plain_1.as_dict(),
        "verification": verify_clock.as_dict(),
        "plain_pass_2": plain_2.as_dict(),
        "pass_a": spent["a"].as_dict(),
        "pass_b": spent["b"].as_dict(),
        "scoring": scoring.as_dict(),
        "render": render.as_dict(),
        "report_bytes": sum(len(text.encode("utf-8")) for text in rendered),
        "ratio_wall": round(verify_clock.wall / plain_wall, 3),
        "ratio_cpu": round(verify_clock.cpu / plain_cpu, 3),
        "target_ratio": TARGET_RATIO,
        "scored": summary["scored"],
        "cer_a": summary["a"]["cer"],
        "cer_b": summary["b"]["cer"],
    }
    out = ROOT / "bench" / "results" / f"verification-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    met = "met" if result["ratio_cpu"] <= TARGET_RATIO and result["ratio_wall"] <= TARGET_RATIO else "NOT met"
    print(
        f"\nverification of {len(items)} files: wall {verify_clock.wall:.2f} s = {result['ratio_wall']:.3f} x the "
        f"plain pass (mean of {plain_1.wall:.2f} s before and {plain_2.wall:.2f} s after); "
        f"CPU {verify_clock.cpu:.2f} s = {result['ratio_cpu']:.3f} x ({plain_1.cpu:.2f} s, {plain_2.cpu:.2f} s); "
        f"target <= {TARGET_RATIO} x: {met}.\n"
        f"Parts (wall / CPU): pass A {spent['a'].wall:.2f} / {spent['a'].cpu:.2f} s, pass B {spent['b'].wall:.2f} / "
        f"{spent['b'].cpu:.2f} s, scoring and report {scoring.wall:.3f} / {scoring.cpu:.3f} s, rendering "
        f"{render.wall:.3f} / {render.cpu:.3f} s. Written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
