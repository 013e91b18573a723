"""A verification's report: per file, overall and per hotword, as CSV, JSON and a self-contained HTML page.

The JSON's field names are stable (docs/verification.md lists them); `Report.from_dict` reads it back, so a
stored report can be rendered again (another language, another format) without re-running anything.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from messages import Lang

from .problems import Problem
from .scoring import EditCounts, HotwordCounts, TextScore, hotword_terms, normalise, score

FORMAT = "paraformer-verification"
VERSION = 1


@dataclass(frozen=True)
class FileRow:
    """One manifest item's outcome. `name` is what the manifest called the file (shown to users), `path` the
    file read (for the caller's own records; never written to a report). A row is scored when it has both
    hypotheses and no problem; `score_a`/`score_b` are then set."""

    name: str
    reference: str
    path: str = ""
    hypothesis_a: str | None = None
    hypothesis_b: str | None = None
    problems: tuple[Problem, ...] = ()
    score_a: TextScore | None = None
    score_b: TextScore | None = None

    @property
    def scored(self) -> bool:
        return self.score_a is not None and self.score_b is not None

    @classmethod
    def build(
        cls,
        name: str,
        reference: str,
        *,
        path: str = "",
        hypothesis_a: str | None = None,
        hypothesis_b: str | None = None,
        problems: Sequence[Problem] = (),
        hotwords: Sequence[str] = (),
    ) -> FileRow:
        """The row, scored against `hotwords` when it has both hypotheses and no problem."""
        scores: tuple[TextScore | None, TextScore | None] = (None, None)
        if not problems and hypothesis_a is not None and hypothesis_b is not None:
            scores = (score(reference, hypothesis_a, hotwords), score(reference, hypothesis_b, hotwords))
        return cls(name, reference, path, hypothesis_a, hypothesis_b, tuple(problems), *scores)


@dataclass(frozen=True)
class HotwordRow:
    """One hotword over the scored files: `word` as first given, `term` its normalised form."""

    word: str
    term: str
    a: HotwordCounts
    b: HotwordCounts

    @property
    def occurrences(self) -> int:
        return self.a.occurrences


@dataclass(frozen=True)
class Report:
    """Settings A and B compared on the same files. Overall figures and hotword counts cover the scored
    files only (both settings transcribed them), so A and B are compared on the same speech."""

    label_a: str
    label_b: str
    hotwords: tuple[str, ...]
    files: tuple[FileRow, ...]
    overall_a: EditCounts = field(default_factory=EditCounts)
    overall_b: EditCounts = field(default_factory=EditCounts)
    hotword_rows: tuple[HotwordRow, ...] = ()

    @classmethod
    def build(cls, label_a: str, label_b: str, hotwords: Sequence[str], files: Sequence[FileRow]) -> Report:
        """The report of `files` (already scored against `hotwords`): overall = summed edits / summed
        reference characters; per hotword, counts summed over the files."""
        scored = [row for row in files if row.scored]
        overall_a = sum((row.score_a.edits for row in scored if row.score_a), EditCounts())
        overall_b = sum((row.score_b.edits for row in scored if row.score_b), EditCounts())
        first_spelling: dict[str, str] = {}
        for word in hotwords:
            first_spelling.setdefault(normalise(word), word)
        rows = []
        for term in hotword_terms(hotwords):
            a = sum((row.score_a.hotwords[term] for row in scored if row.score_a), HotwordCounts())
            b = sum((row.score_b.hotwords[term] for row in scored if row.score_b), HotwordCounts())
            rows.append(HotwordRow(first_spelling[term], term, a, b))
        return cls(label_a, label_b, tuple(hotwords), tuple(files), overall_a, overall_b, tuple(rows))

    @property
    def scored_files(self) -> int:
        return sum(1 for row in self.files if row.scored)

    @property
    def failed_files(self) -> int:
        return len(self.files) - self.scored_files

    # ------------------------------------------------------------------------------------- JSON
    def to_dict(self, lang: Lang = "en") -> dict[str, Any]:
        """Everything, with stable field names (docs/verification.md); problem messages in `lang`."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "settings": {"a": self.label_a, "b": self.label_b},
            "hotwords": list(self.hotwords),
            "summary": {
                "files": len(self.files),
                "scored": self.scored_files,
                "failed": self.failed_files,
                "reference_chars": self.overall_a.reference_chars,
                "a": _edits_dict(self.overall_a),
                "b": _edits_dict(self.overall_b),
            },
            "files": [_file_dict(row, lang) for row in self.files],
            "hotword_stats": [
                {
                    "word": row.word,
                    "normalised": row.term,
                    "occurrences": row.occurrences,
                    "a": _hotword_dict(row.a),
                    "b": _hotword_dict(row.b),
                }
                for row in self.hotword_rows
            ],
        }

    def to_json(self, lang: Lang = "en") -> str:
        return json.dumps(self.to_dict(lang), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report read back from `to_dict`'s output (its hypotheses are scored again, the same way)."""
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} report of version {VERSION}")
        hotwords = list(data["hotwords"])
        files = [
            FileRow.build(
                item["file"],
                item["reference"],
                hypothesis_a=(item["a"] or {}).get("hypothesis"),
                hypothesis_b=(item["b"] or {}).get("hypothesis"),
                problems=[Problem.from_dict(p) for p in item["problems"]],
                hotwords=hotwords,
            )
            for item in data["files"]
        ]
        return cls.build(data["settings"]["a"], data["settings"]["b"], hotwords, files)

    # -------------------------------------------------------------------------------------- CSV
    def files_csv(self, lang: Lang = "en") -> str:
        """One line per file: the texts, each setting's CER and edits, and the problems (in `lang`)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(FILE_COLUMNS)
        for row in self.files:
            a = row.score_a.edits if row.score_a else None
            b = row.score_b.edits if row.score_b else None
            writer.writerow(
                [
                    row.name,
                    row.reference,
                    _text(row.hypothesis_a),
                    _text(row.hypothesis_b),
                    _number(a.cer if a else None),
                    _number(b.cer if b else None),
                    a.reference_chars if a else "",
                    *((a.substitutions, a.deletions, a.insertions) if a else ("", "", "")),
                    *((b.substitutions, b.deletions, b.insertions) if b else ("", "", "")),
                    "; ".join(_problem_text(p, lang) for p in row.problems),
                ]
            )
        return out.getvalue()

    def hotwords_csv(self) -> str:
        """One line per hotword: occurrences, and each setting's recalled count, recall and false alarms."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(HOTWORD_COLUMNS)
        for row in self.hotword_rows:
            writer.writerow(
                [
                    row.word,
                    row.occurrences,
                    row.a.recalled,
                    row.b.recalled,
                    _number(row.a.recall),
                    _number(row.b.recall),
                    row.a.false_alarms,
                    row.b.false_alarms,
                ]
            )
        return out.getvalue()

    # ------------------------------------------------------------------------------------- HTML
    def to_html(self, lang: Lang = "zh") -> str:
        """A readable page, self-contained (inline CSS and SVG, nothing fetched), labels in `lang`."""

        def t(key: str) -> str:
            return html.escape(LABELS[key][0 if lang == "zh" else 1])

        e = html.escape
        a, b = self.overall_a, self.overall_b
        summary = [
            (t("files"), str(len(self.files)), ""),
            (t("scored"), str(self.scored_files), ""),
            (t("failed"), str(self.failed_files), ""),
            (t("reference_chars"), str(a.reference_chars), ""),
            (t("cer"), _percent(a.cer), _percent(b.cer)),
            (t("substitutions"), str(a.substitutions), str(b.substitutions)),
            (t("deletions"), str(a.deletions), str(b.deletions)),
            (t("insertions"), str(a.insertions), str(b.insertions)),
        ]
        summary_rows = "".join(
            f"<tr><th>{k}</th><td>{va}</td><td>{vb}</td></tr>"
            if vb
            else f'<tr><th>{k}</th><td colspan="2">{va}</td></tr>'
            for k, va, vb in summary
        )
        hotword_rows = "".join(
            "<tr>"
            f"<td>{e(row.word)}</td><td>{row.occurrences}</td>"
            f"<td>{row.a.recalled} ({_percent(row.a.recall)})</td><td>{row.b.recalled} ({_percent(row.b.recall)})</td>"
            f"<td>{row.a.false_alarms}</td><td>{row.b.false_alarms}</td>"
            "</tr>"
            for row in self.hotword_rows
        )
        file_rows = "".join(
            f'<tr class="{"scored" if row.scored else "failed"}">'
            f"<td>{e(row.name)}</td><td>{e(row.reference)}</td>"
            f"<td>{e(_text(row.hypothesis_a))}</td><td>{e(_text(row.hypothesis_b))}</td>"
            f"<td>{_percent(row.score_a.edits.cer if row.score_a else None)}</td>"
            f"<td>{_percent(row.score_b.edits.cer if row.score_b else None)}</td>"
            f"<td>{e('; '.join(_problem_text(p, lang) for p in row.problems))}</td>"
            "</tr>"
            for row in self.files
        )
        html_lang = "zh-CN" if lang == "zh" else "en"
        return f"""<!DOCTYPE html>
<html lang="{html_lang}">
<head>
<meta charset="utf-8">
<title>{t("title")}</title>
<style>
body {{ font-family: system-ui, "PingFang SC", "Microsoft YaHei", sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
tr.failed td {{ color: #a33; }}
.chart {{ overflow-x: auto; }}
.note {{ color: #555; font-size: 0.9em; max-width: 60em; }}
</style>
</head>
<body>
<h1>{t("title")}</h1>
<p><b>A</b>: {e(self.label_a)} &nbsp; <b>B</b>: {e(self.label_b)}</p>
<h2>{t("summary")}</h2>
<table class="summary"><tr><th></th><th>A</th><th>B</th></tr>{summary_rows}</table>
<h2>{t("recall_chart")}</h2>
<div class="chart">{self._recall_svg(lang)}</div>
<table class="hotwords">
<tr><th>{t("hotword")}</th><th>{t("occurrences")}</th><th>{t("recalled")} A</th><th>{t("recalled")} B</th>
<th>{t("false_alarms")} A</th><th>{t("false_alarms")} B</th></tr>
{hotword_rows}
</table>
<h2>{t("per_file")}</h2>
<table class="files">
<tr><th>{t("file")}</th><th>{t("reference")}</th><th>{t("hypothesis")} A</th><th>{t("hypothesis")} B</th>
<th>{t("cer")} A</th><th>{t("cer")} B</th><th>{t("problems")}</th></tr>
{file_rows}
</table>
<p class="note">{t("note")}</p>
</body>
</html>
"""

    def _recall_svg(self, lang: Lang) -> str:
        """Recall per hotword, a pair of bars (A, B) each; a hotword with no occurrence gets empty bars."""
        e = html.escape
        label = LABELS["no_occurrences"][0 if lang == "zh" else 1]
        slot, bar, top, plot = 80, 28, 40, 160
        left = 44
        legend_b = left + 40 + 12 * min(len(self.label_a), 30)  # past label A (12 px a character at most)
        width = max(left + slot * max(len(self.hotword_rows), 1) + 16, legend_b + 40 + 12 * min(len(self.label_b), 30))
        height = top + plot + 48
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" font-size="12">',
            f'<rect class="legend a" x="{left}" y="8" width="12" height="12" fill="{COLOR_A}"/>',
            f'<text x="{left + 16}" y="18">A: {e(self.label_a)}</text>',
            f'<rect class="legend b" x="{legend_b}" y="8" width="12" height="12" fill="{COLOR_B}"/>',
            f'<text x="{legend_b + 16}" y="18">B: {e(self.label_b)}</text>',
        ]
        for tick in (0, 50, 100):
            y = top + plot - plot * tick / 100
            parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}%</text>')
        for index, row in enumerate(self.hotword_rows):
            x = left + slot * index + (slot - 2 * bar) / 2
            parts.append(f'<g class="pair" data-word="{e(row.word)}">')
            for offset, side, counts, color in ((0, "a", row.a, COLOR_A), (bar, "b", row.b, COLOR_B)):
                value = counts.recall
                h = plot * (value or 0.0)
                y = top + plot - h
                parts.append(
                    f'<rect class="bar {side}" x="{x + offset:.1f}" y="{y:.1f}" width="{bar - 2}" '
                    f'height="{h:.1f}" fill="{color}"><title>{side.upper()}: {_percent(value)}</title></rect>'
                )
                parts.append(
                    f'<text x="{x + offset + bar / 2 - 1:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                    f'font-size="9">{_percent(value, digits=0)}</text>'
                )
            caption = row.word if len(row.word) <= 6 else row.word[:5] + "…"
            parts.append(
                f'<text x="{x + bar:.1f}" y="{top + plot + 16}" text-anchor="middle">{e(caption)}'
                f"<title>{e(row.word)}{'' if row.occurrences else ' (' + e(label) + ')'}</title></text>"
            )
            parts.append(
                f'<text x="{x + bar:.1f}" y="{top + plot + 30}" text-anchor="middle" font-size="10">'
                f"n={row.occurrences}</text>"
            )
            parts.append("</g>")
        parts.append("</svg>")
        return "".join(parts)


COLOR_A, COLOR_B = "#9aa7b8", "#2f6fd0"

FILE_COLUMNS = (
    "file",
    "reference",
    "hypothesis_a",
    "hypothesis_b",
    "cer_a",
    "cer_b",
    "reference_chars",
    "substitutions_a",
    "deletions_a",
    "insertions_a",
    "substitutions_b",
    "deletions_b",
    "insertions_b",
    "problems",
)
HOTWORD_COLUMNS = (
    "word",
    "occurrences",
    "recalled_a",
    "recalled_b",
    "recall_a",
    "recall_b",
    "false_alarms_a",
    "false_alarms_b",
)

# key: (中文, English): the HTML page's wording.
LABELS: dict[str, tuple[str, str]] = {
    "title": ("热词验证报告", "Verification report"),
    "summary": ("总体", "Overall"),
    "files": ("文件数", "Files"),
    "scored": ("已评分", "Scored"),
    "failed": ("失败", "Failed"),
    "reference_chars": ("参考文本字数", "Reference characters"),
    "cer": ("字错率 (CER)", "CER"),
    "substitutions": ("替换", "Substitutions"),
    "deletions": ("删除", "Deletions"),
    "insertions": ("插入", "Insertions"),
    "recall_chart": ("各热词召回率（A 与 B）", "Recall per hotword (A and B)"),
    "hotword": ("热词", "Hotword"),
    "occurrences": ("参考中出现次数", "Occurrences in references"),
    "recalled": ("召回", "Recalled"),
    "false_alarms": ("误报", "False alarms"),
    "no_occurrences": ("参考文本中未出现", "not in any reference"),
    "per_file": ("各文件", "Per file"),
    "file": ("文件", "File"),
    "reference": ("参考文本", "Reference"),
    "hypothesis": ("识别结果", "Hypothesis"),
    "problems": ("问题", "Problems"),
    "stage_a": ("设置 A", "setting A"),
    "stage_b": ("设置 B", "setting B"),
    "stage_manifest": ("清单", "manifest"),
    "note": (
        "比较前两边文本都做了同样的规整：NFKC（全角转半角）、英文字母转小写、去掉标点、空格和不可见字符。"
        "字错率 = (替换 + 删除 + 插入) / 参考字数；总体字错率按所有已评分文件的编辑数之和除以参考字数之和。"
        "某次出现算作召回，是指识别结果在对齐到该处的位置上说出了这个热词；误报是识别结果中多于参考文本的出现次数。",
        "Both texts are normalised the same way before comparison: NFKC (full-width to half-width), letters "
        "lower-cased, punctuation, spaces and invisible characters removed. CER = (substitutions + deletions + "
        "insertions) / reference characters; the overall CER is the scored files' summed edits over their "
        "summed reference characters. An occurrence is recalled when the hypothesis says the hotword at the "
        "place aligned with it; false alarms are the hypothesis's occurrences beyond the reference's.",
    ),
}


def _edits_dict(edits: EditCounts) -> dict[str, Any]:
    return {
        "cer": edits.cer,
        "edits": edits.edits,
        "substitutions": edits.substitutions,
        "deletions": edits.deletions,
        "insertions": edits.insertions,
    }


def _hotword_dict(counts: HotwordCounts) -> dict[str, Any]:
    return {"recalled": counts.recalled, "recall": counts.recall, "false_alarms": counts.false_alarms}


def _file_dict(row: FileRow, lang: Lang) -> dict[str, Any]:
    def side(hypothesis: str | None, scored: TextScore | None) -> dict[str, Any] | None:
        if hypothesis is None:
            return None
        entry: dict[str, Any] = {"hypothesis": hypothesis}
        if scored is not None:
            entry.update(_edits_dict(scored.edits))
            entry["hotwords"] = {
                term: {"occurrences": counts.occurrences} | _hotword_dict(counts)
                for term, counts in scored.hotwords.items()
            }
        return entry

    return {
        "file": row.name,
        "reference": row.reference,
        "scored": row.scored,
        "reference_chars": row.score_a.edits.reference_chars if row.score_a else len(normalise(row.reference)),
        "a": side(row.hypothesis_a, row.score_a),
        "b": side(row.hypothesis_b, row.score_b),
        "problems": [p.to_dict(lang) for p in row.problems],
    }


def _problem_text(problem: Problem, lang: Lang) -> str:
    stage = LABELS[f"stage_{problem.stage}"][0 if lang == "zh" else 1]
    separator = "：" if lang == "zh" else ": "
    return f"{stage}{separator}{problem.message(lang)}"


def _text(value: str | None) -> str:
    return "" if value is None else value


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"
