"""Hotword lists: parsing, limits, and the default list.

A request's hotwords *replace* the default list (the UI pre-fills its box with the default list,
so a user sees and edits exactly what is sent). `None` means "use the default"; an empty string
means "no hotwords".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import HotwordError

# Commas (ASCII and full-width), the enumeration comma, semicolons, newlines and spaces all
# separate hotwords. Spaces separate too because the model takes one word per space-separated item.
_SEPARATORS = re.compile(r"[,，、;；\s]+")


def parse_hotwords(value: str | Sequence[str] | None, *, max_count: int, max_chars: int) -> list[str]:
    """Split, trim and de-duplicate hotwords (first spelling wins, case-insensitive), then check limits."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    words: list[str] = []
    seen: set[str] = set()
    for item in items:
        for word in _SEPARATORS.split(str(item)):
            key = word.casefold()
            if word and key not in seen:
                seen.add(key)
                words.append(word)
    too_long = [w for w in words if len(w) > max_chars]
    if too_long:
        raise HotwordError(reason="too_long", word=too_long[0][:40], chars=len(too_long[0]), limit=max_chars)
    if len(words) > max_count:
        raise HotwordError(reason="too_many", count=len(words), limit=max_count)
    return words


def resolve_hotwords(
    request: str | Sequence[str] | None, default: Sequence[str], *, max_count: int, max_chars: int
) -> list[str]:
    """The hotwords for one request: its own list when given, else the default list."""
    if request is None:
        return list(default)
    return parse_hotwords(request, max_count=max_count, max_chars=max_chars)


def to_model_argument(words: Sequence[str]) -> str | None:
    """Format hotwords for FunASR's `hotword=` argument.

    FunASR treats a hotword string that starts with "http" as a URL to download and one that ends
    with ".txt" as a file to read; padding with spaces keeps it a plain word list whatever the words.
    """
    if not words:
        return None
    return " " + " ".join(words) + " "
