"""Errors the engine raises for input a user can fix. Each carries a message fit to show a person."""

from __future__ import annotations


class ASRError(Exception):
    """Base class: `str(error)` is a complete, human-readable explanation."""

    #: Short machine-readable code, stable across versions (used by the API and tests).
    code = "asr_error"


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


class HotwordError(InputError):
    code = "bad_hotwords"


class SpeakersUnavailableError(InputError):
    """Speakers were asked for, but this server runs without the speaker model (ENABLE_SPK=false)."""

    code = "speakers_unavailable"


class SpeakerCountError(InputError):
    code = "bad_speaker_count"


class DecodeError(InputError):
    """ffmpeg failed for a reason other than the ones above (corrupt beyond repair, timeout)."""

    code = "decode_failed"


class ModelNotReadyError(ASRError):
    """The model is still loading or failed to load (HTTP 503)."""

    code = "model_not_ready"


class ModelLoadError(ASRError):
    """A model could not be loaded; the message names the id or path and what to do."""

    code = "model_load_failed"
