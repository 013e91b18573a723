"""A verification as a durable job: each recording transcribed with settings A and B, the two texts stored per
file, the report built from what is stored.

A verification job is a job like the others (queue, lease, cancel, kill -9 and restart) whose `options` carry
`"kind": "verification"` and a `VerificationSpec`. A file's two hypotheses are written together once both are
made, so a job taken up again skips the files already verified; the report (`verification.Report`) is scored
from the stored texts whenever it is asked for (scoring takes milliseconds), never from a second run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verification import FileRow, ManifestItem, Problem, Report

KIND = "verification"


@dataclass
class VerificationSpec:
    """What a verification compares. `hotwords` are the words whose recall is counted (the lists under test);
    settings A and B are each a hotword string for the engine ("" for none) and an ITN choice."""

    hotwords: list[str]
    hotwords_a: str = ""
    hotwords_b: str = ""
    itn_a: bool = False
    itn_b: bool = False
    label_a: str = "A"
    label_b: str = "B"
    #: The reference transcript of each job file, by index.
    references: list[str] = field(default_factory=list)
    #: Manifest rows that could not be used: name, reference and the problem, shown in the report.
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def to_options(self) -> dict[str, Any]:
        return {"kind": KIND, "verification": asdict(self)}

    @classmethod
    def of(cls, options: dict[str, Any]) -> VerificationSpec | None:
        if options.get("kind") != KIND:
            return None
        return cls(**options["verification"])


def plan(
    items: Sequence[ManifestItem], words: Sequence[str], hotwords_b: str, *, itn_a: bool = False, itn_b: bool = False
) -> tuple[VerificationSpec, list[tuple[str, Path]]]:
    """The spec and the files (name, path) of a verification of `items`: setting A without hotwords, B with
    `hotwords_b` (the lists' words, `words` once resolved); the manifest's unusable rows go into the report."""
    usable = [item for item in items if item.problem is None and item.path is not None]
    spec = VerificationSpec(
        hotwords=list(words),
        hotwords_a="",
        hotwords_b=hotwords_b,
        itn_a=itn_a,
        itn_b=itn_b,
        label_a="no hotwords" + (", ITN" if itn_a and not itn_b else ""),
        label_b="hotwords" + (", ITN" if itn_b and not itn_a else ""),
        references=[item.reference for item in usable],
        rejected=[
            {"name": item.name, "reference": item.reference, "problem": item.problem.to_dict()}
            for item in items
            if item.problem is not None
        ],
    )
    return spec, [(item.name, item.path) for item in usable if item.path is not None]


def report_of(job: Any, spec: VerificationSpec, outcomes: list[dict[str, Any] | None]) -> Report:
    """The report of a (finished or running) verification job: `outcomes[i]` is file i's stored outcome
    (`{"a", "b"}` texts or `{"problem"}`), or None while it has none (still to run, cancelled, refused)."""
    rows = []
    for index, record in enumerate(job.files):
        outcome = outcomes[index] or {}
        problems: list[Problem] = []
        if "problem" in outcome:
            problems.append(Problem.from_dict(outcome["problem"]))
        elif "a" not in outcome:
            problems.append(Problem("b", "verification_not_run" if record.state != "failed" else "asr_error", {}))
        rows.append(
            FileRow.build(
                record.name,
                spec.references[index],
                hypothesis_a=outcome.get("a"),
                hypothesis_b=outcome.get("b"),
                problems=problems,
                hotwords=spec.hotwords,
            )
        )
    for item in spec.rejected:
        problem = Problem.from_dict(item["problem"])
        rows.append(FileRow.build(item["name"], item["reference"], problems=[problem], hotwords=spec.hotwords))
    return Report.build(spec.label_a, spec.label_b, spec.hotwords, rows)
