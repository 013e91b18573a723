"""Errors the engine raises for input a user can fix, and for a model that is not ready.

Each error kind has a stable `code` (the API's `error.code`, the metrics label); its wording lives in the
service's message catalogue (`messages`), keyed by the code. The UI and the API pick the language;
`str(error)` is the English message. Server paths and ffmpeg's output go in `detail`, for the log only.
"""

from __future__ import annotations

from pathlib import PurePath

from messages import MESSAGES, Lang, message, preferred_language

# Re-exported: callers that render a catalogue key.
__all__ = ["MESSAGES", "Lang", "message", "preferred_language"]


class ASRError(Exception):
    """Base class: `message(lang)` is a complete, human-readable explanation; `str(error)` is the English one."""

    #: Short machine-readable code, stable across versions (used by the API, the metrics and tests).
    code = "asr_error"
    #: The catalogue key when it is not the code.
    message_key: str | None = None

    def __init__(self, name: str = "", *, reason: str = "", detail: str = "", **params: object):
        # Only the last part of a name is shown: a caller may pass a path, which must not reach the user.
        self.name = PurePath(str(name)).name if name else ""
        base = self.message_key or self.code
        self.key = f"{base}.{reason}" if reason else base
        self.params = params
        #: What the log gets besides the message (ffmpeg's output, a server path); never shown to users.
        self.detail = detail
        super().__init__(self.message("en"))

    def message(self, lang: Lang = "en") -> str:
        text = message(self.key, lang, **self.params)
        if not self.name:
            return text
        return f"{self.name}：{text}" if lang == "zh" else f"{self.name}: {text}"


class InputError(ASRError):
    """The request's input cannot be transcribed (the caller's fault; HTTP 400)."""

    code = "bad_input"


class EmptyAudioError(InputError):
    code = "empty"


class NotAudioError(InputError):
    code = "not_audio"


class NoAudioStreamError(InputError):
    code = "no_audio_stream"


class AudioTooShortError(InputError):
    code = "too_short"


class AudioTooLongError(InputError):
    code = "too_long"


class FileTooLargeError(InputError):
    code = "too_large"

    @classmethod
    def of(cls, name: str, size: int, limit: int) -> FileTooLargeError:
        """For `size` bytes over `limit` bytes (MB = 10^6 bytes, one decimal where it matters)."""

        def mb(n: int) -> str:
            return f"{n / 1e6:.1f}".removesuffix(".0")

        return cls(name, size_mb=mb(size), limit_mb=mb(limit))


class HotwordError(InputError):
    code = "bad_hotwords"


class SpeakersUnavailableError(InputError):
    """Speakers were asked for, but this server runs without the speaker model (ENABLE_SPK=false)."""

    code = "speakers_unavailable"


class UnknownModelError(InputError):
    """The request named a model this server does not run (`model=`)."""

    code = "unknown_model"


class HotwordsUnsupportedError(InputError):
    """Hotwords were sent to a model that cannot use them (SenseVoice has no hotword biasing)."""

    code = "hotwords_unsupported"


class LanguageUnsupportedError(InputError):
    """`language=` names a language the chosen model does not recognise."""

    code = "unsupported_language"


class SpeakerCountError(InputError):
    code = "bad_speaker_count"


class DecodeError(InputError):
    """ffmpeg failed for a reason other than the ones above (corrupt beyond repair, timeout)."""

    code = "decode_failed"


class ModelNotReadyError(ASRError):
    """The model is still loading or failed to load (HTTP 503)."""

    code = "model_not_ready"


class ModelLoadError(ASRError):
    """A model could not be loaded; `str(error)` names the id or folder and what to do.

    That text is for the operator (it names server folders): it goes to the log and /health, while
    `message()` gives a user only the catalogue's "failed to load".
    """

    code = "model_load_failed"
    message_key = "model_not_ready.failed"

    def __init__(self, operator_message: str):
        super().__init__()
        self.detail = operator_message
        self.args = (operator_message,)

    def __str__(self) -> str:
        return self.detail


class ClientGoneError(ASRError):
    """Raised by a caller's stop check (`asr.progress`) or segment listener once its client has gone away: the
    transcription stops there and frees the model."""

    code = "client_gone"
