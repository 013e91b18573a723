"""The recognition engine: one SeACo-Paraformer (+ FSMN-VAD + CT-punctuation) per process, and optionally
SenseVoice-Small (`asr.sensevoice`) beside it, chosen per call (`transcribe(model=...)`).

FunASR models are not thread-safe, so FunASR code runs under one lock inside the engine; callers
(UI tabs, HTTP routes, benchmarks) call `transcribe()` from any thread. Decoding runs before the lock
is taken, so model time is never spent waiting on ffmpeg. Concurrent requests can share ASR network
calls (`asr.batching`, BATCH_MAX_REQUESTS): each request still gets the result it would get alone.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .audio import Audio, AudioLimits, AudioSource, load_audio
from .batching import CrossRequestBatcher
from .batching import urgent as marked_urgent
from .config import EngineConfig
from .device import resolve_device
from .errors import (
    ASRError,
    HotwordsUnsupportedError,
    LanguageUnsupportedError,
    ModelLoadError,
    ModelNotReadyError,
    SpeakerCountError,
    SpeakersUnavailableError,
    UnknownModelError,
)
from .heap import HeapTrimmer
from .hotwords import parse_hotwords, resolve_hotwords, to_model_argument
from .itn import InverseNormalizer
from .patches import patch_funasr, patch_model, patch_sensevoice_model
from .segments import SegmentListener, report_segments
from .sensevoice import LANGUAGES, PARAFORMER, SENSEVOICE
from .speakers import MAX_SPEAKERS

logger = logging.getLogger(__name__)

#: The names `transcribe(model=...)` accepts, lower case. `whisper-1` is OpenAI's model name, which OpenAI
#: clients send by default: it means the default model, so they keep working unchanged.
MODEL_ALIASES = {
    PARAFORMER: PARAFORMER,
    "seaco-paraformer": PARAFORMER,
    "seaco": PARAFORMER,
    "whisper-1": PARAFORMER,
    SENSEVOICE: SENSEVOICE,
    "sensevoice-small": SENSEVOICE,
    "sensevoicesmall": SENSEVOICE,
    "iic/sensevoicesmall": SENSEVOICE,
}

EngineState = Literal["not_loaded", "loading", "ready", "error"]
#: Called after every `transcribe()` with the result, or with the error it raised (metrics use it).
Observer = Callable[["Transcription | None", "BaseException | None"], None]


@dataclass(frozen=True)
class Word:
    """One word with its start and end in seconds: a Chinese character, or an English word (pieces merged)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Sentence:
    """One sentence with its start and end in seconds from the beginning of the audio.

    `speaker` (1 = the first to speak) is set when the request asked for speakers, else None.
    `words` are the sentence's words with their times (empty when the model gave no token timestamps).
    `language`, `emotion` and `events` are what SenseVoice said of the sentence (`asr.sensevoice`: documented
    names such as `yue`, `angry`, `laughter`); None and empty for SeACo-Paraformer.
    """

    text: str
    start: float
    end: float
    speaker: int | None = None
    words: list[Word] = field(default_factory=list)
    language: str | None = None
    emotion: str | None = None
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Transcription:
    """The result of one `transcribe()` call.

    `confidence` is the mean, over the emitted tokens, of the probability the model gave the token
    it chose (its posterior after hotword biasing); 0.0 when no token was emitted.
    `processing_time` is decoding plus model time (not time spent waiting for the model), and
    `rtf` is `processing_time / duration`.
    """

    text: str
    confidence: float
    sentences: list[Sentence]
    duration: float
    processing_time: float
    rtf: float
    decode_time: float
    model_time: float
    wait_time: float
    hotwords: list[str] = field(default_factory=list)
    name: str = ""
    #: Time spent labelling speakers (part of `model_time`); 0 when the request did not ask for speakers.
    speaker_time: float = 0.0
    #: The text as spoken when `text` is in written form (ITN applied, `asr.itn`); None when ITN was not applied.
    text_spoken: str | None = None
    #: Time spent on ITN (not part of `processing_time`'s model work).
    itn_time: float = 0.0
    #: Which model transcribed it: "paraformer" (SeACo-Paraformer) or "sensevoice".
    model: str = PARAFORMER

    @property
    def words(self) -> list[Word]:
        """Every word of the text with its times, in order (the sentences' words, joined)."""
        return [w for s in self.sentences for w in s.words]

    @property
    def speakers(self) -> int:
        """How many speakers were told apart (0 when the request did not ask for speakers)."""
        return len({s.speaker for s in self.sentences if s.speaker is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelSpec:
    """Where each model comes from: a local folder or a hub id, with the settings key that names it."""

    asr: str
    vad: str | None
    punc: str | None
    device: str
    spk: str | None = None
    sensevoice: str | None = None


def model_name(source: str | None) -> str | None:
    """What a model is called where anyone may read it: a hub id as it is, a local folder by its name only
    (its full path says how the server is laid out, which only the log and admins get)."""
    if not source:
        return source
    path = Path(source).expanduser()
    return path.name if path.is_absolute() or path.exists() else source


class Engine:
    """Load once with `load()`, then call `transcribe()` from any thread."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.state: EngineState = "not_loaded"
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.spec: ModelSpec | None = None
        self.default_hotwords = parse_hotwords(
            config.default_hotwords, max_count=config.max_hotwords, max_chars=config.max_hotword_chars
        )
        self.limits = AudioLimits(
            max_bytes=int(config.max_upload_mb * 1024 * 1024),
            max_seconds=config.max_audio_seconds,
            min_seconds=config.min_audio_seconds,
            timeout_s=config.decode_timeout_s,
            temp_dir=config.temp_dir,
        )
        self._model: Any = None
        #: CAM++ and FunASR's clustering (asr.speakers), loaded when ENABLE_SPK is on.
        self._speakers: Any = None
        #: SenseVoice-Small's AutoModel (asr.sensevoice), loaded when ENABLE_SENSEVOICE is on; always PyTorch.
        self._sensevoice: Any = None
        self.sensevoice_batcher: CrossRequestBatcher | None = None
        #: "torch" or "onnx" (its encoder on ONNX Runtime, `asr.onnx.sensevoice`) once SenseVoice is loaded.
        self.sensevoice_backend: str | None = None
        #: "torch" or "onnx" once loaded (ENGINE_BACKEND=auto picks ONNX Runtime on CPU when an export exists).
        self.backend: str | None = None
        self._model_lock = threading.Lock()
        #: Held by whoever runs FunASR code; the batcher waits on it for the other requests' segments.
        self._model_condition = threading.Condition(self._model_lock)
        self.batcher: CrossRequestBatcher | None = None
        self._load_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.heap = HeapTrimmer(config.heap_trim_quiet_s, enabled=config.heap_trim)
        self._waiting = 0
        self._inside = 0
        #: Requests inside the engine per model: a model's batcher waits only for requests that bring it segments.
        self._inside_for = {PARAFORMER: 0, SENSEVOICE: 0}
        self._urgent_waiting = 0
        self.requests_served = 0
        self.requests_failed = 0
        self.audio_seconds_served = 0.0
        self.started_at = time.time()
        self._observers: list[Observer] = []
        #: The written form (asr.itn): its grammars are loaded with the models when ITN is on by default.
        self.itn = InverseNormalizer()

    # ---------------------------------------------------------------- loading
    def resolve_spec(self) -> ModelSpec:
        s = self.config
        return ModelSpec(
            asr=_model_source(s.model_dir, s.model, "MODEL_DIR"),
            vad=_model_source(s.vad_model_dir, s.vad_model, "VAD_MODEL_DIR") if s.enable_vad else None,
            punc=_model_source(s.punc_model_dir, s.punc_model, "PUNC_MODEL_DIR") if s.enable_punc else None,
            device=resolve_device(s.device, s.engine_backend),
            spk=_model_source(s.spk_model_dir, s.spk_model, "SPK_MODEL_DIR") if s.enable_spk else None,
            sensevoice=(
                _model_source(s.sensevoice_model_dir, s.sensevoice_model, "SENSEVOICE_MODEL_DIR")
                if s.enable_sensevoice
                else None
            ),
        )

    def load(self) -> None:
        """Load the models (idempotent). Raises ModelLoadError with a message that says what to do."""
        with self._load_lock:
            if self.state == "ready":
                return
            self.state = "loading"
            started = time.perf_counter()
            try:
                patch_funasr()
                self.spec = self.resolve_spec()
                self.backend, onnx_files = self.resolve_backend(self.spec)
                if onnx_files is not None:
                    self._model = _build_onnx_model(self.spec, self.config, onnx_files)  # returns token_probs
                else:
                    self._model = _build_automodel(self.spec, self.config)
                self.batcher = CrossRequestBatcher(
                    self._model_condition,
                    lambda: self._inside_for[PARAFORMER],
                    max_requests=self.batch_max_requests(self.spec.device),
                    max_seconds=self.config.batch_size_s,
                    urgent_waiting=lambda: self._urgent_waiting,
                )
                patch_model(self._model, self.batcher, backend=self.backend)
                if self.config.itn:
                    self._load_itn()  # at startup: the first request does not pay for the grammars
                if self.spec.sensevoice:
                    self._load_sensevoice(self.spec)
                if self.spec.spk:
                    from .speakers import SpeakerLabeller

                    self._speakers = SpeakerLabeller(
                        self.spec.spk, self.spec.device, ncpu=self.config.ncpu or os.cpu_count() or 1
                    )
            except ModelLoadError as exc:
                self.state, self.load_error = "error", str(exc)
                logger.error("model load failed: %s", exc)
                raise
            except Exception as exc:  # FunASR raises many types; name the model and the fix
                message = _explain_load_failure(self.spec, exc)
                self.state, self.load_error = "error", message
                logger.error("model load failed: %s", message)
                raise ModelLoadError(message) from exc
            self.load_seconds = time.perf_counter() - started
            self.state = "ready"
            # Loading leaves hundreds of MB free in glibc's heaps: hand them back before the first request (a
            # full-size ONNX server: 2290 MiB once loaded without this, 1667 with it; docs/benchmarks.md, Memory).
            self.heap.request()
            logger.info(
                "models loaded in %.1f s on %s with %s, batching up to %d requests (asr=%s vad=%s punc=%s spk=%s "
                "sensevoice=%s)",
                self.load_seconds,
                self.spec.device,
                self.backend,
                self.batcher.max_requests,
                self.spec.asr,
                self.spec.vad,
                self.spec.punc,
                self.spec.spk,
                self.spec.sensevoice,
            )

    def _load_sensevoice(self, spec: ModelSpec) -> None:
        """SenseVoice-Small with its own VAD instance, batcher and patches; it shares the one model lock."""
        from .sensevoice import build_automodel

        assert spec.sensevoice is not None
        self._sensevoice = build_automodel(
            spec.sensevoice, spec.vad, spec.device, self.config.ncpu or os.cpu_count() or 1
        )
        self.sensevoice_backend = "torch"
        encoder = self._sensevoice_onnx_encoder(spec)
        if encoder is not None:
            from .onnx.backend import default_threads
            from .onnx.sensevoice import use_onnx_encoder

            use_onnx_encoder(self._sensevoice.model, encoder, default_threads(self.config.ncpu))
            self.sensevoice_backend = "onnx"
        self.sensevoice_batcher = CrossRequestBatcher(
            self._model_condition,
            lambda: self._inside_for[SENSEVOICE],
            max_requests=self.batch_max_requests(spec.device),
            max_seconds=self.config.batch_size_s,
            urgent_waiting=lambda: self._urgent_waiting,
        )
        patch_sensevoice_model(self._sensevoice, self.sensevoice_batcher)

    def _sensevoice_onnx_encoder(self, spec: ModelSpec) -> Path | None:
        """SenseVoice's exported encoder when ENGINE_BACKEND picks ONNX for it: `onnx`, or `auto` on a CPU, and the
        folder has `encoder.onnx`. Without the export it runs on PyTorch (it is optional, unlike SeACo's)."""
        from .onnx.sensevoice import ENCODER_FILE, encoder_file

        backend = self.config.engine_backend
        if backend == "torch" or (backend == "auto" and not spec.device.startswith("cpu")):
            return None
        found = encoder_file(spec.sensevoice or "")
        if found is None and backend == "onnx":
            logger.warning(
                "ENGINE_BACKEND=onnx but SenseVoice has no %s (python -m asr.onnx.sensevoice --model-dir ...): "
                "SenseVoice runs on PyTorch",
                ENCODER_FILE,
            )
        return found

    @property
    def models(self) -> list[str]:
        """The models requests may choose (`transcribe(model=...)`), the default first."""
        return [PARAFORMER] + ([SENSEVOICE] if self._sensevoice is not None else [])

    def resolve_model(self, model: str | None) -> str:
        """The model `model=` names (`MODEL_ALIASES`; None or "": SeACo-Paraformer); UnknownModelError for one this
        engine does not run."""
        name = MODEL_ALIASES.get((model or PARAFORMER).strip().lower())
        if name == PARAFORMER:
            return name
        if name == SENSEVOICE and (
            self._sensevoice is not None or (self.state != "ready" and self.config.enable_sensevoice)
        ):
            return name  # before the load, transcribe() answers "not ready" rather than "unknown"
        raise UnknownModelError(model=str(model)[:60], available=", ".join(self.models))

    def check_request(self, model: str, hotwords: str | Sequence[str] | None, language: str | None) -> None:
        """Raise the error a request for `model` with these hotwords and language gets, before any work is done."""
        if model != SENSEVOICE:
            return
        if hotwords and parse_hotwords(hotwords, max_count=10**6, max_chars=10**6):
            raise HotwordsUnsupportedError(model=SENSEVOICE)
        if language and language.strip().lower() not in LANGUAGES:
            raise LanguageUnsupportedError(
                model=SENSEVOICE, language=language.strip()[:20], available=", ".join(LANGUAGES)
            )

    def batch_max_requests(self, device: str) -> int:
        """BATCH_MAX_REQUESTS, or when 0: 8 on a GPU, 1 (no cross-request batching) on CPU.

        On 2 CPU cores batching paid for concurrent long files (1.33x) and cost for short clips (0.80x,
        docs/benchmarks.md), so there it is opt-in.
        """
        if self.config.batch_max_requests:
            return self.config.batch_max_requests
        return 1 if device.startswith("cpu") else 8

    def resolve_backend(self, spec: ModelSpec) -> tuple[str, Any]:
        """("torch" | "onnx", the ONNX files or None) from ENGINE_BACKEND, the device and what is exported."""
        from .onnx.backend import resolve_backend

        s = self.config
        return resolve_backend(s.engine_backend, spec.device, spec.asr, s.onnx_model_dir, s.onnx_quantize)

    # ---------------------------------------------------------------- inference
    def decode(self, source: AudioSource, *, sample_rate: int | None = None, name: str = "") -> Audio:
        """Decode and check an input against the limits, without touching the model."""
        return load_audio(source, sample_rate=sample_rate, limits=self.limits, name=name)

    def resolve_hotwords(self, hotwords: str | Sequence[str] | None) -> list[str]:
        s = self.config
        return resolve_hotwords(
            hotwords, self.default_hotwords, max_count=s.max_hotwords, max_chars=s.max_hotword_chars
        )

    @property
    def speakers_available(self) -> bool:
        """Whether requests may ask for speakers (ENABLE_SPK, and the speaker model loaded)."""
        return self._speakers is not None

    def check_speakers(self, diarize: bool, num_speakers: int | None) -> None:
        """Raise the error a request asking for speakers gets here, before any work is done."""
        if num_speakers is not None and not 1 <= num_speakers <= MAX_SPEAKERS:
            raise SpeakerCountError(limit=MAX_SPEAKERS, count=num_speakers)
        if diarize and not self.speakers_available and self.state == "ready":
            raise SpeakersUnavailableError()

    def transcribe(
        self,
        source: AudioSource | Audio,
        *,
        hotwords: str | Sequence[str] | None = None,
        sample_rate: int | None = None,
        name: str = "",
        batch_size_s: int | None = None,
        record: bool = True,
        diarize: bool = False,
        num_speakers: int | None = None,
        on_segment: SegmentListener | None = None,
        urgent: bool = False,
        itn: bool | None = None,
        model: str | None = None,
        language: str | None = None,
    ) -> Transcription:
        """Transcribe one input. `hotwords=None` uses the default list; a given list replaces it.

        `model` chooses the recognizer (`MODEL_ALIASES`: "paraformer", the default, or "sensevoice" when loaded;
        UnknownModelError otherwise). SenseVoice takes `language` (`asr.sensevoice.LANGUAGES`; None: auto) and
        no hotwords (HotwordsUnsupportedError for a request that sends some; the default list is not applied);
        its sentences carry the language, emotion and events it detected. SeACo-Paraformer ignores `language`.

        `itn` writes numbers, dates and times in written form (`asr.itn`; None: the ITN setting); the text as
        spoken is then `text_spoken`, and every word keeps its times. Hotwords are never rewritten.

        `diarize=True` labels each sentence with its speaker (needs ENABLE_SPK); `num_speakers`, when the
        caller knows it, fixes how many speakers the sentences are split into.

        `on_segment`, when given, is called with each speech segment's words as soon as it is decoded, in
        time order (`asr.segments`); the result is the same as without it.

        `urgent=True` (a live stream's sentence) goes ahead of other requests: they give way at their next model
        call (`asr.batching`).

        `record=False` leaves the call out of the request counts, observers and the INFO log: for work
        that is not a request of its own, such as the live tab's re-decoding of the open segment.

        Raises an `InputError` for unusable input and `ModelNotReadyError` before the model is loaded.
        """
        self.heap.enter()
        try:
            started = time.perf_counter()
            chosen = self.resolve_model(model)
            self.check_request(chosen, hotwords, language)
            words = self.resolve_hotwords(hotwords) if chosen == PARAFORMER else []
            self.check_speakers(diarize, num_speakers)
            audio = source if isinstance(source, Audio) else self.decode(source, sample_rate=sample_rate, name=name)
            decode_time = time.perf_counter() - started
            with report_segments(on_segment) if on_segment else nullcontext():
                if chosen == SENSEVOICE:
                    transcription = self._sensevoice_transcription(audio, decode_time, batch_size_s, urgent, language)
                else:
                    result, wait_time, model_time = self._generate(audio.samples, words, batch_size_s, urgent)
                    transcription = _to_transcription(result, audio, words, decode_time, wait_time, model_time)
            if diarize:
                transcription = self._with_speakers(transcription, audio, num_speakers)
            if self.config.itn if itn is None else itn:
                transcription = self.written_form(transcription)
        except Exception as exc:
            if not isinstance(exc, ASRError):
                logger.exception("transcription failed for %s", name or "input")
            if record:
                self._count(failed=True)
                self._notify(None, exc)
            raise
        finally:
            self.heap.leave()  # the last one out: the freed working memory goes back once the engine stays quiet
        if record:
            self._count(failed=False, audio_seconds=audio.duration)
            self._notify(transcription, None)
        logger.log(
            logging.INFO if record else logging.DEBUG,
            "transcribed %s: %.1f s audio, %.2f s processing, rtf %.3f",
            audio.name or "input",
            audio.duration,
            transcription.processing_time,
            transcription.rtf,
        )
        return transcription

    def _load_itn(self) -> None:
        try:
            self.itn.load()
        except Exception as exc:  # the models still serve: each transcription then keeps its spoken text
            logger.warning("ITN grammars could not load (%s: %s); texts stay as spoken", type(exc).__name__, exc)

    def written_form(self, transcription: Transcription) -> Transcription:
        """`transcription` with ITN applied (its hotwords protected); unchanged if ITN itself fails."""
        started = time.perf_counter()
        try:
            written = self.itn.transcription(transcription, protected=transcription.hotwords)
        except Exception:  # ITN never fails a request: the spoken text is a correct answer
            logger.exception("ITN failed; the spoken text is kept")
            return transcription
        return replace(written, itn_time=time.perf_counter() - started)

    def _sensevoice_transcription(
        self, audio: Audio, decode_time: float, batch_size_s: int | None, is_urgent: bool, language: str | None
    ) -> Transcription:
        from . import sensevoice

        options = sensevoice.generate_options(
            (language or "auto").strip().lower(), batch_size_s or self.config.batch_size_s
        )
        with sensevoice.capture() as found:
            result, wait_time, model_time = self._generate(
                audio.samples, [], batch_size_s, is_urgent, model=SENSEVOICE, options=options
            )
        return Transcription(
            # FunASR's merged text less its tags (the sentences joined as FunASR joins its segments)
            text=sensevoice.strip_tags(str((result or {}).get("text") or "")),
            confidence=sensevoice.confidence(found),
            sentences=sensevoice.to_sentences(found, audio.duration),
            **_timing(audio.duration, decode_time, model_time, wait_time),
            name=audio.name,
            model=SENSEVOICE,
        )

    def _generate(
        self,
        samples: np.ndarray,
        words: list[str],
        batch_size_s: int | None,
        is_urgent: bool = False,
        *,
        model: str = PARAFORMER,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict | None, float, float]:
        if self.state != "ready":
            reason = {"loading": "loading", "error": "failed"}.get(self.state, "")
            raise ModelNotReadyError(reason=reason, detail=self.load_error or self.state)
        if options is not None:
            kwargs: dict[str, Any] = dict(options)
        else:
            kwargs = {"batch_size_s": batch_size_s or self.config.batch_size_s}
            hotword = to_model_argument(words)
            if hotword:
                kwargs["hotword"] = hotword
            if self.spec and self.spec.vad:
                kwargs["sentence_timestamp"] = True
            if self.spec and self.spec.punc:
                kwargs["return_raw_text"] = True  # the unpunctuated tokens, which the word timestamps time
        automodel = self._sensevoice if model == SENSEVOICE else self._model
        queued = time.perf_counter()
        with self._stats_lock:
            self._waiting += 1
            self._inside += 1
            self._inside_for[model] += 1
            self._urgent_waiting += is_urgent
        with self._model_condition:
            with self._stats_lock:
                self._waiting -= 1
                self._urgent_waiting -= is_urgent
            began = time.perf_counter()
            try:
                with marked_urgent() if is_urgent else nullcontext():
                    results = automodel.generate(input=samples, **kwargs)
            finally:
                with self._stats_lock:
                    self._inside -= 1
                    self._inside_for[model] -= 1
                self._model_condition.notify_all()  # batched segments wait for every request inside
            finished = time.perf_counter()
        return (results[0] if results else None), began - queued, finished - began

    def _with_speakers(self, transcription: Transcription, audio: Audio, num_speakers: int | None) -> Transcription:
        """The transcription with a speaker on each sentence; labelling runs under the model lock."""
        from .speakers import Span

        if not transcription.sentences:
            return transcription
        queued = time.perf_counter()
        with self._model_condition:
            began = time.perf_counter()
            labels = self._speakers.label(
                audio.samples, [Span(s.start, s.end) for s in transcription.sentences], num_speakers
            )
        labelling = time.perf_counter() - began
        return replace(
            transcription,
            sentences=[replace(s, speaker=label) for s, label in zip(transcription.sentences, labels, strict=False)],
            **_timing(
                audio.duration,
                transcription.decode_time,
                transcription.model_time + labelling,
                transcription.wait_time + began - queued,
            ),
            speaker_time=labelling,
        )

    # ---------------------------------------------------------------- observers
    def add_observer(self, observer: Observer) -> None:
        """Call `observer(transcription, error)` after every transcription, whoever asked (UI, API, scripts)."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def _notify(self, transcription: Transcription | None, error: BaseException | None) -> None:
        for observer in list(self._observers):
            try:
                observer(transcription, error)
            except Exception:  # an observer (metrics) must never fail a transcription
                logger.exception("engine observer %r failed", observer)

    # ---------------------------------------------------------------- status
    def _count(self, *, failed: bool, audio_seconds: float = 0.0) -> None:
        with self._stats_lock:
            if failed:
                self.requests_failed += 1
            else:
                self.requests_served += 1
                self.audio_seconds_served += audio_seconds

    @property
    def waiting(self) -> int:
        """Requests waiting for the model right now (not counting those it is working on)."""
        return self._waiting

    @property
    def busy(self) -> bool:
        """Whether the model is working on at least one request."""
        return self._inside > self._waiting

    def batching_info(self) -> dict[str, Any] | None:
        """Cross-request batching: its limits and counters since start (None before the model is loaded)."""
        if self.batcher is None:
            return None
        return {
            "max_requests": self.batcher.max_requests,
            "max_seconds": self.batcher.max_seconds,
            **self.batcher.stats.as_dict(),
        }

    def info(self) -> dict[str, Any]:
        try:
            spec: ModelSpec | None = self.spec or self.resolve_spec()
        except ASRError:  # a folder or DEVICE that cannot load: load_error says why; nothing runs anywhere
            spec = None
        return {
            "state": self.state,
            "model": spec.asr if spec else str(self.config.model_dir or self.config.model),
            "vad_model": spec.vad if spec else None,
            "punc_model": spec.punc if spec else None,
            "spk_model": spec.spk if spec else None,
            "sensevoice_model": spec.sensevoice if spec else None,
            "sensevoice_backend": self.sensevoice_backend,
            "models": self.models,
            "device": spec.device if spec else None,
            "backend": self.backend or (_planned_backend(self, spec) if spec else self.config.engine_backend),
            "load_seconds": self.load_seconds,
            "load_error": self.load_error,
            "default_hotwords": list(self.default_hotwords),
            "requests_served": self.requests_served,
            "requests_failed": self.requests_failed,
            "audio_seconds_served": round(self.audio_seconds_served, 3),
            "waiting": self._waiting,
            "busy": self.busy,
            "batching": self.batching_info(),
            "uptime_s": round(time.time() - self.started_at, 1),
        }


# -------------------------------------------------------------------- process-wide engine
_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine(config: EngineConfig | None = None) -> Engine:
    """The one engine of this process (created on the first call, from `config` or the defaults; not loaded: call
    `load()`)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine(config or EngineConfig())
        return _engine


# -------------------------------------------------------------------- helpers
def _model_source(local_dir: Path | None, hub_id: str, key: str) -> str:
    if local_dir is None or str(local_dir) == "":
        return hub_id
    path = Path(local_dir).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"{key}={local_dir} does not exist: point {key} at a model folder, or leave it "
            f"empty to download '{hub_id}' from ModelScope"
        )
    weights = _weights_file(path)
    if not ((path / "config.yaml").exists() and (path / weights).exists()):
        raise ModelLoadError(f"{key}={local_dir} is not a FunASR model folder (config.yaml and {weights} are needed)")
    return str(path)


def _weights_file(folder: Path) -> str:
    """The weights file a model folder names in configuration.json (CAM++: campplus_cn_common.bin), else model.pt."""
    import json

    try:
        metas = json.loads((folder / "configuration.json").read_text(encoding="utf-8"))["file_path_metas"]
        return str(metas["init_param"])
    except (OSError, ValueError, KeyError, TypeError):
        return "model.pt"


def _build_automodel(spec: ModelSpec, config: EngineConfig) -> Any:
    from funasr import AutoModel

    kwargs: dict[str, Any] = {
        "model": spec.asr,
        "device": spec.device,
        "disable_update": True,
        "disable_pbar": True,
        "disable_log": True,
        "ncpu": config.ncpu or os.cpu_count() or 1,
    }
    if spec.vad:
        kwargs["vad_model"] = spec.vad
    if spec.punc:
        kwargs["punc_model"] = spec.punc
    model = AutoModel(**kwargs)
    if type(model.model).__name__ != "SeacoParaformer":
        raise ModelLoadError(f"'{spec.asr}' is a {type(model.model).__name__}, not a SeACo-Paraformer model")
    return model


def _build_onnx_model(spec: ModelSpec, config: EngineConfig, files: Any) -> Any:
    from .onnx.backend import build_onnx_automodel, default_threads

    return build_onnx_automodel(
        asr=spec.asr,
        vad=spec.vad,
        punc=spec.punc,
        files=files,
        threads=default_threads(config.ncpu),
        disable_update=True,
        disable_pbar=True,
        disable_log=True,
        ncpu=config.ncpu or os.cpu_count() or 1,
    )


def _planned_backend(engine: Engine, spec: ModelSpec) -> str:
    # Before load() (or after it failed), say what load() would pick; never fail the status call.
    try:
        return engine.resolve_backend(spec)[0]
    except ASRError:
        return engine.config.engine_backend


def _explain_load_failure(spec: ModelSpec | None, exc: Exception) -> str:
    # FunASR reports a failed download as "model ... is not registered" with a long registry dump:
    # keep only the first line and say what to do.
    lines = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
    logger.debug("model load failure", exc_info=exc)
    if spec is None:
        return f"could not load the models ({detail})"
    hub_ids = [m for m in (spec.asr, spec.vad, spec.punc, spec.spk) if m and not Path(m).exists()]
    if hub_ids:
        return (
            f"could not load {', '.join(hub_ids)} from ModelScope: no network to download it? Set MODEL_DIR, "
            f"VAD_MODEL_DIR, PUNC_MODEL_DIR (and SPK_MODEL_DIR) to local copies (docs/engine.md: Models). [{detail}]"
        )
    return f"could not load the model from {spec.asr}: check the folder is a complete model [{detail}]"


def _timing(duration: float, decode_time: float, model_time: float, wait_time: float) -> dict[str, float]:
    """A Transcription's time fields: processing is decoding plus the model's own time, rtf that over the audio."""
    processing = decode_time + model_time
    return dict(
        duration=duration,
        processing_time=processing,
        rtf=processing / duration if duration else 0.0,
        decode_time=decode_time,
        model_time=model_time,
        wait_time=wait_time,
    )


def _to_transcription(
    result: dict | None, audio: Audio, words: list[str], decode_time: float, wait_time: float, model_time: float
) -> Transcription:
    common = dict(**_timing(audio.duration, decode_time, model_time, wait_time), hotwords=words, name=audio.name)
    if not result or not str(result.get("text", "")).strip():
        return Transcription(text="", confidence=0.0, sentences=[], **common)
    text = str(result["text"]).strip()
    probs = result.get("token_probs") or []
    confidence = float(np.mean(probs)) if probs else 0.0
    return Transcription(
        text=text,
        confidence=min(max(confidence, 0.0), 1.0),
        sentences=_sentences(result, text, audio.duration),
        **common,
    )


def _sentences(result: dict, text: str, duration: float) -> list[Sentence]:
    # The model's frame-based timestamps can overshoot the end of the audio by a frame or two.
    def seconds(ms: float) -> float:
        return min(max(ms / 1000.0, 0.0), duration)

    words = _words(result, duration)
    info = result.get("sentence_info")
    if info:
        sentences: list[Sentence] = []
        per_sentence = _words_per_sentence(info, words)
        timed = any(w is not None for own in per_sentence for w in own)
        for s, own in zip(info, per_sentence, strict=False):
            own = [w for w in own if w is not None]
            text = str(s["text"])
            if own:  # the sentence spans its words (FunASR's own span can be a word short at a boundary)
                sentences.append(Sentence(text, own[0].start, own[-1].end, words=own))
            elif timed and sentences and not _TEXT_UNIT.search(text.replace("<unk>", "")):
                # Punctuation alone (FunASR can split off a lone "，"): it belongs to the sentence before.
                sentences[-1] = replace(sentences[-1], text=sentences[-1].text + text.strip())
            else:
                start = seconds(s["start"])
                sentences.append(Sentence(text, start, max(seconds(s["end"]), start)))
        return sentences
    stamps = result.get("timestamp") or []
    if stamps:
        start = seconds(stamps[0][0])
        return [Sentence(text, start, max(seconds(stamps[-1][1]), start), words=[w for w in words if w is not None])]
    return [Sentence(text, 0.0, duration)]


def _words(result: dict, duration: float) -> list[Word | None]:
    """One entry per token timestamp: the word, or None for a marker such as <unk> that is no word.

    FunASR's post-processing already joins English sub-word pieces into words and gives them one timestamp,
    and its raw text lists the same units, space-separated, that its timestamps time.
    """
    stamps = result.get("timestamp") or []
    units = str(result.get("raw_text") if result.get("raw_text") is not None else result.get("text", "")).split()
    if not stamps or len(units) != len(stamps):
        if stamps:
            logger.debug("no word times: %d units, %d timestamps", len(units), len(stamps))
        return []
    return [
        None
        if unit.startswith("<") and unit.endswith(">")
        else Word(unit, min(max(begin / 1000.0, 0.0), duration), min(max(end / 1000.0, 0.0), duration))
        for unit, (begin, end) in zip(units, stamps, strict=False)
    ]


#: The units FunASR times in a sentence's text: a CJK character, or a word of letters and digits.
_TEXT_UNIT = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\s\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    r"，。？！、；：,.?!;:\"'“”‘’（）()《》<>\-—…·]+"
)


def _words_per_sentence(info: list[dict], words: list[Word | None]) -> list[list[Word | None]]:
    """Split the words over the sentences by the sentences' own text.

    FunASR's per-sentence timestamp lists can put a boundary word's time into the neighbouring sentence
    (seen on the test models: '台受英？' with two timestamps, its third in the next sentence), so the words
    are matched to each sentence's text unit by unit; when that fails, FunASR's lists are used.
    """
    spoken = [w for w in words if w is not None]
    units = [_TEXT_UNIT.findall(str(s["text"]).replace("<unk>", "")) for s in info]
    if spoken and sum(len(u) for u in units) == len(spoken):
        parts, at, matched = [], 0, True
        for sentence_units in units:
            own = spoken[at : at + len(sentence_units)]
            matched = matched and [u.casefold() for u in sentence_units] == [w.text.casefold() for w in own]
            parts.append(own)
            at += len(sentence_units)
        if matched:
            return parts
    counts = [len(s.get("timestamp") or []) for s in info]
    if not words or sum(counts) != len(words):
        return [[] for _ in info]
    parts, at = [], 0
    for count in counts:
        parts.append(words[at : at + count])
        at += count
    return parts
