"""Mandarin speech recognition on FunASR SeACo-Paraformer: the engine, independent of any UI."""

from .audio import SAMPLE_RATE, Audio, load_audio
from .engine import Engine, Sentence, Transcription, get_engine
from .errors import ASRError, InputError, ModelLoadError, ModelNotReadyError
from .settings import Settings, get_settings

__all__ = [
    "ASRError",
    "Audio",
    "Engine",
    "InputError",
    "ModelLoadError",
    "ModelNotReadyError",
    "SAMPLE_RATE",
    "Sentence",
    "Settings",
    "Transcription",
    "get_engine",
    "get_settings",
    "load_audio",
]
