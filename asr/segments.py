"""Speech segments reported in time order while a long transcription runs (`stream=true` progress).

FunASR's VAD path decodes a file's speech segments shortest first: it sorts them by length to batch them.
A caller told of each segment as the model finishes it would therefore hear of them out of order, and on a
long file would see the beginning of the text only near the end. For a transcription that reports its
segments, the engine instead decodes every segment in time order, one model call each, as soon as the VAD
has cut them, tells the caller of each, and then answers FunASR's own length-ordered calls from those
results. Nothing else changes: a segment decoded alone gives what it gives inside a batch (`asr.batching`
makes batches exact, and on CPU FunASR decodes one segment per call anyway), so the final text, timestamps
and punctuation are those of the same file transcribed without reporting.

The order of work is: FunASR runs the VAD (seen here), asks for its first batch of segments (here every
segment is decoded, in time order, and punctuated on its own for the listener), then for the rest (answered
from what was decoded), then punctuates the whole text.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SpeechSegment:
    """One VAD segment once decoded: its place in the file (`index` of `count`, 0 = first), its start and end in
    seconds, its words unpunctuated, and the same words as the punctuation model writes them for this segment alone.

    `text` is written as the final text writes words: Chinese characters joined, Latin words spaced. The final
    result is punctuated over the whole text, so its punctuation can differ from `punctuated`'s at segment
    boundaries; a caller that shows text as it comes (stream=true) uses `punctuated` and joins the pieces itself.
    `punctuated` is `text` when the engine runs without a punctuation model.
    """

    index: int
    count: int
    start: float
    end: float
    text: str
    punctuated: str = ""

    @property
    def written(self) -> str:
        """The segment as a streamed transcript shows it: punctuated when a punctuation model ran."""
        return self.punctuated or self.text


SegmentListener = Callable[[SpeechSegment], None]


class _Reporting:
    """One transcription's state: the VAD's segments, then every segment's result by its audio content."""

    def __init__(self, listener: SegmentListener):
        self.listener = listener
        self.speech_input: Any = None
        self.segments: list[list[float]] = []
        self.results: dict[bytes, dict] | None = None


_reporting: ContextVar[_Reporting | None] = ContextVar("asr_segment_reporting", default=None)


@contextmanager
def report_segments(listener: SegmentListener) -> Iterator[None]:
    """Inside the block, this thread's transcriptions decode in time order and call `listener` per segment.

    An exception the listener raises ends the transcription (the engine releases the model as for any error).
    """
    token = _reporting.set(_Reporting(listener))
    try:
        yield
    finally:
        _reporting.reset(token)


def install_segment_reporting(automodel: Any, written: Callable[[str], str] | None = None) -> None:
    """Route a FunASR AutoModel's `inference` through the time-order decoder while a listener is set.

    `written` turns a segment's model text into the text the listener gets: `written_words` (SeACo's
    space-separated tokens) unless given (SenseVoice's text less its tags, `asr.sensevoice.strip_tags`)."""
    to_text = written or written_words
    inference = automodel.inference

    def inference_in_time_order(
        input: Any, input_len: Any = None, model: Any = None, kwargs: Any = None, key: Any = None, **cfg: Any
    ) -> Any:
        state = _reporting.get()
        if state is None or model is None:
            return inference(input, input_len=input_len, model=model, kwargs=kwargs, key=key, **cfg)
        if model is automodel.vad_model:
            found = inference(input, input_len=input_len, model=model, kwargs=kwargs, key=key, **cfg)
            state.speech_input = input
            state.segments = [list(s) for s in (found[0].get("value") or [])] if found else []
            state.results = None
            return found
        if model is automodel.model and state.speech_input is not None:
            if state.results is None:
                state.results = _decode_in_time_order(state, inference, model, kwargs, cfg, punctuate, to_text)
            keys = [_content_key(x) for x in input]
            if all(k in state.results for k in keys):
                return [copy.deepcopy(state.results[k]) for k in keys]
        return inference(input, input_len=input_len, model=model, kwargs=kwargs, key=key, **cfg)

    def punctuate(text: str, cfg: dict) -> str:
        # The punctuation model as FunASR runs it on the whole text, here on one segment's words (the model lock
        # is held: this is inside the transcription's generate()).
        if getattr(automodel, "punc_model", None) is None:
            return text
        found = inference(text, model=automodel.punc_model, kwargs=automodel.punc_kwargs, **cfg)
        return str(found[0].get("text") or "") if found else ""

    automodel.inference = inference_in_time_order


def _decode_in_time_order(
    state: _Reporting,
    inference: Callable[..., Any],
    model: Any,
    kwargs: dict,
    cfg: dict,
    punctuate: Callable[[str, dict], str],
    written: Callable[[str], str],
) -> dict[bytes, dict]:
    from funasr.utils.load_utils import load_audio_text_image_video
    from funasr.utils.vad_utils import slice_padding_audio_samples

    # The same steps as FunASR's VAD path, so every slice is the one FunASR will ask for.
    frontend = kwargs.get("frontend")
    speech = load_audio_text_image_video(
        state.speech_input, fs=getattr(frontend, "fs", 16000), audio_fs=kwargs.get("fs", 16000)
    )
    results: dict[bytes, dict] = {}
    count = len(state.segments)
    for index, segment in enumerate(state.segments):
        pieces, _ = slice_padding_audio_samples(speech, len(speech), [(segment, index)])
        answer = inference(pieces, input_len=None, model=model, kwargs=kwargs, **cfg)
        result = answer[0] if answer else {"text": ""}
        results[_content_key(pieces[0])] = result
        words = written(str(result.get("text") or ""))
        state.listener(
            SpeechSegment(
                index=index,
                count=count,
                start=segment[0] / 1000.0,
                end=segment[1] / 1000.0,
                text=words,
                punctuated=punctuate(words, cfg) if words else "",
            )
        )
    return results


def _content_key(samples: Any) -> bytes:
    """A segment's identity: its samples (FunASR hands them back as tensors or arrays, in any order)."""
    array = np.ascontiguousarray(np.asarray(samples, dtype=np.float32))
    return hashlib.blake2b(array.tobytes(), digest_size=16).digest()


def written_words(tokens: str) -> str:
    """Space-separated recognised units as text is written: Chinese characters joined, Latin words spaced."""
    text = ""
    for unit in tokens.split():
        text += (" " if needs_space(text, unit) else "") + unit
    return text


def needs_space(before: str, after: str) -> bool:
    """Whether two pieces of text meet with a space: between two Latin words or numbers, as FunASR writes them."""
    return bool(before) and bool(after) and len(before[-1].encode()) == 1 and len(after[0].encode()) == 1
