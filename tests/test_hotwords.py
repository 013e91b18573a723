import pytest

from asr.errors import HotwordError
from asr.hotwords import parse_hotwords, resolve_hotwords, to_model_argument

LIMITS = dict(max_count=5, max_chars=6)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("科哥,Paraformer", ["科哥", "Paraformer"]),
        (" 科哥 ，达摩院、语音识别\n热词 ", ["科哥", "达摩院", "语音识别", "热词"]),
        ("a;b；c\r\nd", ["a", "b", "c", "d"]),
        ("科哥,科哥,paraformer,Paraformer", ["科哥", "paraformer"]),
        ("", []),
        (" , ,\n", []),
        (["科哥", "达摩院, 科哥"], ["科哥", "达摩院"]),
        (None, []),
    ],
)
def test_parse_splits_trims_and_deduplicates(raw, expected):
    assert parse_hotwords(raw, max_count=100, max_chars=20) == expected


def test_too_many_hotwords_is_a_clear_error():
    with pytest.raises(HotwordError, match="too many hotwords: 6 given; the limit is 5"):
        parse_hotwords("一,二,三,四,五,六", **LIMITS)


def test_too_long_hotword_is_a_clear_error():
    with pytest.raises(HotwordError, match="'七个字的热词呀' has 7 characters; the limit is 6"):
        parse_hotwords("科哥,七个字的热词呀", **LIMITS)


def test_request_list_replaces_default_and_none_uses_it():
    default = ["科哥", "达摩院"]
    assert resolve_hotwords(None, default, **LIMITS) == default
    assert resolve_hotwords("语音", default, **LIMITS) == ["语音"]
    assert resolve_hotwords("", default, **LIMITS) == []


def test_model_argument_is_never_read_as_url_or_file():
    # FunASR downloads a hotword string starting with "http" and reads one ending in ".txt".
    arg = to_model_argument(["https", "notes.txt"])
    assert not arg.startswith("http") and not arg.endswith(".txt")
    assert arg.split() == ["https", "notes.txt"]
    assert to_model_argument([]) is None
