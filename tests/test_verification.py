"""Verification (verification/): manifests, CER and hotword recall against an independent computation (a
plain dynamic-programming Levenshtein with backtrace, written here), the report's CSV/JSON/HTML read back,
and an end-to-end run with the tiny engine whose numbers are recomputed from its stored hypotheses."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import DATA, ROOT, UTTERANCE
from verification import (
    FileRow,
    ManifestError,
    Problem,
    Report,
    VerificationStopped,
    hotword_terms,
    items_from_pairs,
    normalise,
    occurrences,
    parse_kaldi,
    parse_table,
    read_manifest,
    score,
    verify,
)

SHARED_AUDIO = ROOT.parent / "shared" / "audio"
HOTWORDS = ["达摩院", "语音识别"]


# ------------------------------------------------------------------ the independent computation
def dp_alignment(ref: str, hyp: str) -> list[tuple[int | None, int | None]]:
    """A minimum-edit alignment by the textbook dynamic programme, as (ref index, hyp index) pairs; None on
    one side is an insertion (ref None) or a deletion (hyp None)."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(
                d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]),
                d[i - 1][j] + 1,
                d[i][j - 1] + 1,
            )
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def dp_counts(ref: str, hyp: str) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of `dp_alignment`."""
    s = d = ins = 0
    for r, h in dp_alignment(ref, hyp):
        if r is None:
            ins += 1
        elif h is None:
            d += 1
        elif ref[r] != hyp[h]:
            s += 1
    return s, d, ins


def dp_recall(ref: str, hyp: str, word: str) -> tuple[int, int, int]:
    """(occurrences, recalled, false alarms) by docs/verification.md's definitions, on `dp_alignment`."""
    pairs = dp_alignment(ref, hyp)
    starts, k = [], ref.find(word)
    while k >= 0:
        starts.append(k)
        k = ref.find(word, k + len(word))
    recalled, used = 0, 0
    for start in starts:
        first = next(p for p, (r, _) in enumerate(pairs) if r == start)
        last = next(p for p, (r, _) in enumerate(pairs) if r == start + len(word) - 1)
        while first > 0 and pairs[first - 1][0] is None:  # insertions just before the word
            first -= 1
        while last + 1 < len(pairs) and pairs[last + 1][0] is None:  # and just after it
            last += 1
        positions = [h for _, h in pairs[first : last + 1] if h is not None]
        if not positions:
            continue
        low, high = max(positions[0], used), positions[-1] + 1
        found = hyp.find(word, low, high)
        if found >= 0:
            recalled += 1
            used = found + len(word)
    in_hyp = hyp.count(word)  # str.count: non-overlapping, left to right
    return len(starts), recalled, max(0, in_hyp - len(starts))


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("你好，世界！", "你好世界"),
        ("达摩 院", "达摩院"),
        ("ＡＩ模型２０２６", "ai模型2026"),  # full-width letters and digits
        ("“引号”（括号）《书名》、顿号。", "引号括号书名顿号"),
        ("Hello, World.", "helloworld"),
        ("50%的人\t说\n好\u200b", "50的人说好"),  # % is punctuation; tab, new line, zero-width space go
        ("C++ 与 $5", "c++与$5"),  # symbols stay
        ("\u3000全角空格\u3000", "全角空格"),
        ("", ""),
    ],
)
def test_normalisation(text: str, normalised: str) -> None:
    assert normalise(text) == normalised


def test_hotword_terms_are_normalised_distinct_and_non_empty() -> None:
    assert hotword_terms(["Paraformer", "科哥", "paraformer", "ＰＡＲＡＦＯＲＭＥＲ", "，", " 达摩 院 "]) == [
        "paraformer",
        "科哥",
        "达摩院",
    ]


# ------------------------------------------------------------------------ CER, known answers
# (reference, hypothesis, substitutions, deletions, insertions, N, {hotword: (occurrences, recalled, FA)})
CASES = [
    ("欢迎大家来体验达摩院", "欢迎大家来体验达魔院", 1, 0, 0, 10, {"达摩院": (1, 0, 0)}),  # substitution
    ("语音识别模型", "语音识模型", 0, 1, 0, 6, {"语音识别": (1, 0, 0)}),  # deletion inside the hotword
    ("达摩院推出模型", "达摩院已推出模型", 0, 0, 1, 7, {"达摩院": (1, 1, 0)}),  # insertion beside it
    ("欢迎体验达摩院", "欢迎体验达摩 院", 0, 0, 0, 7, {"达摩院": (1, 1, 0)}),  # hotword split in two words
    ("ＡＩ模型２０２６", "ai模型2026", 0, 0, 0, 8, {"AI": (1, 1, 0)}),  # full-width vs half-width
    ("你好，达摩院！", "你好达摩院", 0, 0, 0, 5, {"达摩院": (1, 1, 0)}),  # punctuation
    ("", "嗯达摩院", 0, 0, 4, 0, {"达摩院": (0, 0, 1)}),  # empty reference
    ("达摩院", "", 0, 3, 0, 3, {"达摩院": (1, 0, 0)}),  # empty hypothesis
    ("", "", 0, 0, 0, 0, {"达摩院": (0, 0, 0)}),
    ("今天天气很好", "今天达摩院天气很好", 0, 0, 3, 6, {"达摩院": (0, 0, 1)}),  # a false alarm
    ("达摩院和达摩院", "达摩院和达魔院", 1, 0, 0, 7, {"达摩院": (2, 1, 0)}),  # two occurrences, one recalled
    ("达摩院的模型", "达魔院的模型达摩院", 1, 0, 3, 6, {"达摩院": (1, 0, 0)}),  # said, but elsewhere
    ("达摩院", "达摩x院", 0, 0, 1, 3, {"达摩院": (1, 0, 0)}),  # a character inside: not said
    ("达摩院", "达达摩院", 0, 0, 1, 3, {"达摩院": (1, 1, 0)}),  # an alignment tie: still said
    ("达摩院达摩院", "达摩院", 0, 3, 0, 6, {"达摩院": (2, 1, 0)}),
    ("语音识别的语音", "语音识别的语音", 0, 0, 0, 7, {"语音": (2, 2, 0), "语音识别": (1, 1, 0)}),
]


@pytest.mark.parametrize(("ref", "hyp", "s", "d", "i", "n", "words"), CASES)
def test_cer_and_recall_known_answers(ref: str, hyp: str, s: int, d: int, i: int, n: int, words: dict) -> None:
    result = score(ref, hyp, list(words))
    assert (result.edits.substitutions, result.edits.deletions, result.edits.insertions) == (s, d, i)
    assert result.edits.reference_chars == n
    assert result.edits.cer == ((s + d + i) / n if n else None)
    # the independent computation agrees with the stated answer
    nref, nhyp = normalise(ref), normalise(hyp)
    assert dp_counts(nref, nhyp) == (s, d, i)
    for word, expected in words.items():
        counts = result.hotwords[normalise(word)]
        assert (counts.occurrences, counts.recalled, counts.false_alarms) == expected, word
        assert dp_recall(nref, nhyp, normalise(word)) == expected, word


def test_cer_matches_the_dynamic_programme_on_random_texts() -> None:
    rng = random.Random(27)
    for _ in range(400):
        ref = "".join(rng.choice("达摩院语音识别") for _ in range(rng.randint(0, 14)))
        hyp = "".join(rng.choice("达摩院语音识别") for _ in range(rng.randint(0, 14)))
        edits = score(ref, hyp).edits
        assert edits.edits == sum(dp_counts(ref, hyp)), (ref, hyp)
        assert edits.reference_chars == len(ref)
        counts = score(ref, hyp, ["达摩院"]).hotwords["达摩院"]
        # recall is bounded by what either side holds; false alarms by count
        assert counts.recalled <= min(counts.occurrences, len(occurrences(hyp, "达摩院")))
        assert counts.occurrences == len(occurrences(ref, "达摩院"))
        if ref == hyp:
            assert counts.recalled == counts.occurrences and edits.edits == 0


def test_overall_cer_is_summed_edits_over_summed_reference() -> None:
    rows = [
        FileRow.build(f"f{k}", ref, hypothesis_a=hyp, hypothesis_b=ref, hotwords=["达摩院"])
        for k, (ref, hyp, *_) in enumerate(CASES)
    ]
    report = Report.build("A", "B", ["达摩院"], rows)
    edits = sum(sum(dp_counts(normalise(r), normalise(h))) for r, h, *_ in CASES)
    chars = sum(len(normalise(r)) for r, *_ in CASES)
    assert report.overall_a.cer == edits / chars
    assert report.overall_b.cer == 0.0
    expected = [dp_recall(normalise(r), normalise(h), "达摩院") for r, h, *_ in CASES]
    (row,) = report.hotword_rows
    assert (row.a.occurrences, row.a.recalled, row.a.false_alarms) == tuple(map(sum, zip(*expected, strict=True)))
    assert row.b.recalled == row.b.occurrences == row.a.occurrences


# --------------------------------------------------------------------------------- manifests
@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    for name in ("one.wav", "two.wav", "sub/three.wav"):
        shutil.copy(UTTERANCE, folder / name)
    (folder / "a folder.wav").mkdir()
    return folder


def problems(items) -> dict[str, str | None]:
    return {item.name: item.problem.key if item.problem else None for item in items}


def test_tsv_without_header(audio_dir: Path) -> None:
    text = "one.wav\t欢迎大家\nsub/three.wav\t第三个\n\nmissing.wav\t没有\nthree\tcolumns\there\na folder.wav\tx\n"
    items = parse_table(text.encode(), base_dir=audio_dir)
    assert problems(items) == {
        "one.wav": None,
        "sub/three.wav": None,
        "missing.wav": "bad_manifest_row.not_found",
        "three": "bad_manifest_row.columns",
        "a folder.wav": "bad_manifest_row.not_a_file",
    }
    assert items[0].path == (audio_dir / "one.wav").resolve() and items[0].reference == "欢迎大家"
    assert [item.line for item in items] == [1, 2, 4, 5, 6]  # the blank line is skipped, lines still count
    assert items[3].problem.message("en") == (
        "expected 2 columns (with the audio path and the reference text); this row has 3"
    )
    assert "3 列" in items[3].problem.message("zh")


def test_tsv_with_bom_and_header_in_any_column_order(audio_dir: Path) -> None:
    text = '\ufeffkind\treference\tpath\nutt\t达摩院\tone.wav\nutt\t"引号"照旧\ttwo.wav\n'
    items = parse_table(text.encode("utf-8"), base_dir=audio_dir)
    assert [(i.name, i.reference) for i in items] == [("one.wav", "达摩院"), ("two.wav", '"引号"照旧')]
    assert all(i.usable for i in items)


def test_a_row_short_of_the_headers_columns(audio_dir: Path) -> None:
    text = "path\tkind\ttext\none.wav\tutt\t一\ntwo.wav\t二\n"
    items = parse_table(text, base_dir=audio_dir)
    assert problems(items) == {"one.wav": None, "two.wav": "bad_manifest_row.columns"}
    assert items[1].problem.params == {"expected": 3, "count": 2}
    assert "3 列" in items[1].problem.message("zh")


def test_csv_with_quoting(audio_dir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text('file,transcript\n"one.wav","你好，世界, ""quoted"""\ntwo.wav,第二\n', encoding="utf-8")
    items = read_manifest(manifest, base_dir=audio_dir)
    assert [(i.name, i.reference) for i in items] == [("one.wav", '你好，世界, "quoted"'), ("two.wav", "第二")]
    # a quoted field over two lines, Windows line ends: the next row still knows its line
    items = parse_table('one.wav,"第一行\r\n第二行"\r\ntwo.wav,二\r\n', base_dir=audio_dir)
    assert [(i.line, i.reference) for i in items] == [(2, "第一行\r\n第二行"), (3, "二")]
    # absolute paths are taken as they are; relative ones against the manifest's own folder by default
    (tmp_path / "here.csv").write_text(f"{audio_dir / 'one.wav'},绝对路径\n", encoding="utf-8")
    (item,) = read_manifest(tmp_path / "here.csv")
    assert item.usable and item.path == (audio_dir / "one.wav").resolve()


def test_kaldi_wav_scp_and_text(audio_dir: Path) -> None:
    wav_scp = (
        f"u1 {audio_dir / 'one.wav'}\n"
        "u2 two.wav\n"
        "u3 sub/three.wav\n"  # no text
        "u4 sox x.wav -t wav - |\n"  # a command pipe
        "u1 two.wav\n"  # a repeated id
    )
    text = "u1 欢迎 大家\nu2\nu5 只有文本\nu4 管道\n"
    items = parse_kaldi(wav_scp.encode(), text.encode("utf-8-sig"), base_dir=audio_dir)
    by_line = {(i.line, i.name): i for i in items}
    assert by_line[(1, str(audio_dir / "one.wav"))].reference == "欢迎 大家"
    assert by_line[(2, "two.wav")].usable and by_line[(2, "two.wav")].reference == ""
    assert [(i.name, i.problem.key, i.problem.params) for i in items if i.problem] == [
        ("two.wav", "bad_manifest_row.duplicate_id", {"utt_id": "u1", "first": 1}),
        ("sub/three.wav", "bad_manifest_row.no_text", {"utt_id": "u3"}),
        ("sox x.wav -t wav - |", "bad_manifest_row.command", {}),
        ("u5", "bad_manifest_row.no_audio", {"utt_id": "u5"}),
    ]
    assert "u3" in items[3].problem.message("zh") and "text" in items[3].problem.message("en")


def test_read_manifest_reads_a_kaldi_folder(audio_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "wav.scp").write_text(f"a {audio_dir / 'one.wav'}\n", encoding="utf-8")
    (folder / "text").write_text("a 达摩院\n", encoding="utf-8")
    assert [(i.name, i.reference) for i in read_manifest(folder)] == [(str(audio_dir / "one.wav"), "达摩院")]
    assert read_manifest(folder / "wav.scp")[0].usable


def test_allowed_dirs_refuse_outside_files_whether_or_not_they_exist(audio_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.wav"
    shutil.copy(UTTERANCE, outside)
    text = f"one.wav\t在里面\n{outside}\t在外面\n/nonexistent/x.wav\t不存在\n../outside.wav\t上一级\n"
    items = parse_table(text, base_dir=audio_dir, allowed_dirs=[audio_dir])
    assert [i.problem.key if i.problem else None for i in items] == [
        None,
        "bad_manifest_row.not_allowed",
        "bad_manifest_row.not_allowed",
        "bad_manifest_row.not_allowed",
    ]


def test_an_unreadable_file_fails_alone(audio_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads any file whatever its mode, so the refusal is made by the open call itself.
    real_open = Path.open

    def refusing_open(self: Path, *args, **kwargs):
        if self.name == "two.wav":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    items = parse_table("one.wav\t一\ntwo.wav\t二\n", base_dir=audio_dir)
    assert problems(items) == {"one.wav": None, "two.wav": "bad_manifest_row.unreadable"}


def test_a_manifest_with_no_usable_row_is_one_clear_error(audio_dir: Path) -> None:
    with pytest.raises(ManifestError) as refused:
        parse_table("gone.wav\t一\nalso_gone.wav\t二\n", base_dir=audio_dir)
    error = refused.value
    assert error.key == "bad_manifest.no_usable_row" and len(error.items) == 2
    assert error.message("en") == "none of the manifest's 2 rows can be used (line 1: audio file not found)"
    assert error.message("zh") == "清单的 2 行中没有一行可用（第 1 行：找不到音频文件）"
    assert str(error) == error.message("en")
    for data, key in [
        (b"", "bad_manifest.empty"),
        (b"path\ttext\n", "bad_manifest.empty"),  # a header alone
        (b"\n \n", "bad_manifest.empty"),
        ("一\t二\n".encode("gbk"), "bad_manifest.encoding"),
    ]:
        with pytest.raises(ManifestError) as refused:
            parse_table(data, base_dir=audio_dir)
        assert refused.value.key == key
    with pytest.raises(ManifestError):
        parse_kaldi(b"", b"", base_dir=audio_dir)


def test_items_from_pairs(audio_dir: Path) -> None:
    items = items_from_pairs(
        [(audio_dir / "one.wav", " 达摩院 "), (audio_dir / "nope.wav", "没有")],
        names=["我的录音.wav", "nope.wav"],
    )
    assert [(i.name, i.reference, i.problem) for i in items][0] == ("我的录音.wav", "达摩院", None)
    assert items[1].problem.key == "bad_manifest_row.not_found"
    with pytest.raises(ManifestError):
        items_from_pairs([])


# ---------------------------------------------------------------------------------- the report
def sample_report() -> Report:
    words = ["达摩院", "语音识别", "科哥"]
    rows = [
        FileRow.build(
            "a.wav",
            "欢迎体验达摩院推出的语音识别模型",
            hypothesis_a="欢迎体验达魔院推出的语音识别模型",
            hypothesis_b="欢迎体验达摩院推出的语音识别模型",
            hotwords=words,
        ),
        FileRow.build(
            "b.wav", "语音识别很好用", hypothesis_a="语音很好用", hypothesis_b="语音识别很好用啊", hotwords=words
        ),
        FileRow.build("c.wav", "坏文件", problems=[Problem("a", "not_audio")], hotwords=words),
        FileRow.build(
            "d.wav", "不在这里", problems=[Problem("manifest", "bad_manifest_row.not_found")], hotwords=words
        ),
    ]
    return Report.build("无热词", "热词库 <测试>", words, rows)


def test_report_json_round_trip_and_numbers() -> None:
    report = sample_report()
    data = json.loads(report.to_json("en"))
    assert data["format"] == "paraformer-verification" and data["version"] == 1
    assert data["settings"] == {"a": "无热词", "b": "热词库 <测试>"}
    assert data["summary"]["files"] == 4 and data["summary"]["scored"] == 2 and data["summary"]["failed"] == 2
    chars = len("欢迎体验达摩院推出的语音识别模型") + len("语音识别很好用")
    assert data["summary"]["reference_chars"] == chars
    assert data["summary"]["a"]["cer"] == (1 + 2) / chars and data["summary"]["b"]["cer"] == 1 / chars
    stats = {row["word"]: row for row in data["hotword_stats"]}
    assert stats["语音识别"]["occurrences"] == 2
    assert stats["语音识别"]["a"] == {"recalled": 1, "recall": 0.5, "false_alarms": 0}
    assert stats["语音识别"]["b"] == {"recalled": 2, "recall": 1.0, "false_alarms": 0}
    assert stats["科哥"]["occurrences"] == 0 and stats["科哥"]["a"]["recall"] is None
    failed = data["files"][2]
    assert failed["scored"] is False and failed["a"] is None
    assert failed["problems"] == [
        {"stage": "a", "code": "not_audio", "params": {}, "message": "not a readable audio or video file"}
    ]
    assert json.loads(report.to_json("zh"))["files"][3]["problems"][0]["message"] == "找不到音频文件"
    again = Report.from_dict(data)
    assert again.to_dict("en") == data
    with pytest.raises(ValueError):
        Report.from_dict({**data, "version": 99})


def test_report_csvs_read_back() -> None:
    report = sample_report()
    rows = list(csv.DictReader(io.StringIO(report.files_csv("en"))))
    assert [r["file"] for r in rows] == ["a.wav", "b.wav", "c.wav", "d.wav"]
    assert float(rows[1]["cer_a"]) == pytest.approx(2 / 7, abs=1e-6)
    assert (rows[1]["deletions_a"], rows[1]["insertions_b"], rows[1]["reference_chars"]) == ("2", "1", "7")
    assert rows[2]["cer_a"] == "" and rows[2]["problems"] == "setting A: not a readable audio or video file"
    zh = list(csv.DictReader(io.StringIO(report.files_csv("zh"))))
    assert zh[3]["problems"] == "清单：找不到音频文件"
    words = list(csv.DictReader(io.StringIO(report.hotwords_csv())))
    assert [w["word"] for w in words] == ["达摩院", "语音识别", "科哥"]
    assert words[0]["recalled_a"] == "0" and words[0]["recalled_b"] == "1" and float(words[0]["recall_b"]) == 1.0
    assert words[2]["recall_a"] == ""


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "g" and attributes.get("class") == "pair":
            self.pairs.append({"word": attributes["data-word"], "bars": []})
        elif tag == "rect" and (attributes.get("class") or "").startswith("bar "):
            self.pairs[-1]["bars"].append((attributes["class"], float(attributes["height"])))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_report_html_is_self_contained_with_one_bar_pair_per_hotword(lang: str) -> None:
    report = sample_report()
    page = report.to_html(lang)
    parser = PageParser()
    parser.feed(page)
    assert [p["word"] for p in parser.pairs] == ["达摩院", "语音识别", "科哥"]
    for pair, row in zip(parser.pairs, report.hotword_rows, strict=True):
        (class_a, height_a), (class_b, height_b) = pair["bars"]
        assert (class_a, class_b) == ("bar a", "bar b")
        assert height_a == pytest.approx(160 * (row.a.recall or 0), abs=0.1)
        assert height_b == pytest.approx(160 * (row.b.recall or 0), abs=0.1)
    # nothing is fetched: no scripts, stylesheets, images or frames, and no address but the SVG namespace
    assert not {tag for tag, _ in parser.tags} & {"script", "link", "img", "iframe", "object"}
    addresses = [v for _, attrs in parser.tags for k, v in attrs.items() if v and "://" in v]
    assert addresses == ["http://www.w3.org/2000/svg"]
    assert "热词库 &lt;测试&gt;" in page  # the user's text is escaped
    text = "".join(parser.text)
    if lang == "zh":
        assert "热词验证报告" in text and "字错率" in text and "召回" in text
    else:
        assert "Verification report" in text and "Recall per hotword" in text and "热词验证" not in text


# ------------------------------------------------------------------------------------ verify()
def recompute(data: dict) -> None:
    """The report's numbers, recomputed from its own stored texts with this file's dynamic programme."""
    words = [normalise(w) for w in data["hotwords"]]
    totals = {"a": [0, 0], "b": [0, 0]}
    per_word = {(w, side): [0, 0, 0] for w in words for side in "ab"}
    for row in data["files"]:
        if not row["scored"]:
            continue
        ref = normalise(row["reference"])
        for side in "ab":
            hyp = normalise(row[side]["hypothesis"])
            s, d, i = dp_counts(ref, hyp)
            assert row[side]["edits"] == s + d + i
            assert row[side]["cer"] == ((s + d + i) / len(ref) if ref else None)
            totals[side][0] += s + d + i
            totals[side][1] += len(ref)
            for w in words:
                found = dp_recall(ref, hyp, w)
                assert (
                    row[side]["hotwords"][w]["occurrences"],
                    row[side]["hotwords"][w]["recalled"],
                    row[side]["hotwords"][w]["false_alarms"],
                ) == found
                per_word[(w, side)] = [x + y for x, y in zip(per_word[(w, side)], found, strict=True)]
    for side in "ab":
        edits, chars = totals[side]
        assert data["summary"][side]["edits"] == edits
        assert data["summary"][side]["cer"] == (edits / chars if chars else None)
    for stat in data["hotword_stats"]:
        for side in "ab":
            occ, rec, fa = per_word[(stat["normalised"], side)]
            assert (stat["occurrences"], stat[side]["recalled"], stat[side]["false_alarms"]) == (occ, rec, fa)


@pytest.fixture
def tiny_items(tmp_path: Path):
    manifest = tmp_path / "m.tsv"
    rows = [(p, ref) for p, ref in csv_rows(DATA / "manifest.tsv") if p.startswith("utterances/") and ref][:3]
    rows += [("bad/not_audio.wav", "不是音频"), ("utterances/missing.wav", "不存在")]
    manifest.write_text("path\ttext\n" + "".join(f"{p}\t{r}\n" for p, r in rows), encoding="utf-8")
    return read_manifest(manifest, base_dir=DATA)


def csv_rows(manifest: Path) -> list[tuple[str, str]]:
    with manifest.open(encoding="utf-8") as f:
        return [(row["path"], row["reference"]) for row in csv.DictReader(f, delimiter="\t")]


def test_verify_end_to_end_with_the_tiny_engine(engine, tiny_items) -> None:
    calls: list[tuple[str, str]] = []

    def without(path: str) -> str:
        calls.append(("a", path))
        return engine.transcribe(path, hotwords=[]).text

    def with_list(path: str) -> str:
        calls.append(("b", path))
        return engine.transcribe(path, hotwords=HOTWORDS).text

    seen = []
    report = verify(
        tiny_items,
        without,
        with_list,
        HOTWORDS,
        label_a="无热词",
        label_b="有热词",
        on_progress=lambda row, done, total: seen.append((row.name, done, total)),
    )
    assert [s[1:] for s in seen] == [(k, 5) for k in range(1, 6)]
    assert len(calls) == 8  # 4 transcribable files (one is not audio) x 2 settings; the missing one is not tried
    data = json.loads(report.to_json())
    assert (data["summary"]["files"], data["summary"]["scored"], data["summary"]["failed"]) == (5, 3, 2)
    codes = {row["file"]: [(p["stage"], p["code"]) for p in row["problems"]] for row in data["files"]}
    assert codes["bad/not_audio.wav"] == [("a", "not_audio"), ("b", "not_audio")]
    assert codes["utterances/missing.wav"] == [("manifest", "bad_manifest_row.not_found")]
    assert all(row["a"]["hypothesis"] for row in data["files"] if row["scored"])  # the tiny model says something
    recompute(data)

    # resumed: the stored hypotheses are not transcribed again, and the report is the same
    stored = {row.path: (row.hypothesis_a, row.hypothesis_b) for row in report.files if row.scored}

    def refuse(path: str) -> str:
        if path in stored:
            raise AssertionError(f"{path} was transcribed again")
        return engine.transcribe(path, hotwords=[]).text

    again = verify(tiny_items, refuse, refuse, HOTWORDS, label_a="无热词", label_b="有热词", done=stored)
    assert again.to_dict() == report.to_dict()


def test_verify_stops_and_lets_fatal_errors_through(tiny_items) -> None:
    class Shutdown(Exception):
        pass

    checks = iter([False, False, True])
    done_rows = []
    with pytest.raises(VerificationStopped) as stopped:
        verify(
            tiny_items,
            lambda p: "一",
            lambda p: "二",
            HOTWORDS,
            should_stop=lambda: next(checks),
            on_progress=lambda row, *_: done_rows.append(row),
        )
    assert [r.name for r in stopped.value.rows] == [r.name for r in done_rows] == [tiny_items[0].name]

    def shut(path: str) -> str:
        raise Shutdown()

    with pytest.raises(Shutdown):
        verify(tiny_items, shut, shut, HOTWORDS, fatal_errors=(Shutdown,))
    report = verify(tiny_items, shut, lambda p: "x", HOTWORDS)  # anything else fails the file alone
    assert {p.key for row in report.files for p in row.problems if p.stage == "a"} == {"internal"}
    assert report.scored_files == 0


# ------------------------------------------------------------------------------- the shared set
@pytest.mark.skipif(not (SHARED_AUDIO / "manifest.tsv").exists(), reason="../shared/audio is not here")
def test_the_shared_manifest_and_hotwords(engine) -> None:
    items = read_manifest(SHARED_AUDIO / "manifest.tsv")
    assert len(items) == 75 and all(item.usable for item in items)
    with (SHARED_AUDIO / "hotwords.tsv").open(encoding="utf-8") as f:
        listed = {row["path"]: row["hotwords"].split(",") for row in csv.DictReader(f, delimiter="\t")}
    words = list(dict.fromkeys(w for ws in listed.values() for w in ws))
    chosen = [item for item in items if item.name in listed]
    assert len(chosen) == len(listed) == 10
    for item in chosen:  # every listed hotword is in its clip's reference
        for word in listed[item.name]:
            assert occurrences(normalise(item.reference), normalise(word)), (item.name, word)
    report = verify(
        chosen,
        lambda p: engine.transcribe(p, hotwords=[]).text,
        lambda p: engine.transcribe(p, hotwords=words).text,
        words,
    )
    data = report.to_dict()
    assert data["summary"]["scored"] == 10
    assert sum(row["occurrences"] for row in data["hotword_stats"]) >= len(words)
    recompute(data)


def test_the_benchmark_runs(tiny_models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import verification as bench

    code = bench.main(
        [
            "--manifest", str(DATA / "manifest.tsv"), "--files", "2", "--repeat", "1", "--hotwords", "达摩院,语音识别",
            "--model-dir", str(tiny_models.asr), "--punc-dir", str(tiny_models.punc), "--vad-dir", str(tiny_models.vad),
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index('{\n  "model"') : out.rindex("}") + 1])
    (written,) = tmp_path.glob("verification-*.json")
    assert json.loads(written.read_text(encoding="utf-8")) == result
    assert result["files"] == 2 and result["scored"] == 2 and result["rounds"] == 1
    assert result["ratio_wall"] > 0 and result["ratio_cpu"] > 0 and len(result["ratio_wall_per_round"]) == 1
    parts = [result[k]["wall_s"] for k in ("plain_pass", "pass_a", "pass_b", "scoring", "render")]
    assert all(t > 0 for t in parts[:3]) and all(t >= 0 for t in parts[3:])
    assert result["verification"]["wall_s"] == pytest.approx(sum(parts[1:]), abs=0.01)
