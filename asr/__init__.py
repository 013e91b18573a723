"""Mandarin speech recognition on FunASR SeACo-Paraformer: the engine, independent of any UI."""

from .audio import SAMPLE_RATE, Audio, load_audio
from .config import EngineConfig
from .engine import Engine, Sentence, Transcription, get_engine
from .errors import ASRError, InputError, ModelLoadError, ModelNotReadyError

__all__ = [
    "ASRError",
    "Audio",
    "EngineConfig",
    "Engine",
    "InputError",
    "ModelLoadError",
    "ModelNotReadyError",
    "SAMPLE_RATE",
    "Sentence",
    "Transcription",
    "get_engine",
    "load_audio",
]
