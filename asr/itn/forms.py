"""The written form of one ITN token, from the grammar's tag, its output and the spoken words it came from.

WeTextProcessing writes for machines and for English readers: `2026/12/01`, `03:30:00p.m.`, `¥350`,
`15-6个`, `10min`, `38°`. Chinese minutes write `2026年12月1日`, `下午3:30`, `350元`, `15~16个`, `10分钟`,
`38度`. Each rule below keeps the grammar's number and writes it the way the spoken words say it:

- date: 年月日 from the parts that were spoken (`十二月一日` → `12月1日`; 号 is written 日).
- time: the spoken period of the day kept (上午, 下午, 晚上, ...), the hour as spoken (12-hour when a period is
  said), minutes always, seconds only when spoken: `下午三点半` → `下午3:30`, `十点三十分二十秒` → `10:30:20`.
- money and measures: the number, then the spoken unit (`三百五十元` → `350元`, `十分钟` → `10分钟`); `%` stays.
- ranges: `十五六个` → `15~16个`, `一百五六十人` → `150~160人` (the grammar writes `15-6个`).

`keep_spoken` names the tokens the grammar gets wrong and that stay as spoken: the adverb 十分 (`十分感谢`:
"very", not "10 points") when a Chinese character follows, quarter hours (`八点一刻`: the grammar writes
`8.1刻`), and idioms written with numerals (`三三两两`).
"""

from __future__ import annotations

import re

#: Idioms and set phrases the grammar would rewrite; they are words, not numbers.
IDIOMS = ("三三两两", "一五一十", "七七八八", "四四方方", "万万", "千千万万", "一一")

_NUMERAL_CHARS = "零〇一二三四五六七八九十百千万亿两幺点负到至"
_SPOKEN_NUMBER = re.compile(f"[{_NUMERAL_CHARS}]+")
_PERIODS = ("凌晨", "早上", "早晨", "上午", "中午", "下午", "傍晚", "晚上", "夜里", "半夜", "深夜", "午夜")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_RANGE = re.compile(r"^(\d+)-(\d+)")


def keep_spoken(spoken: str, next_char: str) -> bool:
    """Whether the grammar's rewrite of `spoken` (followed by `next_char`) is wrong and the spoken words stay."""
    if spoken in IDIOMS or any(idiom in spoken for idiom in IDIOMS if len(idiom) > 2):
        return True
    if spoken == "十分" and next_char and _is_han(next_char):
        return True  # 十分感谢, 十分重要: the adverb "very"
    if "刻" in spoken:
        return True  # 八点一刻: a quarter hour, which the grammar writes 8.1刻
    return False


def written_token(kind: str, spoken: str, output: str) -> str:
    """The written form of one token the grammar rewrote (its tag `kind`, its output `output`)."""
    try:
        if kind == "date":
            return _date(spoken, output)
        if kind == "time":
            return _time(spoken, output)
        if kind in ("money", "measure"):
            return _with_spoken_unit(spoken, output)
        return output
    except (ValueError, IndexError):
        return output


def _date(spoken: str, output: str) -> str:
    numbers = re.findall(r"\d+", output)
    parts = [unit for unit in ("年", "月", "日") if unit in spoken or (unit == "日" and "号" in spoken)]
    if len(numbers) != len(parts):
        return output
    written = ""
    for number, unit in zip(numbers, parts, strict=True):
        written += (number if unit == "年" else str(int(number))) + unit
    return written


def _time(spoken: str, output: str) -> str:
    match = re.match(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", output)
    if not match:
        return output
    hour, minute, second = int(match.group(1)), match.group(2), match.group(3)
    period = next((p for p in _PERIODS if spoken.startswith(p)), "")
    written = f"{period}{hour}:{minute}"
    if second is not None and "秒" in spoken:
        written += f":{second}"
    return written


def _with_spoken_unit(spoken: str, output: str) -> str:
    if output.endswith("%") or output.startswith("-"):
        return _range(output)
    number = _number_part(output)
    if not number:
        return output
    # The spoken unit: what follows the last spoken numeral (元, 美元, 分钟, 公里每小时, 号, 个 ...).
    last = None
    for match in _SPOKEN_NUMBER.finditer(spoken):
        last = match
    unit = spoken[last.end() :] if last else ""
    head = spoken[: last.start()] if last else ""
    if not unit or _SPOKEN_NUMBER.search(unit):
        return _range(output)
    if head and not head.startswith("百分之"):
        return _range(output)  # a unit before the number (the grammar's own business): its output as it is
    return number + unit


def _number_part(output: str) -> str:
    """The grammar's number with its range and magnitude words: `15-6个` → `15~16`, `¥1.5` → `1.5`,
    `3亿5000万元` → `3亿5000万`."""
    text = output.lstrip("¥$€£")
    match = re.match(r"[\d.~\-]+(?:[万亿][\d.]*)*[万亿]?", text)
    return _range(match.group(0)) if match else ""


def _range(text: str) -> str:
    """`15-6` → `15~16`, `150-60` → `150~160`, `20-30` → `20~30`: a spoken range (十五六, 一百五六十), which the
    grammar writes with a hyphen and the second number cut short."""
    match = _RANGE.match(text)
    if not match:
        return text
    first, second = match.groups()
    if len(second) < len(first):
        second = first[: len(first) - len(second)] + second
        if int(second) <= int(first):
            return text
    return f"{first}~{second}{text[match.end() :]}"


def _is_han(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"
