"""What the engine needs to know: its models, device, backend and input limits, and nothing of the service.

The service builds one from its settings (`config.Settings.engine_config()`); scripts and tests can build one
directly. Paths are used as given (the service resolves relative ones against the project folder).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

DEFAULT_MODEL = "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
DEFAULT_SENSEVOICE_MODEL = "iic/SenseVoiceSmall"
DEFAULT_ONLINE_MODEL = "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online"


@dataclass(frozen=True)
class EngineConfig:
    """The engine's configuration; the meaning of each field is documented on the service setting of the same name
    (`.env.example`)."""

    # models: a local folder wins over the hub id
    model: str = DEFAULT_MODEL
    model_dir: Path | None = None
    vad_model: str = "fsmn-vad"
    vad_model_dir: Path | None = None
    punc_model: str = "ct-punc"
    punc_model_dir: Path | None = None
    spk_model: str = "iic/speech_campplus_sv_zh-cn_16k-common"
    spk_model_dir: Path | None = None
    enable_spk: bool = False
    # SenseVoice-Small, the second recognizer (asr.sensevoice): loaded only when enabled
    enable_sensevoice: bool = False
    sensevoice_model: str = DEFAULT_SENSEVOICE_MODEL
    sensevoice_model_dir: Path | None = None
    enable_vad: bool = True
    enable_punc: bool = True
    # where and how the models run
    device: str = "auto"
    ncpu: int = 0
    heap_trim: bool = True
    heap_trim_quiet_s: float = 3.0
    batch_size_s: int = 300
    batch_max_requests: int = 0
    engine_backend: Literal["auto", "torch", "onnx"] = "auto"
    onnx_quantize: bool = False
    onnx_model_dir: Path | None = None
    # the streaming Paraformer (online partials)
    online_model: str = DEFAULT_ONLINE_MODEL
    online_model_dir: Path | None = None
    online_quantize: bool = True
    online_backend: Literal["auto", "torch", "onnx"] = "auto"
    online_max_batch: int = 8
    online_workers: int = 0
    # written form (asr.itn): ITN on by default for every transcription; a call may turn it off (or on)
    itn: bool = True
    # hotwords and input limits
    default_hotwords: str = ""
    max_hotwords: int = 100
    max_hotword_chars: int = 20
    max_upload_mb: float = 200.0
    max_audio_seconds: float = 3600.0
    min_audio_seconds: float = 0.1
    decode_timeout_s: float = 300.0
    #: Where decoding may write temporary files (ffmpeg's input for streams it cannot read from a pipe).
    temp_dir: Path | None = None

    @classmethod
    def from_object(cls, source: Any) -> EngineConfig:
        """The fields of `source` (any object with attributes of these names, such as the service's settings)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)})

    def with_changes(self, **changes: Any) -> EngineConfig:
        return replace(self, **changes)
