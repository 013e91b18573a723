"""Figures, Markdown tables and PNG plots for the load benchmarks (`bench.load`)."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The reference deployment's results (RTX 3060, real model), as given in the issue.
REFERENCE: dict[str, dict[str, str]] = {
    "A": {
        "setup": "5 clients, a 2-min WAV every 3 s each, 50 requests",
        "requests": "50",
        "failed": "0",
        "latency": "11.2 ± 1.4 s",
        "queue_wait": "≤ 0.8 s",
    },
    "B": {
        "setup": "6 users: batch of 5, 2 single, 1 live, 2 system-info polls; 60 requests",
        "requests": "60",
        "failed": "0",
        "latency": "9.7 s average",
    },
    "C": {
        "setup": "3 concurrent 4.5-min MP3s, 30 requests",
        "requests": "30",
        "failed": "0",
        "latency": "48.6 s average",
    },
    "soak": {"setup": "72 h", "failed": "0 (100% availability)", "rss": "flat", "batches": "216/216"},
    "overflow": {"setup": "queue max 20", "rejected": "503 beyond 20 waiting"},
    "faults": {"setup": "(not in the reference)"},
}

TRANSCRIPTION_KINDS = ("single", "batch", "live", "probe", "overflow", "bad")


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "mean": None, "sd": None, "p50": None, "p95": None, "max": None, "min": None}
    ordered = sorted(values)

    def pct(p: float) -> float:
        k = (len(ordered) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "p50": pct(0.5),
        "p95": pct(0.95),
        "max": ordered[-1],
        "min": ordered[0],
    }


def bare_time(outcome: dict[str, Any], baseline: dict[str, Any] | None) -> float | None:
    """Bare AutoModel.generate seconds for what this request transcribed (None when not in the baseline)."""
    if not baseline:
        return None
    files = outcome.get("extra", {}).get("files") or []
    rows = baseline.get("files", {})
    if not files or any(f not in rows for f in files):
        return None
    return sum(rows[f]["generate_s"] for f in files)


def summarize(
    outcomes: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    baseline: dict[str, Any] | None,
    kinds: tuple[str, ...] = ("single", "batch", "live"),
) -> dict[str, Any]:
    """The figures of one scenario's measured phase (`outcomes` already excludes warm-up and probes)."""
    work = [o for o in outcomes if o["kind"] in kinds]
    ok = [o for o in work if o["status"] == "ok"]
    latencies = [o["latency_s"] for o in ok]
    waits = [o["total_wait_s"] for o in ok if o.get("total_wait_s") is not None]
    audio = sum(o["audio_s"] for o in ok)
    if work:
        begin = min(o["start"] for o in work)
        end = max(o["start"] + o["latency_s"] for o in work)
        wall = max(end - begin, 1e-9)
    else:
        wall = 0.0
    bare = [bare_time(o, baseline) for o in ok]
    bare_total = sum(b for b in bare if b is not None) if bare and all(b is not None for b in bare) else None
    rss = [s["rss_mb"] for s in samples if s.get("rss_mb") is not None]
    summary: dict[str, Any] = {
        "requests": len(outcomes),
        "transcriptions": len(work),
        "failed": sum(1 for o in outcomes if o["status"] == "failed"),
        "rejected": sum(1 for o in outcomes if o["status"] == "rejected"),
        "latency": stats(latencies),
        "wait": stats(waits),
        "audio_s": audio,
        "wall_s": wall,
        "throughput_audio_s_per_s": audio / wall if wall else None,
        "rtf": wall / audio if audio else None,
        "rss_start_mb": rss[0] if rss else None,
        "rss_end_mb": rss[-1] if rss else None,
        "rss_max_mb": max(rss) if rss else None,
        "by_kind": {
            k: {
                "n": sum(1 for o in outcomes if o["kind"] == k),
                "failed": sum(1 for o in outcomes if o["kind"] == k and o["status"] != "ok"),
                "latency": stats([o["latency_s"] for o in outcomes if o["kind"] == k and o["status"] == "ok"]),
            }
            for k in sorted({o["kind"] for o in outcomes})
        },
    }
    if bare_total:
        summary["bare_sequential_s"] = bare_total
        summary["baseline_throughput_audio_s_per_s"] = audio / bare_total
        summary["throughput_ratio"] = bare_total / wall  # service throughput / sequential bare throughput
        summary["latency_ratio"] = statistics.fmean(latencies) / (bare_total / len(ok))
    return summary


def _s(value: float | None, digits: int = 1, unit: str = " s") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} MB"


def scenario_markdown(result: dict[str, Any], image: str | None) -> str:
    """One scenario: its setup, a metric table beside the reference, its targets and its plot."""
    name = result["scenario"]
    ref = REFERENCE.get(name, {})
    s = result["summary"]
    lines = [
        f"### {result['title']}",
        "",
        f"Setup here: {result['setup']}  ",
        f"Reference: {ref.get('setup', '–')}",
        "",
    ]
    lat, wait = s["latency"], s["wait"]
    rows: list[tuple[str, str, str]] = [
        ("requests (transcriptions)", f"{s['requests']} ({s['transcriptions']})", ref.get("requests", "–")),
        ("failed / rejected (503)", f"{s['failed']} / {s['rejected']}", ref.get("failed", ref.get("rejected", "–"))),
        ("latency mean ± sd", f"{_s(lat['mean'])} ± {_s(lat['sd'])}" if lat["n"] else "–", ref.get("latency", "–")),
        ("latency p50 / p95 / max", " / ".join(_s(lat[k]) for k in ("p50", "p95", "max")), "–"),
        (
            "queue wait mean / max (Gradio queue + model lock)",
            f"{_s(wait['mean'], 2)} / {_s(wait['max'], 2)}",
            ref.get("queue_wait", "–"),
        ),
        ("throughput (audio s per s)", _s(s["throughput_audio_s_per_s"], 2, ""), "–"),
        ("RTF (wall time / audio time)", _s(s["rtf"], 3, ""), "–"),
        (
            "server RSS start → end (max)",
            f"{_mb(s['rss_start_mb'])} → {_mb(s['rss_end_mb'])} ({_mb(s['rss_max_mb'])})",
            ref.get("rss", "–"),
        ),
    ]
    if s.get("throughput_ratio") is not None:
        rows.append(("bare AutoModel.generate, same requests one by one", _s(s["bare_sequential_s"]), "–"))
        rows.append(("throughput / sequential bare throughput", f"{s['throughput_ratio']:.2f}×", "–"))
        rows.append(("mean latency / mean bare time per request", f"{s['latency_ratio']:.2f}×", "–"))
    for label, value in result.get("extra_rows", []):
        rows.append((label, value, ref.get(label, "–")))
    lines += ["| metric | this run | reference (RTX 3060) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    kinds = s.get("by_kind", {})
    if len(kinds) > 1:
        lines += ["", "| request kind | n | failed | latency mean ± sd | p95 |", "|---|---|---|---|---|"]
        for kind, k in kinds.items():
            kl = k["latency"]
            lines.append(
                f"| {kind} | {k['n']} | {k['failed']} | {_s(kl['mean'], 2)} ± {_s(kl['sd'], 2)} | {_s(kl['p95'], 2)} |"
            )
    if result.get("targets"):
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        for t in result["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    if image:
        lines += ["", f"![{name}: latency, RSS and queue depth over time]({image})"]
    return "\n".join(lines) + "\n"


def run_markdown(run: dict[str, Any], results: list[dict[str, Any]], images: dict[str, str]) -> str:
    """A whole run: the machine and model, the baseline, then one section per scenario."""
    lines = [
        f"Load benchmarks, {run['date']}: {run['machine']}. Model: {run['model']}; device `{run['device']}`, "
        f"engine backend `{run.get('backend') or '?'}`. "
        f"Audio: `{run['audio']}`.",
        "",
    ]
    if run.get("command"):
        lines += [f"Command: `{run['command']}`", ""]
    base = run.get("baseline")
    if base:
        lines.append(
            f"Baseline: a bare `funasr.AutoModel.generate` loop over the same files in a separate process "
            f"before the server started (load {base['load_s']:.1f} s, device {base['device']}, "
            f"{base['ncpu']} threads):"
        )
        lines += ["", "| file | audio s | bare generate s | RTF |", "|---|---|---|---|"]
        for path, row in base["files"].items():
            lines.append(
                f"| {Path(path).name} | {row['duration_s']:.1f} | {row['generate_s']:.2f} | "
                f"{row['generate_s'] / max(row['duration_s'], 1e-9):.3f} |"
            )
        lines.append("")
    for result in results:
        lines.append(scenario_markdown(result, images.get(result["scenario"])))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Latency, server RSS and queue depth over time, stacked, in one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcomes, samples = result["outcomes"], result["samples"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    style = {
        "single": ("o", "C0"),
        "batch": ("s", "C1"),
        "live": ("^", "C2"),
        "sysinfo": (".", "C7"),
        "probe": ("D", "C4"),
        "blocker": ("D", "C4"),
        "overflow": ("o", "C5"),
        "bad": ("v", "C3"),
    }
    for kind in sorted({o["kind"] for o in outcomes}):
        marker, color = style.get(kind, ("o", "C9"))
        ok = [o for o in outcomes if o["kind"] == kind and o["status"] == "ok"]
        bad = [o for o in outcomes if o["kind"] == kind and o["status"] != "ok"]
        if ok:
            axes[0].scatter(
                [o["start"] for o in ok], [o["latency_s"] for o in ok], s=18, marker=marker, color=color, label=kind
            )
        if bad:
            axes[0].scatter(
                [o["start"] for o in bad],
                [o["latency_s"] for o in bad],
                s=36,
                marker="x",
                color=color,
                label=f"{kind}: failed or 503",
            )
    axes[0].set_ylabel("latency (s), by send time")
    axes[0].legend(fontsize=7, loc="upper left", ncol=4, framealpha=0.7)
    t = [s["t"] for s in samples]
    axes[1].plot(t, [s.get("rss_mb") for s in samples], label="server RSS")
    axes[1].set_ylabel("RSS (MB)")
    peak = max([s.get("rss_mb") or 0 for s in samples] + [s.get("gpu_mb") or 0 for s in samples] + [1])
    axes[1].set_ylim(0, peak * 1.15)  # from 0: a flat line looks flat
    axes[1].ticklabel_format(axis="y", useOffset=False, style="plain")
    if any(s.get("gpu_mb") for s in samples):
        axes[1].plot(t, [s.get("gpu_mb") for s in samples], label="GPU memory")
        axes[1].legend(fontsize=7)
    axes[2].step(t, [s.get("queue_depth") for s in samples], where="post", label="Gradio queue (waiting jobs)")
    axes[2].step(t, [s.get("model_waiting") for s in samples], where="post", label="waiting for the model lock")
    axes[2].set_ylabel("queue depth")
    deepest = max([s.get("queue_depth") or 0 for s in samples] + [s.get("model_waiting") or 0 for s in samples] + [0])
    axes[2].set_ylim(-0.3, max(deepest, 1) * 1.15 + 0.3)
    axes[2].yaxis.get_major_locator().set_params(integer=True)
    axes[2].set_xlabel("time since the scenario started (s)")
    axes[2].legend(fontsize=7, loc="upper left")
    for event in result.get("events", []):
        for ax in axes:
            ax.axvline(event["t"], color="grey", linestyle="--", linewidth=0.8)
        axes[0].annotate(event["label"], (event["t"], 0), fontsize=7, rotation=90, va="bottom")
    fig.suptitle(result["title"], fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def merge(paths: list[Path], out: Path, docs_images: Path | None) -> str:
    """One report from the JSON files of several runs (e.g. `A B C overflow` in one run, `soak faults` in another)."""
    import json

    results = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    runs = [r.pop("run") for r in results]
    run = dict(runs[0])
    files: dict[str, Any] = {}
    names: set[str] = set()
    for r in runs:  # a file measured in several runs (each run assembles its own copy): the first JSON given wins
        for path, row in (r.get("baseline") or {}).get("files", {}).items():
            if Path(path).name not in names:
                names.add(Path(path).name)
                files[path] = row
    if run.get("baseline"):
        run["baseline"] = {**run["baseline"], "files": files}
    commands = list(dict.fromkeys(r.get("command", "") for r in runs))
    images: dict[str, str] = {}
    for result in results:
        folder = docs_images or out.parent
        name = f"bench-{result['scenario']}.png" if docs_images else f"{out.stem}-{result['scenario']}.png"
        images[result["scenario"]] = plot(result, folder / name).name
    run["command"] = "`; `".join(commands)
    markdown = run_markdown(run, results, images)
    out.write_text(markdown, encoding="utf-8")
    return markdown


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description="One Markdown report (and PNGs) from bench.load JSON results."
    )
    parser.add_argument("json", nargs="+", type=Path, help="bench/results/<scenario>-<stamp>.json files")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    parser.add_argument("--docs-images", type=Path, help="write the PNGs here as bench-<scenario>.png")
    args = parser.parse_args(argv)
    print(merge(args.json, args.out, args.docs_images))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
