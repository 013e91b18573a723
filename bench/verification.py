"""What a verification costs: two passes plus scoring, against a plain pass over the same files, in one run.

    python -m bench.verification                                  # 50 files of ../shared/audio, full-size models
    python -m bench.verification --files 10
    python -m bench.verification --model-dir models/tiny-seaco --punc-dir models/tiny-punc   # a quick check
    python -m bench.verification --audio-dir /my/clips --hotwords 达摩院,语音识别

Files: the rows of `--manifest` (default ../shared/audio/manifest.tsv) that have a reference and last at most
`--max-duration` seconds, or every audio file of `--audio-dir` (references from a manifest.tsv there, if any,
else empty), taken in order and repeated when there are fewer than `--files`. Hotwords: `--hotwords`, else every
word of hotwords.tsv beside the manifest.

One engine, one warm-up transcription (not counted), then `verification.verify` with setting A = no hotwords and
B = the list, and beside it, file by file, the plain pass: each file once more with the list, as a user would
send it, just before A on even files and just after B on odd ones, so a change in the machine's speed (other
work on its CPUs) touches both sides alike. Timed per part: the plain pass, pass A, pass B, scoring and the
report (what `verify` spends outside the transcriptions), and the CSV/JSON/HTML rendering. The ratio is
(verification - plain transcriptions inside it + rendering) / plain pass, in wall time and in CPU time (this
process and its ffmpeg children). Target: ≤ 2.1 ×. Writes verification-<stamp>.json to --results-dir.
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
    parser.add_argument("--repeat", type=int, default=1, help="rounds, their times summed (default 1)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results", help="(default bench/results)")
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

    plain, pass_a, pass_b, whole, render = Clock(), Clock(), Clock(), Clock(), Clock()
    files_done = 0

    def plain_transcription(path: str) -> None:
        with plain.running():
            engine.transcribe(path, hotwords=hotwords)

    # The plain pass runs file by file inside the verification, just before setting A on even files and just
    # after setting B on odd ones: a change in the machine's speed (other work on its CPUs) then touches both
    # sides alike, and neither side always goes first on a file.
    def setting_a(path: str) -> str:
        if files_done % 2 == 0:
            plain_transcription(path)
        with pass_a.running():
            return engine.transcribe(path, hotwords=[]).text

    def setting_b(path: str) -> str:
        nonlocal files_done
        try:
            with pass_b.running():
                return engine.transcribe(path, hotwords=hotwords).text
        finally:
            if files_done % 2 == 1:
                plain_transcription(path)
            files_done += 1

    rounds = []
    for _ in range(args.repeat):
        before = [Clock(c.wall, c.cpu) for c in (plain, pass_a, pass_b, whole, render)]
        with whole.running():
            report = verify(items, setting_a, setting_b, hotwords, label_a="no hotwords", label_b="hotwords")
        with render.running():
            rendered = [report.to_json(), report.files_csv(), report.hotwords_csv(), report.to_html("zh")]
        plain_s, a_s, b_s, whole_s, render_s = (
            c.minus(b) for c, b in zip((plain, pass_a, pass_b, whole, render), before, strict=True)
        )
        rounds.append(round((whole_s.wall - plain_s.wall + render_s.wall) / plain_s.wall, 3))

    verification = whole.minus(plain)  # two passes and scoring, the plain transcriptions taken out
    verification = Clock(verification.wall + render.wall, verification.cpu + render.cpu)
    scoring = whole.minus(plain, pass_a, pass_b)
    summary = report.to_dict()["summary"]
    result = {
        "model": args.model_dir.name,
        "device": args.device,
        "files": len(items),
        "distinct_files": len({item.path for item in items}),
        "hotwords": len(hotwords),
        "rounds": args.repeat,
        "load_s": round(load_s, 2),
        "plain_pass": plain.as_dict(),
        "verification": verification.as_dict(),
        "pass_a": pass_a.as_dict(),
        "pass_b": pass_b.as_dict(),
        "scoring": scoring.as_dict(),
        "render": render.as_dict(),
        "report_bytes": sum(len(text.encode("utf-8")) for text in rendered),
        "ratio_wall_per_round": rounds,
        "ratio_wall": round(verification.wall / plain.wall, 3),
        "ratio_cpu": round(verification.cpu / plain.cpu, 3),
        "target_ratio": TARGET_RATIO,
        "scored": summary["scored"],
        "cer_a": summary["a"]["cer"],
        "cer_b": summary["b"]["cer"],
    }
    out = args.results_dir / f"verification-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    met = "met" if max(result["ratio_wall"], result["ratio_cpu"]) <= TARGET_RATIO else "NOT met"
    print(
        f"\nverification of {len(items)} files ({args.repeat} round(s)): wall {verification.wall:.2f} s = "
        f"{result['ratio_wall']:.3f} x the plain pass ({plain.wall:.2f} s); CPU {verification.cpu:.2f} s = "
        f"{result['ratio_cpu']:.3f} x ({plain.cpu:.2f} s); target <= {TARGET_RATIO} x: {met}.\n"
        "Parts (wall / CPU): "
        + ", ".join(
            f"{name} {c.wall:.3f} / {c.cpu:.3f} s"
            for name, c in zip(
                ("pass A", "pass B", "scoring and report", "rendering"), (pass_a, pass_b, scoring, render), strict=True
            )
        )
        + f". Written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
