"""Why one file of a verification has no score: a catalogue key, its parameters and where it happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from messages import MESSAGES, Lang, message

#: Where a file's problem arose: its manifest row, or the transcription with setting A or B.
Stage = Literal["manifest", "a", "b"]


@dataclass(frozen=True)
class Problem:
    """One reason a file was not scored. `key` is a `messages` catalogue key; `params` fill its placeholders."""

    stage: Stage
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def message(self, lang: Lang = "en") -> str:
        return message(self.key, lang, **self.params)

    def to_dict(self, lang: Lang = "en") -> dict[str, Any]:
        return {"stage": self.stage, "code": self.key, "params": dict(self.params), "message": self.message(lang)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(data["stage"], data["code"], dict(data.get("params") or {}))

    @classmethod
    def of_exception(cls, stage: Stage, error: BaseException) -> Problem:
        """The problem an exception stands for: its own catalogue key when it carries one (the engine's
        `ASRError` does, as `key` and `params`), else "internal" (the exception itself is for the log)."""
        key = getattr(error, "key", None)
        params = getattr(error, "params", None)
        if isinstance(key, str) and key in MESSAGES:
            return cls(stage, key, dict(params) if isinstance(params, dict) else {})
        return cls(stage, "internal")
