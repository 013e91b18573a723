"""SenseVoice-Small, the second recognizer: zh, yue, en, ja and ko, with language, emotion and audio events.

FunASR's `SenseVoiceSmall` is a CTC model that writes four tags before each segment's text,
`<|zh|><|NEUTRAL|><|Speech|><|woitn|>`: the language, the emotion, the audio event and the text style. The
engine runs it through FunASR's own AutoModel with the same FSMN-VAD as SeACo-Paraformer (segments, batching,
limits and locks as for SeACo), and reads each segment's result as FunASR's VAD path gets it back
(`install_capture`): one VAD segment is one sentence, its tags parsed into fields (`parse_tags`) and never left
in the text.

- **Times**: a sentence spans its VAD segment. Word times come from FunASR's CTC forced alignment
  (`output_timestamp`, `funasr/models/sense_voice/utils/ctc_alignment.py`), kept only where the aligned words
  spell the sentence's text (so a word list never disagrees with the text).
- **Written form**: the model decodes in its spoken style (`woitn`), the form SeACo-Paraformer gives, and the
  service's own ITN step (`asr.itn`) writes numbers, dates and times for both models the same way. SenseVoice's
  `withitn` style also adds punctuation, but its number forms differ from the service's; one written form for
  the whole service comes first (docs/engine.md: SenseVoice).
- **Confidence**: the mean, over the emitted text tokens, of the posterior of the token the CTC head chose
  (tags left out), as SeACo's is the mean posterior of its emitted tokens.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: The name requests choose it by (`model=`), and the SeACo model's.
SENSEVOICE = "sensevoice"
PARAFORMER = "paraformer"
#: What `language=` may say for SenseVoice (FunASR's `lid_dict` less `nospeech`); `auto` lets the model tell.
LANGUAGES = ("auto", "zh", "yue", "en", "ja", "ko")

_TAG = re.compile(r"<\|([^|<>]*)\|>")
_LANGUAGE_TAGS = {"zh", "en", "yue", "ja", "ko", "nospeech"}
#: The model's emotion tags, by the names the API documents (docs/api.md: SenseVoice fields).
EMOTIONS = {
    "HAPPY": "happy",
    "SAD": "sad",
    "ANGRY": "angry",
    "NEUTRAL": "neutral",
    "FEARFUL": "fearful",
    "DISGUSTED": "disgusted",
    "SURPRISED": "surprised",
    "EMO_UNKNOWN": "unknown",
    "OTHER": "other",
}
#: The model's audio-event tags by their documented names. `Speech` is the ordinary case, not an event, and
#: `Event_UNK`/`GBG` say nothing; they are dropped.
EVENTS = {
    "BGM": "music",
    "Laughter": "laughter",
    "Applause": "applause",
    "Cry": "crying",
    "Cough": "cough",
    "Sneeze": "sneeze",
    "Breath": "breath",
    "Sing": "singing",
    "Speech_Noise": "noise",
}
_SILENT_TAGS = {"Speech", "Event_UNK", "GBG", "withitn", "woitn"}


@dataclass(frozen=True)
class Tags:
    """What the model said besides the text, for one segment: language (`zh`, ..., `nospeech`), emotion, events."""

    language: str | None = None
    emotion: str | None = None
    events: tuple[str, ...] = ()


def parse_tags(text: str) -> tuple[str, Tags]:
    """(the text without any `<|...|>` tag, what the tags said). The first tag of a kind wins; unknown tags
    are dropped too, so no tag ever reaches a user."""
    language = emotion = None
    events: list[str] = []
    for name in _TAG.findall(text):
        if name in _LANGUAGE_TAGS:
            language = language or name
        elif name in EMOTIONS:
            emotion = emotion or EMOTIONS[name]
        elif name in EVENTS:
            if EVENTS[name] not in events:
                events.append(EVENTS[name])
        elif name not in _SILENT_TAGS:
            logger.debug("unknown SenseVoice tag dropped: %r", name[:40])
    clean = " ".join(_TAG.sub(" ", text).split())
    return clean, Tags(language, emotion, tuple(events))


def strip_tags(text: str) -> str:
    """The text without its tags, spaces collapsed (how the engine writes FunASR's merged SenseVoice text)."""
    return parse_tags(text)[0]


# ------------------------------------------------------------------------------------------ per-segment results
@dataclass
class _Capture:
    """One transcription's VAD segments (ms) and, by audio content, each segment's result as FunASR returned it."""

    segments: list[list[float]] = field(default_factory=list)
    results: dict[bytes, dict] = field(default_factory=dict)
    speech: Any = None


_capture: ContextVar[_Capture | None] = ContextVar("asr_sensevoice_capture", default=None)


@dataclass(frozen=True)
class SegmentResult:
    """One VAD segment (seconds from the start of the audio) and the model's result for it."""

    start: float
    end: float
    result: dict


@contextmanager
def capture() -> Iterator[list[SegmentResult]]:
    """Inside the block, this thread's SenseVoice transcription records its segments; the list is filled, in
    time order, when the block ends."""
    state = _Capture()
    token = _capture.set(state)
    found: list[SegmentResult] = []
    try:
        yield found
    finally:
        _capture.reset(token)
    found.extend(_in_time_order(state))


def install_capture(automodel: Any) -> None:
    """Record the VAD's segments and the ASR model's per-segment results (deep copies: FunASR's merge shifts
    timestamps in place) while `capture()` is active."""
    from .segments import _content_key

    inference = automodel.inference

    def inference_and_keep(input: Any, input_len: Any = None, model: Any = None, kwargs: Any = None, **cfg: Any) -> Any:
        found = inference(input, input_len=input_len, model=model, kwargs=kwargs, **cfg)
        state = _capture.get()
        if state is None or model is None:
            return found
        if model is automodel.vad_model:
            state.segments = [list(s) for s in (found[0].get("value") or [])] if found else []
            state.speech = input
        elif model is automodel.model and isinstance(input, list):
            for samples, result in zip(input, found or [], strict=False):
                state.results[_content_key(samples)] = copy.deepcopy(result)
        return found

    automodel.inference = inference_and_keep


def _in_time_order(state: _Capture) -> list[SegmentResult]:
    from funasr.utils.vad_utils import slice_padding_audio_samples

    from .segments import _content_key

    if state.speech is None or not state.segments:
        return []
    speech = state.speech
    out = []
    for index, segment in enumerate(state.segments):
        pieces, _ = slice_padding_audio_samples(speech, len(speech), [(segment, index)])
        result = state.results.get(_content_key(pieces[0]))
        if result is not None:
            out.append(SegmentResult(segment[0] / 1000.0, segment[1] / 1000.0, result))
    return out


# ------------------------------------------------------------------------------------------ confidence
#: Key the confidence hook sets on each result: the posteriors of its emitted text tokens.
TOKEN_PROBS = "token_probs"
#: The tags come first in every segment's output: language, emotion, event, text style.
_TAG_POSITIONS = 4


def install_confidence_hook(model: Any) -> None:
    """Keep each result's emitted-token posteriors, which FunASR computes (the CTC head) and drops.

    Wraps the encoder (for each item's length) and the CTC head's log-softmax (its first call per inference is
    the one FunASR decodes from); reads only."""
    import torch

    encoder_forward = model.encoder.forward
    log_softmax = model.ctc.log_softmax
    inference = model.inference
    seen: dict[str, Any] = {}

    def encoder_and_keep(*args: Any, **kwargs: Any) -> Any:
        out = encoder_forward(*args, **kwargs)
        seen["lengths"] = out[1]
        return out

    def log_softmax_and_keep(x: Any) -> Any:
        out = log_softmax(x)
        seen.setdefault("log_probs", out.detach())
        return out

    def inference_with_probs(*args: Any, **kwargs: Any) -> Any:
        seen.clear()
        output = inference(*args, **kwargs)
        results = output[0] if isinstance(output, tuple) else output
        if "log_probs" in seen and "lengths" in seen and results:
            for i, result in enumerate(results):
                frames = seen["log_probs"][i, _TAG_POSITIONS : int(seen["lengths"][i])]
                best, ids = frames.max(dim=-1)
                keep = torch.ones_like(ids, dtype=torch.bool)
                keep[1:] = ids[1:] != ids[:-1]  # CTC: a repeated frame is one token
                keep &= ids != model.blank_id
                result[TOKEN_PROBS] = best[keep].exp().tolist()
        seen.clear()
        return output

    model.encoder.forward = encoder_and_keep
    model.ctc.log_softmax = log_softmax_and_keep
    model.inference = inference_with_probs


# ------------------------------------------------------------------------------------------ building
def build_automodel(source: str, vad: str | None, device: str, ncpu: int) -> Any:
    """FunASR's AutoModel for SenseVoice-Small with the service's VAD, as FunASR's users build it."""
    from funasr import AutoModel

    from .errors import ModelLoadError

    kwargs: dict[str, Any] = {
        "model": source,
        "device": device,
        "disable_update": True,
        "disable_pbar": True,
        "disable_log": True,
        "ncpu": ncpu,
    }
    if vad:
        kwargs["vad_model"] = vad
    model = AutoModel(**kwargs)
    if type(model.model).__name__ != "SenseVoiceSmall":
        raise ModelLoadError(f"'{source}' is a {type(model.model).__name__}, not a SenseVoice-Small model")
    return model


def generate_options(language: str | None, batch_size_s: int) -> dict[str, Any]:
    """The generate() options of one SenseVoice call: the language (or auto), the spoken style, word times."""
    return {
        "batch_size_s": batch_size_s,
        "language": language or "auto",
        "use_itn": False,  # the service's ITN step writes the numbers (module docstring)
        "output_timestamp": True,  # word times from CTC alignment
    }


# ------------------------------------------------------------------------------------------ results
def to_sentences(found: list[SegmentResult], duration: float) -> list[Any]:
    """One `Sentence` per segment that has text, with its tags and, where the alignment spells the text, its
    words. A segment with no text (a cough, music alone) gives no sentence, as with SeACo."""
    from .engine import Sentence

    sentences = []
    for segment in found:
        text, tags = parse_tags(str(segment.result.get("text") or ""))
        if not text:
            continue
        start, end = min(segment.start, duration), min(segment.end, duration)
        sentences.append(
            Sentence(
                text,
                start,
                max(end, start),
                words=_words(segment, text, duration),
                language=tags.language,
                emotion=tags.emotion,
                events=list(tags.events),
            )
        )
    return sentences


def _words(segment: SegmentResult, text: str, duration: float) -> list[Any]:
    from .engine import Word

    stamps = segment.result.get("timestamp") or []
    units = [str(w).replace("\u2581", "") for w in segment.result.get("words") or []]
    if not stamps or len(stamps) != len(units) or "".join(units) != "".join(text.split()):
        return []  # the alignment does not spell the text (or gave nothing): sentence times only

    def seconds(ms: float) -> float:
        return min(max(segment.start + ms / 1000.0, 0.0), duration)

    return [Word(u, seconds(a), max(seconds(b), seconds(a))) for u, (a, b) in zip(units, stamps, strict=True) if u]


def confidence(found: list[SegmentResult]) -> float:
    """The mean posterior of every emitted text token of the file (0.0 when none)."""
    probs = [p for segment in found for p in segment.result.get(TOKEN_PROBS) or []]
    return min(max(sum(probs) / len(probs), 0.0), 1.0) if probs else 0.0
