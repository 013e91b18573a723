"""The service's one settings object: environment variables, then `.env`, then these defaults."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from asr.config import DEFAULT_MODEL, DEFAULT_ONLINE_MODEL, DEFAULT_SENSEVOICE_MODEL, EngineConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every key can be set as an environment variable of the same name (upper case) or in `.env`."""

    model_config = SettingsConfigDict(
        env_file=os.environ.get("ENV_FILE", str(PROJECT_ROOT / ".env")),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- server -----------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the app listens on.")
    port: int = Field(7860, ge=1, le=65535, description="Port the app listens on.")
    queue_max_size: int = Field(20, ge=1, description="Jobs allowed to wait in the Gradio queue; more get HTTP 503.")
    model_concurrency: int = Field(
        0,
        ge=0,
        description="UI jobs processed at once; 0 = auto: 2, or "
        "BATCH_MAX_REQUESTS when that is higher (only requests in the engine together "
        "can share a model call).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")
    log_dir: Path = Field(PROJECT_ROOT / "logs", description="run.sh and ops scripts write logs here.")
    temp_dir: Path = Field(PROJECT_ROOT / "tmp" / "uploads", description="Upload temp files (cleaned by ops).")
    output_dir: Path = Field(
        PROJECT_ROOT / "outputs",
        description="Results of the web UI (single files and batches, "
        "each file as it finishes), one folder per result; served only to its owner.",
    )
    output_retention_h: float = Field(
        168.0,
        ge=0,
        description="ops/cleanup.py removes results older than this many "
        "hours (the UI tells users); 0 = keep them until removed by hand.",
    )

    # --- models -----------------------------------------------------------------------------
    model: str = Field(DEFAULT_MODEL, description="ModelScope id of the ASR model, used when model_dir is empty.")
    model_dir: Path | None = Field(None, description="Local SeACo-Paraformer folder; overrides `model`.")
    vad_model: str = Field("fsmn-vad", description="VAD model id (FunASR alias or ModelScope id).")
    vad_model_dir: Path | None = Field(None, description="Local FSMN-VAD folder; overrides `vad_model`.")
    punc_model: str = Field("ct-punc", description="Punctuation model id (FunASR alias or ModelScope id).")
    punc_model_dir: Path | None = Field(None, description="Local CT-punctuation folder; overrides `punc_model`.")
    spk_model: str = Field(
        "iic/speech_campplus_sv_zh-cn_16k-common",
        description="CAM++ speaker model id (ModelScope), used when spk_model_dir is empty and enable_spk is on.",
    )
    spk_model_dir: Path | None = Field(None, description="Local CAM++ speaker model folder; overrides `spk_model`.")
    enable_spk: bool = Field(
        False,
        description="Load the speaker model so requests may ask who spoke each sentence "
        "(diarize=true / the speakers checkbox); off: such requests get a clear error.",
    )
    enable_sensevoice: bool = Field(
        False,
        description="Load SenseVoice-Small as a second model (zh, yue, en, ja, ko, with language, emotion and "
        "audio events) that requests choose with model=sensevoice; off: only SeACo-Paraformer runs.",
    )
    sensevoice_model: str = Field(
        DEFAULT_SENSEVOICE_MODEL,
        description="SenseVoice-Small model id (ModelScope), used when sensevoice_model_dir is empty and "
        "enable_sensevoice is on.",
    )
    sensevoice_model_dir: Path | None = Field(
        None, description="Local SenseVoice-Small folder; overrides `sensevoice_model`."
    )
    enable_vad: bool = Field(True, description="Split long audio at pauses (needed for files over ~1 minute).")
    enable_punc: bool = Field(True, description="Add punctuation to the text.")
    device: str = Field(
        "auto",
        description="auto (the first GPU torch can use, else the CPU, with a warning when a "
        "GPU is present but unusable), cpu, or cuda / cuda:N (that GPU, or a load error that says why).",
    )
    ncpu: int = Field(0, ge=0, description="CPU threads (PyTorch, and ONNX Runtime intra-op); 0 = all cores.")
    heap_trim: bool = Field(
        True,
        description="When the engine has been idle for HEAP_TRIM_QUIET_S, hand the memory "
        "its requests left free back to the system (glibc malloc_trim), once per idle period.",
    )
    heap_trim_quiet_s: float = Field(
        3.0,
        ge=0,
        description="Seconds without a request before the heap is trimmed; "
        "a stream of short requests never waits for a trim.",
    )
    batch_size_s: int = Field(
        300,
        ge=1,
        description="Seconds of audio per model batch (FunASR batch_size_s); also "
        "caps a batch of concurrent requests (longest segment x segments).",
    )
    batch_max_requests: int = Field(
        0,
        ge=0,
        description="Concurrent requests whose segments may share one model "
        "call; 0 = auto: 8 on a GPU, 1 (off) on CPU, where it pays only for concurrent long files.",
    )
    engine_backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto (ONNX Runtime on CPU when an ONNX export is present, else PyTorch), torch or onnx."
    )
    onnx_quantize: bool = Field(
        False, description="ONNX backend: use the int8 model (*_quant.onnx); faster, a few tokens may differ."
    )
    onnx_model_dir: Path | None = Field(
        None, description="Folder with the exported ONNX files; default: the model folder (python -m asr.onnx.export)."
    )

    # --- real-time streaming (FunASR's WebSocket protocol at ws://HOST:PORT) ----------------
    online_model: str = Field(
        DEFAULT_ONLINE_MODEL,
        description="ModelScope id of the streaming Paraformer for "
        "online partials, used when online_model_dir is empty.",
    )
    online_model_dir: Path | None = Field(
        None,
        description="Local streaming Paraformer folder; overrides "
        "`online_model`. Loaded at startup when MAX_STREAMS > 0.",
    )
    online_quantize: bool = Field(
        True,
        description="On CPU, run the streaming Paraformer in int8 (PyTorch: dynamic quantization of its linear "
        "layers; ONNX: the *_quant.onnx export): partials cost about half, as with FunASR's own "
        "runtime, which serves partials from its int8 model; finals stay fp32.",
    )
    online_backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="The streaming Paraformer's runtime: auto (ONNX Runtime on CPU when online_model_dir holds its "
        "export, python -m asr.onnx.export --model-dir <folder> [--quantize], else PyTorch), torch or onnx.",
    )
    online_max_batch: int = Field(
        8,
        ge=1,
        description="ONNX backend: streams whose chunks queue for the model at the same time go through one "
        "batched call, up to this many (none waits for company); 1 = every chunk alone. Exact: a stream's partials "
        "are the same alone or batched, fp32 and int8 (an int8 export from before per-row quantization runs alone).",
    )
    online_workers: int = Field(
        0,
        ge=0,
        description="Copies of the streaming Paraformer decoding chunks side by side; "
        "0: one per core on CPU (each with one thread), one on a GPU.",
    )
    max_streams: int | Literal["auto"] = Field(
        "auto",
        description="WebSocket streams open at once; more are refused (close code 1013). 0 turns the WebSocket "
        "endpoint off. auto: what the machine carries with partials within 1 s (1 per CPU core, as measured with "
        "the full-size models; 8 on a GPU).",
    )
    stream_idle_timeout_s: float = Field(60.0, gt=0, description="A stream that sends nothing for this long is closed.")
    stream_max_frame_kb: int = Field(
        1024, ge=1, description="Largest WebSocket message accepted, in KB; larger ones close the stream (code 1009)."
    )

    # --- hotwords ---------------------------------------------------------------------------
    default_hotwords: str = Field(
        "", description="Comma- or newline-separated hotwords used when a request gives none."
    )
    max_hotwords: int = Field(100, ge=0, description="Most hotwords one request may carry.")
    max_hotword_chars: int = Field(20, ge=1, description="Longest hotword, in characters.")
    hotword_lists_per_owner: int = Field(
        50, ge=1, description="Most hotword lists one API key or browser may keep (shared lists not counted)."
    )
    hotword_list_max_words: int = Field(100, ge=1, description="Most words in one hotword list.")

    # --- written form (ITN) ------------------------------------------------------------------
    itn: bool = Field(
        True,
        description="Write numbers, dates, times, money and percentages in written form (2026年12月1日, 50%) by "
        "default; a request may turn it off (itn=false). The grammars load at startup (about 0.4 s, 30 MB).",
    )

    # --- input limits -----------------------------------------------------------------------
    max_upload_mb: float = Field(200.0, gt=0, description="Largest accepted upload, in MB.")
    max_audio_seconds: float = Field(3600.0, gt=0, description="Longest accepted audio, in seconds.")
    min_audio_seconds: float = Field(0.1, ge=0, description="Shorter audio is rejected as too short.")
    decode_timeout_s: float = Field(300.0, gt=0, description="ffmpeg gets this long to decode one input.")

    # --- web UI -----------------------------------------------------------------------------
    batch_max_files: int = Field(20, ge=1, description="Most files in one batch.")
    enable_live_tab: bool = Field(True, description="Show the live recording tab (turn off on small GPUs).")
    webui_auth: SecretStr | None = Field(None, description="user:pass to require a login for the web UI.")
    api_keys: SecretStr | None = Field(None, description="Comma-separated keys required by /v1/* (Bearer).")
    admin_api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated admin keys (Bearer): valid API keys "
        "that may read every user's results; empty: nobody may.",
    )

    # --- jobs (durable transcription jobs, /v1/jobs and the batch tab) ------------------------
    jobs_dir: Path = Field(
        PROJECT_ROOT / "data" / "jobs",
        description="Job uploads, results and (with the sqlite "
        "backend) the job database and queue; shared storage when replicas on several boxes "
        "share the work.",
    )
    jobs_backend: Literal["sqlite", "redis"] = Field(
        "sqlite",
        description="Where job records and the queue live: sqlite (files in JOBS_DIR, one box) or redis "
        "(JOBS_REDIS_URL, several boxes).",
    )
    jobs_redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for JOBS_BACKEND=redis.")
    job_workers: int = Field(
        1,
        ge=0,
        description="Jobs this process runs at once (threads sharing the engine); "
        "0 = accept jobs but leave them to other replicas.",
    )
    job_max_queued: int = Field(
        100, ge=1, description="Jobs queued or running in the whole service; more get HTTP 503."
    )
    job_max_queued_per_key: int = Field(
        20,
        ge=0,
        description="Jobs queued or running per API key (or browser); more get HTTP 429; 0 = no per-key limit.",
    )
    job_max_files: int = Field(500, ge=1, description="Most files in one job.")
    job_max_upload_mb: float = Field(
        1024.0, gt=0, description="Largest file in a job, in MB (MAX_UPLOAD_MB is for direct requests)."
    )
    job_max_audio_seconds: float = Field(
        14400.0, gt=0, description="Longest file in a job, in seconds (MAX_AUDIO_SECONDS is for direct requests)."
    )
    job_retention_h: float = Field(
        24.0,
        gt=0,
        description="Finished jobs (uploads, results, records) are kept "
        "this many hours, then ops/cleanup.py removes them.",
    )
    job_allowed_dirs: str = Field(
        "",
        description="Server folders whose files a job may name with `path` instead of "
        "an upload (comma-separated); empty: `path` is refused.",
    )
    job_url_hosts: str = Field(
        "",
        description="Hosts a job may name with `url` for the server to download "
        "(comma-separated, host or host:port; redirects not followed); empty: `url` is refused.",
    )
    job_callback_hosts: str = Field(
        "",
        description="Hosts a job's callback_url may name (comma-separated, host or "
        "host:port); empty: callback_url is refused.",
    )
    job_lease_s: float = Field(
        60.0,
        ge=1,
        description="A running job's worker renews its claim this often x3; "
        "a job whose claim lapses (its process died) is taken up again.",
    )
    job_storage_retry_s: float = Field(
        60.0,
        gt=0,
        description="A job that met a full disk goes back on the queue "
        "and is tried again this many seconds later (never failed for it).",
    )
    job_store_connections: int = Field(
        4,
        ge=1,
        description="Most connections this process keeps open to the job "
        "store (SQLite or Redis); threads beyond it wait their turn.",
    )
    storage_min_free_mb: float = Field(
        200.0,
        ge=0,
        description="/health reports storage 'low' when JOBS_DIR, "
        "TEMP_DIR or OUTPUT_DIR has less free space than this (MB).",
    )

    @field_validator(
        "model_dir",
        "vad_model_dir",
        "punc_model_dir",
        "spk_model_dir",
        "sensevoice_model_dir",
        "onnx_model_dir",
        "online_model_dir",
        "webui_auth",
        "api_keys",
        "admin_api_keys",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "log_dir",
        "temp_dir",
        "output_dir",
        "jobs_dir",
        "model_dir",
        "vad_model_dir",
        "punc_model_dir",
        "sensevoice_model_dir",
        "onnx_model_dir",
        "online_model_dir",
    )
    @classmethod
    def _relative_to_project(cls, value: Path | None) -> Path | None:
        # Relative paths in .env mean "in the project folder", whatever the current directory.
        return value if value is None or value.is_absolute() else PROJECT_ROOT / value

    @field_validator("max_streams", mode="before")
    @classmethod
    def _stream_limit(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text in ("", "auto"):
            return "auto"
        if not text.lstrip("-").isdigit() or int(text) < 0:
            raise ValueError("MAX_STREAMS is a number of streams (0 turns the endpoint off) or auto")
        return int(text)

    def engine_config(self) -> EngineConfig:
        """What the engine needs of these settings (it sees nothing else of the service)."""
        return EngineConfig.from_object(self)

    def resolved_temp_dir(self) -> Path:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        return self.temp_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
