"""The load benchmarks' figures and report, from made-up outcomes (no server, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.load import per_scenario
from bench.scenarios import split


def _outcome(
    start: float,
    latency: float,
    status: str = "ok",
    kind: str = "single",
    wait: float = 0.5,
    files: tuple[str, ...] = ("a.wav",),
) -> dict:
    return {
        "kind": kind,
        "name": "a.wav",
        "start": start,
        "latency_s": latency,
        "status": status,
        "error": "",
        "audio_s": 120.0 if status == "ok" else 0.0,
        "total_wait_s": wait,
        "extra": {"files": list(files)},
    }


def test_summary_ratios_against_the_baseline() -> None:
    outcomes = [_outcome(0, 20), _outcome(0.2, 40), _outcome(20, 20), _outcome(40.2, 19.8, "failed")]
    samples = [{"t": 0, "rss_mb": 3000.0}, {"t": 30, "rss_mb": 3100.0}, {"t": 60, "rss_mb": 3050.0}]
    baseline = {"files": {"a.wav": {"duration_s": 120.0, "generate_s": 18.0}}}
    s = report.summarize(outcomes, samples, baseline)
    assert s["requests"] == 4 and s["failed"] == 1 and s["rejected"] == 0
    assert s["latency"]["n"] == 3 and s["latency"]["mean"] == pytest.approx(80 / 3)
    assert s["wall_s"] == pytest.approx(60.0)  # first start to last end
    assert s["throughput_audio_s_per_s"] == pytest.approx(360 / 60)
    assert s["bare_sequential_s"] == pytest.approx(54.0)
    assert s["throughput_ratio"] == pytest.approx(54 / 60)
    assert s["latency_ratio"] == pytest.approx((80 / 3) / 18)
    assert (s["rss_start_mb"], s["rss_end_mb"], s["rss_max_mb"]) == (3000.0, 3050.0, 3100.0)


def test_summary_without_a_baseline_has_no_ratio() -> None:
    s = report.summarize([_outcome(0, 1, files=("other.wav",))], [], {"files": {}})
    assert "throughput_ratio" not in s and s["rss_start_mb"] is None


def test_stats_percentiles() -> None:
    st = report.stats([float(x) for x in range(1, 101)])
    assert st["p50"] == pytest.approx(50.5) and st["p95"] == pytest.approx(95.05) and st["max"] == 100
    assert report.stats([])["mean"] is None


def test_markdown_has_the_reference_column_targets_and_plot(tmp_path: Path) -> None:
    outcomes = [_outcome(0, 20), _outcome(1, 22, kind="batch")]
    samples = [
        {"t": 0, "rss_mb": 3000.0, "queue_depth": 0, "model_waiting": 0},
        {"t": 10, "rss_mb": 3001.0, "queue_depth": 2, "model_waiting": 1},
    ]
    result = {
        "scenario": "A",
        "title": "A: test",
        "setup": "2 requests",
        "outcomes": outcomes,
        "samples": samples,
        "summary": report.summarize(outcomes, samples, None),
        "extra_rows": [("x", "y")],
        "targets": [
            {"target": "0 failed", "measured": "0", "met": True},
            {"target": "≥ 1.3×", "measured": "1.0×", "met": False},
        ],
        "notes": ["a note"],
        "events": [{"t": 5, "label": "kill -9"}],
    }
    png = report.plot(result, tmp_path / "A.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    run = {
        "date": "2026-11-29",
        "machine": "test CPU",
        "model": "m",
        "device": "cpu",
        "audio": "tests/data",
        "baseline": {
            "load_s": 1.0,
            "device": "cpu",
            "ncpu": 2,
            "files": {"a.wav": {"duration_s": 120.0, "generate_s": 18.0}},
        },
    }
    md = report.run_markdown(run, [result], {"A": "A.png"})
    assert "| latency mean ± sd | 21.0 s ± 1.4 s | 11.2 ± 1.4 s |" in md
    assert "| ≥ 1.3× | 1.0× | **no** |" in md and "| 0 failed | 0 | yes |" in md
    assert "| a.wav | 120.0 | 18.00 | 0.150 |" in md and "![A: latency" in md and "- a note" in md
    assert "| batch | 1 | 0 |" in md


def test_per_scenario_options() -> None:
    assert per_scenario("10", "--requests")["A"] == 10 and per_scenario("10", "--requests")["soak"] == 10
    assert per_scenario("A=10,C=3", "--requests") == {"A": 10, "C": 3}
    assert per_scenario(None, "--requests") == {}
    with pytest.raises(SystemExit):
        per_scenario("D=1", "--requests")
    assert split(10, 3) == [4, 3, 3] and sum(split(60, 6)) == 60


def test_merge_runs_into_one_report(tmp_path: Path) -> None:
    import json

    for name, command in (("A", "python -m bench.load A"), ("soak", "python -m bench.load soak")):
        outcomes = [_outcome(0, 20)]
        result = {
            "scenario": name,
            "title": f"{name}: test",
            "setup": "s",
            "outcomes": outcomes,
            "samples": [],
            "summary": report.summarize(outcomes, [], None),
            "targets": [],
            "notes": [],
            "extra_rows": [],
            "events": [],
            "run": {
                "date": "d",
                "machine": "m",
                "model": "x",
                "device": "cpu",
                "audio": "a",
                "baseline": None,
                "command": command,
            },
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(result), encoding="utf-8")
    out = tmp_path / "merged.md"
    assert (
        report.main(
            [
                str(tmp_path / "A.json"),
                str(tmp_path / "soak.json"),
                "--out",
                str(out),
                "--docs-images",
                str(tmp_path / "docs"),
            ]
        )
        == 0
    )
    md = out.read_text(encoding="utf-8")
    assert "### A: test" in md and "### soak: test" in md and "python -m bench.load soak" in md
    assert (tmp_path / "docs" / "bench-A.png").exists() and "](bench-soak.png)" in md
