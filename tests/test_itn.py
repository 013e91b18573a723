"""ITN (asr.itn): the written forms, the words that stay spoken, hotwords kept, and word times after rewriting."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from asr.engine import Engine, Sentence, Word
from asr.itn import InverseNormalizer
from conftest import ROOT, UTTERANCE

pytest.importorskip("wetext", reason="ITN needs wetext (pip install -r requirements.txt)")

# (spoken, written): what a Chinese reader expects in minutes and QA reports.
TABLE = [
    # dates: 年月日, not the grammar's yyyy/mm/dd
    ("二零二六年十二月一日", "2026年12月1日"),
    ("一九四九年十月一日", "1949年10月1日"),
    ("十二月一日", "12月1日"),
    ("五月四号", "5月4日"),
    ("二零二六年十二月", "2026年12月"),
    ("二零零八年北京奥运会", "2008年北京奥运会"),
    ("二零二零年到二零二二年", "2020年到2022年"),
    ("会议定在三月八号举行", "会议定在3月8日举行"),
    # times of day: the period kept, minutes always, seconds when spoken
    ("二零二六年十二月一日下午三点半", "2026年12月1日下午3:30"),
    ("三点半", "3:30"),
    ("上午九点零五分", "上午9:05"),
    ("晚上十点十五分", "晚上10:15"),
    ("九点十分", "9:10"),
    ("十点三十分二十秒", "10:30:20"),
    ("中午十二点", "中午12点"),
    # money
    ("一百元", "100元"),
    ("三百五十元", "350元"),
    ("三千五百美元", "3500美元"),
    ("五十块钱", "50块钱"),
    ("一点五亿元", "1.5亿元"),
    ("一汽大众的车卖了三百五十万元", "一汽大众的车卖了350万元"),
    # percentages, fractions, decimals, negatives, large numbers
    ("百分之五十", "50%"),
    ("百分之三十五点五", "35.5%"),
    ("三分之一", "1/3"),
    ("三点一四", "3.14"),
    ("零点五", "0.5"),
    ("负三点五", "-3.5"),
    ("一万二千三百四十五", "12345"),
    ("三亿五千万", "3亿5000万"),
    # phone, ID and other digit strings
    ("一三八零零一三八零零零", "13800138000"),
    ("幺三八零零幺三八零零零", "13800138000"),
    ("打一一零报警", "打110报警"),
    ("我的身份证号是一一零一零五一九九零零一零一一二三四", "我的身份证号是110105199001011234"),
    ("零零七", "007"),
    # ranges
    ("十五六个", "15~16个"),
    ("三四个", "3~4个"),
    ("二三十个", "20~30个"),
    ("一百五六十人", "150~160人"),
    ("十五到二十度", "15~20度"),
    # ordinals, as the grammar does
    ("第二十三届", "第23届"),
    ("第一", "第一"),
    ("我在一百零一号房间", "我在101号房间"),
    # units: the spoken unit kept (not km/h, min, °)
    ("等了十分钟", "等了10分钟"),
    ("三十八度", "38度"),
    ("一百二十公里每小时", "120公里每小时"),
    ("他考了九十八分", "他考了98分"),
    # English mixed in
    ("iPhone十五", "iPhone15"),
    ("GPT四", "GPT四"),
    # words that only look like numbers
    ("十分感谢", "十分感谢"),
    ("十分重要", "十分重要"),
    ("一会儿", "一会儿"),
    ("一些", "一些"),
    ("三心二意", "三心二意"),
    ("一致", "一致"),
    ("一起", "一起"),
    ("听一听", "听一听"),
    ("万一", "万一"),
    ("统一", "统一"),
    ("三三两两的人", "三三两两的人"),
    ("八点一刻", "八点一刻"),
    ("一模一样", "一模一样"),
    ("七上八下", "七上八下"),
    ("万万没想到", "万万没想到"),
    ("我有一个苹果", "我有一个苹果"),
    ("一点也不", "一点也不"),
    # in sentences, with punctuation
    ("今天是二零二六年十二月一日，百分之五十的人来了。", "今天是2026年12月1日，50%的人来了。"),
    ("大家好，十分感谢各位，会议下午三点半开始。", "大家好，十分感谢各位，会议下午3:30开始。"),
]


@pytest.fixture(scope="module")
def itn() -> InverseNormalizer:
    normalizer = InverseNormalizer()
    normalizer.load()
    return normalizer


def test_the_table_has_what_the_issue_asks() -> None:
    assert len(TABLE) >= 60


@pytest.mark.parametrize(("spoken", "written"), TABLE)
def test_written_forms(itn: InverseNormalizer, spoken: str, written: str) -> None:
    assert itn.written(spoken) == written


def test_the_command_line_entry_point_gives_the_same_table() -> None:
    spoken = [s for s, _ in TABLE]
    by_args = subprocess.run(
        [sys.executable, "-m", "asr.itn", *spoken], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert by_args.returncode == 0, by_args.stderr
    assert by_args.stdout.splitlines() == [w for _, w in TABLE]
    by_stdin = subprocess.run(
        [sys.executable, "-m", "asr.itn", "--hotwords", "一汽大众,三点一四"],
        cwd=ROOT,
        input="三点一四\n三点五\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert by_stdin.returncode == 0, by_stdin.stderr
    assert by_stdin.stdout.splitlines() == ["三点一四", "3.5"]


def test_a_hotword_is_never_rewritten(itn: InverseNormalizer) -> None:
    assert itn.written("一汽大众的二零二六款", ["一汽大众"]) == "一汽大众的2026款"
    assert itn.written("一一零一号", []) == "1101号"
    assert itn.written("一一零一号", ["一一零"]) == "一一零一号"  # the token overlaps the hotword: all of it stays


def test_a_failing_library_keeps_the_spoken_text_and_logs_once(itn: InverseNormalizer, monkeypatch, caplog) -> None:
    broken = InverseNormalizer()
    broken.load()

    def fail(text: str) -> None:
        raise RuntimeError("FST read error")

    monkeypatch.setattr(broken._normalizer, "normalize_with_mapping", fail)
    with caplog.at_level("WARNING", logger="asr.itn"):
        assert broken.written("百分之五十") == "百分之五十"
        assert broken.written("三点一四") == "三点一四"
    assert sum("ITN failed" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------------------ times after ITN
def char_words(text: str, start: float = 0.0, step: float = 0.2) -> list[Word]:
    """A word per spoken character (punctuation has none), `step` seconds each: what the model gives."""
    words, t = [], start
    for char in text:
        if char in "，。？！、":
            continue
        words.append(Word(char, round(t, 3), round(t + step * 0.8, 3)))
        t += step
    return words


def expected_words(spoken: str, words: list[Word], kept: tuple[str, ...] = ()) -> list[tuple[str, float, float]]:
    """The oracle: WeTextProcessing's own spans of `spoken`, each written word timed from the first to the last
    spoken character of its span (every Chinese character is one word here), computed without asr.itn. Spans
    whose spoken text is in `kept` (a look-alike such as the adverb 十分) stay as their characters."""
    from wetext import Normalizer

    raw = Normalizer(lang="zh", operator="itn").normalize_with_mapping(spoken)
    placed = {}  # where each word starts in the spoken text: (its text, start, end)
    at = 0
    for word in words:
        at = spoken.index(word.text, at)
        placed[at] = (word.text, word.start, word.end)
        at += len(word.text)
    spans = {m.input_start: m.input_end for m in raw.mappings if m.kind == "replace" and m.input_text not in kept}
    out: list[tuple[str, float, float]] = []
    i = 0
    while i < len(spoken):
        if i in spans:
            times = [placed[c][1:] for c in range(i, spans[i]) if c in placed]
            out.append(("*", times[0][0], times[-1][1]))
            i = spans[i]
        elif i in placed:
            out.append(placed[i])
            i += len(placed[i][0])
        else:
            i += 1
    return out


@pytest.mark.parametrize(
    "spoken",
    [
        "今天是二零二六年十二月一日，百分之五十的人来了。",
        "会议下午三点半开始，预算三百五十万元，十分感谢。",
        "请拨打一三八零零一三八零零零，大约十五六个人。",
    ],
)
def test_word_times_after_itn_match_the_spoken_spans(itn: InverseNormalizer, spoken: str) -> None:
    words = char_words(spoken, start=1.0)
    sentence = Sentence(spoken, words[0].start, words[-1].end, speaker=2, words=words)
    written = itn.sentence(sentence)
    assert (written.start, written.end, written.speaker) == (sentence.start, sentence.end, 2)
    got = [(w.text, w.start, w.end) for w in written.words]
    want = expected_words(spoken, words, kept=("十分",))
    assert len(got) == len(want)
    for (text, start, end), (w_text, w_start, w_end) in zip(got, want, strict=True):
        assert (start, end) == (w_start, w_end), (text, w_text)
        assert w_text == "*" or text == w_text
    # the written words are the written text's, in order
    assert "".join(w.text for w in written.words) == "".join(c for c in written.text if c not in "，。？！、")


def test_the_engine_writes_its_output_and_keeps_the_spoken_text(tiny_models, engine: Engine) -> None:
    """Through the engine's output path: the tiny model's own words and times, given a spoken text with
    numbers (random weights never say one), then `Engine.written_form` as `transcribe(itn=True)` runs it."""
    spoken = engine.transcribe(UTTERANCE, itn=False)
    assert spoken.text_spoken is None
    model_words = spoken.words
    text = "二零二六年十二月一日下午三点半开会百分之五十的人到了一汽大众"
    assert len(model_words) >= 10
    words = [replace(w, text=c) for w, c in zip(model_words, text, strict=False)]
    text = text[: len(words)]
    given = replace(
        spoken,
        text=text,
        sentences=[Sentence(text, words[0].start, words[-1].end, words=words)],
        hotwords=["一汽大众"],
    )
    written = engine.written_form(given)
    assert written.text_spoken == text and written.text != text
    assert written.text == InverseNormalizer().written(text, ["一汽大众"])
    assert written.sentences[0].start == given.sentences[0].start and written.sentences[0].end == words[-1].end
    assert [w for w in written.words if w.text in ("2026年12月1日",)] == [
        Word("2026年12月1日", words[0].start, words[9].end)
    ] or len(words) < 10
    assert written.itn_time > 0


def test_transcribe_applies_the_setting_and_the_per_call_choice(engine: Engine) -> None:
    on = engine.transcribe(UTTERANCE, itn=True)
    off = engine.transcribe(UTTERANCE, itn=False)
    assert on.text_spoken == off.text and off.text_spoken is None
    assert on.text == engine.itn.written(off.text, on.hotwords)
    default = engine.transcribe(UTTERANCE)
    assert (default.text_spoken is not None) == engine.config.itn


SHARED_LONG = ROOT.parent / "shared" / "audio" / "long" / "long_2min.wav"


def test_itn_timing_holds_on_a_long_file(engine: Engine, long_wav) -> None:
    """A long file through the tiny model (the shared 2-minute file where there is one, else the clips joined):
    each sentence is given numerals in place of its first words, keeping the model's own times, and every
    written word's times must equal the oracle's span."""
    source = SHARED_LONG if SHARED_LONG.exists() else long_wav
    result = engine.transcribe(source, itn=False)
    numerals = "十二月一日"
    checked = 0
    for s in result.sentences:
        if len(s.words) <= len(numerals) or not all(len(w.text) == 1 for w in s.words[: len(numerals) + 1]):
            continue
        words = [replace(w, text=numerals[i]) if i < len(numerals) else w for i, w in enumerate(s.words)]
        text = "".join(w.text for w in words)
        written = engine.itn.sentence(Sentence(text, s.start, s.end, words=words))
        got = [(w.start, w.end) for w in written.words]
        assert got == [(start, end) for _, start, end in expected_words(text, words)]
        if written.text.startswith("12月1日") and text[len(numerals)] not in "号日点":
            assert written.words[0] == Word("12月1日", s.words[0].start, s.words[len(numerals) - 1].end)
            checked += 1
    assert checked >= 3, f"only {checked} sentences of {len(result.sentences)} could be checked"


# ------------------------------------------------------------------------------------ through the API
@pytest.fixture(scope="module")
def numerals_api(tiny_models, tmp_path_factory):
    """The API over an engine whose model says numerals only (testmodels.build_tiny_numerals)."""
    from fastapi.testclient import TestClient

    from app import create_app
    from conftest import make_settings

    settings = make_settings(tiny_models, tmp_path_factory.mktemp("itn-api"), model_dir=tiny_models.numerals, itn=True)
    numerals = Engine(settings.engine_config())
    numerals.load()
    app = create_app(settings, numerals, load=False)
    with TestClient(app) as client:
        yield client


def post(client, **data):
    with open(LONG_CLIP, "rb") as f:
        return client.post("/v1/audio/transcriptions", files={"file": ("clip.wav", f, "audio/wav")}, data=data)


LONG_CLIP = ROOT / "tests" / "data" / "utterances" / "funasr_long.wav"


def test_the_api_writes_numbers_unless_asked_not_to(numerals_api) -> None:
    on = post(numerals_api, response_format="verbose_json")
    words = post(numerals_api, response_format="verbose_json", timestamp_granularities="word").json()["words"]
    off = post(numerals_api, response_format="verbose_json", itn="false")
    assert on.status_code == off.status_code == 200, (on.text, off.text)
    on, off = on.json(), off.json()
    assert "text_spoken" not in off and not any(c.isdigit() for c in off["text"])
    assert on["text_spoken"] == off["text"] and any(c.isdigit() for c in on["text"])
    assert on["text"] == InverseNormalizer().written(off["text"])
    # the written words are the written sentences' (the whole text may differ where the model said <unk>)
    segments = "".join(seg["text"] for seg in on["segments"])
    assert " ".join(w["word"] for w in words).replace(" ", "") == "".join(
        c for c in segments if c.isalnum() and c != " "
    )
    assert [s["start"] for s in on["segments"]] == [s["start"] for s in off["segments"]]
    assert post(numerals_api, itn="maybe").status_code == 400


def test_streamed_deltas_are_written_and_add_up_to_the_final_text(numerals_api) -> None:
    import json

    response = post(numerals_api, stream="true")
    assert response.status_code == 200
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    done = events[-1]
    assert done["type"] == "transcript.text.done" and "".join(deltas) == done["text"]
    assert any(c.isdigit() for c in done["text"])
    spoken = post(numerals_api, stream="true", itn="false").text
    assert not any(
        c.isdigit()
        for line in spoken.splitlines()
        if line.startswith("data: {")
        for c in json.loads(line[6:]).get("delta", "")
    )


def test_a_job_writes_numbers_unless_asked_not_to(numerals_api) -> None:
    from test_jobs import submit, wait_finished

    texts = {}
    for itn in ("true", "false"):
        job = submit(numerals_api, [LONG_CLIP], itn=itn, response_format="verbose_json").json()
        done = wait_finished(lambda i: numerals_api.get(f"/v1/jobs/{i}").json(), job["id"])
        assert done["status"] == "done", done
        result = numerals_api.get(f"/v1/jobs/{job['id']}/result", params={"response_format": "verbose_json"})
        texts[itn] = result.json()
    assert texts["true"]["text_spoken"] == texts["false"]["text"] and "text_spoken" not in texts["false"]
    assert texts["true"]["text"] == InverseNormalizer().written(texts["false"]["text"])
    assert any(c.isdigit() for c in texts["true"]["text"])


def test_grammars_that_cannot_load_leave_the_engine_serving_spoken_text(tiny_settings, monkeypatch, caplog) -> None:
    import asr.itn

    def broken_load(self) -> None:
        raise OSError("wetext's FSTs are missing")

    monkeypatch.setattr(asr.itn.InverseNormalizer, "load", broken_load)
    engine = Engine(replace(tiny_settings.engine_config(), itn=True))
    with caplog.at_level("WARNING"):
        engine.load()
        result = engine.transcribe(UTTERANCE)
    assert engine.state == "ready" and result.text and result.text_spoken == result.text
    assert any("ITN grammars could not load" in r.getMessage() for r in caplog.records)
